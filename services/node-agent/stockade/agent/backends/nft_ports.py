"""The shared port chains (`nft_render.port_chain`) a node's pod chains jump to, and which pod
chains use each: a delta's port chains to create and to delete then come from the delta alone,
not from a scan of every rule on the node (which, at 500 pods, cost more than the transaction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from stockade.agent.backends.nft_render import port_chains
from stockade.model import Chain, NodeDelta

PortChanges = tuple[dict[str, tuple[str, ...]], list[str]]  # (to create: name -> rules, to delete)


class PortBook:
    """Port chain name -> how many pod chains jump to it, for the pod chains of one model."""

    def __init__(self, chains: Mapping[str, Chain]) -> None:
        self._of: dict[str, tuple[str, ...]] = {}  # pod chain id -> its port chains
        self._users: Counter[str] = Counter()
        for cid, chain in chains.items():
            self._add(cid, chain)

    @property
    def names(self) -> set[str]:
        return set(self._users)

    def changes(self, delta: NodeDelta) -> PortChanges:
        """What ``delta`` creates (a port chain no pod chain used) and deletes (one whose last
        user goes), as `nft_render.port_changes` would find by scanning the resulting model."""
        if not (delta.new_chains or delta.removed_chains):
            return {}, []
        change: Counter[str] = Counter()
        for cid in delta.removed_chains | (delta.new_chains.keys() & self._of.keys()):
            change.subtract(self._of.get(cid, ()))
        needed: dict[str, tuple[str, ...]] = {}
        for chain in delta.new_chains.values():
            found = port_chains([chain])
            needed.update(found)
            change.update(found.keys())
        create = {name: lines for name, lines in needed.items() if not self._users[name]}
        delete = sorted(name for name, d in change.items() if self._users[name] and self._users[name] + d <= 0)
        return create, delete

    def apply(self, delta: NodeDelta) -> None:
        for cid in delta.removed_chains | (delta.new_chains.keys() & self._of.keys()):
            for name in self._of.pop(cid, ()):
                self._users[name] -= 1
                if self._users[name] <= 0:
                    del self._users[name]
        for cid, chain in delta.new_chains.items():
            self._add(cid, chain)

    def _add(self, cid: str, chain: Chain) -> None:
        found = tuple(port_chains([chain]))
        self._of[cid] = found
        self._users.update(found)
