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

    def put(self, sid: str, elems: frozenset[str]) -> None:
        self.elems[sid] = elems
        if self.nodes.get(sid):  # a set no node holds is read when a node takes it
            self.dirty.add(sid)

    def drop(self, sid: str) -> None:
        self.elems.pop(sid, None)
        self.dirty.discard(sid)

    def get(self, sid: str) -> frozenset[str]:
        return self.elems.get(sid, frozenset())
