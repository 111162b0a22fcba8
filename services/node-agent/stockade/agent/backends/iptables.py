"""The iptables + ipset dataplane, both families: ``ipset restore``, then ``iptables-restore
--noflush`` and ``ip6tables-restore --noflush``, then ``ipset restore`` again.

Each apply runs in four steps so no rule ever names a missing set: (1) one ``ipset restore``
creates and fills the sets of both families and adds pods to their chain's pod set; (2) one
``iptables-restore --noflush`` writes our IPv4 chains and nothing else, (3) one
``ip6tables-restore --noflush`` our IPv6 chains (each one kernel transaction: one nf_tables
batch with iptables-nft, one replacement of the family's filter table with iptables-legacy);
(4) ``ipset restore`` removes pods that left a chain and destroys sets no rule uses any more.
Whole-set replacements go through ``ipset swap``, which is atomic. Unlike the nftables backend
the steps are not one transaction: while a pod moves between chains it is briefly in both pod
sets, so it gets the stricter of the two rule lists, never the looser.

When step (3) fails after (2) took effect, nothing is rolled back: the apply raises
`ApplyError` saying so, step (4) does not run, and the backend forgets what it believed the
kernel holds. The IPv4 side then holds the new rules, the IPv6 side its old rule lists over the
new set contents (the state any apply passes through between steps 1 and 3; pods that left a
chain are still in its pod set: stricter, not looser); the agent nacks, the brain sends a
snapshot, and `apply_snapshot` compares the kernel with it and rewrites what differs. A rollback
would need the previous model's rules, which a delta does not carry.

ClusterNetworkPolicy tiers (`ipt_tiers`): the Admin and Baseline dispatch trees are kept as the
NetworkPolicy one is (pod sets named by their dispatch, so a read-back knows which is which); a
delta that brings the first tier chain or takes the last also rewrites STOCKADE-FWD and creates
or removes the fixed tier chains, in the same restore.

A node whose kernel has no IPv6 (``ipv6.disable=1``) gets only the IPv4 side; a model naming an
IPv6 address is then refused with an error, never loaded without it.
"""

from __future__ import annotations

import os
import time

from stockade.agent import netns as ns
from stockade.agent.backends import elements, ipt_readback, ipt_render, ipt_tiers, names
from stockade.agent.backends.base import ApplyError
from stockade.model import Direction, NodeDelta, NodeModel, Tier

_TMP = "STK-T-swap"
Dispatched = dict[tuple[Tier, Direction], dict[str, str]]


def kernel_has_ipv6() -> bool:
    """False when the kernel runs without IPv6 (the module absent or ``ipv6.disable=1``)."""
    return os.path.exists("/proc/net/if_inet6")


class IptablesBackend:
    """`Dataplane` over iptables and ip6tables (-nft or -legacy: ``variant``) and ipset."""

    name = "iptables"

    def __init__(
        self,
        netns: str | None = None,
        nflog_group: int = 100,
        log_rate: int | None = None,
        seen_timeout: int = 130,
        ipv6: bool | None = None,
        variant: str | None = None,
    ) -> None:
        if variant is not None and variant not in ipt_render.VARIANTS:
            raise ValueError(f"unknown iptables variant {variant!r}: choose one of {', '.join(ipt_render.VARIANTS)}")
        self.variant = variant  # None: whatever `iptables` is on this node (-nft or -legacy)
        self.netns = netns
        self.nflog_group = nflog_group
        self.log_rate = log_rate
        self.seen_timeout = seen_timeout
        has6 = kernel_has_ipv6() if ipv6 is None else ipv6
        # IP versions we program (4, 6), and the same as the agent's family names (`Backend`)
        self.versions: tuple[int, ...] = ipt_render.FAMILIES if has6 else (4,)
        self.families: tuple[str, ...] = tuple(f"ipv{v}" for v in self.versions)
        self._dispatched: Dispatched | None = None  # per (tier, direction): pod IP -> pod set name
        self._held: set[str] = set()  # the pod sets we hold (both families)
        self._tiered: bool | None = None  # whether the kernel holds the tier layout (None: unknown)
        # (model, what the last verify of it read), until anything is written
        self._verified: tuple[NodeModel, ipt_readback.IptView] | None = None
        self.transactions = 0
        self.failures = 0
        self.repairs = 0
        self.last_apply_seconds = 0.0

    # -- kernel I/O -------------------------------------------------------------------------
    def _run(self, argv: list[str], script: str | None = None) -> str:
        proc = ns.run(argv, self.netns, input=script)
        if proc.returncode != 0:
            self.failures += 1
            raise ApplyError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _apply(self, ipset_a: list[str], restores: dict[int, str], ipset_b: list[str]) -> bool:
        self._verified = None
        start = time.perf_counter()
        try:
            if ipset_a:
                self._run(["ipset", "-exist", "restore"], "\n".join(ipset_a) + "\n")
            done: list[int] = []
            for family in self.versions:
                if family in restores:
                    try:
                        self._run([ipt_render.tool(family, "restore", self.variant), "--noflush"], restores[family])
                    except ApplyError as e:
                        if done:
                            raise ApplyError(
                                f"{e}; the IPv4 rules of this change are in force, the IPv6 ones are "
                                "not (nothing was rolled back: a snapshot rewrites what differs)"
                            ) from None
                        raise
                    done.append(family)
            if ipset_b:
                self._run(["ipset", "-exist", "restore"], "\n".join(ipset_b) + "\n")
        except ApplyError:
            self._dispatched = None  # what we believed the kernel holds may be wrong: re-read it
            self._tiered = None
            raise
        self.last_apply_seconds = time.perf_counter() - start
        changed = bool(ipset_a or restores or ipset_b)
        self.transactions += changed
        return changed

    def read_view(self) -> ipt_readback.IptView:
        saves = {f: self._run([ipt_render.tool(f, "save", self.variant), "-c", "-t", "filter"]) for f in self.versions}
        return ipt_readback.parse(self._run(["ipset", "save"]), saves[4], saves.get(6))

    def _desired(self, model: NodeModel) -> ipt_readback.IptDesired:
        return ipt_readback.desired(model, self.nflog_group, self.log_rate, self.seen_timeout, self.versions)

    # -- Dataplane --------------------------------------------------------------------------
    def apply_snapshot(self, model: NodeModel) -> None:
        self._reconcile(model)

    def repair(self, model: NodeModel) -> None:
        if self._reconcile(model):
            self.repairs += 1

    def repair_verified(self, model: NodeModel) -> None:
        """`repair` from what the last `verify` of ``model`` read, when nothing was written since
        (reading the kernel is three processes: the tamper path reads once)."""
        known, self._verified = self._verified, None
        if self._reconcile(model, known[1] if known is not None and known[0] is model else None):
            self.repairs += 1

    def verify(self, model: NodeModel) -> list[str]:
        view = self.read_view()
        self._verified = (model, view)
        return ipt_readback.differences(view, self._desired(model))

    def close(self) -> None:
        pass  # fail static

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        self._check(delta)  # refuse before anything reaches the kernel
        if delta.new_sets or delta.new_chains:  # only new ids can collide with the model's
            names.check_ipt_names(model.sets, model.chains)
        if self._dispatched is None or self._tiered is None:
            view = self.read_view()
            self._dispatched = self._dispatch_from(view)
            self._held = {n for n in view.pods if ipt_render.pod_set_dispatch(n)}
            self._tiered = any(ipt_tiers.E_TIERS in r.chains for r in view.rules.values())
        removed_tiers = {cid: self._tier_of(cid) for cid in delta.removed_chains}
        if None in removed_tiers.values():  # a chain we cannot place: compare with the kernel instead
            self._reconcile(model)
            return
        fams = self.versions
        a: list[str] = []
        b: list[str] = []
        for sid, elems in delta.new_sets.items():
            for f in fams:
                name = ipt_render.addr_set(sid, f)
                a.append(f"create {name} hash:net family {ipt_render.INET[f]}")
                a += [f"add {name} {e}" for e in sorted(ipt_render.ipset_elements(elems, f))]
        for sid, elems in delta.set_added.items():
            for f in fams:
                name = ipt_render.addr_set(sid, f)
                a += [f"add {name} {e}" for e in sorted(ipt_render.ipset_elements(elems, f))]
        for sid, elems in delta.set_removed.items():
            if sid not in delta.removed_sets:
                for f in fams:
                    name = ipt_render.addr_set(sid, f)
                    a += [f"del {name} {e}" for e in sorted(ipt_render.ipset_elements(elems, f))]
        touched: set[tuple[Tier, Direction, int]] = set()
        for cid, chain in delta.new_chains.items():
            bucket = ipt_render.bucket_of(ipt_render.pod_set(cid, chain.direction))
            for f in fams:
                inet = ipt_render.INET[f]
                pods = ipt_render.pod_set(cid, chain.direction, f, chain.tier)
                a.append(f"create {pods} hash:ip family {inet}")
                bucket_set = ipt_render.bucket_set(chain.direction, bucket, f, chain.tier)
                a.append(f"create {bucket_set} hash:ip family {inet}")
                self._held.add(pods)
            touched.add((chain.tier, chain.direction, bucket))
        for tier, direction, _ in model.tier_tables():
            mirror = self._dispatched[tier, direction]
            for ip, cid in delta.dispatch_set(direction, tier).items():
                f = ipt_readback.dispatch_family(ip, fams)
                target = ipt_render.pod_set(cid, direction, f, tier)
                target_bucket = ipt_render.bucket_set(direction, ipt_render.bucket_of(target), f, tier)
                a += [f"add {target} {ip}", f"add {target_bucket} {ip}"]
                old = mirror.get(ip)
                if old is not None and old != target:
                    b += self._leave(old, ip, keep_bucket=target_bucket)
                mirror[ip] = target
            for ip in delta.dispatch_removed(direction, tier):
                old = mirror.pop(ip, None)
                if old is not None:
                    b += self._leave(old, ip)
        removed = [names.ipt_chain(c) for c in delta.removed_chains]
        for cid, held_tier in removed_tiers.items():
            assert held_tier is not None
            tier = held_tier
            # Chain ids name their direction ("in_..." / "out_..."): see stockade.model.chain_id.
            direction = Direction.INGRESS if cid.startswith("in_") else Direction.EGRESS
            for f in fams:
                pods = ipt_render.pod_set(cid, direction, f, tier)
                b.append(f"destroy {pods}")
                self._held.discard(pods)
            touched.add((tier, direction, ipt_render.bucket_of(ipt_render.pod_set(cid, direction))))
        tiered = ipt_tiers.is_tiered(model.chains)
        layout_changes = tiered != self._tiered
        trees = {t: ipt_render.buckets(model.chains, t) for t in Tier}
        gone = [(t, d, bk) for t, d, bk in sorted(touched) if (d, bk) not in trees[t]]  # emptied buckets
        removed += [ipt_render.bucket_chain(d, bk, t) for t, d, bk in gone]
        b += [f"destroy {ipt_render.bucket_set(d, bk, f, t)}" for t, d, bk in gone for f in fams]
        if layout_changes and not tiered:
            removed += ipt_tiers.FIXED
        restores: dict[int, str] = {}
        for f in fams:
            chains: dict[str, list[str]] = {}
            if touched or layout_changes:
                if tiered:
                    chains[ipt_render.FWD] = ipt_tiers.fwd_specs(model.chains, f)
                    chains |= ipt_tiers.fixed_chains(model.chains, f)
                else:
                    chains[ipt_render.FWD] = ipt_render.fwd_specs(model.chains, f)
                for tier, direction, bucket in sorted(touched):
                    if (direction, bucket) in trees[tier]:
                        name = ipt_render.bucket_chain(direction, bucket, tier)
                        ids = trees[tier][direction, bucket]
                        chains[name] = ipt_tiers.bucket_chain_specs(direction, tier, ids, f)
            for cid, chain in delta.new_chains.items():
                chains[names.ipt_chain(cid)] = ipt_tiers.chain_specs(
                    cid, chain, self.nflog_group, self.log_rate, self.seen_timeout, f
                )
            # The first tier chain (or the last one gone): INPUT's jump comes (goes) with them.
            hooks = ipt_readback.input_hooks(bool(self._tiered), tiered) if layout_changes else []
            if chains or removed or hooks:
                restores[f] = ipt_render.restore_script(chains, removed, hooks)
        for s in delta.removed_sets:
            b += [f"destroy {ipt_render.addr_set(s, f)}" for f in fams]
        self._apply(a, restores, b)
        self._tiered = tiered

    # -- helpers ----------------------------------------------------------------------------
    def _check(self, delta: NodeDelta) -> None:
        """Every address of ``delta`` can be placed in a family we hold (else `ElementError`)."""
        for group in (delta.new_sets, delta.set_added, delta.set_removed):
            for sid, elems in group.items():
                ipt_readback.check_families(sid, elems, self.versions)
        for tier in Tier:
            for direction in Direction:
                for ip in delta.dispatch_set(direction, tier):
                    ipt_readback.dispatch_family(ip, self.versions)

    @staticmethod
    def _leave(pod_set: str, ip: str, keep_bucket: str | None = None) -> list[str]:
        """ipset lines taking ``ip`` out of a chain's pod set (and its bucket, unless it stays there)."""
        family = ipt_render.set_family(pod_set)
        dispatch = ipt_render.pod_set_dispatch(pod_set)
        assert dispatch is not None, pod_set
        tier, direction = dispatch
        bucket = ipt_render.bucket_set(direction, ipt_render.bucket_of(pod_set), family, tier)
        return [f"del {pod_set} {ip}"] + ([f"del {bucket} {ip}"] if bucket != keep_bucket else [])

    def _tier_of(self, chain_id: str) -> Tier | None:
        """The tier of a chain we hold, from the pod sets we hold (their names carry it)."""
        direction = Direction.INGRESS if chain_id.startswith("in_") else Direction.EGRESS
        return next(
            (t for t in Tier for f in self.versions if ipt_render.pod_set(chain_id, direction, f, t) in self._held),
            None,
        )

    def _reconcile(self, model: NodeModel, view: ipt_readback.IptView | None = None) -> bool:
        """Make the kernel hold ``model``, touching only what differs (from ``view``, read now
        when not given); True when anything changed."""
        names.check_ipt_names(model.sets, model.chains)  # two ids sharing a kernel name: refuse all
        want = self._desired(model)  # raises before any kernel I/O on an address we cannot place
        view = view if view is not None else self.read_view()
        a: list[str] = []
        b: list[str] = []
        for name, elems in want.sets.items():
            if view.sets.get(name) == elems:
                continue
            # Fill a temporary set and swap it in: atomic, and works for a missing set too.
            f = ipt_render.set_family(name)
            inet, tmp = ipt_render.INET[f], ipt_render.tagged(_TMP, f)
            a += [f"create {name} hash:net family {inet}", f"create {tmp} hash:net family {inet}", f"flush {tmp}"]
            a += [f"add {tmp} {e}" for e in sorted(elems)]
            a += [f"swap {tmp} {name}", f"destroy {tmp}"]
        for name, elems in want.pods.items():
            have = view.pods.get(name)
            if have == elems:
                continue
            # Pods join before the rules change and leave after: a pod moving between chains is
            # in both for a moment (the old chain or the new decides), never in neither.
            if have is None:
                a.append(f"create {name} hash:ip family {ipt_render.INET[ipt_render.set_family(name)]}")
            a += [f"add {name} {e}" for e in sorted(elems - (have or frozenset()))]
            b += [f"del {name} {e}" for e in sorted((have or frozenset()) - elems)]
        for held, wanted in ((view.sets, want.sets), (view.pods, want.pods)):
            b += [f"destroy {n}" for n in sorted(held.keys() - wanted.keys())]
        restores: dict[int, str] = {}
        for f in self.versions:
            rules = view.rules.get(f, ipt_readback.RulesView())
            chains = {n: s for n, s in want.chains[f].items() if ipt_readback.chain_outdated(rules, n, s)}
            if rules.fwd != want.fwd[f]:
                chains = {ipt_render.FWD: want.fwd[f], **chains}
            extra = sorted(rules.chains.keys() - want.chains[f].keys())
            hooks = ipt_readback.hooks(rules, want)  # in the same restore as the chains they name
            if chains or extra or hooks:
                restores[f] = ipt_render.restore_script(chains, extra, hooks)
        changed = self._apply(a, restores, b)
        self._dispatched = self._dispatch_from_model(model)
        self._held = {n for n in want.pods if ipt_render.pod_set_dispatch(n)}
        self._tiered = ipt_tiers.is_tiered(model.chains)
        return changed

    @staticmethod
    def _dispatch_from_model(model: NodeModel) -> Dispatched:
        return {
            (t, d): {ip: ipt_render.pod_set(c, d, elements.ip_family(ip), t) for ip, c in table.items()}
            for t, d, table in model.tier_tables()
        }

    @staticmethod
    def _dispatch_from(view: ipt_readback.IptView) -> Dispatched:
        out: Dispatched = {(t, d): {} for t in Tier for d in Direction}
        for name, ips in view.pods.items():
            dispatch = ipt_render.pod_set_dispatch(name)
            if dispatch is not None:  # bucket sets follow from the pod sets
                out[dispatch].update({ip.split("/")[0]: name for ip in ips})
        return out

    def denied_counts(self) -> dict[str, int]:
        """Denied connections per pod chain id, both families, from the ``deny`` rule counters (exact)."""
        return dict(self.read_view().denied)
