"""What the sources hold of one kind, and how a watch event or a re-list changes it (pure).

The held copy is what makes "none applied twice" and "no event lost" checkable: a watch event is
passed on only when it is newer than what we hold for that object, and a re-list after 410 Gone is
turned into the exact difference against what we hold.
"""

from __future__ import annotations

from typing import Any

from .events import SourceEvent
from .kinds import WatchedKind

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
Held = dict[Key, Obj]


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def malformed(obj: Any) -> str:
    """Why an object cannot even be tracked (no string name, metadata not an object); "" if it can.
    Such an object is skipped here: it has no identity to hold, replace or delete by. Everything
    else about an object's shape is for the engine's validation to judge."""
    if not isinstance(obj, dict):
        return f"not an object ({type(obj).__name__})"
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "metadata: must be an object"
    name, ns, rv = meta.get("name"), meta.get("namespace"), meta.get("resourceVersion")
    if not isinstance(name, str) or not name:
        return "metadata.name: must be a non-empty string"
    if ns is not None and not isinstance(ns, str):
        return "metadata.namespace: must be a string"
    if rv is not None and (isinstance(rv, bool) or not isinstance(rv, str | int)):
        return "metadata.resourceVersion: must be a string"
    return ""


def rv_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _rv_int(rv: str) -> int | None:
    try:
        return int(rv)
    except ValueError:
        return None


def is_newer(new: str, old: str) -> bool:
    """Whether `new` is a later resourceVersion than `old`.

    Kubernetes calls versions opaque, but every etcd-backed server hands out increasing integers;
    if either does not parse, any different version counts as newer.
    """
    a, b = _rv_int(new), _rv_int(old)
    if a is None or b is None:
        return new != old
    return a > b


def _complete(kind: WatchedKind, obj: Obj) -> Obj:
    """List items come without kind/apiVersion; the consumer gets them always set."""
    if obj.get("kind") == kind.kind and obj.get("apiVersion") == kind.api_version:
        return obj
    return {**obj, "kind": kind.kind, "apiVersion": kind.api_version}


def _event(type_: str, kind: WatchedKind, key: Key, obj: Obj) -> SourceEvent:
    return SourceEvent(type_, kind.kind, key[0], key[1], obj)  # type: ignore[arg-type]


def apply_watch_event(held: Held, kind: WatchedKind, type_: str, obj: Obj, seen: str = "") -> SourceEvent | None:
    """Apply one ADDED/MODIFIED/DELETED event; None when it brings nothing new (e.g. a replay).

    `seen` is the newest version this kind's stream (or list) has already covered: an ADDED or
    MODIFIED at or below it is a replay even when we hold no such object any more (it was deleted
    later), so it must not bring the object back for a moment.
    """
    key = key_of(obj)
    mine = held.get(key)
    if type_ != "DELETED" and seen and not is_newer(rv_of(obj), seen):
        return None
    if type_ == "DELETED":
        # A deletion may carry the deletion's version or the last one we saw: either way not older.
        if mine is None or is_newer(rv_of(mine), rv_of(obj)):
            return None
        del held[key]
        return _event("delete", kind, key, _complete(kind, obj))
    if mine is not None and not is_newer(rv_of(obj), rv_of(mine)):
        return None
    held[key] = obj = _complete(kind, obj)
    return _event("upsert", kind, key, obj)


def relist_diff(held: Held, kind: WatchedKind, items: list[Obj]) -> list[SourceEvent]:
    """Make `held` equal the listed items; the events that say so (deletes first, then upserts).
    Items that cannot be tracked (see `malformed`) are left out: the caller reports them."""
    listed = {key_of(o): o for o in items if not malformed(o)}
    out = [_event("delete", kind, key, held.pop(key)) for key in [k for k in held if k not in listed]]
    for key, obj in listed.items():
        mine = held.get(key)
        # The list is a fresh read, so any other version than ours is the truth now.
        if mine is None or rv_of(mine) != rv_of(obj):
            held[key] = obj = _complete(kind, obj)
            out.append(_event("upsert", kind, key, obj))
    return out
