"""The agent's periodic kernel work: verify and repair drift, read the exact deny counters, and
re-check what the node needs for every pod packet to reach the rules (a bridge created after
start, a sysctl flipped back).

The kernel calls run in worker threads (they block); none of the loops ever ends the agent: a
failure is logged and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stockade.agent.metered import MeteredDataplane
from stockade.agent.metrics import AgentMetrics

log = logging.getLogger(__name__)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))
    except TimeoutError:
        pass


async def verify_loop(
    dataplane: MeteredDataplane,
    interval: float,
    stop: asyncio.Event,
    generation: Callable[[], int] = lambda: 0,
    first_wait: float = 0.2,
) -> None:
    """Verify as soon as a first model is in force (start-up), then every ``interval`` seconds."""
    while not stop.is_set() and dataplane.model is None:
        await _sleep_or_stop(stop, first_wait)
    while not stop.is_set():
        try:
            problems = await asyncio.to_thread(dataplane.check)
        except Exception as e:
            log.error("verifying the kernel's rules failed (will retry in %.0fs): %s", interval, e)
        else:
            if problems:
                shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
                log.warning(
                    "drift repaired: the kernel differed from generation %d in %d place(s) (%s); "
                    "restored in one transaction",
                    generation(),
                    len(problems),
                    shown,
                )
        await _sleep_or_stop(stop, interval)


async def counters_loop(
    dataplane: MeteredDataplane,
    metrics: AgentMetrics,
    interval: float,
    stop: asyncio.Event,
    also: Callable[[], None] = lambda: None,
) -> None:
    """Fold the kernel's deny counters into the metrics every ``interval`` seconds (and run ``also``)."""
    unreadable_logged = False
    while not stop.is_set():
        try:
            counts = await asyncio.to_thread(dataplane.denied_counts)
            if counts is not None:
                metrics.kernel_counters(counts)
                unreadable_logged = False
        except Exception as e:
            if not unreadable_logged:
                log.warning("reading the kernel's deny counters failed: %s", e)
                unreadable_logged = True
        also()
        await _sleep_or_stop(stop, interval)


async def preflight_loop(check: Callable[[], Awaitable[None]], interval: float, stop: asyncio.Event) -> None:
    """Run ``check`` (the node's preflight; it records its own failures) every ``interval`` seconds."""
    while not stop.is_set():
        await _sleep_or_stop(stop, interval)
        if not stop.is_set():
            await check()
