"""The journal of node-model mutations, from which a change's deltas are derived.

Every mutation of a node model is recorded with the first value it overwrote; a change's delta is
the difference between those values and the final ones, so deltas are exact by construction and
cost only what the change touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.brain.engine.api import Deltas
from stockade.model import NodeDelta, NodeModel

MISSING: Any = object()  # "absent before the change" (None is a value some tables hold)


class Journal:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.ingress: dict[str, dict[str, Any]] = {}
        self.egress: dict[str, dict[str, Any]] = {}

    def record(self, kind: str, node: str, key: str, current: Mapping[str, Any]) -> None:
        """Remember ``current[key]`` as it was before this change first touched it."""
        book: dict[str, dict[str, Any]] = getattr(self, kind)
        entries = book.setdefault(node, {})
        if key not in entries:
            entries[key] = current.get(key, MISSING)

    def nodes(self) -> set[str]:
        """The nodes whose models this change touched."""
        return set(self.sets) | set(self.chains) | set(self.ingress) | set(self.egress)

    def deltas(self, models: Mapping[str, NodeModel]) -> Deltas:
        out: Deltas = {}
        for node in self.nodes():
            model = models.get(node) or NodeModel(node)
            d = NodeDelta(node=node)
            for sid, old in self.sets.get(node, {}).items():
                new = model.sets.get(sid, MISSING)
                if old is MISSING and new is not MISSING:
                    d.new_sets[sid] = new
                elif old is not MISSING and new is MISSING:
                    d.removed_sets |= {sid}
                elif old is not MISSING and old != new:
                    if new - old:
                        d.set_added[sid] = new - old
                    if old - new:
                        d.set_removed[sid] = old - new
            for cid, old in self.chains.get(node, {}).items():
                present = cid in model.chains
                if old is MISSING and present:
                    d.new_chains[cid] = model.chains[cid]
                elif old is not MISSING and not present:
                    d.removed_chains |= {cid}
            for ip, old in self.ingress.get(node, {}).items():
                new = model.ingress.get(ip, MISSING)
                if new is MISSING and old is not MISSING:
                    d.ingress_removed |= {ip}
                elif new is not MISSING and new != old:
                    d.ingress_set[ip] = new
            for ip, old in self.egress.get(node, {}).items():
                new = model.egress.get(ip, MISSING)
                if new is MISSING and old is not MISSING:
                    d.egress_removed |= {ip}
                elif new is not MISSING and new != old:
                    d.egress_set[ip] = new
            if not d.is_empty():
                out[node] = d
        return out
