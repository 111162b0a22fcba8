"""Shape checks for every object the engine takes from the API: the one validation layer at its edge.

The API server validates what it stores, but the brain must not depend on that: an object the
engine cannot read (a Pod with ``spec: [1]``, labels that are a list, a port that is a map) is
refused *alone*, with the field named, and never reaches the code that compiles rules. Checks
cover only what the engine reads, so a field the brain ignores cannot get an object refused.
NetworkPolicy specs are validated by `policy.parse_policy` (this module checks their metadata).

Pure, and never raises on any JSON tree: `problem` returns ``(field, message)`` or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.objects import pod_addresses

KINDS = ("Namespace", "Pod", "NetworkPolicy", "Node", "Service")
NAMESPACED = ("Pod", "NetworkPolicy", "Service")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SCALAR = (str, int, float, bool, type(None))  # label values: strings from the API, scalars in YAML


def problem(obj: Any, kind: str | None = None, *, addresses: bool = True) -> tuple[str, str] | None:
    """What makes ``obj`` unreadable for the engine, as (field, message); None when it is fine.
    ``kind``: the kind it was given as (default: its own ``kind`` field). ``addresses``: whether
    to judge a Pod's addresses too (the engine leaves that to `parse_pod`, which parses them)."""
    try:
        _check(obj, kind, addresses)
    except PolicyError as e:
        return e.field, e.message
    return None


def describe(obj: Any, kind: str | None = None) -> str:
    """``Kind namespace/name`` (or ``Kind name``) for reports, whatever the object's shape."""
    if kind is None:
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, ns = meta.get("name"), meta.get("namespace")
    kind_text = kind if isinstance(kind, str) and kind in KINDS else "object"
    name_text = name if isinstance(name, str) and name else "?"
    if kind_text in NAMESPACED:
        return f"{kind_text} {ns if isinstance(ns, str) and ns else 'default'}/{name_text}"
    return f"{kind_text} {name_text}"


def _fail(field: str, message: str) -> PolicyError:
    return PolicyError(field, message)


def _check(obj: Any, kind: str | None, addresses: bool = True) -> None:
    if not isinstance(obj, Mapping):
        raise _fail("", f"must be an object, got {type(obj).__name__}")
    if kind is None:
        kind = obj.get("kind")
    if kind not in KINDS:
        raise _fail("kind", f"{kind!r} is not a kind the brain reads ({', '.join(KINDS)})")
    _metadata(obj.get("metadata"), namespaced=kind in NAMESPACED)
    if kind == "Pod":
        _pod(obj, addresses)
    elif kind == "Node":
        _node(obj)
    elif kind == "Service":
        _service(obj)
    # Namespace: metadata is all the engine reads. NetworkPolicy: parse_policy validates the spec.


def _obj(value: Any, field: str, required: bool = False) -> Mapping[str, Any]:
    """``value`` as an object; absent (None) is an empty one unless ``required``."""
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be an object, got {_kind_of(value)}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(field, f"must be a list, got {_kind_of(value)}")
    return value


def _str(value: Any, field: str, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _fail(field, f"must be a non-empty string, got {_kind_of(value)}" if required else "must be a string")
    return value


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _metadata(value: Any, namespaced: bool) -> None:
    meta = _obj(value, "metadata", required=True)
    _str(meta.get("name"), "metadata.name", required=True)
    if namespaced:
        _str(meta.get("namespace"), "metadata.namespace")
    for key in ("creationTimestamp",):
        _str(meta.get(key), f"metadata.{key}")
    rv = meta.get("resourceVersion")
    if rv is not None and (isinstance(rv, bool) or not isinstance(rv, str | int)):
        raise _fail("metadata.resourceVersion", "must be a string")
    _string_map(meta.get("labels"), "metadata.labels")
    annotations = _obj(meta.get("annotations"), "metadata.annotations")
    for k in annotations:
        if not isinstance(k, str):
            raise _fail("metadata.annotations", f"key {k!r} must be a string")


def _string_map(value: Any, field: str) -> None:
    labels = _obj(value, field)
    for k, v in labels.items():
        if not isinstance(k, str) or not k:
            raise _fail(field, f"key {k!r} must be a non-empty string")
        if not isinstance(v, _SCALAR):
            raise _fail(f"{field}[{k}]", f"must be a string, got {_kind_of(v)}")


def _port_number(value: Any, field: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise _fail(field, f"must be a port number {low}-65535, got {_kind_of(value)}")
    return value


def _protocol(value: Any, field: str) -> None:
    if value is not None and value not in _PROTOCOLS:
        raise _fail(field, f"{_kind_of(value)} is not TCP, UDP or SCTP")


def _pod(obj: Mapping[str, Any], addresses: bool) -> None:
    spec = _obj(obj.get("spec"), "spec")
    _str(spec.get("nodeName"), "spec.nodeName")
    host = spec.get("hostNetwork")
    if host is not None and not isinstance(host, bool):
        raise _fail("spec.hostNetwork", f"must be true or false, got {_kind_of(host)}")
    for section in ("containers", "initContainers"):
        for i, c in enumerate(_list(spec.get(section), f"spec.{section}")):
            cf = f"spec.{section}[{i}]"
            container = _obj(c, cf, required=True)
            for j, p in enumerate(_list(container.get("ports"), f"{cf}.ports")):
                pf = f"{cf}.ports[{j}]"
                port = _obj(p, pf, required=True)
                _port_number(port.get("containerPort"), f"{pf}.containerPort")
                _protocol(port.get("protocol"), f"{pf}.protocol")
                _str(port.get("name"), f"{pf}.name")
    status = _obj(obj.get("status"), "status")
    _str(status.get("phase"), "status.phase")
    _, why = pod_addresses(status) if addresses else ((), "")
    if why:
        field, _, message = why.partition(": ")
        raise _fail(field, message)


def _node(obj: Mapping[str, Any]) -> None:
    _obj(obj.get("spec"), "spec")
    status = _obj(obj.get("status"), "status")
    for i, a in enumerate(_list(status.get("addresses"), "status.addresses")):
        entry = _obj(a, f"status.addresses[{i}]", required=True)
        _str(entry.get("type"), f"status.addresses[{i}].type")
        _str(entry.get("address"), f"status.addresses[{i}].address")


def _service(obj: Mapping[str, Any]) -> None:
    spec = _obj(obj.get("spec"), "spec")
    _string_map(spec.get("selector"), "spec.selector")
    for i, p in enumerate(_list(spec.get("ports"), "spec.ports")):
        pf = f"spec.ports[{i}]"
        port = _obj(p, pf, required=True)
        _port_number(port.get("port"), f"{pf}.port")
        _protocol(port.get("protocol"), f"{pf}.protocol")
        _str(port.get("name"), f"{pf}.name")
        target = port.get("targetPort")
        if isinstance(target, str):
            if not target:
                raise _fail(f"{pf}.targetPort", "must be a port number or a port name")
        elif target is not None:
            _port_number(target, f"{pf}.targetPort", low=0)
