"""Every field from the API is validated before the engine reads it (issue 11, item 2).

Hostile objects (fixed: the shapes of issue 11; generated: random JSON trees in place of any
field of a full object of each kind) go through the engine's public entry points, at start
(`Engine.load`) and as later changes (`Engine.upsert`). Nothing may raise, each bad object is
refused alone with the field named, and what the canary policy enforces stays exactly as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.brain.engine import Engine, validate
from stockade.model import Direction

from .hostile import CANARY, CLIENT_IP, HOSTILE, allowed, canary_view

Obj = dict[str, Any]


def _by_kind(objs: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for o in objs:
        out.setdefault(o["kind"] if isinstance(o, dict) and isinstance(o.get("kind"), str) else "?", []).append(o)
    return out


def loaded(objs: list[Obj]) -> Engine:
    engine = Engine()
    k = _by_kind(objs)
    engine.load(
        k.get("Namespace", []),
        k.get("Pod", []),
        k.get("NetworkPolicy", []),
        k.get("Node", []),
        services=k.get("Service", []),
    )
    return engine


REFERENCE = canary_view(loaded(CANARY))
# Refused pods whose address and node can still be read: all their traffic is denied (fail
# closed), so they add deny-all dispatch entries on their node and nothing else.
ISOLATED = {"Pod canary/port-map": ("node-1", "10.244.1.99")}


def without_isolated(engine: Engine) -> dict[str, Any]:
    """The engine's node models minus the deny-all dispatch of the `ISOLATED` pods it holds,
    checking that is what they are."""
    out = {}
    for node, model in engine.models().items():
        for what, (where, ip) in ISOLATED.items():
            if where != node or what not in {r.object for r in engine.rejections()}:
                continue
            for d in Direction:
                cid = model.dispatch(d).pop(ip)
                assert model.chains[cid].rules == (), f"{what}: {d} must allow nothing"
        used = set(model.ingress.values()) | set(model.egress.values())
        model.chains = {c: ch for c, ch in model.chains.items() if c in used}
        out[node] = model
    return out


def test_the_canary_is_enforced() -> None:
    # the web pods accept only the client on TCP 80; the client is not isolated
    assert REFERENCE[("node-1", "10.244.1.10", "ingress")][0]
    assert allowed(REFERENCE, "node-1", "10.244.1.10") == [f"{CLIENT_IP}/32"]
    assert allowed(REFERENCE, "node-2", "10.244.2.10") == [f"{CLIENT_IP}/32"]
    assert REFERENCE[("node-2", CLIENT_IP, "ingress")] == (False, [])


@pytest.mark.parametrize(("obj", "what", "field"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_object_later_is_refused_alone(obj: Obj, what: str, field: str) -> None:
    engine = loaded(CANARY)
    before = engine.models()
    deltas = engine.upsert(copy.deepcopy(obj))
    if what in ISOLATED:
        node, ip = ISOLATED[what]
        assert set(deltas) == {node}
        assert (deltas[node].ingress_set.keys(), deltas[node].egress_set.keys()) == ({ip}, {ip})
        assert not deltas[node].new_sets and not deltas[node].set_added, "and it joins no address set"
    else:
        assert deltas == {}, "a refused object changes no node's rules"
    assert without_isolated(engine) == before
    assert canary_view(engine) == REFERENCE
    (rej,) = [r for r in engine.rejections() if r.object == what]
    assert rej.field == field, rej
    assert rej.message
    # the object fixed: the refusal goes; deleted: too
    engine.delete(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
    assert [r for r in engine.rejections() if r.object == what] == []


def test_hostile_objects_at_start_are_refused_and_the_rest_computes() -> None:
    engine = loaded(CANARY + [copy.deepcopy(h[0]) for h in HOSTILE])
    assert canary_view(engine) == REFERENCE
    assert without_isolated(engine) == loaded(CANARY).models()
    refused = {r.object: r.field for r in engine.rejections()}
    assert refused == {what: field for _, what, field in HOSTILE}


def test_refused_pod_is_no_endpoint_and_says_why() -> None:
    obj, what, _ = HOSTILE[2]  # 010.001.000.020
    engine = loaded([*CANARY, obj])
    ns, name = what.split(" ", 1)[1].split("/")
    assert not engine.is_endpoint(ns, name)
    info = engine.pod_info(ns, name)
    assert info is not None and "010.001.000.020" in info.problem
    # the same pod with a valid address is accepted and becomes a peer of the canary
    good = copy.deepcopy(obj)
    good["status"] = {"phase": "Running", "podIP": "10.244.1.20", "podIPs": [{"ip": "10.244.1.20"}]}
    engine.upsert(good)
    assert engine.is_endpoint(ns, name)
    assert [r for r in engine.rejections() if r.object == what] == []
    assert allowed(canary_view(engine), "node-1", "10.244.1.10") == sorted([f"{CLIENT_IP}/32", "10.244.1.20/32"])


def test_non_canonical_address_is_accepted_canonical() -> None:
    engine = loaded(CANARY)
    pod = copy.deepcopy(CANARY[5])
    pod["metadata"]["name"] = "upper6"
    pod["status"] = {"phase": "Running", "podIP": "FD00:0::63", "podIPs": [{"ip": "FD00:0::63"}]}
    engine.upsert(pod)
    assert engine.rejections() == []
    assert "fd00::63/128" in allowed(canary_view(engine), "node-2", "10.244.2.10")  # a peer, canonical
    assert engine.pod_by_ip("FD00:0::63") == "canary/upper6"


def test_refused_namespace_counts_as_absent() -> None:
    engine = loaded(CANARY)
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "red"}}}
    pod = copy.deepcopy(CANARY[3])
    pod["metadata"].update(name="peer", namespace="other")
    pod["status"] = {"phase": "Running", "podIP": "10.244.1.30", "podIPs": [{"ip": "10.244.1.30"}]}
    engine.upsert(ns)
    engine.upsert(pod)
    assert "10.244.1.30/32" in allowed(canary_view(engine), "node-1", "10.244.1.10")  # team=red: allowed
    engine.upsert({**ns, "metadata": {"name": "other", "labels": ["team", "red"]}})
    assert canary_view(engine) == REFERENCE, "a namespace whose labels cannot be read matches no selector"
    assert any(r.object == "Namespace other" and r.field == "metadata.labels" for r in engine.rejections())


# ------------------------------------------------------------------------------------- fuzzing

SKELETONS: list[Obj] = [
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "f",
            "namespace": "fuzz",
            "labels": {"app": "x"},
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {
            "nodeName": "node-1",
            "hostNetwork": False,
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}],
            "initContainers": [{"name": "i", "ports": [{"containerPort": 53, "protocol": "UDP"}]}],
        },
        "status": {"phase": "Running", "podIP": "10.244.1.77", "podIPs": [{"ip": "10.244.1.77"}, {"ip": "fd00::77"}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "fuzz",
            "labels": {"team": "green"},
            "annotations": {"net.beta.kubernetes.io/network-policy": '{"ingress":{"isolation":"DefaultDeny"}}'},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-fuzz", "labels": {"zone": "a"}},
        "spec": {"podCIDR": "10.244.9.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "fuzz"},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "fuzz"},
        "spec": {
            "podSelector": {
                "matchLabels": {"app": "x"},
                "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}],
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "green"}}}],
                    "ports": [{"port": "http"}, {"port": 8000, "endPort": 8080, "protocol": "TCP"}],
                }
            ],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                    "ports": [{"port": 53, "protocol": "UDP"}],
                }
            ],
        },
    },
]

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "TCP", "x", "10.0.0.1", "::", "0.0.0.0/0", "Running", "In", "node-1", "http"])
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def hostile_objects(draw: st.DrawFn) -> Obj:
    obj = copy.deepcopy(draw(st.sampled_from(SKELETONS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(obj) if p and p[0] not in ("kind", "apiVersion")]))
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(JSON)  # a stray field next to it
        parent[path[-1]] = draw(JSON)
        if not isinstance(obj, dict):
            break
    return obj


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(hostile_objects(), min_size=1, max_size=4))
def test_fuzzed_objects_later_never_raise_nor_touch_the_canary(objs: list[Obj]) -> None:
    engine = loaded(CANARY)
    for obj in objs:
        engine.upsert(obj)
        validate.problem(obj)  # never raises either
        validate.describe(obj)
    assert canary_view(engine) == REFERENCE
    for obj in objs:  # and everything can go again
        meta = obj.get("metadata")
        if isinstance(meta, dict) and isinstance(meta.get("name"), str):
            ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
            engine.delete(obj["kind"], ns, meta["name"])
    assert canary_view(engine) == REFERENCE


@FUZZ
@given(st.lists(hostile_objects(), min_size=1, max_size=4))
def test_fuzzed_objects_at_start_never_raise_nor_touch_the_canary(objs: list[Obj]) -> None:
    engine = loaded(CANARY + objs)
    assert canary_view(engine) == REFERENCE
    engine.rejections()
    engine.lint()
