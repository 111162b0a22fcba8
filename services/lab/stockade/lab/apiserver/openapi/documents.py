"""The OpenAPI documents themselves: v3, one per group-version (``/openapi/v3/<gv>``, listed with
their hashes by ``/openapi/v3``), and v2 (``/openapi/v2``), all made once from the schema."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from ..schema import GROUP_VERSIONS
from .paths import PARAMETERS, Operation, PathItem, group_version_paths
from .schemas import schemas

Obj = dict[str, Any]
VERSION = "v1.30.0-stockade-lab"
JSON = "application/json"


def gv_path(group: str, version: str) -> str:
    """The key of a group-version in /openapi/v3 (``api/v1``, ``apis/networking.k8s.io/v1``)."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _parameter(name: str, kind: str, v3: bool) -> Obj:
    where, type_, doc = PARAMETERS[name]
    out: Obj = {"name": name, "in": where, "description": doc.format(kind=kind)}
    if where == "path":
        out["required"] = True
    if v3:
        out["schema"] = {"type": type_, "uniqueItems": True}
    else:
        out.update(type=type_, uniqueItems=True)
    return out


def _extensions(op: Operation) -> Obj:
    g, v, k = op.gvk
    return {"x-kubernetes-action": op.action, "x-kubernetes-group-version-kind": {"group": g, "kind": k, "version": v}}


def _v3_operation(op: Operation, kind: str) -> Obj:
    out: Obj = {"tags": [op.tag], "description": op.description, "operationId": op.operation_id}
    if op.query:
        out["parameters"] = [_parameter(q, kind, True) for q in op.query]
    if op.body:
        body = {"schema": {"$ref": "#/components/schemas/" + op.body}}
        out["requestBody"] = {"content": {c: body for c in op.consumes}}
        if op.method == "patch":
            out["requestBody"]["required"] = True
    responses: Obj = {}
    for code, desc, ref in op.responses:
        body = {"schema": {"$ref": "#/components/schemas/" + ref}}
        content = {JSON: body}
        if op.streams:
            content[JSON + ";stream=watch"] = body
        responses[code] = {"description": desc, "content": content}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out.update(_extensions(op))
    return out


def _refs(items: list[PathItem]) -> set[str]:
    return {ref for p in items for o in p.operations for ref in [o.body, *(r[2] for r in o.responses)] if ref}


@cache
def v3_document(group: str, version: str) -> bytes:
    items = group_version_paths(group, version)
    paths: Obj = {}
    for p in items:
        entry: Obj = {o.method: _v3_operation(o, p.kind) for o in p.operations}
        entry["parameters"] = [_parameter(n, p.kind, True) for n in p.parameters]
        paths[p.path] = entry
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION},
        "paths": paths,
        "components": {
            "schemas": schemas(_refs(items), v3=True),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def v3_hash(group: str, version: str) -> str:
    return digest(v3_document(group, version))


@cache
def digest(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


def v3_index(hidden: frozenset[tuple[str, str]] = frozenset()) -> bytes:
    """The v3 index; ``hidden``: group-versions not served now (a custom resource without its CRD)."""
    paths = {
        gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}?hash={v3_hash(g, v)}"}
        for g, v in GROUP_VERSIONS
        if (g, v) not in hidden
    }
    return json.dumps({"paths": paths}, sort_keys=True, separators=(",", ":")).encode()


def _v2_operation(op: Operation, kind: str) -> Obj:
    out: Obj = {
        "tags": [op.tag],
        "description": op.description,
        "operationId": op.operation_id,
        "consumes": list(op.consumes),
        "produces": [JSON] + ([JSON + ";stream=watch"] if op.streams else []),
        "schemes": ["https"],
    }
    params = [_parameter(q, kind, False) for q in op.query]
    if op.body:
        body: Obj = {"name": "body", "in": "body", "required": True}
        body["schema"] = {"$ref": "#/definitions/" + op.body}
        params.insert(0, body)
    if params:
        out["parameters"] = params
    responses: Obj = {c: {"description": d, "schema": {"$ref": "#/definitions/" + r}} for c, d, r in op.responses}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out.update(_extensions(op))
    return out


@cache
def v2_object(hidden: frozenset[tuple[str, str]] = frozenset()) -> Obj:
    paths: Obj = {}
    refs: set[str] = set()
    for g, v in GROUP_VERSIONS:
        if (g, v) in hidden:
            continue
        items = group_version_paths(g, v)
        refs |= _refs(items)
        for p in items:
            entry: Obj = {o.method: _v2_operation(o, p.kind) for o in p.operations}
            entry["parameters"] = [_parameter(n, p.kind, False) for n in p.parameters]
            paths[p.path] = entry
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": VERSION},
        "paths": paths,
        "definitions": schemas(refs, v3=False),
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
                "description": "Bearer Token authentication",
            }
        },
        "security": [{"BearerToken": []}],
    }


@cache
def v2_json(hidden: frozenset[tuple[str, str]] = frozenset()) -> bytes:
    return json.dumps(v2_object(hidden), sort_keys=True, separators=(",", ":")).encode()
