"""What a write request asks besides its object, as the real handlers read it: ``dryRun``,
``fieldValidation`` and (for a delete) the DeleteOptions body, each checked with the real 422
(``CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"x"}: supported
values: "All"``); and what becomes of the unknown and duplicate fields decoding found (Strict: 400;
Warn, the default: a ``Warning`` header each; Ignore: nothing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from .errors import ApiError
from .fielderrors import FieldError, InvalidError, invalid, not_supported
from .protobody import PROTOBUF, decode_body
from .typed import StrictDecodingError

OPTIONS_KIND = {
    "create": "CreateOptions",
    "update": "UpdateOptions",
    "patch": "PatchOptions",
    "delete": "DeleteOptions",
}
FIELD_VALIDATION = ("", "Ignore", "Strict", "Warn")
FIELD_MANAGER_LIMIT = 128
Dups = dict[int, list[str]]


@dataclass(frozen=True)
class WriteOptions:
    field_validation: str  # Ignore, Warn or Strict
    dry_run: bool


def write_options(query: MultiMapping[str], verb: str, body: dict[str, Any] | None = None) -> WriteOptions:
    """The options of a create, update, patch or delete (422 for values the real server refuses)."""
    dry = list(query.getall("dryRun", []))
    if body is not None and isinstance(body.get("dryRun"), list):
        dry += [d for d in body["dryRun"] if isinstance(d, str)]
    errors: list[FieldError] = []
    if any(d != "All" for d in dry):
        errors.append(not_supported("dryRun", dry, ["All"]))
    directive = query.get("fieldValidation", "")
    if verb != "delete" and directive not in FIELD_VALIDATION:
        errors.append(not_supported("fieldValidation", directive, FIELD_VALIDATION))
    manager = query.get("fieldManager", "")
    if len(manager) > FIELD_MANAGER_LIMIT:
        errors.append(invalid("fieldManager", manager, f"must be less than {FIELD_MANAGER_LIMIT} characters"))
    if errors:
        raise InvalidError(OPTIONS_KIND[verb], "", errors, group="meta.k8s.io")
    return WriteOptions(directive or "Warn", bool(dry))


async def read_body(request: web.Request) -> tuple[Any, Dups]:
    """The JSON body, and the members each of its objects repeats (by the object's id)."""
    dups: Dups = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        repeated = []
        for key, value in items:
            if key in out:
                repeated.append(key)
            out[key] = value  # the last wins, as in Go
        if repeated:
            dups[id(out)] = repeated
        return out

    if request.content_type == PROTOBUF:  # kubectl's typed clients (create rolebinding, create role)
        return decode_body(await request.read()), dups
    try:
        text = await request.text()
        return (json.loads(text, object_pairs_hook=pairs) if text.strip() else None), dups
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {e}") from e


def judge(problems: list[str], options: WriteOptions, kind: str = "", version: str = "") -> list[str]:
    """The warnings to send for decoding's problems; for Strict, the 400 instead. ``kind`` names
    the object in the message (a create or update); a patch's message has none, as the real one."""
    if not problems or options.field_validation == "Ignore":
        return []
    if options.field_validation == "Strict":
        raise StrictDecodingError(problems, kind, version)
    return problems


def warning_headers(warnings: list[str]) -> CIMultiDict[str]:
    """``Warning: 299 - "text"`` headers, one per warning (what kubectl prints as ``Warning: text``)."""
    out: CIMultiDict[str] = CIMultiDict()
    for text in warnings:
        out.add("Warning", f"299 - {json.dumps(text)}")
    return out


def check_preconditions(storage: str, obj: dict[str, Any], body: dict[str, Any] | None) -> None:
    """DeleteOptions.preconditions: the uid and resourceVersion the object must still have (409)."""
    pre = (body or {}).get("preconditions")
    if not isinstance(pre, dict):
        return
    meta = obj["metadata"]
    for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        want = pre.get(key)
        if want and want != meta.get(key):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {storage} "{meta["name"]}": Precondition failed: '
                f"{label} in precondition: {want}, {label} in object meta: {meta.get(key)}",
                {"name": meta["name"], "kind": storage},
            )
