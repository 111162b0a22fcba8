"""The nftables dataplane: every apply is one kernel transaction.

Snapshots, repairs and deltas that create or remove sets and chains run the renderers' scripts
through libnftables (`nftlib`, the ``nft -f`` engine in-process); deltas that only change
elements (pods coming and going) go to nf_tables as one netlink batch (`nft_netlink`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from stockade.agent.backends import names, nft_chains, nft_netlink, nft_readback, nft_render
from stockade.agent.backends.base import ApplyError
from stockade.agent.backends.nft_ports import PortBook
from stockade.agent.backends.nft_repair import render_reconcile
from stockade.agent.backends.nftlib import NftRunner
from stockade.model import TIERS, Chain, Direction, NodeDelta, NodeModel, Tier

log = logging.getLogger(__name__)
REF_TABLE = "inet stockade_ref"  # a scratch table: no base chain, never enforces anything


class NftablesBackend:
    """`Dataplane` over nftables, optionally driving another network namespace."""

    name = "nftables"

    def __init__(
        self, netns: str | None = None, config: nft_render.NftConfig | None = None, use_library: bool = True
    ) -> None:
        self.netns = netns
        self._nft = NftRunner(netns, use_library)
        # Element-only deltas go straight to netlink (see nft_netlink); off with use_library=False
        # so the plain `nft -f` path stays measurable.
        self._netlink = nft_netlink.NftNetlink(netns) if use_library else None
        self.config = config or nft_render.NftConfig()
        # Pod IPs dispatched in the kernel per (tier, direction) (a verdict map refuses to
        # overwrite an element, so a delta must know which upserts replace one). None until
        # read back or snapshotted.
        self._dispatched: dict[tuple[Tier, Direction], set[str]] | None = None
        # The tier chains (ids) the kernel holds, and whether the table has the tier objects
        # (nft_render.is_tiered): a delta that changes the latter is a snapshot.
        self._tier_chains: set[str] = set()
        self._tiered = False
        self._ipv6 = 0  # how many of them are IPv6: the table's layout (nft_render.layout)
        # The shared port chains in the kernel (nft_render.port_chain): counted by the pod chains
        # that use them when known from a model the kernel was given (deltas then find the ones
        # to create and delete from the delta alone); after a read-back, whose chains may differ
        # from the model's, only their names until the next delta with chains.
        self._ports: PortBook | set[str] = set()
        # The address sets in the kernel that are interval sets of their own; the others live
        # under their tag in the hosts sets (nft_render.is_hash: decided by a set's content).
        self._interval: set[str] = set()
        # The model's sets as loaded (shared frozensets, not copies): a removed host-only set's
        # elements are deleted from the hosts set one by one. None until known.
        self._sets: dict[str, frozenset[str]] | None = None
        # (model, what the last verify of it read), until anything is written
        self._verified: tuple[NodeModel, nft_readback.KernelView | None] | None = None
        self._reference: nft_readback.Reference | None = None  # the fixed chains' rules, read once
        self.transactions = 0
        self.failures = 0
        self.repairs = 0
        self.last_apply_seconds = 0.0

    # -- kernel I/O -------------------------------------------------------------------------
    def run_script(self, script: str) -> None:
        """Apply one script as one transaction (``nft -f`` is all-or-nothing)."""
        if not script:
            return
        self._verified = None
        start = time.perf_counter()
        ok, _, err = self._nft.run(script)
        self.last_apply_seconds = time.perf_counter() - start
        if not ok:
            self.failures += 1
            raise ApplyError(f"nft transaction failed (nothing applied): {err.strip()}")
        self.transactions += 1

    def _send_elements(self, ops: list[nft_render.ElementOp]) -> None:
        """An element-only delta as one netlink batch: no nft cache to fill, same atomicity."""
        assert self._netlink is not None
        batch = nft_netlink.ElementBatch(nft_render.TABLE.split()[1])
        for verb, name, items in ops:
            if name in nft_render.MAPS or name in nft_render.TIER_MAPS:
                pairs = [(ip, chain) for ip, _, chain in (item.partition(" : ") for item in items)]
                tier, direction, _ = nft_render.TIER_MAPS.get(name, (Tier.NETPOL, Direction.INGRESS, 4))
                encoded = (
                    nft_netlink.host_elements(ip for ip, _ in pairs)
                    if verb == "delete"
                    else nft_netlink.verdict_elements(pairs, nft_render.map_verb(tier, direction) == "goto")
                )
            elif name in nft_render.HOSTS_FAMILY:
                encoded = nft_netlink.tagged_elements(items)
            else:
                encoded = nft_netlink.interval_elements(items)
            (batch.add if verb == "add" else batch.delete)(name, encoded)
        if not batch.ops:
            return
        self._verified = None
        start = time.perf_counter()
        try:
            self._netlink.send(batch)
        except (nft_netlink.NetlinkError, OSError) as exc:
            self.failures += 1
            raise ApplyError(f"nf_tables element batch failed (nothing applied): {exc}") from exc
        finally:
            self.last_apply_seconds = time.perf_counter() - start
        self.transactions += 1

    def read_view(self, terse: bool = False) -> nft_readback.KernelView | None:
        """What the kernel holds now; None when our table does not exist."""
        ok, out, err = self._nft.run(f"list table {nft_render.TABLE}", json=True, terse=terse)
        if not ok:
            if "No such file or directory" in err:
                return None
            raise ApplyError(f"nft list table {nft_render.TABLE} failed: {err.strip()}")
        return nft_readback.parse(out)

    def fixed_reference(self) -> nft_readback.Reference | None:
        """How the fixed chains' rules (forward, once_*) read in this kernel: from a scratch
        table written once from the renderer, listed and deleted (three small calls, once per
        backend). None when that fails: those chains are then compared by rule count only."""
        if self._reference is None:
            # With the tier objects, and the forward rules without them in a chain of their own.
            snapshot = nft_render.render_snapshot(_reference_model(), self.config)
            plain = [f"add chain {REF_TABLE} {nft_readback.REF_FORWARD}"] + [
                f"add rule {REF_TABLE} {nft_readback.REF_FORWARD} {line}" for line in nft_render.FORWARD_RULES
            ]
            script = "\n".join(
                [
                    *(
                        line.replace(nft_render.TABLE, REF_TABLE)
                        for line in snapshot.splitlines()
                        if " hook " not in line
                    ),
                    *plain,
                ]
            )
            ok, _, err = self._nft.run(script + "\n")
            if ok:
                ok, out, err = self._nft.run(f"list table {REF_TABLE}", json=True)
                self._nft.run(f"delete table {REF_TABLE}\n")
                if ok:
                    self._reference = nft_readback.reference_from(nft_readback.parse(out))
            if not ok:
                log.warning("cannot read the fixed chains' reference rules (%s): compared by count", err.strip())
        return self._reference

    # -- Dataplane --------------------------------------------------------------------------
    def apply_snapshot(self, model: NodeModel) -> None:
        self.run_script(render_reconcile(self.read_view(), model, self.config, self.fixed_reference()))
        self._remember(model)

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        if self._dispatched is None or self._sets is None:
            view = self.read_view()
            self._dispatched = {(t, d): set(view.dispatch(d, t)) if view else set() for t in TIERS for d in Direction}
            self._ipv6 = _count_ipv6(self._dispatched)
            self._tiered = view is not None and nft_render.EGRESS_TIERS in view.fixed
            self._tier_chains = {cid for cid, c in model.chains.items() if c.tier is not Tier.NETPOL}
            self._ports = set(view.ports) if view else set()
            self._interval = set(view.interval) if view else set()
            # What the kernel holds of the sets this delta removes; the others are the model's.
            self._sets = {**model.sets, **(nft_readback.set_contents(view, delta.removed_sets) if view else {})}
        had = self._dispatched
        v6 = self._ipv6_after(delta)
        families = nft_render.FAMILIES if v6 else nft_render.IPV4_ONLY
        tier_chains = _tier_chains_after(self._tier_chains, delta)
        if families != self.layout or nft_render.kind_changes(delta, model, self._interval, families):
            # The first IPv6 pod address dispatched (or the last one gone): the pod chains gain
            # (or lose) their IPv6 rules and sets, so the whole table is replaced in one
            # transaction; element changes would dispatch an IPv6 address to chains without them.
            # Likewise a set whose kind changes (a hash set gaining a CIDR): a set's kind is
            # fixed when it is created, and the rules naming it pin it.
            self.run_script(nft_render.render_snapshot(model, self.config))
            self._remember(model)
            return
        ins, eg = had[Tier.NETPOL, Direction.INGRESS], had[Tier.NETPOL, Direction.EGRESS]
        sets = self._sets
        assert sets is not None
        if nft_render.is_element_only(delta) and self._netlink is not None:
            self._send_elements(nft_render.element_ops(delta, model, ins, eg, families, self._interval, had))
        else:
            unknown = sorted(delta.removed_sets - sets.keys())
            if unknown:
                # Its elements (under its tag) cannot be deleted unknown; left behind, they would
                # come back with a set of that id.
                self.failures += 1
                raise ApplyError(
                    f"delta removes address sets {unknown[:5]} that this node does not hold (nothing "
                    "applied); the agent resynchronises with a full snapshot"
                )
            ports = self._ports
            if isinstance(ports, PortBook):
                create, delete = ports.changes(delta)
            else:
                create, delete = nft_render.port_changes(delta, model, ports)
            gone = {sid: sets[sid] for sid in delta.removed_sets}
            # The first tier chain (or the last one gone): the tier objects come (or go) and the
            # forward chain is rewritten in the same transaction (`nft_render.render_delta`).
            tiers = (self._tiered, bool(tier_chains))
            script = nft_render.render_delta(
                delta,
                model,
                self.config,
                ins,
                eg,
                families,
                interval=self._interval,
                gone=gone,
                had_tiers=had,
                tiers=tiers,
                ports=(create, delete),
            )
            self.run_script(script)
            if isinstance(ports, PortBook):
                ports.apply(delta)
            else:  # once after a read-back: from here on the kernel's chains are the model's
                self._ports = PortBook(model.chains)
            own_gone = {names.nft_set_of(sid, v) for sid in delta.removed_sets for v in nft_render.FAMILIES}
            self._interval = (self._interval - own_gone) | nft_render.interval_sets(delta.new_sets, families)
        for sid in delta.removed_sets:
            sets.pop(sid, None)
        for sid in delta.new_sets.keys() | delta.set_added.keys() | delta.set_removed.keys():
            sets[sid] = model.sets.get(sid, frozenset())
        for (t, d), ips in had.items():
            ips.difference_update(delta.dispatch_removed(d, t))
            ips.update(delta.dispatch_set(d, t))
        self._ipv6 = v6
        self._tier_chains = tier_chains
        self._tiered = bool(tier_chains)

    def verify(self, model: NodeModel) -> list[str]:
        fixed = self.fixed_reference()
        view = self.read_view()
        self._verified = (model, view)
        return nft_readback.differences(view, nft_readback.desired(model, self.config, fixed))

    def repair(self, model: NodeModel) -> None:
        self._repair(model, self.read_view())

    def repair_verified(self, model: NodeModel) -> None:
        """`repair` from what the last `verify` of ``model`` read, when nothing was written since
        (a listing of a loaded table costs more than the repair: the tamper path reads once)."""
        known, self._verified = self._verified, None
        self._repair(model, known[1] if known is not None and known[0] is model else self.read_view())

    def chain_repair(self, model: NodeModel, chains: Collection[str]) -> Callable[[], None] | None:
        """What rewrites ``chains`` (kernel names) as ``model`` has them, in one transaction; None
        when one is not a chain of the model (a full `repair` is needed)."""
        script = nft_chains.rewrite_chains(model, self.config, chains)
        if script is None:
            return None

        def rewrite() -> None:
            self.run_script(script)
            self.repairs += 1

        return rewrite

    def _repair(self, model: NodeModel, view: nft_readback.KernelView | None) -> None:
        script = render_reconcile(view, model, self.config, self.fixed_reference())
        if script:
            self.run_script(script)
            self.repairs += 1
        self._remember(model)

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
        self._nft.close()  # fail static: the rules stay in the kernel when the agent stops

    # -- extras -----------------------------------------------------------------------------
    @property
    def runs_nft_binary(self) -> bool:
        """True when scripts go to the ``nft`` binary (no libnftables): another process commits them."""
        return not self._nft.in_process

    def denied_counts(self) -> dict[str, int]:
        """Denied connections per pod chain id, from the kernel counters (exact)."""
        view = self.read_view(terse=True)
        return dict(view.denied) if view else {}

    @property
    def layout(self) -> tuple[int, ...]:
        """The families the pod chains are rendered for (`nft_render.layout` of the last model)."""
        return nft_render.FAMILIES if self._ipv6 else nft_render.IPV4_ONLY

    def _ipv6_after(self, delta: NodeDelta) -> int:
        """IPv6 pod addresses dispatched once ``delta`` is applied (counted from the delta alone,
        so a delta costs nothing per pod of the node)."""
        assert self._dispatched is not None
        n = self._ipv6
        for (t, d), had in self._dispatched.items():
            n -= sum(1 for ip in delta.dispatch_removed(d, t) if ":" in ip and ip in had)
            n += sum(1 for ip in delta.dispatch_set(d, t) if ":" in ip and ip not in had)
        return n

    def _remember(self, model: NodeModel) -> None:
        self._dispatched = {(t, d): set(table) for t, d, table in model.tier_tables()}
        self._ipv6 = _count_ipv6(self._dispatched)
        self._tier_chains = {cid for cid, c in model.chains.items() if c.tier is not Tier.NETPOL}
        self._tiered = bool(self._tier_chains)
        self._ports = PortBook(model.chains)
        self._interval = nft_render.interval_sets(model.sets, self.layout)
        self._sets = dict(model.sets)


def _count_ipv6(dispatched: dict[tuple[Tier, Direction], set[str]]) -> int:
    return sum(1 for ips in dispatched.values() for ip in ips if ":" in ip)


def _tier_chains_after(held: set[str], delta: NodeDelta) -> set[str]:
    """The tier chains once ``delta`` is applied (from the delta alone)."""
    new = {cid for cid, c in delta.new_chains.items() if c.tier is not Tier.NETPOL}
    if not new and not (delta.removed_chains & held):
        return held
    return (held - delta.removed_chains) | new


def _reference_model() -> NodeModel:
    """The smallest model with the tier objects (`nft_render.is_tiered`): one empty tier chain."""
    chain = Chain.ordered(Direction.EGRESS, Tier.ADMIN, [])
    return NodeModel("reference", chains={chain.id: chain})
