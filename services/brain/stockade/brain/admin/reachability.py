"""Reachability: which pods may open connections to which, read from the compiled node models.

The verdict for a pair comes from evaluating the per-node rule models the engine produced
(`stockade.model.evaluate.decide`), the same data an agent would load into the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo
from stockade.manifests import assign_addresses, build_cluster, node_names, read_documents
from stockade.model import Direction, NodeModel, Protocol
from stockade.model.evaluate import decide


@dataclass(frozen=True)
class Probe:
    src: str
    dst: str
    port: int
    protocol: Protocol
    allowed: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol.value,
            "allowed": self.allowed,
        }


def compile_manifests(paths: Sequence[str], nodes: int = 3) -> Engine:
    cluster = build_cluster(read_documents(paths))
    assign_addresses(cluster.pods, node_names(nodes))
    engine = Engine()
    engine.load(cluster.namespaces, cluster.pods, cluster.policies)
    return engine


def connection_allowed(
    engine: Engine, models: dict[str, NodeModel], src: PodInfo, dst: PodInfo, protocol: Protocol, port: int
) -> bool:
    """A new connection from ``src`` to ``dst``, as the compiled models decide it."""
    if src.key == dst.key:
        return True  # self-traffic is never filtered
    assert src.ip and dst.ip and src.node and dst.node
    out = decide(models[src.node], Direction.EGRESS, src.ip, dst.ip, protocol, port)
    if not out.allowed:
        return False
    return decide(models[dst.node], Direction.INGRESS, dst.ip, src.ip, protocol, port).allowed


def reach(
    engine: Engine,
    ports: Iterable[int] | None = None,
    protocols: Iterable[Protocol] | None = None,
) -> list[Probe]:
    models = {n: engine.model(n) for n in engine.nodes()}  # every node hosting an endpoint pod
    pods = [p for p in engine.pods() if engine.is_endpoint(p.namespace, p.name) and p.node]
    protos = list(protocols) if protocols else None
    port_list = list(ports) if ports else None
    results = []
    for dst in pods:
        if port_list is not None:
            targets = [(port, proto) for port in port_list for proto in (protos or [Protocol.TCP])]
        else:
            targets = [(port, proto) for port, proto in dst.ports if protos is None or proto in protos]
        for port, proto in targets:
            for src in pods:
                results.append(
                    Probe(src.key, dst.key, port, proto, connection_allowed(engine, models, src, dst, proto, port))
                )
    return results
