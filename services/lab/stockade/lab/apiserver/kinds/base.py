"""What a kind may add to the generic REST storage: defaulting, validation and allocation on
create and update, clean-up on delete, strategic-merge keys, and its ``kubectl get`` columns.

The store calls these hooks; a kind without special behaviour uses ``KindBehaviour`` itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Cell = str | int | float | bool | None


def age(obj: Obj, now: datetime | None = None) -> str:
    """kubectl's age: 5s, 3m12s, 4h, 2d3h, 120d."""
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        then = datetime.strptime(str(ts), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    s = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


# (name, type, description, priority): priority 1 columns show with `-o wide` only.
Column = tuple[str, str, str, int]
NAME_COLUMN: Column = ("Name", "string", "Name must be unique within a namespace.", 0)
AGE_COLUMN: Column = ("Age", "string", "CreationTimestamp of the object.", 0)


class KindBehaviour:
    """The generic behaviour: no defaulting beyond metadata, no validation beyond names."""

    # Lists merged by key in a strategic-merge patch: dotted path from the object root → key.
    merge_keys: dict[str, str] = {}

    def on_create(self, obj: Obj) -> None:
        """Default, validate and allocate for a new object (mutate obj; raise ApiError to refuse)."""

    def on_update(self, obj: Obj, old: Obj) -> None:
        """The same for a replacement of `old` (spec changes; not the status subresource)."""

    def on_delete(self, old: Obj) -> None:
        """Release what the object held."""

    def columns(self) -> list[Column]:
        return [NAME_COLUMN, AGE_COLUMN]

    def cells(self, obj: Obj) -> list[Cell]:
        return [(obj.get("metadata") or {}).get("name", ""), age(obj)]
