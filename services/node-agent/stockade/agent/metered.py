"""A `Dataplane` wrapper for the running agent: one lock, metrics, the model in force, conntrack.

The sync client applies from a worker thread while the verify loop and the counter reader run
from others; the backends are not thread-safe (and a verify racing an apply would report drift
that is not there), so every kernel call goes through one lock here. Each apply is timed and
counted in `AgentMetrics`. After an apply that may forbid flows (`conntrack.may_forbid`), the
established connections the new model forbids are ended before the apply returns, so the
brain's ack means "enforced, for new and running connections alike".

A repair (`check`) ends the forbidden connections too: while the rules were damaged, some may
have been set up. Every write to the kernel runs inside ``write_window()`` (under the lock): the tamper watcher
sets it so that it can tell our own transactions' change notifications from foreign ones
(`stockade.agent.tamper`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext

from stockade.agent.backends.base import Dataplane
from stockade.agent.conntrack import may_forbid
from stockade.agent.metrics import AgentMetrics
from stockade.model import NodeDelta, NodeModel, diff

log = logging.getLogger(__name__)

# (model, local pod IPs) -> number of connections ended
EndFlows = Callable[[NodeModel, Collection[str]], int]


def conntrack_end_flows(netns: str | None = None) -> EndFlows:
    """The real clean-up: delete the conntrack entries the model forbids (in ``netns``)."""
    from stockade.agent.conntrack import cleanup

    def end(model: NodeModel, pods: Collection[str]) -> int:
        return len(cleanup(model, pods, netns).deleted)

    return end


def local_pods(model: NodeModel) -> set[str]:
    """The node's pods the model judges: only a pod some chain (of any tier) judges can have a
    flow forbidden."""
    return {ip for _, _, table in model.tier_tables() for ip in table}


class MeteredDataplane:
    """`Dataplane` around ``inner``; also remembers the model the kernel was last given."""

    def __init__(self, inner: Dataplane, metrics: AgentMetrics, end_flows: EndFlows | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.metrics = metrics
        self.end_flows = end_flows
        self.lock = threading.Lock()
        self.model: NodeModel | None = None
        self.last_kind = ""  # "snapshot" or "delta": what the last apply was, for the logs
        self.last_seconds = 0.0
        self.applies = 0
        self.write_window: Callable[[], AbstractContextManager[None]] = nullcontext
        self.committed_at = 0.0  # time.monotonic() when the last write returned
        self.repaired_at = 0.0  # ... and when `check` last committed a repair

    # -- Dataplane ------------------------------------------------------------------------------

    def apply_snapshot(self, model: NodeModel) -> None:
        with self.lock:
            prev = self.model
            self._timed(self.inner.apply_snapshot, model)
            # The first snapshot after start-up follows rules of unknown age: always clean up.
            self._applied(model, "snapshot", prev is None or may_forbid(diff(prev, model), model))

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        with self.lock:
            self._timed(self.inner.apply_delta, delta, model)
            self._applied(model, "delta", may_forbid(delta, model))

    def verify(self, model: NodeModel) -> list[str]:
        with self.lock:
            return self.inner.verify(model)

    def repair(self, model: NodeModel) -> None:
        with self.lock:
            self._timed(self.inner.repair, model)

    def close(self) -> None:
        with self.lock:
            self.inner.close()  # fail static: the backends leave the rules in the kernel

    # -- for the agent's loops ------------------------------------------------------------------

    def check(self) -> list[str]:
        """Verify the kernel against the model in force; on drift, repair it in one transaction.

        Returns the differences found (empty: in sync, or nothing applied yet)."""
        with self.lock:
            model = self.model
            if model is None:
                return []
            problems = self.inner.verify(model)
            if problems:
                # a backend that can repair from what verify just read saves a second listing
                self._timed(getattr(self.inner, "repair_verified", self.inner.repair), model)
                self.repaired_at = self.committed_at
                self.metrics.drift_repaired()
                # While the rules were damaged, connections they forbid may have been set up; the
                # forward chain accepts established flows, so they would outlive the repair.
                self._end_forbidden(model)
            return problems

    def repair_chains(self, chains: Collection[str]) -> list[str] | None:
        """Rewrite ``chains`` (kernel names that another process changed rules in) from the model
        in force, in one transaction, when the backend can (`NftablesBackend.chain_repair`).

        Returns what was repaired, or None when the backend cannot do it chain by chain (then
        `check` is the way)."""
        planner: Callable[[NodeModel, Collection[str]], Callable[[], None] | None] | None
        planner = getattr(self.inner, "chain_repair", None)
        if planner is None:
            return None
        with self.lock:
            model = self.model
            if model is None:
                return []
            rewrite = planner(model, chains)
            if rewrite is None:
                return None
            self._timed(rewrite)
            self.repaired_at = self.committed_at
            self.metrics.drift_repaired()
            self._end_forbidden(model)
            return [f"rules of chain {name} changed by another process" for name in sorted(chains)]

    def denied_counts(self) -> dict[str, int] | None:
        """The kernel's exact per-chain deny counters (`CountingDataplane`), or None without them."""
        read: Callable[[], dict[str, int]] | None = getattr(self.inner, "denied_counts", None)
        if read is None:
            return None
        with self.lock:
            return read()

    # -- internals ------------------------------------------------------------------------------

    def _timed(self, fn: Callable[..., None], *args: object) -> None:
        start = time.perf_counter()
        with self.write_window(), self.metrics.applying():
            fn(*args)
            self.committed_at = time.monotonic()  # before the window reads our notifications back
        self.last_seconds = time.perf_counter() - start

    def _applied(self, model: NodeModel, kind: str, forbids: bool) -> None:
        self.model = model
        self.last_kind = kind
        self.applies += 1
        self.metrics.set_model(model)
        if forbids:
            self._end_forbidden(model)

    def _end_forbidden(self, model: NodeModel) -> None:
        if self.end_flows is not None:
            pods = local_pods(model)
            if not pods:
                return
            try:
                ended = self.end_flows(model, pods)
            except Exception as e:  # the rules are in; a failed clean-up must not fail the apply
                log.warning("conntrack clean-up failed (the new rules are in force for new connections): %s", e)
                return
            if ended:
                self.metrics.conntrack_ended(ended)
                log.info("ended %d established connection(s) the new rules forbid", ended)
