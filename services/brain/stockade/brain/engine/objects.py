"""Pods and namespaces as the engine sees them: only the fields that policy depends on."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from stockade.brain.engine.errors import PolicyError
from stockade.model import Protocol

NAME_LABEL = "kubernetes.io/metadata.name"
BETA_ANNOTATION = "net.beta.kubernetes.io/network-policy"
FINISHED_PHASES = ("Succeeded", "Failed")
_PROTOCOLS = {p.value: p for p in Protocol}


@dataclass(slots=True)  # not frozen: frozen dataclasses are slow to build, and there are many pods
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str | None  # the primary address (the first of ``ips``); None without one
    node: str | None
    # (port name, protocol) -> container port; and every declared (port, protocol)
    named_ports: Mapping[tuple[str, Protocol], int] = field(default_factory=dict)
    ports: tuple[tuple[int, Protocol], ...] = ()
    candidate: bool = False  # has an IP, not host network, not finished
    created: str = ""
    elem: str = ""  # the primary IP as a set element (CIDR), "" without an IP
    # Every address, canonical, first family first (at most one per family), and as set elements.
    ips: tuple[str, ...] = ()
    elems: tuple[str, ...] = ()
    problem: str = ""  # "field: message": why the pod (or its addresses) was refused ("" if not)
    # Refused by the shape checks, yet its addresses and node can be read: its traffic is
    # dispatched to deny-all chains (fails closed) and it is never a peer (see `refused_pod`).
    deny_all: bool = False
    host_network: bool = False  # spec.hostNetwork: its addresses are its node's; never an endpoint

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def owning(self, ips: tuple[str, ...]) -> PodInfo:
        """This pod restricted to ``ips`` (a subset of its own, in order): the addresses it owns."""
        if ips == self.ips:
            return self
        elems = tuple(e for ip, e in zip(self.ips, self.elems, strict=True) if ip in ips)
        return replace(self, ip=ips[0] if ips else None, elem=elems[0] if elems else "", ips=ips, elems=elems)

    def address(self, version: int) -> str | None:
        """The pod's address of one IP version (4 or 6), if it has one."""
        for ip in self.ips:
            if (":" in ip) == (version == 6):
                return ip
        return None

    def port_signature(self) -> tuple[tuple[str, str, int], ...]:
        return tuple(sorted((n, p.value, v) for (n, p), v in self.named_ports.items()))


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    return meta if isinstance(meta, dict) else {}


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    raw = meta.get("labels") or {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for k, v in raw.items():
        out[str(k)] = ("true" if v else "false") if isinstance(v, bool) else ("" if v is None else str(v))
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    """The pod as policy sees it. Never raises: what cannot be read does not make it an endpoint."""
    meta = _meta(obj)
    spec = _mapping(obj.get("spec"))
    status = obj.get("status") or {}
    named: dict[tuple[str, Protocol], int] = {}
    ports: list[tuple[int, Protocol]] = []
    containers, inits = spec.get("containers"), spec.get("initContainers")
    for c in (containers if isinstance(containers, list) else []) + (inits if isinstance(inits, list) else []):
        declared = c.get("ports") if isinstance(c, dict) else None
        for p in declared if isinstance(declared, list) else ():
            if not isinstance(p, dict):
                continue
            proto = _PROTOCOLS.get(p.get("protocol") or "TCP")
            try:
                num = int(p.get("containerPort"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue  # a port we cannot read cannot be resolved; the API server validates these
            if proto is None:
                continue
            ports.append((num, proto))
            if p.get("name"):
                named.setdefault((str(p["name"]), proto), num)
    ips, problem = pod_addresses(status)
    phase = status.get("phase") if isinstance(status, Mapping) else None
    candidate = bool(ips) and not spec.get("hostNetwork") and phase not in FINISHED_PHASES
    elems = tuple(element(ip) for ip in ips)
    return PodInfo(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        labels=_labels(meta),
        ip=ips[0] if ips else None,
        node=str(spec.get("nodeName")) if spec.get("nodeName") else None,
        named_ports=named,
        ports=tuple(sorted(set(ports))),
        candidate=candidate,
        created=str(meta.get("creationTimestamp") or ""),
        elem=elems[0] if elems else "",
        ips=ips,
        elems=elems,
        problem=problem,
        host_network=spec.get("hostNetwork") is True,
    )


def refused_pod(obj: Mapping[str, Any], problem: str) -> tuple[PodInfo, str]:
    """A pod the shape checks refused (``problem``: "field: message"), as the engine stores it:
    no labels, ports or peer role, only what is needed to deny all its traffic, read defensively.
    Returns the pod and, when it cannot be isolated, why its traffic cannot be filtered ("" when
    it is: ``deny_all``)."""
    meta = _meta(obj)
    name, ns, created = meta.get("name"), meta.get("namespace"), meta.get("creationTimestamp")
    ips, node, why = _isolatable(obj)
    if not isinstance(name, str) or not name:
        ips, node, why = (), None, "its name cannot be read"
    pod = PodInfo(
        namespace=ns if isinstance(ns, str) and ns else "default",
        name=name if isinstance(name, str) else "",
        labels={},
        ip=ips[0] if ips else None,
        node=node,
        created=created if isinstance(created, str) else "",
        elem=element(ips[0]) if ips else "",
        ips=ips,
        elems=tuple(element(ip) for ip in ips),
        problem=problem,
        deny_all=bool(ips),
    )
    return pod, why


def _isolatable(obj: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None, str]:
    """A refused pod's addresses and node when all its traffic can be denied safely, else
    ((), None, why not)."""
    spec, status = obj.get("spec"), obj.get("status")
    if not isinstance(status, Mapping):
        return (), None, "its status (which holds its addresses) cannot be read"
    ips, bad = pod_addresses(status)
    if bad:
        return (), None, f"its addresses cannot be read ({bad})"
    if not ips:
        return (), None, "it has no address yet (it is isolated once it has one)"
    if not isinstance(spec, Mapping):
        return (), None, "its spec (which holds its node) cannot be read"
    node, host, phase = spec.get("nodeName"), spec.get("hostNetwork"), status.get("phase")
    if not isinstance(node, str) or not node:
        return (), None, "it has no node yet" if node is None else "spec.nodeName cannot be read"
    if host is True:
        return (), None, "it uses its node's network (hostNetwork), which no policy filters"
    if host not in (None, False):  # its addresses may be the node's own: denying them cuts the node off
        return (), None, "spec.hostNetwork cannot be read, so its addresses may be its node's"
    if phase in FINISHED_PHASES:
        return (), None, f"it has finished ({phase})"
    return ips, node, ""


def element(ip: str) -> str:
    """A canonical address as a set element: a /32 or /128 CIDR."""
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def canonical_ip(raw: Any, field: str) -> str:
    """``raw`` as a canonical address (``FD00:0::63`` -> ``fd00::63``); ValueError naming ``field``."""
    if not isinstance(raw, str):
        raise ValueError(f"{field}: {raw!r} is not an IP address (a string)")
    # Fast path through the C library for the usual, already canonical text (every pod, at load).
    try:
        if ":" not in raw:
            if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, raw)) == raw:
                return raw
        else:
            packed = socket.inet_pton(socket.AF_INET6, raw)
            if any(packed[:10]):  # not ::/80, where the C library and Python write addresses differently
                return socket.inet_ntop(socket.AF_INET6, packed)
    except (OSError, ValueError):
        pass  # let ipaddress say what is wrong
    try:
        addr = ipaddress.ip_address(raw)  # refuses leading zeros (010.001.000.020) and out-of-range parts
    except ValueError:
        raise ValueError(f"{field}: {raw!r} is not a valid IP address") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            raise ValueError(f"{field}: {raw!r} has a zone index; a pod IP cannot")
        if addr.ipv4_mapped is not None:
            raise ValueError(f"{field}: {raw!r} is an IPv4-mapped IPv6 address; pod IPs give IPv4 as IPv4")
    return str(addr)


def pod_addresses(status: Any) -> tuple[tuple[str, ...], str]:
    """A pod's addresses from ``status.podIPs`` (falling back to ``status.podIP``), canonical, in
    order, and the problem that made them unusable ("" if none). Invalid or contradictory
    addresses give no address at all: the pod is then not an endpoint, never half of one."""
    if not isinstance(status, Mapping):
        return (), "" if status is None else "status: must be an object"
    primary, listed = status.get("podIP"), status.get("podIPs")
    raws: list[tuple[Any, str]] = []
    if listed:
        if not isinstance(listed, list):
            return (), "status.podIPs: must be a list of {ip: ...}"
        for i, entry in enumerate(listed):
            if not isinstance(entry, Mapping):
                return (), f"status.podIPs[{i}]: must be an object with ip"
            raws.append((entry.get("ip"), f"status.podIPs[{i}].ip"))
    elif primary:
        raws.append((primary, "status.podIP"))
    else:
        return (), ""
    try:
        ips = tuple(canonical_ip(raw, where) for raw, where in raws)
        if listed and primary and canonical_ip(primary, "status.podIP") != ips[0]:
            return (), f"status.podIP: {primary} is not podIPs[0] ({ips[0]})"
    except ValueError as e:
        return (), str(e)
    if len(ips) > 2 or (len(ips) == 2 and (":" in ips[0]) == (":" in ips[1])):
        return (), f"status.podIPs: {', '.join(ips)}: at most one address per IP family"
    return ips, ""


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: Mapping[str, str]
    beta_default_deny: bool
    explicit: bool  # a Namespace object exists (else only pods name it)


def parse_namespace(obj: Mapping[str, Any]) -> tuple[NamespaceInfo, PolicyError | None]:
    """The namespace, and the problem with its beta annotation if it has a malformed one."""
    meta = _meta(obj)
    name = str(meta.get("name") or "")
    labels = _labels(meta)
    labels[NAME_LABEL] = name
    deny, error = False, None
    ann = (meta.get("annotations") or {}).get(BETA_ANNOTATION)
    if ann is not None:
        try:
            deny = beta_isolation(ann)
        except PolicyError as e:
            error = e
    return NamespaceInfo(name, labels, deny, True), error


def implicit_namespace(name: str) -> NamespaceInfo:
    return NamespaceInfo(name, {NAME_LABEL: name}, False, False)


def beta_isolation(value: Any) -> bool:
    """Whether the beta annotation's value asks for ingress DefaultDeny."""
    field = f"metadata.annotations[{BETA_ANNOTATION}]"
    try:
        doc = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as e:
        raise PolicyError(
            field,
            f'is not valid JSON ({e.msg} at char {e.pos}); expected {{"ingress":{{"isolation":"DefaultDeny"}}}}',
        ) from None
    if not isinstance(doc, dict):
        raise PolicyError(field, 'must be a JSON object like {"ingress":{"isolation":"DefaultDeny"}}')
    ingress = doc.get("ingress")
    if ingress is None:
        return False
    if not isinstance(ingress, dict):
        raise PolicyError(field, '"ingress" must be an object like {"isolation":"DefaultDeny"}')
    isolation = ingress.get("isolation")
    if isolation is None:
        return False
    if isolation != "DefaultDeny":
        raise PolicyError(field, f'unknown ingress isolation {isolation!r}; the only value is "DefaultDeny"')
    return True


@dataclass(frozen=True)
class NodeInfo:
    """What ClusterNetworkPolicy ``nodes`` peers read of a Node: its labels and addresses."""

    name: str
    labels: Mapping[str, str]
    addresses: tuple[str, ...]  # canonical IPs of status.addresses (Hostname entries left out)

    def elems(self) -> tuple[str, ...]:
        return tuple(f"{ip}/128" if ":" in ip else f"{ip}/32" for ip in self.addresses)


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    """A Node the shape checks admitted; addresses that are no IP (a Hostname) are skipped."""
    meta = _meta(obj)
    status = obj.get("status") or {}
    ips: list[str] = []
    for entry in status.get("addresses") or ():
        try:
            ip = canonical_ip(entry.get("address"), "status.addresses")
        except ValueError:
            continue
        if ip not in ips:
            ips.append(ip)
    return NodeInfo(str(meta.get("name") or ""), _labels(meta), tuple(ips))
