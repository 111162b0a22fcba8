"""Which committed nf_tables transactions may have touched what we own, and were not ours.

What we own: nftables backend, the table ``inet stockade`` (anything in it: a deleted table, a
flushed chain, an element removed by hand, a foreign rule inserted into our forward chain).
iptables backend on iptables-nft: the ``filter`` tables of ``ip`` and ``ip6`` as far as FORWARD
and our chains (``STOCKADE-FWD``, ``STK-*``) go, and the tables themselves (a flush). Changes to
other tables and chains are ignored without a look (kube-proxy rewrites its own all the time).

Ours: a transaction committed from one of this process's netfilter sockets (libnftables, our
element batches), or, while the agent itself writes (`MeteredDataplane.write_window`), one
committed by the tool the backend runs (``iptables-restore``, ``ip6tables-restore``; ``nft``
without libnftables): those are children of ours, whose sockets are gone by the time we look.
A foreign ``iptables``/``nft`` committed during one of our own writes of the same tool is taken
for ours (a window of milliseconds), and so are notifications lost to a full queue during one
of our writes (a large snapshot announces more than the queue holds); the periodic check still
covers both. Lost notifications at any other time mean a full check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from stockade.agent.backends import ipt_render
from stockade.agent.backends.nft_render import TABLE
from stockade.agent.tamper import notify
from stockade.agent.tamper.notify import Change, NftNotifications, Overrun, Transaction

log = logging.getLogger(__name__)

IPT_TOOLS = ("iptables", "ip6tables", "xtables")


def nft_relevant(change: Change) -> bool:
    family, name = TABLE.split()
    return notify.FAMILY_NAMES.get(change.family) == family and change.table == name


def nft_narrow(changes: list[Change]) -> set[str] | None:
    """The chains of ours whose rules these changes touched, when that is all they did (the tamper
    loop then rewrites just those); None when they did more (a check of everything follows)."""
    if all(c.kind in (notify.NEWRULE, notify.DELRULE) and c.chain for c in changes):
        return {c.chain for c in changes}
    return None


def ipt_relevant(change: Change) -> bool:
    if change.family not in (notify.NFPROTO_IPV4, notify.NFPROTO_IPV6) or change.table != "filter":
        return False
    if change.kind in (notify.NEWCHAIN, notify.DELCHAIN, notify.NEWRULE, notify.DELRULE):
        return change.chain in ("FORWARD", ipt_render.FWD) or change.chain.startswith("STK-")
    return True  # the table itself, or an object we do not tell apart: look


@dataclass
class WatchStats:
    transactions: int = 0  # committed transactions seen
    unrelated: int = 0  # touched nothing of ours
    own: int = 0  # ours (applies and repairs)
    foreign: int = 0  # foreign and may touch what we own: a check follows
    overruns: int = 0  # notifications lost: a check follows (unless during our own write)
    own_overruns: int = 0  # ... lost during one of our own writes: taken for ours


class TamperWatcher:
    """Reads the notifications (from the event loop and, around our writes, from the writing
    thread) and keeps the time the oldest unhandled foreign change was received."""

    def __init__(
        self,
        notifications: NftNotifications,
        relevant: Callable[[Change], bool],
        tools: tuple[str, ...] = (),
        own: Callable[[], set[int]] = set,
        narrow: Callable[[list[Change]], set[str] | None] = lambda changes: None,
    ) -> None:
        self.notifications = notifications
        self.relevant = relevant
        self.narrow = narrow
        self.tools = tools  # process names of the tools our backend runs
        self._own_portids = own
        self.own = {notifications.portid} | own()
        self.stats = WatchStats()
        self.wake: Callable[[], None] = lambda: None  # thread-safe; set by the tamper loop
        self._mu = threading.Lock()
        self._writing = 0
        self._batch: list[Change] = []
        self._batch_started: float | None = None
        self._pending: float | None = None  # monotonic time the oldest unhandled change arrived
        self._chains: set[str] | None = set()  # what the unhandled changes touched (None: anything)
        self._lost_own = False  # notifications lost during the current write of ours

    # -- reading ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Read what is queued; wake the loop when a foreign change may have touched our rules."""
        with self._mu:
            try:
                for datagram in self.notifications.read():
                    now = time.monotonic()
                    for item in notify.parse(datagram):
                        if isinstance(item, Transaction):
                            self._commit(item)
                        else:
                            if self._batch_started is None:
                                self._batch_started = now
                            self._batch.append(item)
            except Overrun:
                self.stats.overruns += 1
                self._batch, self._batch_started = [], None
                if self._writing:
                    # The queue was empty when our write began (`writing`): what overflowed it is
                    # our own transaction's announcement (a large snapshot's), not worth a check.
                    self.stats.own_overruns += 1
                    self._lost_own = True
                else:
                    self._flag(time.monotonic(), None)
            pending = self._pending is not None
        if pending:
            self.wake()

    def _commit(self, txn: Transaction) -> None:
        changes, started = self._batch, self._batch_started
        self._batch, self._batch_started = [], None
        self.stats.transactions += 1
        ours = [c for c in changes if self.relevant(c)]
        if not ours:
            self.stats.unrelated += 1
        elif self._ours(txn):
            self.stats.own += 1
        else:
            self.stats.foreign += 1
            self._flag(started if started is not None else time.monotonic(), self.narrow(ours))
            log.debug("foreign ruleset change by %s (pid %d): %s", txn.process, txn.pid, changes[:5])

    def _ours(self, txn: Transaction) -> bool:
        if txn.portid in self.own:
            return True
        if self._writing:
            if self.tools and txn.process.startswith(self.tools):
                return True
            self.own |= self._own_portids()  # a socket libnftables opened since we looked
            return txn.portid in self.own
        return False

    def _flag(self, when: float, chains: set[str] | None) -> None:
        if self._pending is None or when < self._pending:
            self._pending = when
        self._chains = None if chains is None or self._chains is None else self._chains | chains

    def rearm(self, when: float) -> None:
        """Hand ``when`` out again, for a full check (one that failed is retried, timed from the
        same change)."""
        with self._mu:
            self._flag(when, None)

    def take(self) -> tuple[float, set[str] | None] | None:
        """(the receive time of the oldest foreign change not yet handed out, the chains of ours
        whose rules those changes touched, or None when they may have touched anything); None
        when there is none."""
        with self._mu:
            when, chains = self._pending, self._chains
            self._pending, self._chains = None, set()
            return None if when is None else (when, chains)

    # -- our own writes -----------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Wrap one write of ours (`MeteredDataplane.write_window`): what it commits is ours."""
        self.drain()  # what came before is judged as before
        with self._mu:
            self._writing += 1
        try:
            yield
        finally:
            try:
                self.drain()  # our transactions' notifications are queued by now
            finally:
                with self._mu:
                    self._writing -= 1
                    if self._lost_own:
                        # the rest of a transaction whose end was lost: ours, not the next one's
                        self._batch, self._batch_started, self._lost_own = [], None, False

    def close(self) -> None:
        self.notifications.close()
