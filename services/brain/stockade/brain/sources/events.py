"""What the sources hand to the brain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["upsert", "delete", "synced"]


@dataclass(frozen=True)
class SourceEvent:
    """One change, or the "synced" mark.

    upsert: `obj` is the object's full current state (a camelCase dict as the API serves it, with
    `kind` and `apiVersion` set). delete: `obj` is its last known state. synced: sent once, when the
    initial lists of every kind have been delivered (kind, namespace and name are empty); the brain
    can compute from everything it holds and start serving.
    """

    type: EventType
    kind: str
    namespace: str
    name: str
    obj: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


SYNCED = SourceEvent("synced", "", "", "")
