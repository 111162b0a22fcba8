"""The shape of every field the offline tools read from a manifest, checked before anything uses it.

A check raises ``ShapeError`` naming the field as kubectl does (``spec.containers[0].ports[1]
.containerPort``). NetworkPolicy specs are checked by the policy engine, which names fields the
same way; here only what the loader itself reads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

PROTOCOLS = ("TCP", "UDP", "SCTP")
# Replicas become pods one by one; past this a manifest is a mistake or an attack, not a cluster.
MAX_REPLICAS = 1000
_SCALAR = (str, int, float, bool)


class ShapeError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _mapping(obj: Any, field: str) -> Mapping[str, Any]:
    """``obj`` if it is a mapping, {} if absent (null), else the error."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ShapeError(field, f"must be an object, got {type(obj).__name__}")
    return obj


def _list(obj: Any, field: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise ShapeError(field, f"must be a list, got {type(obj).__name__}")
    return obj


def _string(obj: Any, field: str, required: bool = False) -> None:
    if obj is None and not required:
        return
    if not isinstance(obj, str) or (required and not obj):
        raise ShapeError(field, "must be a non-empty string" if required else f"must be a string, got {obj!r:.40}")


def _port(obj: Any, field: str, named: bool = False) -> None:
    if isinstance(obj, bool) or not isinstance(obj, int | str) or (isinstance(obj, str) and not named):
        raise ShapeError(field, "must be an integer or a name" if named else "must be an integer")
    if isinstance(obj, int) and not 1 <= obj <= 65535:
        raise ShapeError(field, f"{obj} is out of range 1-65535")
    if isinstance(obj, str) and not obj:
        raise ShapeError(field, "must be an integer or a name")


def _protocol(obj: Any, field: str) -> None:
    if obj is not None and obj not in PROTOCOLS:
        raise ShapeError(field, f"{obj!r:.40} is not TCP, UDP or SCTP")


def _string_map(obj: Any, field: str) -> None:
    for k, v in _mapping(obj, field).items():
        if not isinstance(k, str):
            raise ShapeError(field, f"key {k!r:.40} must be a string")
        if v is not None and not isinstance(v, _SCALAR):
            raise ShapeError(f"{field}.{k}", f"must be a string, got {type(v).__name__}")


def check_metadata(obj: Mapping[str, Any]) -> None:
    meta = _mapping(obj.get("metadata"), "metadata")
    _string(meta.get("name"), "metadata.name", required=True)
    _string(meta.get("namespace"), "metadata.namespace")
    _string_map(meta.get("labels"), "metadata.labels")
    _string_map(meta.get("annotations"), "metadata.annotations")


def _pod_spec(raw: Any, field: str) -> None:
    spec = _mapping(raw, field)
    _string(spec.get("nodeName"), f"{field}.nodeName")
    if spec.get("hostNetwork") is not None and not isinstance(spec["hostNetwork"], bool):
        raise ShapeError(f"{field}.hostNetwork", "must be true or false")
    for key in ("containers", "initContainers"):
        for i, c in enumerate(_list(spec.get(key), f"{field}.{key}")):
            cf = f"{field}.{key}[{i}]"
            for j, p in enumerate(_list(_mapping(c, cf).get("ports"), f"{cf}.ports")):
                pf = f"{cf}.ports[{j}]"
                p = _mapping(p, pf)
                _port(p.get("containerPort"), f"{pf}.containerPort")
                _protocol(p.get("protocol"), f"{pf}.protocol")
                _string(p.get("name"), f"{pf}.name")


def _ip(raw: Any, field: str) -> None:
    try:
        if not isinstance(raw, str):
            raise ValueError
        ipaddress.ip_address(raw)
    except ValueError:
        raise ShapeError(field, f"{raw!r:.60} is not an IP address") from None


def _pod(obj: Mapping[str, Any]) -> None:
    _pod_spec(obj.get("spec"), "spec")
    status = _mapping(obj.get("status"), "status")
    _string(status.get("phase"), "status.phase")
    if status.get("podIP"):
        _ip(status["podIP"], "status.podIP")
    for i, e in enumerate(_list(status.get("podIPs"), "status.podIPs")):
        _ip(_mapping(e, f"status.podIPs[{i}]").get("ip"), f"status.podIPs[{i}].ip")


def _workload(obj: Mapping[str, Any]) -> None:
    spec = _mapping(obj.get("spec"), "spec")
    replicas = spec.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise ShapeError("spec.replicas", f"must be a whole number from 0 to {MAX_REPLICAS}, got {replicas!r:.40}")
    template = _mapping(spec.get("template"), "spec.template")
    tmeta = _mapping(template.get("metadata"), "spec.template.metadata")
    _string_map(tmeta.get("labels"), "spec.template.metadata.labels")
    _string_map(tmeta.get("annotations"), "spec.template.metadata.annotations")
    _pod_spec(template.get("spec"), "spec.template.spec")


def _service(obj: Mapping[str, Any]) -> None:
    spec = _mapping(obj.get("spec"), "spec")
    _string_map(spec.get("selector"), "spec.selector")
    for key in ("type", "clusterIP"):
        _string(spec.get(key), f"spec.{key}")
    for i, p in enumerate(_list(spec.get("ports"), "spec.ports")):
        pf = f"spec.ports[{i}]"
        p = _mapping(p, pf)
        _port(p.get("port"), f"{pf}.port")
        if p.get("targetPort") is not None:
            _port(p["targetPort"], f"{pf}.targetPort", named=True)
        _protocol(p.get("protocol"), f"{pf}.protocol")
        _string(p.get("name"), f"{pf}.name")


def _policy(obj: Mapping[str, Any]) -> None:
    _mapping(obj.get("spec"), "spec")  # the engine checks the rest, naming the field


_BY_KIND: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "Pod": _pod,
    "Deployment": _workload,
    "StatefulSet": _workload,
    "ReplicaSet": _workload,
    "DaemonSet": _workload,
    "ReplicationController": _workload,
    "Service": _service,
    "NetworkPolicy": _policy,
}


def check_object(obj: Mapping[str, Any]) -> None:
    """Raise ShapeError for the first field of ``obj`` the loader could not use."""
    check_metadata(obj)
    check = _BY_KIND.get(str(obj.get("kind")))
    if check is not None:
        check(obj)
