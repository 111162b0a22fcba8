"""Request bodies in the Kubernetes protobuf encoding (``application/vnd.kubernetes.protobuf``),
decoded to the JSON objects the rest of the server handles, for the kinds a client sends that way
(kubectl's typed clients: ``kubectl create rolebinding``, ``kubectl create role``).

The encoding: the magic ``k8s\\x00``, then a ``runtime.Unknown`` (typeMeta, raw), ``raw`` being
the object's message as ``generated.proto`` numbers its fields. Only the messages below are known;
another kind's protobuf body is 415, as a server that cannot decode it says."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .errors import ApiError

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# message → field number → (JSON name, type, repeated); a type is a scalar ("string", "int",
# "bool", "bytes"), "map" (map<string, string>), "time" (meta Time) or another message's name.
Fields = dict[int, tuple[str, str, bool]]
MESSAGES: dict[str, Fields] = {
    "Unknown": {1: ("typeMeta", "TypeMeta", False), 2: ("raw", "bytes", False)},
    "TypeMeta": {1: ("apiVersion", "string", False), 2: ("kind", "string", False)},
    "ObjectMeta": {
        1: ("name", "string", False),
        2: ("generateName", "string", False),
        3: ("namespace", "string", False),
        5: ("uid", "string", False),
        6: ("resourceVersion", "string", False),
        7: ("generation", "int", False),
        11: ("labels", "map", False),
        12: ("annotations", "map", False),
        14: ("finalizers", "string", True),
    },
    "PolicyRule": {
        1: ("verbs", "string", True),
        3: ("apiGroups", "string", True),
        4: ("resources", "string", True),
        5: ("resourceNames", "string", True),
        6: ("nonResourceURLs", "string", True),
    },
    "Subject": {
        1: ("kind", "string", False),
        2: ("apiGroup", "string", False),
        3: ("name", "string", False),
        4: ("namespace", "string", False),
    },
    "RoleRef": {1: ("apiGroup", "string", False), 2: ("kind", "string", False), 3: ("name", "string", False)},
    "Role": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "ClusterRole": {1: ("metadata", "ObjectMeta", False), 2: ("rules", "PolicyRule", True)},
    "RoleBinding": {
        1: ("metadata", "ObjectMeta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "ClusterRoleBinding": {
        1: ("metadata", "ObjectMeta", False),
        2: ("subjects", "Subject", True),
        3: ("roleRef", "RoleRef", False),
    },
    "Time": {1: ("seconds", "int", False), 2: ("nanos", "int", False)},
}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value: an int or bytes) in order."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i : i + n], i + n
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    fields = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, _, value in _fields(data):
        if number not in fields:
            continue  # a field the lab does not model: dropped, as pruning would
        json_name, type_, repeated = fields[number]
        if type_ == "string":
            item: Any = bytes(value).decode()
        elif type_ == "bytes":
            item = bytes(value)
        elif type_ == "int":
            item = value
        elif type_ == "bool":
            item = bool(value)
        elif type_ == "map":
            entry = {n: bytes(v).decode() for n, _, v in _fields(bytes(value))}
            out.setdefault(json_name, {})[entry.get(1, "")] = entry.get(2, "")
            continue
        elif type_ == "time":
            t = decode_message("Time", bytes(value))
            item = dt.datetime.fromtimestamp(t.get("seconds", 0), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            item = decode_message(type_, bytes(value))
        if repeated:
            out.setdefault(json_name, []).append(item)
        elif item not in ("", 0):  # Go writes every scalar; its JSON omits the empty ones
            out[json_name] = item
    return out


def decode_body(body: bytes) -> dict[str, Any]:
    """A protobuf request body as its JSON object (apiVersion, kind and the object's fields)."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "the protobuf body does not start with the k8s magic number")
    try:
        unknown = decode_message("Unknown", body[len(MAGIC) :])
        meta = unknown.get("typeMeta") or {}
        kind = meta.get("kind", "")
        if kind not in MESSAGES or kind in ("Unknown", "TypeMeta", "Time"):
            raise ApiError(415, "UnsupportedMediaType", f"the lab cannot decode {kind or 'this kind'} from protobuf")
        obj = decode_message(kind, unknown.get("raw", b""))
    except (ValueError, UnicodeDecodeError, IndexError) as e:
        raise ApiError(400, "BadRequest", f"the protobuf body does not decode: {e}") from e
    return {"apiVersion": meta.get("apiVersion", ""), "kind": kind, **obj}
