"""The agent's tamper task: a foreign change to what we own is checked, and repaired in one
transaction, within milliseconds instead of at the next periodic check.

Per foreign change (`watch.TamperWatcher`): wait ``debounce`` seconds so that one tool's burst
(a ``flush ruleset`` then a reload, a script of many commands) costs one repair, then, in a
worker thread under the dataplane lock (never during an apply), in one transaction:

- when the changes only added or removed rules in chains of ours (nftables): rewrite those
  chains from the model (`MeteredDataplane.repair_chains`): milliseconds, where verifying first
  lists the whole table;
- otherwise `MeteredDataplane.check`: verify everything and repair what differs (the periodic
  check's path; it stays as the backstop).

The repair's own notifications are ours and trigger nothing.

iptables backend: also looks for foreign FORWARD rules that can accept before our jump
(`overrides`) on every such change, and reports them as a readiness problem. On
iptables-legacy nothing is announced: the periodic check is the only repair, and the override
audit runs every ``audit_interval`` seconds.

Never ends the agent: a failure is logged, and the loop waits for ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import nullcontext

from stockade.agent import preflight
from stockade.agent.metered import MeteredDataplane
from stockade.agent.tamper import notify, overrides
from stockade.agent.tamper.watch import IPT_TOOLS, TamperWatcher, ipt_relevant, nft_narrow, nft_relevant

log = logging.getLogger(__name__)

FOREIGN_OVERRIDE = "foreign_override"  # the readiness problem code (and metric reason)
RETRY = 1.0  # seconds before a failed check is tried again


def open_watcher(dataplane: MeteredDataplane, netns: str | None) -> TamperWatcher:
    """A watcher for ``dataplane``'s backend in ``netns``; raises OSError if it cannot subscribe."""
    inner = dataplane.inner
    tools: tuple[str, ...]
    if dataplane.name == "iptables":
        return TamperWatcher(notify.NftNotifications(netns), ipt_relevant, IPT_TOOLS)
    tools = ("nft",) if getattr(inner, "runs_nft_binary", False) else ()
    return TamperWatcher(
        notify.NftNotifications(netns), nft_relevant, tools, lambda: notify.own_portids(netns), nft_narrow
    )


class _Overrides:
    """The iptables override audit, and the readiness problems it reports."""

    def __init__(self, dataplane: MeteredDataplane, netns: str | None) -> None:
        inner = dataplane.inner
        self.read = overrides.reader(netns, getattr(inner, "versions", (4,)), getattr(inner, "variant", None))
        self.metrics = dataplane.metrics
        self.found: list[overrides.Override] = []

    def problems(self) -> list[preflight.Problem]:
        return [
            preflight.Problem(
                FOREIGN_OVERRIDE, f"{o.describe()}: pods are not enforced while it is there (remove or move it)"
            )
            for o in self.found
        ]

    async def audit(self) -> bool:
        """Re-read; True when what is found changed."""
        try:
            found = await asyncio.to_thread(self.read)
        except Exception as e:
            log.warning("cannot look for foreign FORWARD rules: %s", e)
            return False
        changed = found != self.found
        self.found = found
        self.metrics.set_foreign_overrides(len(found))
        if changed:
            for o in found:
                log.error("foreign rule can override our verdicts (reported, not removed): %s", o.describe())
            if not found:
                log.info("no foreign FORWARD rule comes before our jump any more")
        return changed


def _report_in(node_check: preflight.NodeCheck | None, audit: _Overrides) -> None:
    """Make the node's check include the overrides, so readiness and /readyz say so."""
    if node_check is None:
        return
    needs = node_check.needs

    def with_overrides(facts: preflight.NodeFacts) -> list[preflight.Problem]:
        return needs(facts) + audit.problems()

    node_check.needs = with_overrides


async def _wait(stop: asyncio.Event, wake: asyncio.Event, timeout: float | None) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _check(dataplane: MeteredDataplane, since: float, chains: set[str] | None, quiet: bool) -> bool:
    """One repair of ``chains`` (rewritten: another process changed their rules), or one check and
    repair of everything; True when it ran (in sync or repaired), False when it failed (logged
    unless ``quiet``: the same failure, again)."""
    try:
        problems = await asyncio.to_thread(dataplane.repair_chains, chains) if chains else None
        if problems is None:
            problems = await asyncio.to_thread(dataplane.check)
    except Exception as e:
        (log.debug if quiet else log.error)(
            "repairing after a ruleset change failed (retrying every %.0fs): %s", RETRY, e
        )
        return False
    if problems:
        window = dataplane.repaired_at - since
        dataplane.metrics.tamper_repaired(dataplane.name, window)
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        log.warning(
            "tampering repaired %.0f ms after it was announced: the kernel differed in %d place(s) (%s); "
            "restored in one transaction",
            window * 1000,
            len(problems),
            shown,
        )
    elif dataplane.model is not None:
        dataplane.metrics.tamper_checked_in_sync()
    return True


async def tamper_watch_loop(
    dataplane: MeteredDataplane,
    stop: asyncio.Event,
    netns: str | None = None,
    node_check: preflight.NodeCheck | None = None,
    recheck: Callable[[], Awaitable[None]] | None = None,
    debounce: float = 0.010,
    audit_interval: float = 30.0,
) -> None:
    """Watch the ruleset until ``stop``; ``node_check``/``recheck``: the agent's node check and
    the coroutine that re-runs it and tells the brain (for foreign overrides)."""
    dataplane.metrics.tamper_repairs.labels(backend=dataplane.name)
    audit = _Overrides(dataplane, netns) if dataplane.name == "iptables" else None
    if audit is not None:
        _report_in(node_check, audit)

    async def reaudit() -> None:
        if audit is not None and await audit.audit() and recheck is not None:
            await recheck()

    variant = getattr(dataplane.inner, "variant", None)
    if audit is not None and await asyncio.to_thread(overrides.legacy, netns, variant):
        log.info(
            "iptables-legacy: its tables are not nf_tables and changes to them are never announced; "
            "tampering is repaired by the periodic check only"
        )
        while not stop.is_set():
            await reaudit()
            await _wait(stop, asyncio.Event(), audit_interval)
        return
    try:
        watcher = open_watcher(dataplane, netns)
    except OSError as e:
        log.error("cannot subscribe to nf_tables change notifications (periodic check only): %s", e)
        await stop.wait()
        return
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def wake_up() -> None:  # from the event loop or from a writing thread
        loop.call_soon_threadsafe(wake.set)

    watcher.wake = wake_up
    loop.add_reader(watcher.notifications.fileno(), watcher.drain)
    dataplane.write_window = watcher.writing
    log.info("watching the ruleset for changes to our rules (%s)", dataplane.name)
    failing = False
    try:
        await reaudit()
        while not stop.is_set():
            await _wait(stop, wake, None)
            wake.clear()
            if stop.is_set():
                break
            await asyncio.sleep(debounce)  # one burst of foreign commands, one check
            watcher.drain()
            wake.clear()
            taken = watcher.take()
            if taken is None:
                continue
            since, chains = taken
            if not await _check(dataplane, since, chains, failing):
                failing = True
                watcher.rearm(since)  # retried, timed from the change's first notification
                await _wait(stop, asyncio.Event(), RETRY)
                wake.set()
                continue
            failing = False
            await reaudit()
    finally:
        dataplane.write_window = nullcontext
        loop.remove_reader(watcher.notifications.fileno())
        watcher.close()
