"""Hypothesis strategies for ClusterNetworkPolicies over the small clusters of `strategies`.

Same tiny vocabularies, so subjects and peers often match; priorities come from a short list,
so equal priorities (ordered by name) are common; nodes carry labels and one address per family
(host-network pods take their node's addresses, as in a cluster), and networks cover pods',
nodes' and outside addresses.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from .kube import node, pod
from .strategies import (
    CIDRS,
    NAMESPACES,
    NODES,
    PORT_NAMES,
    PORT_NUMBERS,
    VALUES,
    cluster,
    ns_selector_st,
    selector,
)

Obj = dict[str, Any]
NODE_LABEL_KEYS = ("zone", "role")
NODE_IPS = {n: (f"10.9.2.{i + 1}", f"fd09:0:0:2::{i + 1}") for i, n in enumerate(NODES)}
NETWORKS = (*CIDRS, "10.9.2.0/24", "10.9.2.1/32", "fd09:0:0:2::/64")
PRIORITIES = (0, 5, 5, 10, 1000)
ACTIONS = ("Accept", "Deny", "Pass")
CNP_PROTOCOLS = ("tcp", "udp", "sctp")


def labelled_node(name: str, labels: dict[str, str]) -> Obj:
    obj = node(name)
    obj["metadata"]["labels"] = {"kubernetes.io/hostname": name, **labels}
    v4, v6 = NODE_IPS[name]
    obj["status"] = {"addresses": [{"type": "InternalIP", "address": v4}, {"type": "InternalIP", "address": v6}]}
    return obj


node_selector_st = selector(NODE_LABEL_KEYS, VALUES)


@st.composite
def selection(draw: st.DrawFn) -> Obj:
    """A subject or a namespaces/pods peer."""
    if draw(st.booleans()):
        return {"namespaces": draw(ns_selector_st)}
    pods: Obj = {"podSelector": draw(selector())}
    if draw(st.booleans()):
        pods["namespaceSelector"] = draw(ns_selector_st)
    return {"pods": pods}


@st.composite
def cnp_peer(draw: st.DrawFn, direction: str) -> Obj:
    kinds = ["selection"] * 3 + (["nodes", "networks"] if direction == "egress" else [])
    kind = draw(st.sampled_from([*kinds, "unknown"] if draw(st.integers(0, 15)) == 0 else kinds))
    if kind == "nodes":
        return {"nodes": draw(node_selector_st)}
    if kind == "networks":
        return {"networks": draw(st.lists(st.sampled_from(NETWORKS), min_size=1, max_size=3, unique=True))}
    if kind == "unknown":
        return {"everything": {}}  # a newer CRD's peer: fails closed
    out: Obj = draw(selection())
    return out


@st.composite
def cnp_protocol(draw: st.DrawFn, named: bool) -> Obj:
    if named and draw(st.integers(0, 3)) == 0:
        return {"destinationNamedPort": draw(st.sampled_from((*PORT_NAMES, "nope")))}
    proto = draw(st.sampled_from(CNP_PROTOCOLS))
    start = draw(st.sampled_from(PORT_NUMBERS))
    if draw(st.booleans()):
        return {proto: {"destinationPort": {"number": start}}}
    return {proto: {"destinationPort": {"range": {"start": start, "end": start + draw(st.integers(1, 30))}}}}


@st.composite
def cnp_rule(draw: st.DrawFn, direction: str, index: int) -> Obj:
    key = "from" if direction == "ingress" else "to"
    peers = draw(st.lists(cnp_peer(direction), min_size=1, max_size=2))
    out: Obj = {"name": f"{direction}-{index}", "action": draw(st.sampled_from(ACTIONS)), key: peers}
    if draw(st.booleans()):
        named = not any("nodes" in p or "networks" in p for p in peers)  # the CEL rule
        out["protocols"] = draw(st.lists(cnp_protocol(named), min_size=1, max_size=2))
    return out


@st.composite
def cluster_network_policy(draw: st.DrawFn, name: str, tier: str | None = None) -> Obj:
    spec: Obj = {
        "tier": tier or draw(st.sampled_from(("Admin", "Baseline"))),
        "priority": draw(st.sampled_from(PRIORITIES)),
        "subject": draw(selection()),
    }
    for direction in ("ingress", "egress"):
        n = draw(st.integers(0, 3))
        if n:
            spec[direction] = [draw(cnp_rule(direction, i)) for i in range(n)]
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


@st.composite
def tiered_cluster(draw: st.DrawFn, max_pods: int = 6, max_policies: int = 3, max_cnps: int = 4) -> dict[str, Any]:
    """`strategies.cluster` with labelled nodes (host-network pods at their node's addresses), often
    a node agent (a host-network pod: a pod of its node reaching it reaches its own node), and CNPs."""
    c: dict[str, Any] = draw(cluster(max_pods=max_pods, max_policies=max_policies))
    node_labels = st.dictionaries(st.sampled_from(NODE_LABEL_KEYS), st.sampled_from(VALUES), max_size=2)
    c["nodes"] = [labelled_node(n, draw(node_labels)) for n in NODES]
    for p in c["pods"]:
        if p["spec"].get("hostNetwork") and p["spec"].get("nodeName"):
            ips = list(NODE_IPS[p["spec"]["nodeName"]])
            p["status"]["podIP"] = ips[0]
            p["status"]["podIPs"] = [{"ip": a} for a in ips]
    if draw(st.booleans()):  # a node agent: a host-network pod beside the pods of its node
        where = draw(st.sampled_from(NODES))
        ns = draw(st.sampled_from(NAMESPACES))
        c["pods"].append(
            pod(ns, "node-agent", {}, list(NODE_IPS[where]), where, [("http", "TCP", 80)], host_network=True)
        )
    n = draw(st.integers(0, max_cnps))
    c["cnps"] = [draw(cluster_network_policy(f"cnp{i}")) for i in range(n)]
    return c
