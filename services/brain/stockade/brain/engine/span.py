"""The span: what each node's model holds, and the journal of the current change.

A node model holds only the chains its own pods dispatch to and the sets those chains use
(reference-counted per node); a set's element change goes only to the nodes that hold it. Every
mutation is recorded in the `Journal` while a change is under way, so its deltas are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from stockade.brain.engine.journal import Journal
from stockade.brain.engine.sets import SetTable
from stockade.model import CNP_TIERS, Chain, Direction, NodeModel, Tier

# The tier dispatch a pod has: (admin ingress, admin egress, baseline ingress, baseline egress)
# chain ids (None: none), in `TIER_SLOTS` order.
TierIds = tuple[str | None, str | None, str | None, str | None]
TIER_SLOTS: tuple[tuple[Tier, Direction], ...] = tuple((t, d) for t in CNP_TIERS for d in Direction)
NO_TIERS: TierIds = (None, None, None, None)
# The journal's book of each dispatch table.
_BOOK = {
    (t, d): d.value if t is Tier.NETPOL else f"{t.value}_{d.value}"
    for t in (Tier.NETPOL, *CNP_TIERS)
    for d in Direction
}
# Where a pod is dispatched: (node, its addresses, ingress chain id, egress chain id, tier chain ids).
Placement = tuple[str, tuple[str, ...], str | None, str | None, TierIds]
# Accepted policies left out of a pod's chains: policy key -> (limit, why).
LeftOut = dict[str, tuple[str, str]]
# Chains up to this long are scanned for their sets each time (cheaper than remembering them).
_SCAN_RULES = 64


class Span:
    def __init__(self, sets: SetTable) -> None:
        self._sets = sets
        self.models: dict[str, NodeModel] = {}
        self.placement: dict[str, Placement] = {}  # pod key -> where it is dispatched
        self.left_out: dict[str, LeftOut] = {}  # pod key -> the policies left out of its chains
        self.journal: Journal | None = None  # set while a change is under way
        self._chain_refs: dict[str, dict[str, int]] = {}
        self._set_refs: dict[str, dict[str, int]] = {}
        self._dispatch_owner: dict[tuple[str, str, Direction, Tier], str] = {}
        # Chain id -> (the chain, its set ids, nodes holding it): a long chain shared by many nodes
        # is scanned for its sets once, not once per node (10,000 rules on 100 nodes).
        self._chain_sets: dict[str, tuple[Chain, frozenset[str], int]] = {}

    def held(self, node: str, cid: str) -> Chain | None:
        """The chain ``node``'s model holds under id ``cid``."""
        model = self.models.get(node)
        return model.chains.get(cid) if model is not None else None

    def deny_all(self, node: str, direction: Direction) -> Chain:
        """The chain allowing nothing (the agent's deny tail logs and counts every drop)."""
        deny = Chain.of(direction, ())
        held = self.held(node, deny.id)
        if held is not None and held != deny:
            raise RuntimeError(f"chain id {deny.id} collides with the deny-all chain's; refusing to compile")
        return deny

    def intern(self, node: str, chain: Chain | None) -> str | None:
        """Take a reference on ``chain`` in ``node``'s model, adding it (and its sets) if new."""
        if chain is None:
            return None
        model = self._node(node)
        cid = chain.id
        refs = self._chain_refs[node]
        n = refs.get(cid, 0)
        refs[cid] = n + 1
        if n == 0:
            self._record("chains", node, cid, model.chains)
            model.chains[cid] = chain
            srefs = self._set_refs[node]
            for sid in self._take_sets(chain):
                c = srefs.get(sid, 0)
                srefs[sid] = c + 1
                if c == 0:
                    self._record("sets", node, sid, model.sets)
                    model.sets[sid] = self._sets.get(sid)
                    self._sets.nodes.setdefault(sid, set()).add(node)
        return cid

    def place(self, key: str, desired: Placement | None, left_out: LeftOut) -> None:
        """Dispatch pod ``key`` as ``desired`` (None: nowhere), whose chains `intern` took
        references on; ``left_out``: the policies its chains leave out."""
        if left_out:
            self.left_out[key] = left_out
        else:
            self.left_out.pop(key, None)
        current = self.placement.get(key)
        if current == desired:
            if desired is not None:
                # intern took references for the chains; give back the extra ones.
                self._release(desired[0], desired[2])
                self._release(desired[0], desired[3])
                if desired[4] is not NO_TIERS:
                    for cid in desired[4]:
                        self._release(desired[0], cid)
            return
        if current is not None:
            node, ips, ic, ec, tiers = current
            for ip in ips:
                self._set_dispatch(node, Direction.INGRESS, ip, None, key)
                self._set_dispatch(node, Direction.EGRESS, ip, None, key)
                if tiers is not NO_TIERS:
                    for (tier, direction), tid in zip(TIER_SLOTS, tiers, strict=True):
                        if tid is not None:
                            self._set_dispatch(node, direction, ip, None, key, tier)
            self._release(node, ic)
            self._release(node, ec)
            if tiers is not NO_TIERS:
                for cid in tiers:
                    self._release(node, cid)
            del self.placement[key]
        if desired is not None:
            node, ips, ic, ec, tiers = desired
            for ip in ips:  # every address of the pod dispatches to the same chains
                self._set_dispatch(node, Direction.INGRESS, ip, ic, key)
                self._set_dispatch(node, Direction.EGRESS, ip, ec, key)
                if tiers is not NO_TIERS:
                    for (tier, direction), tid in zip(TIER_SLOTS, tiers, strict=True):
                        if tid is not None:
                            self._set_dispatch(node, direction, ip, tid, key, tier)
            self.placement[key] = desired

    def flush_sets(self) -> None:
        """Bring the sets whose elements changed up to date on the nodes that hold them."""
        sets = self._sets
        for sid in sets.dirty:
            elems = sets.elems.get(sid)
            if elems is None:
                continue
            for node in sets.nodes.get(sid, ()):
                model = self.models[node]
                if model.sets.get(sid) != elems:
                    self._record("sets", node, sid, model.sets)
                    model.sets[sid] = elems
        sets.dirty.clear()
        sets.forget_retired()

    def forget_empty(self, nodes: Iterable[str]) -> None:
        """Forget the models of ``nodes`` that hold nothing any more (their last pod left: a
        node deleted, or drained). A missing model reads as an empty one everywhere, so a node
        that goes away leaves nothing behind."""
        for node in nodes:
            m = self.models.get(node)
            if m is not None and not (m.chains or m.sets or m.ingress or m.egress or m.has_tiers()):
                del self.models[node], self._chain_refs[node], self._set_refs[node]

    def _node(self, node: str) -> NodeModel:
        m = self.models.get(node)
        if m is None:
            m = self.models[node] = NodeModel(node)
            self._chain_refs[node] = {}
            self._set_refs[node] = {}
        return m

    def _record(self, kind: str, node: str, key: str, current: Mapping[str, Any]) -> None:
        if self.journal is not None:
            self.journal.record(kind, node, key, current)

    def _release(self, node: str, cid: str | None) -> None:
        if cid is None:
            return
        model = self.models[node]
        refs = self._chain_refs[node]
        n = refs[cid] - 1
        if n > 0:
            refs[cid] = n
            return
        del refs[cid]
        chain = model.chains[cid]
        self._record("chains", node, cid, model.chains)
        del model.chains[cid]
        srefs = self._set_refs[node]
        set_nodes = self._sets.nodes
        for sid in self._give_sets(chain):
            c = srefs[sid] - 1
            if c > 0:
                srefs[sid] = c
                continue
            del srefs[sid]
            self._record("sets", node, sid, model.sets)
            del model.sets[sid]
            nodes = set_nodes.get(sid)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del set_nodes[sid]

    def _take_sets(self, chain: Chain) -> AbstractSet[str]:
        """The set ids ``chain`` uses, as one more node takes it."""
        if len(chain.rules) <= _SCAN_RULES:
            return chain.set_refs()
        held = self._chain_sets.get(chain.id)
        if held is not None and held[0] is chain:
            self._chain_sets[chain.id] = (chain, held[1], held[2] + 1)
            return held[1]
        sids = frozenset(chain.set_refs())
        if held is None:  # (an equal chain built anew, or an id collision: not shared, scanned)
            self._chain_sets[chain.id] = (chain, sids, 1)
        return sids

    def _give_sets(self, chain: Chain) -> AbstractSet[str]:
        """The set ids ``chain`` uses, as one node gives it up."""
        held = self._chain_sets.get(chain.id) if len(chain.rules) > _SCAN_RULES else None
        if held is None or held[0] is not chain:
            return chain.set_refs()
        if held[2] > 1:
            self._chain_sets[chain.id] = (chain, held[1], held[2] - 1)
        else:
            del self._chain_sets[chain.id]
        return held[1]

    def _set_dispatch(
        self, node: str, direction: Direction, ip: str, cid: str | None, owner: str, tier: Tier = Tier.NETPOL
    ) -> None:
        model = self._node(node)
        table = model.dispatch(direction, tier)
        okey = (node, ip, direction, tier)
        kind = _BOOK[tier, direction]
        if cid is None:
            if self._dispatch_owner.get(okey) == owner:
                self._record(kind, node, ip, table)
                table.pop(ip, None)
                del self._dispatch_owner[okey]
            return
        if table.get(ip) != cid:
            self._record(kind, node, ip, table)
            table[ip] = cid
        self._dispatch_owner[okey] = owner
