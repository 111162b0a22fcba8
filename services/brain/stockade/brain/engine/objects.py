"""Pods and namespaces as the engine sees them: only the fields that policy depends on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    ip: str | None
    node: str | None
    # (port name, protocol) -> container port; and every declared (port, protocol)
    named_ports: Mapping[tuple[str, Protocol], int] = field(default_factory=dict)
    ports: tuple[tuple[int, Protocol], ...] = ()
    candidate: bool = False  # has an IP, not host network, not finished
    created: str = ""
    elem: str = ""  # the IP as a set element (CIDR), "" without an IP

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

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


def parse_pod(obj: Mapping[str, Any]) -> PodInfo:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    named: dict[tuple[str, Protocol], int] = {}
    ports: list[tuple[int, Protocol]] = []
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for p in (c or {}).get("ports") or []:
            proto = _PROTOCOLS.get(p.get("protocol") or "TCP")
            try:
                num = int(p.get("containerPort"))
            except (TypeError, ValueError):
                continue  # a port we cannot read cannot be resolved; the API server validates these
            if proto is None:
                continue
            ports.append((num, proto))
            if p.get("name"):
                named.setdefault((str(p["name"]), proto), num)
    ip = status.get("podIP") or None
    candidate = bool(ip) and not spec.get("hostNetwork") and status.get("phase") not in FINISHED_PHASES
    return PodInfo(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        labels=_labels(meta),
        ip=str(ip) if ip else None,
        node=spec.get("nodeName") or None,
        named_ports=named,
        ports=tuple(sorted(set(ports))),
        candidate=candidate,
        created=str(meta.get("creationTimestamp") or ""),
        elem=(f"{ip}/128" if ":" in str(ip) else f"{ip}/32") if ip else "",
    )


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
