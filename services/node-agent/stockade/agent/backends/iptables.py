"""The iptables + ipset dataplane: ``ipset restore``, then ``iptables-restore --noflush``.

Each apply runs in three steps so no rule ever names a missing set: (1) ``ipset restore``
creates and fills sets and adds pods to their chain's pod set; (2) one ``iptables-restore
--noflush`` (one kernel transaction with iptables-nft) writes our chains and nothing else;
(3) ``ipset restore`` removes pods that left a chain and destroys sets no rule uses any more.
Whole-set replacements go through ``ipset swap``, which is atomic. Unlike the nftables backend
the three steps are not one transaction: while a pod moves between chains it is briefly in both
pod sets, so it gets the stricter of the two rule lists, never the looser.
"""

from __future__ import annotations

import time

from stockade.agent import netns as ns
from stockade.agent.backends import ipt_readback, ipt_render, names
from stockade.agent.backends.base import ApplyError
from stockade.model import Direction, NodeDelta, NodeModel

_TMP = "STK-T-swap"


class IptablesBackend:
    """`Dataplane` over iptables (-nft or -legacy) and ipset."""

    name = "iptables"

    def __init__(
        self, netns: str | None = None, nflog_group: int = 100, log_rate: int | None = None, seen_timeout: int = 130
    ) -> None:
        self.netns = netns
        self.nflog_group = nflog_group
        self.log_rate = log_rate
        self.seen_timeout = seen_timeout
        self._dispatched: dict[Direction, dict[str, str]] | None = None  # pod IP -> pod set name
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

    def _apply(self, ipset_a: list[str], restore: str | None, ipset_b: list[str]) -> bool:
        start = time.perf_counter()
        if ipset_a:
            self._run(["ipset", "-exist", "restore"], "\n".join(ipset_a) + "\n")
        if restore:
            self._run(["iptables-restore", "--noflush"], restore)
        if ipset_b:
            self._run(["ipset", "-exist", "restore"], "\n".join(ipset_b) + "\n")
        self.last_apply_seconds = time.perf_counter() - start
        changed = bool(ipset_a or restore or ipset_b)
        self.transactions += changed
        return changed

    def read_view(self) -> ipt_readback.IptView:
        return ipt_readback.parse(self._run(["ipset", "save"]), self._run(["iptables-save", "-c", "-t", "filter"]))

    def _desired(self, model: NodeModel) -> ipt_readback.IptDesired:
        return ipt_readback.desired(model, self.nflog_group, self.log_rate, self.seen_timeout)

    # -- Dataplane --------------------------------------------------------------------------
    def apply_snapshot(self, model: NodeModel) -> None:
        self._reconcile(model)

    def repair(self, model: NodeModel) -> None:
        if self._reconcile(model):
            self.repairs += 1

    def verify(self, model: NodeModel) -> list[str]:
        return ipt_readback.differences(self.read_view(), self._desired(model))

    def close(self) -> None:
        pass  # fail static

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        if self._dispatched is None:
            self._dispatched = self._dispatch_from(self.read_view())
        a: list[str] = []
        b: list[str] = []
        for sid, elems in delta.new_sets.items():
            name = names.ipset_set(sid)
            a.append(f"create {name} hash:net family inet")
            a += [f"add {name} {e}" for e in sorted(ipt_render.ipset_elements(elems))]
        for sid, elems in delta.set_added.items():
            a += [f"add {names.ipset_set(sid)} {e}" for e in sorted(ipt_render.ipset_elements(elems))]
        for sid, elems in delta.set_removed.items():
            if sid not in delta.removed_sets:
                a += [f"del {names.ipset_set(sid)} {e}" for e in sorted(ipt_render.ipset_elements(elems))]
        touched: set[tuple[Direction, int]] = set()
        for cid, chain in delta.new_chains.items():
            name = ipt_render.pod_set(cid, chain.direction)
            bucket = ipt_render.bucket_of(name)
            a.append(f"create {name} hash:ip family inet")
            a.append(f"create {ipt_render.bucket_set(chain.direction, bucket)} hash:ip family inet")
            touched.add((chain.direction, bucket))
        for direction in Direction:
            mirror = self._dispatched[direction]
            for ip, cid in delta.dispatch_set(direction).items():
                if ":" in ip:
                    continue
                target = ipt_render.pod_set(cid, direction)
                target_bucket = ipt_render.bucket_set(direction, ipt_render.bucket_of(target))
                a += [f"add {target} {ip}", f"add {target_bucket} {ip}"]
                old = mirror.get(ip)
                if old is not None and old != target:
                    b += self._leave(direction, old, ip, keep_bucket=target_bucket)
                mirror[ip] = target
            for ip in delta.dispatch_removed(direction):
                old = mirror.pop(ip, None)
                if old is not None:
                    b += self._leave(direction, old, ip)
        removed = [names.ipt_chain(c) for c in delta.removed_chains]
        for cid in delta.removed_chains:
            # Chain ids name their direction ("in_..." / "out_..."): see stockade.model.chain_id.
            direction = Direction.INGRESS if cid.startswith("in_") else Direction.EGRESS
            name = ipt_render.pod_set(cid, direction)
            b.append(f"destroy {name}")
            touched.add((direction, ipt_render.bucket_of(name)))
        chains: dict[str, list[str]] = {}
        if touched:
            chains[ipt_render.FWD] = ipt_render.fwd_specs(model.chains)
            tree = ipt_render.buckets(model.chains)
            for direction, bucket in sorted(touched):
                name = ipt_render.bucket_chain(direction, bucket)
                if (direction, bucket) in tree:
                    chains[name] = ipt_render.bucket_specs(direction, tree[direction, bucket])
                else:  # the bucket emptied: its chain and set go, after FWD stops naming them
                    removed.append(name)
                    b.append(f"destroy {ipt_render.bucket_set(direction, bucket)}")
        for cid, chain in delta.new_chains.items():
            chains[names.ipt_chain(cid)] = ipt_render.chain_specs(
                cid, chain, self.nflog_group, self.log_rate, self.seen_timeout
            )
        restore = ipt_render.restore_script(chains, removed) if chains or removed else None
        b += [f"destroy {names.ipset_set(s)}" for s in delta.removed_sets]
        self._apply(a, restore, b)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _leave(direction: Direction, pod_set: str, ip: str, keep_bucket: str | None = None) -> list[str]:
        """ipset lines taking ``ip`` out of a chain's pod set (and its bucket, unless it stays there)."""
        bucket = ipt_render.bucket_set(direction, ipt_render.bucket_of(pod_set))
        return [f"del {pod_set} {ip}"] + ([f"del {bucket} {ip}"] if bucket != keep_bucket else [])

    def _reconcile(self, model: NodeModel) -> bool:
        """Make the kernel hold ``model``, touching only what differs; True when anything changed."""
        view = self.read_view()
        want = self._desired(model)
        a: list[str] = []
        b: list[str] = []
        for kind, have, wanted in (("hash:net", view.sets, want.sets), ("hash:ip", view.pods, want.pods)):
            for name, elems in wanted.items():
                if have.get(name) == elems:
                    continue
                # Fill a temporary set and swap it in: atomic, and works for a missing set too.
                a += [f"create {name} {kind} family inet", f"create {_TMP} {kind} family inet", f"flush {_TMP}"]
                a += [f"add {_TMP} {e}" for e in sorted(elems)]
                a += [f"swap {_TMP} {name}", f"destroy {_TMP}"]
            b += [f"destroy {n}" for n in sorted(have.keys() - wanted.keys())]
        chains = {
            n: s
            for n, s in want.chains.items()
            if view.chains.get(n) != len(s) or (n in view.specs and view.specs[n] != s)
        }
        if view.fwd != want.fwd:
            chains = {ipt_render.FWD: want.fwd, **chains}
        extra = sorted(view.chains.keys() - want.chains.keys())
        restore = ipt_render.restore_script(chains, extra) if chains or extra else None
        changed = self._apply(a, restore, b)
        if not view.forward_jump:
            self._run(["iptables", "-I", "FORWARD", "1", "-j", ipt_render.FWD])
            changed = True
        self._dispatched = self._dispatch_from_model(model)
        return changed

    @staticmethod
    def _dispatch_from_model(model: NodeModel) -> dict[Direction, dict[str, str]]:
        return {d: {ip: ipt_render.pod_set(c, d) for ip, c in model.dispatch(d).items()} for d in Direction}

    @staticmethod
    def _dispatch_from(view: ipt_readback.IptView) -> dict[Direction, dict[str, str]]:
        out: dict[Direction, dict[str, str]] = {d: {} for d in Direction}
        for name, ips in view.pods.items():
            if not name.startswith(("STK-PI-", "STK-PO-")):
                continue  # bucket sets follow from the pod sets
            d = Direction.INGRESS if name.startswith("STK-PI-") else Direction.EGRESS
            out[d].update({ip.removesuffix("/32"): name for ip in ips})
        return out

    def denied_counts(self) -> dict[str, int]:
        """Denied connections per pod chain id, from the ``deny`` rule counters (exact)."""
        return dict(self.read_view().denied)
