"""Services, EndpointSlices and Nodes as the proxy needs them: parsed once, checked, immutable.

Parsing is strict about what the rules are made from (addresses, ports, protocols) and names the
field it rejects, so a bad object is skipped with a clear message and never takes the others
down; what kube-proxy ignores (annotations, appProtocol, ...) is ignored here too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]
PROTOCOLS = ("TCP", "UDP", "SCTP")
FAMILIES = {"IPv4": 4, "IPv6": 6}


class ObjectError(ValueError):
    """An object the proxy cannot program; the message names the object and the field."""


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str  # TCP | UDP | SCTP
    port: int
    node_port: int | None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]  # one per family served; empty for headless and ExternalName
    ports: tuple[ServicePort, ...]
    external_local: bool  # externalTrafficPolicy: Local
    internal_local: bool  # internalTrafficPolicy: Local

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    ready: bool
    node: str | None


@dataclass(frozen=True)
class SlicePort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class Slice:
    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label
    family: int  # 4 or 6
    ports: tuple[SlicePort, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Node:
    name: str
    ips: tuple[str, ...]  # InternalIPs, both families
    pod_cidrs: tuple[str, ...]


def _meta(obj: Obj, kind: str) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(f"{kind} without metadata.name")
    return str(meta.get("namespace") or "default"), name


def _port(value: Any, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ObjectError(f"{where}: {value!r} is not a port number ({low}-65535)")
    return value


def _protocol(value: Any, where: str) -> str:
    proto = "TCP" if value is None else value
    if proto not in PROTOCOLS:
        raise ObjectError(f"{where}: protocol {value!r} is not one of {', '.join(PROTOCOLS)}")
    return str(proto)


def _ip(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ObjectError(f"{where}: {value!r} is not an IP address") from None


def family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def parse_service(obj: Obj) -> Service:
    ns, name = _meta(obj, "Service")
    where = f"Service {ns}/{name}"
    spec = obj.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    ips: list[str] = []
    if kind != "ExternalName":
        raw = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        for i, ip in enumerate(raw):
            if ip in ("None", ""):  # headless: DNS only, nothing to proxy
                continue
            ips.append(_ip(ip, f"{where}: spec.clusterIPs[{i}]"))
    if len({family(ip) for ip in ips}) != len(ips):
        raise ObjectError(f"{where}: spec.clusterIPs {ips} has two addresses of one family")
    ports = []
    for i, p in enumerate(spec.get("ports") or []):
        at = f"{where}: spec.ports[{i}]"
        node_port = p.get("nodePort")
        ports.append(
            ServicePort(
                name=str(p.get("name") or ""),
                protocol=_protocol(p.get("protocol"), at),
                port=_port(p.get("port"), f"{at}.port"),
                node_port=_port(node_port, f"{at}.nodePort")
                if node_port and kind in ("NodePort", "LoadBalancer")
                else None,
            )
        )
    return Service(
        namespace=ns,
        name=name,
        cluster_ips=tuple(ips),
        ports=tuple(ports),
        external_local=spec.get("externalTrafficPolicy") == "Local",
        internal_local=spec.get("internalTrafficPolicy") == "Local",
    )


def parse_slice(obj: Obj) -> Slice | None:
    """The slice, or None for one the proxy does not use (FQDN, or no owning Service)."""
    ns, name = _meta(obj, "EndpointSlice")
    where = f"EndpointSlice {ns}/{name}"
    service = ((obj.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name")
    fam = FAMILIES.get(obj.get("addressType") or "")
    if not service or fam is None:
        return None
    ports = []
    for i, p in enumerate(obj.get("ports") or []):
        if p.get("port") is None:  # "all ports": only for selector-less slices; kube-proxy skips them
            continue
        at = f"{where}: ports[{i}]"
        ports.append(
            SlicePort(str(p.get("name") or ""), _protocol(p.get("protocol"), at), _port(p["port"], f"{at}.port"))
        )
    endpoints = []
    for i, ep in enumerate(obj.get("endpoints") or []):
        addresses = ep.get("addresses") or []
        if not addresses:
            raise ObjectError(f"{where}: endpoints[{i}].addresses is empty")
        ip = _ip(addresses[0], f"{where}: endpoints[{i}].addresses[0]")  # kube-proxy uses the first
        if family(ip) != fam:
            raise ObjectError(f"{where}: endpoints[{i}].addresses[0] {ip} is not of addressType {obj['addressType']}")
        ready = (ep.get("conditions") or {}).get("ready")
        endpoints.append(Endpoint(ip, ready is not False, ep.get("nodeName")))  # unset means ready
    return Slice(ns, name, str(service), fam, tuple(ports), tuple(endpoints))


def parse_node(obj: Obj) -> Node:
    _, name = _meta(obj, "Node")
    status = obj.get("status") or {}
    ips = [
        _ip(a.get("address"), f"Node {name}: status.addresses")
        for a in status.get("addresses") or []
        if a.get("type") == "InternalIP"
    ]
    spec = obj.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    try:
        nets = tuple(str(ipaddress.ip_network(c)) for c in cidrs)
    except ValueError as e:
        raise ObjectError(f"Node {name}: spec.podCIDRs: {e}") from None
    return Node(name, tuple(ips), nets)
