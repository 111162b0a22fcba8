"""Property tests: the compiled models against the spec oracle, and deltas against a full recompute."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.brain.engine import Engine
from stockade.model import NodeModel

from .harness import apply_deltas, differences, model_allows, model_egress_allows, models_of, verdicts
from .kube import BETA_DENY, node
from .spec_oracle import BETA_ANNOTATION, Oracle, family, is_endpoint, key_of, name_of, ns_of, pod_ip, pod_ips, problems
from .strategies import (
    CHECK_PORTS,
    EXTERNALS,
    FAMILIES,
    IP_POOL,
    NAMESPACES,
    NODES,
    PROTOCOLS,
    a_pod,
    addresses,
    cluster,
    labels_st,
    network_policy,
    ns_labels_st,
)

Obj = dict[str, Any]
Ident = tuple[str, str | None, str]
MAX_STEPS = 10

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fresh(objects: dict[Ident, Obj], beta: bool) -> Engine:
    def of(kind: str) -> list[Obj]:
        return [copy.deepcopy(o) for (k, _, _), o in objects.items() if k == kind]

    eng = Engine(beta_default_deny=beta)
    eng.load(namespaces=of("Namespace"), pods=of("Pod"), policies=of("NetworkPolicy"), nodes=of("Node"))
    return eng


def ident(obj: Obj) -> Ident:
    kind = obj["kind"]
    return (kind, ns_of(obj) if kind in ("Pod", "NetworkPolicy") else None, name_of(obj))


def assert_agrees_with_oracle(eng: Engine, objects: dict[Ident, Obj], beta: bool) -> None:
    def of(kind: str) -> list[Obj]:
        return [o for (k, _, _), o in objects.items() if k == kind]

    models = models_of(eng)
    oracle = Oracle(of("Namespace"), of("Pod"), of("NetworkPolicy"), beta=beta)
    eps = sorted(oracle.endpoints(), key=key_of)
    sources: list[Obj | str] = [*eps, *EXTERNALS]
    got = verdicts(lambda s, d, pr, po, v: model_allows(models, s, d, pr, po, v), sources, eps, PROTOCOLS, CHECK_PORTS)
    want = verdicts(oracle.allowed, sources, eps, PROTOCOLS, CHECK_PORTS)
    diff = differences(got, want)
    assert not diff, f"compiled models disagree with the spec oracle:\n{diff}"
    # Egress to addresses outside the cluster (no pod there, so no named port either).
    for src in eps:
        for ext in EXTERNALS:
            if pod_ip(src, family(ext)) is None:
                continue  # no address of that family to send from
            for proto in PROTOCOLS:
                for port in CHECK_PORTS:
                    expected = oracle.egress_allows(src, ext, None, proto, port)
                    assert model_egress_allows(models, src, ext, proto, port) == expected, (
                        key_of(src),
                        ext,
                        proto,
                        port,
                    )
    # Exactly the malformed policies are rejected, each naming its own object.
    rejected = {r.object for r in eng.rejections() if r.object.startswith("NetworkPolicy ")}
    broken = {f"NetworkPolicy {key_of(p)}" for p in of("NetworkPolicy") if problems(p)}
    assert rejected == broken


@SETTINGS
@given(cluster(), st.booleans())
def test_compiled_models_agree_with_the_oracle(c: dict[str, list[Obj]], beta: bool) -> None:
    eng = Engine(beta_default_deny=beta)
    eng.load(**copy.deepcopy(c))
    for n in eng.nodes():
        assert eng.model(n).check() == [], n
    objects = {ident(o): o for objs in c.values() for o in objs}
    assert_agrees_with_oracle(eng, objects, beta)


# ---------------------------------------------------------------- random change sequences

OPS = (
    "pod-add",
    "pod-remove",
    "pod-relabel",
    "pod-ip",
    "pod-readdress",
    "pod-finish",
    "ns-relabel",
    "ns-annotate",
    "policy-add",
    "policy-change",
    "policy-delete",
    "node-add",
    "node-remove",
)


def _of(objects: dict[Ident, Obj], kind: str) -> list[Obj]:
    return [o for (k, _, _), o in objects.items() if k == kind]


def _free_slots(objects: dict[Ident, Obj], but: Obj | None = None) -> list[int]:
    """Address slots no endpoint holds an address of (``but``'s own count as free)."""
    used = {ip for p in _of(objects, "Pod") if is_endpoint(p) and p is not but for ip in pod_ips(p)}
    return [i for i in range(len(IP_POOL)) if not set(addresses(i, "dual")) & used]


def _stale_slots(objects: dict[Ident, Obj], free: list[int]) -> list[int]:
    """Free slots whose addresses finished pods still hold: a new pod must own them (weave#2632)."""
    held = {ip for p in _of(objects, "Pod") if not is_endpoint(p) for ip in pod_ips(p)}
    return [i for i in free if set(addresses(i, "dual")) & held]


def _with_ip(p: Obj, ips: list[str] | None) -> Obj:
    p = copy.deepcopy(p)
    p["status"].pop("podIP", None)
    p["status"].pop("podIPs", None)
    if ips:
        p["status"]["podIP"] = ips[0]
        p["status"]["podIPs"] = [{"ip": ip} for ip in ips]
    return p


def _draw_addresses(data: st.DataObject, slots: list[int]) -> list[str]:
    return addresses(data.draw(st.sampled_from(slots), label="slot"), data.draw(st.sampled_from(FAMILIES)))


def _draw_change(data: st.DataObject, objects: dict[Ident, Obj], serial: int) -> tuple[str, Obj | Ident] | None:
    """One change to the cluster: ("upsert", new object) or ("delete", ident); None if impossible."""
    op = data.draw(st.sampled_from(OPS), label="op")
    pods, policies = _of(objects, "Pod"), _of(objects, "NetworkPolicy")
    nodes = {name_of(n) for n in _of(objects, "Node")}
    if op == "pod-add":
        free = _free_slots(objects)
        # Prefer the IPs finished pods still hold: the new pod must own them (weave#2632).
        stale = _stale_slots(objects, free)
        no_ip = not free or data.draw(st.integers(0, 5), label="no ip") == 0
        ips = None if no_ip else _draw_addresses(data, [*stale, *stale, *free])
        return ("upsert", _with_ip(data.draw(a_pod(f"q{serial}", ips)), ips))
    if op == "pod-readdress":
        # An endpoint's addresses change: a family added or dropped, or new addresses.
        eps = [p for p in pods if is_endpoint(p)]
        if not eps:
            return None
        target = data.draw(st.sampled_from(eps))
        return ("upsert", _with_ip(target, _draw_addresses(data, _free_slots(objects, but=target))))
    if op == "pod-ip":
        bare = [p for p in pods if pod_ip(p) is None and p["status"]["phase"] in ("Pending", "Running")]
        free = _free_slots(objects)
        if not bare or not free:
            return None
        scheduled = _with_ip(data.draw(st.sampled_from(bare)), _draw_addresses(data, free))
        scheduled["spec"].setdefault("nodeName", data.draw(st.sampled_from(NODES)))
        scheduled["status"]["phase"] = "Running"
        return ("upsert", scheduled)
    if op in ("pod-remove", "pod-relabel", "pod-finish"):
        if not pods:
            return None
        p = copy.deepcopy(data.draw(st.sampled_from(pods)))
        if op == "pod-remove":
            return ("delete", ident(p))
        if op == "pod-relabel":
            p["metadata"]["labels"] = data.draw(labels_st)
        else:
            p["status"]["phase"] = data.draw(st.sampled_from(("Succeeded", "Failed")))
        return ("upsert", p)
    if op in ("ns-relabel", "ns-annotate"):
        ns = copy.deepcopy(objects[("Namespace", None, data.draw(st.sampled_from(NAMESPACES)))])
        if op == "ns-relabel":
            ns["metadata"]["labels"] = data.draw(ns_labels_st)
        else:
            notes = ns["metadata"].setdefault("annotations", {})
            if BETA_ANNOTATION in notes:
                del notes[BETA_ANNOTATION]
            else:
                notes[BETA_ANNOTATION] = BETA_DENY
        return ("upsert", ns)
    if op == "policy-add":
        # A small pool of names: the same name in two namespaces is two policies.
        return ("upsert", data.draw(network_policy(f"r{data.draw(st.integers(0, 2))}")))
    if op in ("policy-change", "policy-delete"):
        if not policies:
            return None
        old = data.draw(st.sampled_from(policies))
        if op == "policy-delete":
            return ("delete", ident(old))
        new = data.draw(network_policy(name_of(old)))
        new["metadata"]["namespace"] = ns_of(old)
        return ("upsert", new)
    if op == "node-add":
        absent = [n for n in NODES if n not in nodes]
        return ("upsert", node(data.draw(st.sampled_from(absent)))) if absent else None
    present = sorted(nodes)
    return ("delete", ("Node", None, data.draw(st.sampled_from(present)))) if present else None


@settings(SETTINGS, max_examples=200)
@given(st.data())
def test_deltas_in_order_reach_the_full_recompute(data: st.DataObject) -> None:
    c = data.draw(cluster(max_pods=6, max_policies=3), label="cluster")
    beta = data.draw(st.booleans(), label="beta")
    objects = {ident(o): o for objs in c.values() for o in objs}
    eng = fresh(objects, beta)
    held = models_of(eng)
    for serial in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
        change = _draw_change(data, objects, serial)
        if change is None:
            continue
        what, arg = change
        if what == "upsert":
            assert isinstance(arg, dict)
            objects[ident(arg)] = arg
            deltas = eng.upsert(copy.deepcopy(arg))
        else:
            assert isinstance(arg, tuple)
            del objects[arg]
            deltas = eng.delete(*arg)
        # Only nodes whose model changed get a delta.
        assert all(not d.is_empty() for d in deltas.values()), f"after {what} {arg}: empty delta"
        apply_deltas(held, deltas)
        for n in set(held) | set(eng.nodes()):
            assert held.get(n, NodeModel(n)) == eng.model(n), f"after {what} {arg}: {n} differs from the engine"
    full = fresh(objects, beta)
    for n in set(held) | set(eng.nodes()) | set(full.nodes()):
        model = held.get(n, NodeModel(n))
        assert model == full.model(n), f"deltas for {n} did not reach the full recompute"
        assert model.check() == [], model.check()
