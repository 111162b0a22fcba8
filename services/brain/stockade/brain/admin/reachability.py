"""Reachability: which pods may open connections to which, read from the compiled node models.

The verdict for a pair comes from evaluating the per-node rule models the engine produced
(`stockade.model.evaluate.decide`), the same data an agent would load into the kernel. A
dual-stack pair is judged once per family (its IPv4 addresses, then its IPv6 ones): an ipBlock
of one family can make the two differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo
from stockade.manifests import Cluster, assign_addresses, build_cluster, complete_nodes, node_names, read_documents
from stockade.model import Direction, NodeModel, Protocol
from stockade.model.evaluate import FAMILY_NAMES, decide


@dataclass(frozen=True)
class Probe:
    src: str
    dst: str
    port: int
    protocol: Protocol
    allowed: bool
    family: str = "ipv4"  # the address family of the pair: ipv4 or ipv6
    host_network: bool = False  # either end is a host-network pod (at its node's address)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol.value,
            "family": self.family,
            "allowed": self.allowed,
        }
        if self.host_network:
            out["hostNetwork"] = True
        return out


def compile_manifests(paths: Sequence[str], nodes: int = 3, ip_family: str = "ipv4") -> Engine:
    """Manifests compiled as a cluster of ``nodes`` nodes; pods without addresses get them from
    their node's range in ``ip_family`` (ipv4, ipv6 or dual)."""
    cluster = build_cluster(read_documents(paths))
    assign_addresses(cluster.pods, node_names(nodes), ip_family)
    return load_cluster(cluster, nodes, ip_family)


def load_cluster(cluster: Cluster, nodes: int, ip_family: str) -> Engine:
    """An engine holding ``cluster`` (addresses assigned), with Node objects for the cluster's own
    nodes and ``nodes`` more (`complete_nodes`): what `reach`, `lint -f` and `explain -f` judge."""
    node_objects = complete_nodes(cluster.nodes, node_names(nodes), cluster.pods, ip_family)
    engine = Engine()
    engine.load(
        cluster.namespaces,
        cluster.pods,
        cluster.policies,
        nodes=node_objects,
        services=cluster.services,
        cluster_policies=cluster.cluster_policies,
    )
    return engine


def _version(ip: str) -> int:
    """A pod address's IP version: the engine keeps them canonical, so a colon says IPv6 (far
    cheaper than parsing, which `reach` would do for every pair)."""
    return 6 if ":" in ip else 4


def shared_versions(src: PodInfo, dst: PodInfo) -> list[int]:
    """The IP versions both pods have an address of, in the destination's order."""
    mine = {_version(ip) for ip in src.ips}
    return [v for v in (_version(ip) for ip in dst.ips) if v in mine]


def connection_allowed(
    engine: Engine,
    models: dict[str, NodeModel],
    src: PodInfo,
    dst: PodInfo,
    protocol: Protocol,
    port: int,
    version: int | None = None,
) -> bool:
    """A new connection from ``src`` to ``dst`` over IP ``version`` (None: the first family both
    have), as the compiled models decide it. ``src`` and ``dst`` are endpoints (`Engine.endpoint`)
    or host-network pods (at their node's addresses: never dispatched, so never filtered there).
    A host-network end on the other end's node is that pod's own node (`own_node`)."""
    if src.key == dst.key:
        return True  # self-traffic is never filtered
    if version is None:
        version = shared_versions(src, dst)[0]
    src_ip, dst_ip = src.address(version), dst.address(version)
    assert src_ip and dst_ip and src.node and dst.node, f"{src.key} -> {dst.key}: no IPv{version} pair"
    none = NodeModel("")
    own = own_node(src, dst)
    out = decide(models.get(src.node, none), Direction.EGRESS, src_ip, dst_ip, protocol, port, own and dst.host_network)
    if not out.allowed:
        return False
    into = decide(
        models.get(dst.node, none), Direction.INGRESS, dst_ip, src_ip, protocol, port, own and src.host_network
    )
    return into.allowed


def own_node(src: PodInfo, dst: PodInfo) -> bool:
    """Whether one end is a host-network pod on the other's node: an address of that node."""
    return src.node == dst.node and (src.host_network or dst.host_network)


def reach_pods(engine: Engine, host_network: bool = True) -> list[PodInfo]:
    """The pods `reach` judges, by key: endpoints, and host-network pods (``host_network``)."""
    pods = [ep for p in engine.pods() if (ep := engine.endpoint(p.namespace, p.name)) is not None and ep.node]
    return sorted([*pods, *(engine.host_network_pods() if host_network else ())], key=lambda p: p.key)


def connections(engine: Engine) -> int:
    """How many connections `reach(engine)` judges (one per pair, declared port and shared
    family, a pod with itself included), counted without judging them."""
    pods = reach_pods(engine, host_network=False)
    per_version = {4: 0, 6: 0}
    for p in pods:
        for v in {_version(ip) for ip in p.ips}:
            per_version[v] += 1
    return sum(len(d.ports) * sum(per_version[_version(ip)] for ip in d.ips) for d in pods)


def reach(
    engine: Engine,
    ports: Iterable[int] | None = None,
    protocols: Iterable[Protocol] | None = None,
    families: Iterable[int] | None = None,
    host_network: bool = False,
    touching: tuple[AbstractSet[str], AbstractSet[str]] | None = None,
) -> list[Probe]:
    """Every endpoint pair on the given (or declared) ports, once per IP family both have
    (``families``: only those versions, 4 and/or 6); ``host_network``: host-network pods too, as
    `stockade reach` lists them (dry-run compares endpoints only); ``touching``: (ingress, egress)
    pod keys, only the pairs whose destination is among the first or source among the second."""
    models = {n: engine.model(n) for n in engine.nodes()}  # every node hosting an endpoint pod
    pods = reach_pods(engine, host_network)
    protos = list(protocols) if protocols else None
    port_list = list(ports) if ports else None
    wanted = set(families) if families else {4, 6}
    # A destination outside touching's first is judged from the sources in its second only.
    into, out_of = touching if touching is not None else (set(), set())
    touched = pods if touching is None else [p for p in pods if p.key in out_of]
    results = []
    for dst in pods:
        if port_list is not None:
            targets = [(port, proto) for port in port_list for proto in (protos or [Protocol.TCP])]
        else:
            targets = [(port, proto) for port, proto in dst.ports if protos is None or proto in protos]
        sources = pods if touching is None or dst.key in into else touched
        for port, proto in targets:
            for src in sources:
                for v in shared_versions(src, dst):
                    if v in wanted:
                        ok = connection_allowed(engine, models, src, dst, proto, port, v)
                        host = src.host_network or dst.host_network
                        results.append(Probe(src.key, dst.key, port, proto, ok, FAMILY_NAMES[v], host))
    return results
