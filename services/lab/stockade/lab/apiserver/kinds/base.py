"""What a kind may add to the generic REST storage: defaulting, validation and allocation on
create and update, clean-up on delete, what a dry run gives back, and its ``kubectl get`` columns
(strategic-merge keys come from the schema).

The store calls these hooks; a kind without special behaviour uses ``KindBehaviour`` itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Cell = str | int | float | bool | None


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: 5s, 3m12s, 4h30m, 2d3h, 120d, 2y15d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y, d = h // 24 // 365, h // 24 % 365
        return f"{y}y{d}d" if d else f"{y}y"
    return f"{h // 24 // 365}y"


def since(timestamp: object, now: datetime | None = None) -> str:
    """``translateTimestampSince``: how long ago an RFC 3339 time was; ``<unknown>`` when unset."""
    if not timestamp or not isinstance(timestamp, str):
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return human_duration(((now or datetime.now(UTC)) - then).total_seconds())


def age(obj: Obj, now: datetime | None = None) -> str:
    """kubectl's AGE column: the time since creation."""
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


# (name, type, description, priority): priority 1 columns show with `-o wide` only.
Column = tuple[str, str, str, int]
NAME_COLUMN: Column = ("Name", "string", "Name must be unique within a namespace.", 0)
AGE_COLUMN: Column = ("Age", "string", "CreationTimestamp of the object.", 0)


class KindBehaviour:
    """The generic behaviour: no defaulting beyond metadata, no validation beyond names."""

    def on_create(self, obj: Obj) -> None:
        """Default, validate and allocate for a new object (mutate obj; raise ApiError to refuse)."""

    def on_update(self, obj: Obj, old: Obj) -> None:
        """The same for a replacement of `old` (spec changes; not the status subresource)."""

    def on_delete(self, old: Obj) -> None:
        """Release what the object held."""

    def snapshot(self) -> object:
        """What the hooks may change outside the object (allocations), for a dry run to put back."""
        return None

    def restore(self, state: object) -> None:
        """Put back what ``snapshot`` returned: the dry run's allocations are forgotten."""

    def columns(self) -> list[Column]:
        return [NAME_COLUMN, AGE_COLUMN]

    def cells(self, obj: Obj) -> list[Cell]:
        return [(obj.get("metadata") or {}).get("name", ""), age(obj)]
