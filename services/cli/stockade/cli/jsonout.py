"""`-o json` and `-o yaml`: one shape for scripts, defined here for every command.

Every document carries ``apiVersion`` and ``kind`` first (as kubectl's). A list is
``{"apiVersion", "kind": "<Item>List", ..., "items": [...]}``, the response's other fields beside
``items``; one object is its fields beside ``apiVersion`` and ``kind``. Keys are camelCase (the
proto fields' JSON names), every field is present (false, 0, "" and [] too; an unset message is
null), and numbers are JSON numbers: a 64-bit integer is not the string protobuf's JSON mapping
makes of it. Map fields (labels, a drop count's key) keep their keys as they are: they are data.

`stockade reach -o json` is not written here: its output is an interface of its own, unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

API_VERSION = "stockade.io/v1"

# The kinds, one per document the CLI writes (README "JSON and YAML output" lists their fields).
POLICY_LIST = "PolicyList"  # stockade policies: items are Policy
NODE_LIST = "NodeList"  # stockade nodes: items are Node
DROP_COUNT_LIST = "DropCountList"  # stockade drops top: items are DropCount
DROP = "Drop"  # stockade drops follow: a blocked connection (one a line)
DROP_STORE_NOTICE = "DropStoreNotice"  # stockade drops follow: the drop store's state changed
EXPLANATION = "Explanation"  # stockade explain
DRY_RUN_RESULT = "DryRunResult"  # stockade dry-run
LINT_RESULT = "LintResult"  # stockade lint
VERSION = "Version"  # stockade version

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


def _scalar(f: Any, v: Any) -> Any:  # f: a FieldDescriptor (the stubs type it two ways)
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return message_fields(v)
    if f.type == FieldDescriptor.TYPE_ENUM and f.enum_type is not None:
        value = f.enum_type.values_by_number.get(v)
        return value.name if value is not None else v
    if f.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(v).decode()
    if f.type in _FLOATS:
        return float(v)
    return v  # str, bool, and every integer type as a Python int


def message_fields(msg: Message) -> dict[str, Any]:
    """Every field of ``msg`` under its camelCase JSON name, in declaration order."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vf = f.message_type.fields_by_name["value"]
            out[f.json_name] = {k: _scalar(vf, v[k]) for k in sorted(v)}
        elif f.is_repeated:
            out[f.json_name] = [_scalar(f, x) for x in v]
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not msg.HasField(f.name):
            out[f.json_name] = None
        else:
            out[f.json_name] = _scalar(f, v)
    return out


def envelope(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` under ``apiVersion`` and ``kind``."""
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def obj(kind: str, msg: Message) -> dict[str, Any]:
    """One object: the message's fields in the envelope."""
    return envelope(kind, message_fields(msg))


def listing(kind: str, msg: Message, items: str) -> dict[str, Any]:
    """A list: the message's repeated field ``items`` (proto name) as ``items``, last; its other
    fields beside it."""
    fields = message_fields(msg)
    rows = fields.pop(msg.DESCRIPTOR.fields_by_name[items].json_name)
    return envelope(kind, {**fields, "items": rows})


def render(output: str, doc: Mapping[str, Any], compact: bool = False) -> str:
    """``doc`` as ``output`` ("json" or "yaml"), without a final newline; ``compact``: JSON on
    one line (a stream's records)."""
    if output == "json":
        return json.dumps(doc, indent=None if compact else 2)  # escaped: no raw control text
    if output == "yaml":
        return str(yaml.safe_dump(dict(doc), sort_keys=False)).rstrip("\n")
    raise ValueError(f"not a document format: {output!r}")


def is_document(output: str) -> bool:
    return output in ("json", "yaml")
