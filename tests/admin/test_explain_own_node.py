"""`explain` and a pod's own node: no NetworkPolicy filters a pod's traffic to its node (only the
ClusterNetworkPolicy tiers do), and the node's traffic to its pods is never filtered."""

from __future__ import annotations

from typing import Any

from engine.kube import namespace, node, pod, policy  # type: ignore[import-not-found]

from stockade.brain.admin.explain import OWN_NODE_WORDS, _side, _side_text, explain
from stockade.brain.engine import Engine
from stockade.model import Direction, Protocol

Obj = dict[str, Any]
NO_EGRESS = policy("a", "no-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
NO_INGRESS = policy("a", "no-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
NO_NODES = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2",
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "no-nodes"},
    "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}}, "egress": [
        {"name": "nodes", "action": "Deny", "to": [{"nodes": {}}]}]},
}  # fmt: skip


def engine(*policies: Obj, cnps: tuple[Obj, ...] = ()) -> Engine:
    nodes = []
    for name, ip in (("node-1", "192.168.0.1"), ("node-2", "192.168.0.2")):
        n = node(name)
        n["status"] = {"addresses": [{"type": "InternalIP", "address": ip}]}
        nodes.append(n)
    eng = Engine()
    eng.load(
        [namespace("a", {})],
        [pod("a", "c1", {"app": "web"}, "10.0.1.11", "node-1", [("web", "TCP", 80)])],
        list(policies),
        nodes=nodes,
        cluster_policies=list(cnps),
    )
    return eng


def egress(eng: Engine, dst_ip: str) -> tuple[bool, str, dict[str, Any]]:
    c1 = eng.endpoint("a", "c1")
    assert c1 is not None
    side = _side(eng, Direction.EGRESS, c1, "10.0.1.11", dst_ip, Protocol.TCP, 22)
    return side.allowed, _side_text(side, "a/c1", dst_ip, Protocol.TCP, 22), side.as_json()


def test_egress_to_the_own_node_is_not_the_network_policys_to_filter() -> None:
    allowed, text, doc = egress(engine(NO_EGRESS), "192.168.0.1")
    assert allowed and OWN_NODE_WORDS in text and doc["ownNode"] is True and doc["isolated"] is True
    allowed, text, doc = egress(engine(NO_EGRESS), "192.168.0.2")  # another node's address
    assert not allowed and "ownNode" not in doc and "no egress rule of those allows" in text


def test_an_admin_deny_stops_egress_to_the_own_node() -> None:
    allowed, text, doc = egress(engine(NO_EGRESS, cnps=(NO_NODES,)), "192.168.0.1")
    assert not allowed and doc["ownNode"] is True and doc["tier"] == "Admin"
    assert "blocked at the Admin tier by ClusterNetworkPolicy no-nodes (priority 1) rule 'nodes'" in text


def test_the_nodes_traffic_to_its_pod_is_never_filtered() -> None:
    ex = explain(engine(NO_INGRESS), "192.168.0.1", "a/c1", 80)
    assert ex.allowed and ex.as_json()["sides"][0]["ownNode"] is True
    assert "from its own node, which is never filtered" in ex.text()
    other = explain(engine(NO_INGRESS), "192.168.0.2", "a/c1", 80)
    assert not other.allowed and "ownNode" not in other.as_json()["sides"][0]
