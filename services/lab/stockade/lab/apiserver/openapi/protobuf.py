"""The v2 document in the protobuf form kubectl reads it in (gnostic's ``openapi.v2.Document``),
encoded from the JSON document by a small writer of the protobuf wire format.

Only what the lab's document holds is mapped: info, paths (operations, parameters, responses),
definitions (schemas with properties, items, additionalProperties, allOf), security, and vendor
extensions, which gnostic carries as YAML text.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml

from .documents import v2_object

Obj = dict[str, Any]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint(num << 3 | wire)


def _bytes(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _varint(len(data)) + data


def _str(num: int, text: str) -> bytes:
    return _bytes(num, text.encode()) if text else b""


def _bool(num: int, value: bool) -> bytes:
    return _key(num, 0) + b"\x01" if value else b""


def _any(value: Any) -> bytes:
    return _str(2, yaml.safe_dump(value, default_flow_style=False))  # Any.yaml


def _named(num: int, name: str, value: bytes) -> bytes:
    return _bytes(num, _str(1, name) + _bytes(2, value))


def _extensions(num: int, obj: Obj) -> bytes:
    return b"".join(_named(num, k, _any(v)) for k, v in obj.items() if k.startswith("x-"))


def _strs(num: int, values: list[str]) -> bytes:
    return b"".join(_bytes(num, v.encode()) for v in values)


def schema(s: Obj) -> bytes:
    out = _str(1, s.get("$ref", "")) + _str(2, s.get("format", "")) + _str(4, s.get("description", ""))
    if "default" in s:
        out += _bytes(5, _any(s["default"]))
    if s.get("uniqueItems"):
        out += _bool(16, True)
    out += _strs(19, s.get("required", []))
    out += b"".join(_bytes(20, _any(e)) for e in s.get("enum", []))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _bytes(21, _bytes(1, schema(extra)))
    elif isinstance(extra, bool):
        out += _bytes(21, _key(2, 0) + (b"\x01" if extra else b"\x00"))
    if "type" in s:
        out += _bytes(22, _strs(1, [s["type"]]))
    if "items" in s:
        out += _bytes(23, _bytes(1, schema(s["items"])))
    out += b"".join(_bytes(24, schema(a)) for a in s.get("allOf", []))
    if "properties" in s:
        out += _bytes(25, b"".join(_named(1, k, schema(v)) for k, v in s["properties"].items()))
    return out + _extensions(31, s)


def _parameter(p: Obj) -> bytes:
    """A ParametersItem: a body parameter, or a query or path one."""
    if p["in"] == "body":
        body = _str(1, p.get("description", "")) + _str(2, p["name"]) + _str(3, "body")
        body += _bool(4, p.get("required", False)) + _bytes(5, schema(p["schema"]))
        return _bytes(1, _bytes(1, body))
    head = _bool(1, p.get("required", False)) + _str(2, p["in"]) + _str(3, p.get("description", ""))
    head += _str(4, p["name"])
    if p["in"] == "query":  # QueryParameterSubSchema: type 6, uniqueItems 20
        sub = _bytes(3, head + _str(6, p.get("type", "")) + _bool(20, p.get("uniqueItems", False)))
    else:  # PathParameterSubSchema: type 5, uniqueItems 19
        sub = _bytes(4, head + _str(5, p.get("type", "")) + _bool(19, p.get("uniqueItems", False)))
    return _bytes(1, _bytes(2, sub))


def _operation(op: Obj) -> bytes:
    out = _strs(1, op.get("tags", [])) + _str(3, op.get("description", "")) + _str(5, op.get("operationId", ""))
    out += _strs(6, op.get("produces", [])) + _strs(7, op.get("consumes", []))
    out += b"".join(_bytes(8, _parameter(p)) for p in op.get("parameters", []))
    responses = b""
    for code, r in op.get("responses", {}).items():
        body = _str(1, r.get("description", ""))
        if "schema" in r:
            body += _bytes(2, _bytes(1, schema(r["schema"])))
        responses += _named(1, code, _bytes(1, body))
    out += _bytes(9, responses) + _strs(10, op.get("schemes", []))
    return out + _extensions(13, op)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: Obj) -> bytes:
    out = b"".join(_bytes(num, _operation(item[m])) for m, num in _METHODS.items() if m in item)
    out += b"".join(_bytes(9, _parameter(p)) for p in item.get("parameters", []))
    return out + _extensions(10, item)


def _security_definitions(defs: Obj) -> bytes:
    out = b""
    for name, d in defs.items():
        api_key = _str(1, d["type"]) + _str(2, d["name"]) + _str(3, d["in"]) + _str(4, d.get("description", ""))
        out += _named(1, name, _bytes(2, api_key))  # SecurityDefinitionsItem.api_key_security
    return out


def _security(requirement: Obj) -> bytes:
    return b"".join(_named(1, name, _strs(1, scopes)) for name, scopes in requirement.items())


def document(doc: Obj) -> bytes:
    info: Obj = doc.get("info", {})
    out = _str(1, doc["swagger"]) + _bytes(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))
    out += _bytes(8, b"".join(_named(2, path, _path_item(item)) for path, item in doc.get("paths", {}).items()))
    out += _bytes(9, b"".join(_named(1, name, schema(s)) for name, s in doc.get("definitions", {}).items()))
    out += b"".join(_bytes(12, _security(r)) for r in doc.get("security", []))
    if "securityDefinitions" in doc:
        out += _bytes(13, _security_definitions(doc["securityDefinitions"]))
    return out + _extensions(16, doc)


@cache
def v2_protobuf(hidden: frozenset[tuple[str, str]] = frozenset()) -> bytes:
    return document(v2_object(hidden))
