"""What `stockade lab probe --via-service` tries: each Service's ClusterIP:port from the pods, and
its NodePort on every node's address from the external host (pure: objects and plan in, cells out)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stockade.lab import probe
from stockade.lab.kubeproxy import objects
from stockade.lab.topology import Plan

CLUSTER_IP, NODE_PORT = "ClusterIP", "NodePort"


@dataclass(frozen=True)
class ServiceResult(probe.Result):
    """A probe result that says through which Service (and which of its addresses) it went."""

    service: str = ""  # ns/name
    via: str = CLUSTER_IP  # ClusterIP | NodePort
    address: str = ""  # the ClusterIP, or the node's address for a NodePort
    service_port: int = 0  # the Service's port (what a NodePort leads to)
    node: str | None = None  # for a NodePort: whose


@dataclass(frozen=True)
class Cell:
    source: probe.Source
    target: probe.Target
    protocol: str
    port: int
    service: str
    via: str
    service_port: int
    node: str | None = None

    def result(self, r: probe.Result) -> ServiceResult:
        return ServiceResult(
            r.src, r.dst, r.port, r.protocol, r.connected, r.family,
            self.service, self.via, self.target.ip, self.service_port, self.node,
        )  # fmt: skip


def _family(ip: str) -> str:
    return "ipv6" if objects.family(ip) == 6 else "ipv4"


def cells(
    services: Iterable[dict[str, Any]],
    plan: Plan,
    sources: Sequence[probe.Source],
    families: Sequence[str] | None = None,
    protocols: Sequence[str] | None = None,
    ports: Sequence[int] | None = None,
    targets: Sequence[str] | None = None,
) -> tuple[list[Cell], list[str]]:
    """The cells to probe, and the Services left out (with why). Pods probe ClusterIPs; the
    external host probes NodePorts on every node's addresses, as a client outside would."""
    out: list[Cell] = []
    skipped: list[str] = []
    pods = [s for s in sources if s.label != "external"]
    external = [s for s in sources if s.label == "external"]
    for obj in services:
        try:
            svc = objects.parse_service(obj)
        except objects.ObjectError as e:
            skipped.append(str(e))
            continue
        if targets and not any(t in (svc.key, svc.namespace) for t in targets):
            continue
        if not svc.cluster_ips:
            skipped.append(f"{svc.key}: no ClusterIP (headless or ExternalName)")
            continue
        for sp in svc.ports:
            if protocols and sp.protocol not in protocols:
                continue
            if ports and sp.port not in ports and sp.node_port not in ports:
                continue
            for cip in svc.cluster_ips:
                if families and _family(cip) not in families:
                    continue
                tgt = probe.Target(f"svc/{svc.key}", cip, ((sp.protocol, sp.port),))
                out += [Cell(s, tgt, sp.protocol, sp.port, svc.key, CLUSTER_IP, sp.port) for s in pods]
                if sp.node_port is None:
                    continue
                for node in plan.nodes:
                    for ip in node.ips:
                        if _family(ip) != _family(cip):
                            continue
                        np = probe.Target(f"svc/{svc.key}@{node.name}", ip, ((sp.protocol, sp.node_port),))
                        out += [
                            Cell(s, np, sp.protocol, sp.node_port, svc.key, NODE_PORT, sp.port, node.name)
                            for s in external
                        ]
    return out, skipped


async def probe_cells(todo: list[Cell], timeout: float = probe.TIMEOUT) -> list[ServiceResult]:
    results = await probe.probe_cells([(c.source, c.target, c.protocol, c.port) for c in todo], timeout)
    return [c.result(r) for c, r in zip(todo, results, strict=True)]
