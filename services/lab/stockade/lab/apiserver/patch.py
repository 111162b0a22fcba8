"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic-merge patch
(what ``kubectl apply`` sends), with the list merge keys the schema declares
(``schema.merge_keys``; a list it does not name is replaced, as in a merge patch).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
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


def _reorder(items: list[Any], order: Any, key: str | None) -> list[Any]:
    """``$setElementOrder``: the listed elements first, in that order, then the rest as they were."""
    if not isinstance(order, list):
        return items

    def ident(x: Any) -> Any:
        return x.get(key) if key is not None and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    first = [next(i for i in items if ident(i) == w) for w in wanted if any(ident(i) == w for i in items)]
    return first + [i for i in items if ident(i) not in wanted]


def _merge_list(current: list[Any], patch: list[Any], key: str, keys: Mapping[str, str], path: str) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    if not key:  # a list of scalars merged as a set (finalizers, podCIDRs): the patch's come after
        return [*current, *(copy.deepcopy(p) for p in patch if p not in current)]
    out = [copy.deepcopy(c) for c in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{path}: an element of a list merged by {key!r} has no {key!r}")
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch({}, item, keys, path))
        else:
            out[idx] = strategic_merge_patch(out[idx], item, keys, path)
    return out


def strategic_merge_patch(target: Any, patch: Any, keys: Mapping[str, str], path: str = "") -> Any:
    """A strategic-merge patch, as kubectl computes it from the Go types: lists named in `keys`
    (dotted path → merge key) merge element by element; the ``$patch``, ``$setElementOrder/``,
    ``$deleteFromPrimitiveList/`` and ``$retainKeys`` directives are honoured; any other list is
    replaced, as in a merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, Any] = {}
    for name, value in patch.items():
        if name.startswith("$setElementOrder/"):
            orders[name.split("/", 1)[1]] = value
        elif name.startswith("$deleteFromPrimitiveList/"):
            field = name.split("/", 1)[1]
            drop = value if isinstance(value, list) else []
            out[field] = [x for x in out.get(field) or [] if x not in drop]
        elif name in ("$patch", "$retainKeys"):
            continue
        elif value is None:
            out.pop(name, None)
        else:
            sub = f"{path}.{name}" if path else name
            if isinstance(value, list) and sub in keys:
                out[name] = _merge_list(out.get(name) or [], value, keys[sub], keys, sub)
            elif isinstance(value, dict) and value.get("$patch") == "delete":
                out.pop(name, None)
            else:
                out[name] = strategic_merge_patch(out.get(name), value, keys, sub)
    for name, order in orders.items():
        if isinstance(out.get(name), list):
            sub = f"{path}.{name}" if path else name
            out[name] = _reorder(out[name], order, keys.get(sub))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out
