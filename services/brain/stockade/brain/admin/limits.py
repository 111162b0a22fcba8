"""Bounds on the admin API's expensive calls, per caller: dry-runs and explains.

A dry-run compiles the cluster twice in a worker thread. Each caller may run ``per_caller`` at a
time, and the brain ``total`` at a time; past ``timeout`` the caller gets its answer
(RESOURCE_EXHAUSTED) at once, while the computation, which a thread cannot be made to drop,
keeps the caller's slot until it ends, so a caller cannot pile up work by timing out.
Explain runs on the event loop against the live engine (so no thread): it is bounded by a rate
per caller instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Refused for a limit; the message says which and what to do."""


class WorkLimits:
    def __init__(self, what: str, *, per_caller: int = 1, total: int = 2, timeout: float = 30.0) -> None:
        self.what = what
        self.per_caller = per_caller
        self.total = total
        self.timeout = timeout
        self.running: defaultdict[str, int] = defaultdict(int)

    def _release(self, caller: str) -> None:
        self.running[caller] -= 1
        if self.running[caller] <= 0:
            del self.running[caller]

    async def run(self, caller: str, fn: Callable[..., T], *args: object) -> T:
        if self.running.get(caller, 0) >= self.per_caller:
            raise Busy(
                f"{caller} already has {self.running[caller]} {self.what} running (at most {self.per_caller} "
                "per caller): wait for it to finish, then try again"
            )
        if sum(self.running.values()) >= self.total:
            raise Busy(f"this brain is running {self.total} {self.what}s already (its limit): try again shortly")
        self.running[caller] += 1
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        task.add_done_callback(lambda _: self._release(caller))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.timeout)
        except TimeoutError:
            raise Busy(
                f"the {self.what} took longer than {self.timeout:g} s and was given up; try fewer or smaller "
                f"manifests (your next {self.what} can start once this one's computation ends)"
            ) from None


class RateLimits:
    """A token bucket per caller: ``burst`` calls at once, refilled at ``rate`` per second."""

    def __init__(self, what: str, *, rate: float = 5.0, burst: float = 20.0, max_callers: int = 10_000) -> None:
        self.what = what
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            raise Busy(
                f"{caller} is over the {self.what} limit ({self.rate:g} per second, {self.burst:g} at once): "
                f"try again in {(1.0 - tokens) / self.rate:.1f} s"
            )
        if len(self._buckets) >= self.max_callers and caller not in self._buckets:
            self._buckets.clear()  # callers are named by tokens or certificates: few, unless churned
        self._buckets[caller] = (tokens - 1.0, now)
