"""Property tests of `stockade suggest` on random clusters and policies, judged by the spec
oracle (which shares no code with the engine that suggest compiles with):

* the flows found blocked by probing (the oracle, over every family two pods share, on the
  destination's declared ports; and from addresses outside the cluster) are all admitted once
  the suggested manifests replace the policies they name;
* what `dry-run` says the suggestion also opens is exactly what the oracle sees opened beyond
  the requested flows, and nothing it closes.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stockade.brain.admin.dryrun import compile_objects
from stockade.brain.admin.suggest import suggest
from stockade.brain.admin.suggest_judge import Flow

from .spec_oracle import Oracle, family, is_endpoint, key_of, pod_ip, shared_families
from .spec_oracle import container_ports as declared
from .strategies import EXTERNALS, cluster

Obj = dict[str, Any]
Conn = tuple[str, str, int, str, str]  # from, to, port, protocol, family
FAMILY = {4: "ipv4", 6: "ipv6"}

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _endpoints(objects: list[Obj]) -> list[Obj]:
    """Pods both the oracle and the engine take for endpoints (the engine refuses a few the
    oracle merely ignores: those are neither's peers)."""
    engine = compile_objects(objects)
    out = []
    for p in objects:
        if p["kind"] == "Pod" and is_endpoint(p):
            ns, name = key_of(p).split("/", 1)
            if engine.endpoint(ns, name) is not None:
                out.append(p)
    return out


def _verdicts(oracle: Oracle, pods: list[Obj]) -> dict[Conn, bool]:
    """Every pod pair on the destination's declared ports, per family both have."""
    out: dict[Conn, bool] = {}
    for dst in pods:
        for _, proto, port in declared(dst):
            for src in pods:
                if key_of(src) == key_of(dst):
                    continue
                for v in shared_families(src, dst):
                    conn = (key_of(src), key_of(dst), port, proto, FAMILY[v])
                    out[conn] = oracle.allowed(src, dst, proto, port, v)
    return out


def _external_blocked(oracle: Oracle, pods: list[Obj]) -> list[Flow]:
    out = []
    for dst in pods:
        for _, proto, port in declared(dst):
            for ip in EXTERNALS:
                if pod_ip(dst, family(ip)) is not None and not oracle.allowed(ip, dst, proto, port):
                    out.append(Flow(ip, key_of(dst), port, proto))
    return out


def _oracle(objects: list[Obj]) -> Oracle:
    def of(kind: str) -> list[Obj]:
        return [o for o in objects if o["kind"] == kind]

    return Oracle(of("Namespace"), of("Pod"), of("NetworkPolicy"))


def _applied(objects: list[Obj], manifests: list[Obj]) -> list[Obj]:
    """``objects`` with each suggested manifest replacing the policy of its name, or added."""
    by_key = {key_of(m): m for m in manifests}
    out = [by_key.pop(key_of(o), o) if o["kind"] == "NetworkPolicy" else o for o in objects]
    return out + list(by_key.values())


def _selectors(policy: Obj) -> list[Obj]:
    spec = policy.get("spec") or {}
    out = [spec.get("podSelector")]
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for rule in spec.get(direction) or []:
            for peer in (rule or {}).get(key) or []:
                out += [(peer or {}).get("podSelector"), (peer or {}).get("namespaceSelector")]
    return [s for s in out if isinstance(s, dict) and isinstance(s.get("matchLabels"), dict) and s["matchLabels"]]


def _typos(objects: list[Obj], data: st.DataObject) -> None:
    """Misspell some selectors' values (``a`` -> ``ax``): what mends are for."""
    for o in objects:
        if o["kind"] == "NetworkPolicy":
            for sel in _selectors(o):
                if data.draw(st.integers(0, 2), label="typo") == 0:
                    k = sorted(sel["matchLabels"])[0]
                    sel["matchLabels"][k] = f"{sel['matchLabels'][k]}x"


@SETTINGS
@given(c=cluster(max_pods=7, max_policies=4), data=st.data())
def test_the_suggestion_admits_the_blocked_flows_and_dry_run_lists_what_else_opens(
    c: dict[str, list[Obj]], data: st.DataObject
) -> None:
    objects = [copy.deepcopy(o) for k in ("namespaces", "pods", "policies", "nodes") for o in c[k]]
    _typos(objects, data)
    pods = _endpoints(objects)
    before = _verdicts(_oracle(objects), pods)
    blocked = sorted({Flow(s, d, port, proto) for (s, d, port, proto, _), ok in before.items() if not ok})
    blocked += _external_blocked(_oracle(objects), pods)
    if not blocked:
        event("nothing blocked")
        return
    asked = data.draw(st.lists(st.sampled_from(blocked), min_size=1, max_size=6, unique=True), label="flows")

    got = suggest(objects, asked)
    event("actions: " + ",".join(sorted({c.action for c in got.changes})))
    event(f"also opens {'some' if got.also_opens else 'none'}")

    assert got.not_fixable == [] and got.not_admitted == [], (got.not_fixable, got.not_admitted)
    assert sorted(got.admitted) == sorted(asked)
    after_objects = _applied(objects, [c.manifest for c in got.changes])
    oracle = _oracle(after_objects)
    for f in asked:  # over every family its ends share
        dst = oracle.pod(f.dst)
        if f.src in {key_of(p) for p in pods}:
            src = oracle.pod(f.src)
            for v in shared_families(src, dst):
                assert oracle.allowed(src, dst, f.protocol, f.port, v), f"{f.text()} over IPv{v}"
        else:
            assert oracle.allowed(f.src, dst, f.protocol, f.port), f.text()
    after = _verdicts(oracle, pods)
    opened = {conn for conn, ok in after.items() if ok and not before[conn]}
    closed = {conn for conn, ok in after.items() if before[conn] and not ok}
    wanted = {(f.src, f.dst, f.port, f.protocol) for f in asked}
    assert set(got.also_opens) == {conn for conn in opened if conn[:4] not in wanted}
    assert closed == set() and got.closes == []
