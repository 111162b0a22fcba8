"""The journal of node-model mutations, from which a change's deltas are derived.

Every mutation of a node model is recorded with the first value it overwrote; a change's delta is
the difference between those values and the final ones, so deltas are exact by construction and
cost only what the change touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stockade.brain.engine.api import Deltas
from stockade.model import TIERS, Direction, NodeDelta, NodeModel, Tier

MISSING: Any = object()  # "absent before the change" (None is a value some tables hold)


class Journal:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.ingress: dict[str, dict[str, Any]] = {}
        self.egress: dict[str, dict[str, Any]] = {}
        self.admin_ingress: dict[str, dict[str, Any]] = {}
        self.admin_egress: dict[str, dict[str, Any]] = {}
        self.baseline_ingress: dict[str, dict[str, Any]] = {}
        self.baseline_egress: dict[str, dict[str, Any]] = {}

    def record(self, kind: str, node: str, key: str, current: Mapping[str, Any]) -> None:
        """Remember ``current[key]`` as it was before this change first touched it."""
        book: dict[str, dict[str, Any]] = getattr(self, kind)
        entries = book.setdefault(node, {})
        if key not in entries:
            entries[key] = current.get(key, MISSING)

    def nodes(self) -> set[str]:
        """The nodes whose models this change touched."""
        out = set(self.sets) | set(self.chains)
        for tier in TIERS:
            for direction in Direction:
                out |= set(self._book(tier, direction))
        return out

    def _book(self, tier: Tier, direction: Direction) -> dict[str, dict[str, Any]]:
        name = direction.value if tier is Tier.NETPOL else f"{tier.value}_{direction.value}"
        return getattr(self, name)

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
            for tier in TIERS:
                for direction in Direction:
                    entries = self._book(tier, direction).get(node)
                    if not entries:
                        continue
                    table = model.dispatch(direction, tier)
                    upserts: dict[str, str] = {}
                    removed: set[str] = set()
                    for ip, old in entries.items():
                        new = table.get(ip, MISSING)
                        if new is MISSING and old is not MISSING:
                            removed.add(ip)
                        elif new is not MISSING and new != old:
                            upserts[ip] = new
                    d.set_dispatch(direction, tier, upserts, frozenset(removed))
            if not d.is_empty():
                out[node] = d
        return out
