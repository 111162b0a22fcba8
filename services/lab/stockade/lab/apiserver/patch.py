"""PATCH bodies: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

A strategic-merge patch is applied as a merge patch: for namespaces, pods, nodes and network
policies the difference only shows with list merge keys (e.g. a pod's containers), which Stockade
does not patch.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    """The container holding the last token of a JSON pointer, and that token."""
    if not pointer.startswith("/"):
        raise PatchError(f"bad JSON pointer {pointer!r}")
    tokens = [_unescape(t) for t in pointer[1:].split("/")]
    cur = doc
    for tok in tokens[:-1]:
        try:
            cur = cur[int(tok)] if isinstance(cur, list) else cur[tok]
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise PatchError(f"path {pointer!r} does not exist") from e
    return cur, tokens[-1]


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, tok = _walk(doc, pointer)
    try:
        return parent[int(tok)] if isinstance(parent, list) else parent[tok]
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise PatchError(f"path {pointer!r} does not exist") from e


def _add(doc: Any, pointer: str, value: Any) -> None:
    parent, tok = _walk(doc, pointer)
    if isinstance(parent, list):
        if tok == "-":
            parent.append(value)
        else:
            idx = int(tok)
            if not 0 <= idx <= len(parent):
                raise PatchError(f"index out of range in {pointer!r}")
            parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[tok] = value
    else:
        raise PatchError(f"cannot add at {pointer!r}")


def _remove(doc: Any, pointer: str) -> Any:
    parent, tok = _walk(doc, pointer)
    try:
        return parent.pop(int(tok)) if isinstance(parent, list) else parent.pop(tok)
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise PatchError(f"path {pointer!r} does not exist") from e


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 on a copy of target."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"bad operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _remove(doc, path)
            _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc
