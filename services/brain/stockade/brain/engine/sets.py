"""The address-set table: every live set id and its elements, and which changed since the last flush.

Address groups write it; the span reads it when a chain brings a set onto a node and flushes the
changed ones to the nodes that hold them. It only records; it compiles nothing.
"""

from __future__ import annotations


class SetTable:
    def __init__(self) -> None:
        self.elems: dict[str, frozenset[str]] = {}  # every live set id -> elements
        self.nodes: dict[str, set[str]] = {}  # set id -> nodes whose model holds it (the span keeps it)
        self.dirty: set[str] = set()  # held sets whose elements changed since the last flush
        # Emptied sets nothing will fill again (a named port's slice whose last pod left): kept
        # empty until no node holds them, then forgotten (`forget_retired`).
        self.retired: set[str] = set()

    def put(self, sid: str, elems: frozenset[str]) -> None:
        self.elems[sid] = elems
        if self.nodes.get(sid):  # a set no node holds is read when a node takes it
            self.dirty.add(sid)

    def drop(self, sid: str) -> None:
        self.elems.pop(sid, None)
        self.dirty.discard(sid)

    def retire(self, sid: str) -> None:
        """Empty ``sid`` (the nodes holding it see it empty at the next flush) and forget it
        once no node holds it: a set no one reads costs memory for ever otherwise."""
        self.put(sid, frozenset())
        self.retired.add(sid)

    def forget_retired(self) -> None:
        """After a flush: forget the retired sets no node holds that are still empty (one
        filled again since is live again)."""
        for sid in list(self.retired):
            if self.nodes.get(sid):
                continue  # still in a node's model: emptied there, forgotten at a later flush
            self.retired.discard(sid)
            if not self.elems.get(sid, True):
                del self.elems[sid]

    def get(self, sid: str) -> frozenset[str]:
        return self.elems.get(sid, frozenset())
