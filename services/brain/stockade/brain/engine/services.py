"""Services as lint sees them: a selector and ports (port → targetPort). They never change the
compiled rules (policies are enforced after kube-proxy's DNAT, on the backend pod and its
container port); lint uses them to catch a policy that names a Service port instead."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stockade.model import Protocol

_PROTOCOLS = {p.value: p for p in Protocol}


@dataclass(frozen=True)
class ServicePortInfo:
    name: str
    port: int
    protocol: Protocol
    target: int | str  # a container port number or name


@dataclass(frozen=True)
class ServiceInfo:
    namespace: str
    name: str
    selector: Mapping[str, str]  # empty: no selector (its endpoints are managed by hand)
    ports: tuple[ServicePortInfo, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo:
    """Never raises: ports that cannot be read are left out (the API server validates them)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    assert isinstance(meta, Mapping) and isinstance(spec, Mapping)
    raw_sel = spec.get("selector")
    selector = {str(k): str(v) for k, v in raw_sel.items()} if isinstance(raw_sel, Mapping) else {}
    ports = []
    raw_ports = spec.get("ports")
    for p in raw_ports if isinstance(raw_ports, list) else []:
        if not isinstance(p, Mapping):
            continue
        proto = _PROTOCOLS.get(str(p.get("protocol") or "TCP"))
        port = p.get("port")
        if proto is None or isinstance(port, bool) or not isinstance(port, int):
            continue
        target = p.get("targetPort")
        if isinstance(target, bool) or not isinstance(target, (int, str)) or target in (0, ""):
            target = port
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        ports.append(ServicePortInfo(str(p.get("name") or ""), port, proto, target))
    return ServiceInfo(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        selector=selector,
        ports=tuple(ports),
    )
