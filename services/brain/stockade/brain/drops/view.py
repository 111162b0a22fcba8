"""What the admin API reads about drops: Redis when it answers, else this brain's memory.

`DropsView` is the admin service's drop source. A query goes to Redis (every brain's counts)
unless the aggregator already knows Redis is away; a query that fails on an outage (a stopped
Redis times out, a dead one refuses) tells the aggregator and is answered from the brain's
in-memory counts instead, and the answer says so (`StoreState`): since when Redis is
unavailable, the error, how many events wait to be written. Without ``--redis-url`` the memory
is the only store. An outage is never an exception: an operator asking during one gets an
answer, and the brain's log one line (the aggregator's) instead of a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stockade.brain.drops import flows
from stockade.brain.drops.aggregator import OUTAGE, Aggregator
from stockade.brain.drops.store import RedisStore
from stockade.model.rules import Direction


@dataclass(frozen=True)
class StoreState:
    """`stockade.v1.DropStoreStatus` as data."""

    source: str  # "redis" | "memory"
    redis_configured: bool
    redis_available: bool
    unavailable_since: float  # 0 while available
    error: str
    buffered_events: int
    memory_since: float


@dataclass(frozen=True)
class TopAnswer:
    rows: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    store: StoreState


class DropsView:
    """``query_timeout`` bounds a Redis query on top of the client's own socket timeouts, so a
    stopped Redis costs an operator at most that long before the in-memory answer."""

    def __init__(self, aggregator: Aggregator, *, query_timeout: float = 3.0,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.agg = aggregator
        self.redis = aggregator.store if isinstance(aggregator.store, RedisStore) else None
        self._timeout = query_timeout
        self._clock = clock

    def state(self, source: str | None = None) -> StoreState:
        agg = self.agg
        available = self.redis is not None and agg.redis_up
        return StoreState(
            source=source or ("redis" if available else "memory"),
            redis_configured=self.redis is not None,
            redis_available=available,
            unavailable_since=0.0 if available or self.redis is None else agg.redis_down_since or 0.0,
            error="" if available else agg.redis_error,
            buffered_events=agg.buffered_events if self.redis is not None else 0,
            memory_since=agg.memory.since,
        )

    async def answer(self, window: str, group_by: list[str], limit: int) -> TopAnswer:
        """The top flows and refusals over ``window`` ending now. ValueError for a bad window or
        field (whatever the store's state)."""
        keys = flows.check_group_by(group_by)
        now = self._clock()
        minutes = flows.window_buckets(window, now)
        policy_of = self._policy_of if "policy" in keys else None
        if self.redis is not None and self.agg.redis_up:
            try:
                async with asyncio.timeout(self._timeout):
                    rows = await self.redis.top_flows(window, keys, limit=limit, now=now, policy_of=policy_of)
                    refused = await self.redis.refused(window, now=now)
                return TopAnswer(rows, refused, self.state("redis"))
            except OUTAGE as e:
                self.agg.note_outage(e)
        counts = flows.group_counts(self.agg.memory_hashes(minutes), keys, policy_of=policy_of)
        ranked = sorted(self.agg.memory_refused(minutes).items(), key=lambda kv: (-kv[1], kv[0]))
        return TopAnswer(
            flows.top(counts, keys, limit),
            [{"node": node, "reason": reason, "count": n} for (node, reason), n in ranked],
            self.state("memory"),
        )

    def _policy_of(self, direction: str, namespace: str, pod: str) -> str:
        """A NetworkPolicy drop by policy: the policies isolating the denying pod, now (the
        count does not say which policies there were; a tier drop's key names its rule)."""
        names = self.agg.resolver.isolating_policies(namespace, pod, Direction(direction))
        return flows.netpol_text(names)

    # --- the plain `DropsSource` of the admin service ---

    async def top(self, window: str, group_by: list[str], limit: int) -> list[dict[str, Any]]:
        return (await self.answer(window, group_by, limit)).rows
