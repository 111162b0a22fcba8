"""`stockade reach` and a pod's own node: v1 NetworkPolicy does not filter a pod's traffic to the
node it runs on (host-network pods there), the ClusterNetworkPolicy tiers do, and the node's
traffic to its pods is never filtered. The class shortcut, its JSON and the pair-by-pair
judgement agree on it."""

from __future__ import annotations

import io
import json
from typing import Any

from engine.kube import namespace, node, pod, policy  # type: ignore[import-not-found]

from stockade.brain.admin.reachability import reach
from stockade.brain.engine import Engine
from stockade.cli.commands.reach import write_json
from stockade.cli.reach_classes import Classes
from stockade.model import Protocol

Obj = dict[str, Any]
WEB = [("web", "TCP", 80)]
NODE_IPS = {"node-1": "192.168.0.1", "node-2": "192.168.0.2"}
NO_EGRESS = policy("a", "no-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
NO_INGRESS = policy("a", "no-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
NO_NODES = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "no-nodes"},
    "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}, "egress": [
        {"action": "Deny", "to": [{"nodes": {}}]}]},
}  # fmt: skip


def _node(name: str) -> Obj:
    obj = node(name)
    obj["status"] = {"addresses": [{"type": "InternalIP", "address": NODE_IPS[name]}]}
    return obj


def engine(*policies: Obj, cnps: tuple[Obj, ...] = ()) -> Engine:
    pods = [
        pod("a", "c1", {"app": "web"}, "10.0.1.11", "node-1", WEB),
        pod("a", "c2", {"app": "web"}, "10.0.1.12", "node-1", WEB),  # same class as c1
        pod("a", "d1", {"app": "web"}, "10.0.2.11", "node-2", WEB),  # same class, other node
        pod("b", "hn1", {"app": "agent"}, NODE_IPS["node-1"], "node-1", WEB, host_network=True),
        pod("b", "hn2", {"app": "agent"}, NODE_IPS["node-2"], "node-2", WEB, host_network=True),
    ]
    eng = Engine()
    eng.load(
        [namespace("a", {}), namespace("b", {})],
        pods,
        list(policies),
        nodes=[_node(n) for n in NODE_IPS],
        cluster_policies=list(cnps),
    )
    return eng


def verdicts(eng: Engine) -> dict[tuple[str, str], bool]:
    """Classes' probes, checked against the pairs and the JSON, by (from, to)."""
    probes = Classes(eng).probes([80], [Protocol.TCP])
    assert probes == reach(eng, [80], [Protocol.TCP], host_network=True)
    out = io.BytesIO()
    write_json(Classes(eng), [80], [Protocol.TCP], [], [], out)
    want = {"results": [p.as_json() for p in probes], "warnings": [], "rejected": []}
    assert out.getvalue().decode() == json.dumps(want, indent=2) + "\n"
    return {(p.src, p.dst): p.allowed for p in probes}


def test_an_egress_isolated_pod_reaches_its_own_node_only() -> None:
    v = verdicts(engine(NO_EGRESS))
    assert v["a/c1", "b/hn1"] and v["a/c2", "b/hn1"] and v["a/d1", "b/hn2"]  # their own node
    assert not v["a/c1", "b/hn2"] and not v["a/d1", "b/hn1"]  # another node: the NP's rules
    assert not v["a/c1", "a/c2"]


def test_an_admin_deny_of_the_nodes_holds_on_the_own_node() -> None:
    v = verdicts(engine(NO_EGRESS, cnps=(NO_NODES,)))
    assert not v["a/c1", "b/hn1"] and not v["a/c1", "b/hn2"]


def test_the_nodes_traffic_to_its_pods_is_not_filtered() -> None:
    v = verdicts(engine(NO_INGRESS))
    assert v["b/hn1", "a/c1"] and v["b/hn1", "a/c2"] and v["b/hn2", "a/d1"]
    assert not v["b/hn2", "a/c1"] and not v["b/hn1", "a/d1"]


def test_dual_stack_pairs_are_judged_per_family_alike() -> None:
    """Several probes per pair (the JSON writer's slow path) and a host-network pod of one family."""
    ips = {"node-1": ["192.168.0.1", "fd00::1"], "node-2": ["192.168.0.2"]}
    nodes = []
    for name, addrs in ips.items():
        n = node(name)
        n["status"] = {"addresses": [{"type": "InternalIP", "address": a} for a in addrs]}
        nodes.append(n)
    pods = [
        pod("a", "c1", {}, ["10.0.1.11", "fd01::11"], "node-1", WEB),
        pod("a", "c2", {}, "10.0.1.12", "node-1", WEB),
        pod("a", "d1", {}, ["10.0.2.11", "fd02::11"], "node-2", WEB),
        pod("b", "hn1", {}, ips["node-1"], "node-1", WEB, host_network=True),
        pod("b", "hn2", {}, ips["node-2"], "node-2", WEB, host_network=True),
    ]
    eng = Engine()
    eng.load([namespace("a", {}), namespace("b", {})], pods, [NO_EGRESS], nodes=nodes)
    verdicts(eng)
    by_family = {(p.src, p.dst, p.family): p.allowed for p in reach(eng, [80], [Protocol.TCP], host_network=True)}
    assert by_family["a/c1", "b/hn1", "ipv4"] and by_family["a/c1", "b/hn1", "ipv6"]
    assert not by_family["a/d1", "b/hn1", "ipv6"] and by_family["a/d1", "b/hn2", "ipv4"]
