"""A pod the brain refuses fails closed: all its traffic is denied, and no policy allows it as a peer.

A refused pod whose addresses and node can still be read safely is dispatched on its node, for
every address and both directions, to a chain that allows nothing; it joins no address set. Once
fixed it is a normal pod, deleted its entries go (the deltas say exactly that). A refused pod whose
addresses cannot be read has nothing to filter: its rejection says so.
"""

from __future__ import annotations

import copy
from typing import Any

from stockade.brain.admin.explain import explain
from stockade.brain.engine import Engine
from stockade.model import Direction, NodeModel, Protocol
from stockade.model.evaluate import decide

from .harness import apply_deltas, models_of
from .hostile import CANARY, CLIENT_IP, allowed, canary_view

Obj = dict[str, Any]
IP4, IP6 = "10.244.1.50", "fd00:10:244:1::50"
KEY = "canary/bad"
WHAT = f"Pod {KEY}"


def _bad(**changes: Any) -> Obj:
    """A would-be peer of the canary (app=client) on node-1, dual-stack, with a port the brain
    cannot read."""
    obj: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "canary", "labels": {"app": "client"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]},
        "status": {"phase": "Running", "podIP": IP4, "podIPs": [{"ip": IP4}, {"ip": IP6}]},
    }
    for k, v in changes.items():
        obj[k] = v
    return obj


def _engine(*extra: Obj) -> Engine:
    eng = Engine()
    by: dict[str, list[Obj]] = {}
    for o in [*CANARY, *extra]:
        by.setdefault(o["kind"], []).append(o)
    eng.load(by.get("Namespace", []), by.get("Pod", []), by.get("NetworkPolicy", []), by.get("Node", []))
    return eng


def _denies_all(model: NodeModel, ip: str) -> None:
    for d in Direction:
        cid = model.dispatch(d).get(ip)
        assert cid is not None, f"{ip} has no {d} dispatch entry: its traffic would not be filtered"
        assert model.chains[cid].rules == (), f"{ip}'s {d} chain allows something"
        assert model.chains[cid].direction is d
    peer = CLIENT_IP if ":" not in ip else "fd00::1"
    assert not decide(model, Direction.INGRESS, ip, peer, Protocol.TCP, 80).allowed
    assert not decide(model, Direction.EGRESS, ip, peer, Protocol.TCP, 80).allowed


def _in_no_set(eng: Engine, *ips: str) -> None:
    for node in eng.nodes():
        for sid, elems in eng.model(node).sets.items():
            for ip in ips:
                assert not any(e.split("/")[0] == ip for e in elems), f"{ip} is a peer in {sid} on {node}"


def _reference_without(eng: Engine) -> None:
    assert canary_view(eng) == canary_view(_engine()), "the canary's enforcement is untouched"


def test_refused_pod_denies_all_its_traffic_both_families_and_is_no_peer() -> None:
    for eng in (_engine(_bad()), _engine()):  # at start, and as a later change
        if not eng.pod_info("canary", "bad"):
            eng.upsert(_bad())
        model = eng.model("node-1")
        _denies_all(model, IP4)
        _denies_all(model, IP6)
        _in_no_set(eng, IP4, IP6)
        assert allowed(canary_view(eng), "node-1", "10.244.1.10") == [f"{CLIENT_IP}/32"]
        _reference_without(eng)
        assert not eng.is_endpoint("canary", "bad")
        iso = eng.isolated("canary", "bad")
        assert iso is not None and iso.ips == (IP4, IP6) and iso.node == "node-1"
        assert eng.pod_by_ip(IP6) == KEY, "drops on its addresses are attributed to it"
        assert eng.policies_for_pod("canary", "bad") == {Direction.INGRESS: [], Direction.EGRESS: []}
        (rej,) = [r for r in eng.rejections() if r.object == WHAT]
        assert rej.field == "spec.containers[0].ports[0].containerPort"
        assert rej.message.endswith("; isolated: all its traffic is denied until it is fixed"), rej
        assert eng.model("node-1").check() == []


def test_cold_start_and_incremental_agree() -> None:
    later = _engine()
    later.upsert(_bad())
    assert models_of(later) == models_of(_engine(_bad()))


def test_fixed_then_deleted_deltas_are_exact() -> None:
    eng = _engine()
    models = models_of(eng)
    apply_deltas(models, eng.upsert(_bad()))
    assert models == models_of(eng)
    # Fixed: a normal, unisolated pod and a peer of the canary policy; its deny-all entries go.
    good = _bad()
    good["spec"] = {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}
    deltas = eng.upsert(good)
    d = deltas["node-1"]
    assert d.ingress_removed == {IP4, IP6} and d.egress_removed == {IP4, IP6}
    apply_deltas(models, deltas)
    assert models == models_of(eng)
    assert eng.is_endpoint("canary", "bad") and eng.isolated("canary", "bad") is None
    assert f"{IP4}/32" in allowed(canary_view(eng), "node-1", "10.244.1.10")
    assert [r for r in eng.rejections() if r.object == WHAT] == []
    # Refused again, then deleted: no trace is left.
    apply_deltas(models, eng.upsert(_bad()))
    assert models == models_of(eng)
    _denies_all(models["node-1"], IP4)
    _in_no_set(eng, IP4, IP6)
    apply_deltas(models, eng.delete("Pod", "canary", "bad"))
    assert models == models_of(eng) == models_of(_engine())
    assert eng.isolated("canary", "bad") is None and eng.pod_by_ip(IP4) is None


def test_moving_node_and_changing_address_follow() -> None:
    eng = _engine(_bad())
    models = models_of(eng)
    moved = _bad()
    moved["spec"] = {**moved["spec"], "nodeName": "node-2"}
    moved["status"] = {"phase": "Running", "podIP": "10.244.2.51"}
    apply_deltas(models, eng.upsert(moved))
    assert models == models_of(eng)
    assert IP4 not in models["node-1"].ingress and IP6 not in models["node-1"].egress
    _denies_all(models["node-2"], "10.244.2.51")


def test_unreadable_addresses_are_reported_as_unfiltered() -> None:
    cases = {
        "bad-ip": (_bad(status={"phase": "Running", "podIP": "010.1.1.1"}), "its addresses cannot be read"),
        "bad-status": (_bad(status="Running"), "its status (which holds its addresses) cannot be read"),
        "bad-spec": (_bad(spec=[1]), "its spec (which holds its node) cannot be read"),
        "no-node": (_bad(spec={"containers": [{"ports": [{"containerPort": "x"}]}]}), "it has no node yet"),
        "host": (_bad(spec={"nodeName": "node-1", "hostNetwork": True, "containers": "x"}), "hostNetwork"),
        "host-junk": (_bad(spec={"nodeName": "node-1", "hostNetwork": "yes"}), "spec.hostNetwork cannot be read"),
    }
    eng = _engine()
    before = models_of(eng)
    for name, (obj, why) in cases.items():
        obj = copy.deepcopy(obj)
        obj["metadata"]["name"] = name
        assert eng.upsert(obj) == {}, f"{name}: nothing can be dispatched"
        assert eng.isolated("canary", name) is None
        (rej,) = [r for r in eng.rejections() if r.object == f"Pod canary/{name}"]
        assert "not enforced: its traffic cannot be filtered because " in rej.message, rej
        assert why in rej.message, rej
    assert models_of(eng) == before


def test_newer_refused_pod_holding_an_address_takes_it_and_gives_it_back() -> None:
    # An address reused: the newer pod holds it (weave#2632), refused or not.
    old = copy.deepcopy(CANARY[5])  # the client, 10.244.2.20 on node-2, created ""
    eng = _engine()
    models = models_of(eng)
    thief = _bad()
    thief["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
    thief["spec"]["nodeName"] = "node-2"
    thief["status"] = {"phase": "Running", "podIP": CLIENT_IP}
    apply_deltas(models, eng.upsert(thief))
    assert models == models_of(eng)
    _denies_all(models["node-2"], CLIENT_IP)
    assert allowed(canary_view(eng), "node-1", "10.244.1.10") == [], "the address is no peer while refused"
    apply_deltas(models, eng.delete("Pod", "canary", "bad"))
    assert models == models_of(eng)
    assert eng.pod_by_ip(CLIENT_IP) == f"canary/{old['metadata']['name']}"
    _reference_without(eng)


def test_explain_says_the_pod_is_isolated_because_refused() -> None:
    eng = _engine(_bad())
    for src, dst in (("canary/client", KEY), (KEY, "canary/web-1"), (CLIENT_IP, IP4)):
        ex = explain(eng, src, dst, 80)
        assert not ex.allowed
        text = ex.text()
        assert (
            "isolated: the brain refused the pod (spec.containers[0].ports[0].containerPort: must be a port "
            "number 1-65535, got str 'eighty'), so all its traffic is denied"
        ) in text, text
        assert any("fix canary/bad's spec.containers[0].ports[0].containerPort" in h for h in ex.hints), ex.hints
