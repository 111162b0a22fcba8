"""YAML from untrusted hands, in bounded memory and time.

PyYAML shares an aliased node instead of copying it, so a "billion laughs" document loads
quickly but expands exponentially in whatever walks it next (a deep copy, a validator, JSON).
The composer here counts every node as its expanded size and refuses a document that expands
beyond ``MAX_VALUES``, that nests deeper than ``MAX_DEPTH`` (PyYAML recurses per level), or whose
alias refers to itself (a cycle no consumer can walk).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, SequenceNode

# A Kubernetes object is at most ~1.5 MB (etcd's limit); these leave room for List files.
MAX_BYTES = 8 * 1024 * 1024
MAX_VALUES = 1_000_000
MAX_DEPTH = 100


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self._depth = 0

    def compose_document(self) -> Node | None:
        self._sizes = {}
        self._depth = 0
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise ComposerError(None, None, f"alias *{event.anchor} refers to itself", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and id(node) not in self._sizes:  # a new node, not an alias of one
            size = 1
            if isinstance(node, SequenceNode):
                size += sum(self._sizes.get(id(c), 1) for c in node.value)
            elif isinstance(node, MappingNode):
                size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
            self._sizes[id(node)] = size
            if size > MAX_VALUES:
                raise ComposerError(
                    None, None, f"expands to more than {MAX_VALUES:,} values (YAML aliases?)", node.start_mark
                )
        return node


def load_all(text: str) -> list[Any]:
    """Every document of ``text``; yaml.YAMLError (with a mark where there is one, and
    ``document``: its 1-based index) if it is not YAML or breaks a bound. Callers check
    ``len(text)`` against ``MAX_BYTES`` first."""
    loader = _BoundedLoader(text)
    out: list[Any] = []
    try:
        while loader.check_data():
            out.append(loader.get_data())
        return out
    except yaml.YAMLError as e:
        e.document = len(out) + 1  # type: ignore[attr-defined]
        raise
    finally:
        loader.dispose()
