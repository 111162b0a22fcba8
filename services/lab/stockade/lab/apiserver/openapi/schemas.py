"""Definitions (``schema/``) as OpenAPI schemas: v3 components (``#/components/schemas/``) and
v2 definitions (``#/definitions/``), with the Kubernetes extensions kubectl reads
(x-kubernetes-group-version-kind, -patch-strategy, -patch-merge-key, -list-type ...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..schema.model import DEFINITIONS, Definition, Field, Type

Obj = dict[str, Any]


def _gvk_list(d: Definition) -> list[Obj]:
    return [{"group": g, "kind": k, "version": v} for g, v, k in d.gvk]


def _prefix(v3: bool) -> str:
    return "#/components/schemas/" if v3 else "#/definitions/"


def type_schema(t: Type, v3: bool) -> Obj:
    if t.kind == "ref":
        return {"$ref": _prefix(v3) + t.ref}
    if t.kind == "array":
        assert t.of is not None
        return {"type": "array", "items": _element(t.of, v3)}
    if t.kind == "map":
        assert t.of is not None
        return {"type": "object", "additionalProperties": _element(t.of, v3)}
    out: Obj = {"type": t.kind}
    if t.format:
        out["format"] = t.format
    return out


def _element(t: Type, v3: bool) -> Obj:
    """A list's or map's elements: a struct reference carries its zero value as a default."""
    s = type_schema(t, v3)
    if v3 and t.kind == "ref":
        d = t.definition
        s = {"default": {}, "allOf": [s]} if d.scalar is None else s
    return s


def field_schema(f: Field, v3: bool) -> Obj:
    doc = f.doc
    if f.enum:
        doc += "\n\nPossible enum values:\n" + "\n".join(f' - `"{e}"`' for e in f.enum)
    t = type_schema(f.type, v3)
    if f.type.kind == "ref" and v3:
        # v3 keeps a reference alone in allOf so that the field's own description stays its own
        out: Obj = {"description": doc, "allOf": [t]}
        if f.type.definition.scalar is None and f.required:
            out["default"] = {}
    else:
        out = {"description": doc, **t}
    if f.enum:
        out["enum"] = list(f.enum)
    if f.key:
        out["x-kubernetes-patch-merge-key"] = f.key
    if f.patch:
        out["x-kubernetes-patch-strategy"] = f.patch
    if f.list_type:
        out["x-kubernetes-list-type"] = f.list_type
    if f.map_keys:
        out["x-kubernetes-list-map-keys"] = list(f.map_keys)
    if f.map_type:
        out["x-kubernetes-map-type"] = f.map_type
    return out


def definition_schema(d: Definition, v3: bool) -> Obj:
    if d.scalar is not None:
        out = {"description": d.doc, **d.scalar}
        if not v3 and "oneOf" in out:  # swagger 2.0 has no oneOf: such scalars are strings there
            out.pop("oneOf")
            out["type"] = "string"
        return out
    out = {"description": d.doc, "type": "object"}
    if d.fields:
        out["properties"] = {f.name: field_schema(f, v3) for f in d.fields}
    required = [f.name for f in d.fields if f.required]
    if required:
        out["required"] = required
    if d.open:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if d.map_type:
        out["x-kubernetes-map-type"] = d.map_type
    if d.gvk:
        out["x-kubernetes-group-version-kind"] = _gvk_list(d)
    return out


def closure(names: Iterable[str]) -> list[str]:
    """The definitions ``names`` reach, themselves included, sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for f in DEFINITIONS[name].fields:
            t = f.type
            while t.of is not None:
                t = t.of
            if t.kind == "ref":
                todo.append(t.ref)
    return sorted(seen)


def schemas(names: Iterable[str], v3: bool) -> Obj:
    return {n: definition_schema(DEFINITIONS[n], v3) for n in closure(names)}
