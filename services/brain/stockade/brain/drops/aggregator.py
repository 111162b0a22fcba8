"""Counts blocked-connection events in memory and flushes them to Redis.

`Aggregator.ingest` is synchronous and cheap: it resolves each event to pods, adds it to the
pending minute counters and the Prometheus counters, and returns. `Aggregator.run` flushes the
pending counts every ``flush_interval`` as one Redis transaction. While Redis is away the counts
keep accumulating in memory, up to ``max_pending_entries`` distinct (minute, flow) pairs; past
that bound a new flow's event is shed, and the shortfall is counted (metric, and the minute's
``lost`` key in Redis once it is back). Counts stay exact otherwise:

* a flush is one MULTI/EXEC, so it applies whole or not at all;
* a flush whose reply was lost is first looked up (its number is written in the same
  transaction) and only re-sent if Redis does not have it, so nothing is counted twice.

The stream of recent events gets the newest ``recent_per_flush`` events of each flush interval
(all of them below 10,000 events/s with the defaults): the counts are exact, the stream of
details is a sample at high rates, which keeps the brain's cost per event low.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from redis import exceptions as rexc

from stockade.brain.drops import flows
from stockade.brain.drops.metrics import (
    REASON_INVALID,
    REASON_REDIS_BUFFER_FULL,
    REASON_REDIS_REJECTED,
    REASON_TOO_OLD,
    DropMetrics,
    LabelKey,
)
from stockade.brain.drops.resolve import Resolver
from stockade.brain.drops.store import FlushBatch, RedisStore
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

log = logging.getLogger(__name__)

# Direction as BlockedEvent carries it, or as the wire's DropDirection number.
_DIRECTION: dict[object, str] = {
    Direction.INGRESS: "ingress",
    Direction.EGRESS: "egress",
    1: "ingress",
    2: "egress",
}
_NOWHERE = ("", "")

# One counted event, resolved: (time, node, direction, protocol, src, sport, dst, dport,
# src_namespace, src_pod, dst_namespace, dst_pod, chain); pod fields are "" for non-pods.
RecentRow = tuple[float, str, str, str, str, int, str, int, str, str, str, str, str]

# Errors after which Redis is "away" (retry the same flush later), as opposed to a rejection.
_OUTAGE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # a replica, until the failover completes
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.ClusterError,
    OSError,
    asyncio.TimeoutError,
)


class EventListener(Protocol):
    """Gets every counted event, resolved, as a `RecentRow` (e.g. to feed live follow streams)."""

    def wanted(self) -> bool:
        """False when nobody listens: the aggregator then skips collecting rows for it."""
        ...

    def __call__(self, rows: list[RecentRow]) -> None: ...


class Aggregator:
    def __init__(
        self,
        store: RedisStore,
        resolver: Resolver,
        metrics: DropMetrics,
        *,
        max_pending_entries: int = 200_000,
        high_water: int | None = None,
        recent_per_flush: int = 2_000,
        flush_interval: float = 0.2,
        flush_events: int = 50_000,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
        listener: EventListener | None = None,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.metrics = metrics
        self.writer_id = uuid.uuid4().hex[:16]
        self._max_entries = max_pending_entries
        self._high_water = high_water if high_water is not None else max_pending_entries // 2
        self._flush_interval = flush_interval
        self._flush_events = flush_events
        self._max_backoff = max_backoff
        self._clock = clock
        self.listener = listener
        self._pending = FlushBatch()
        # newest events of this flush interval, for the stream of recent events
        self._recent: deque[RecentRow] = deque(maxlen=recent_per_flush)
        self._inflight: FlushBatch | None = None
        self._uncertain = False  # the in-flight batch may or may not be in Redis
        self._seq = 0  # number of the last flush batch made
        self._flushed_seq = 0  # number of the last flush batch settled (written, or its loss counted)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self.redis_up = True
        self.shed_total = 0  # events shed because the in-memory bound was hit
        metrics.redis_up.set(1)

    # --- state for /readyz and the metrics ---

    @property
    def buffered_events(self) -> int:
        return self._pending.events + (self._inflight.events if self._inflight else 0)

    @property
    def buffered_entries(self) -> int:
        return self._pending.entries + (self._inflight.entries if self._inflight else 0)

    @property
    def ready(self) -> bool:
        """Redis takes our writes (False while it is away and the counts wait in memory)."""
        return self.redis_up

    def status(self) -> dict[str, Any]:
        return {
            "redis_up": self.redis_up,
            "buffered_events": self.buffered_events,
            "buffered_entries": self.buffered_entries,
            "max_entries": self._max_entries,
            "shed_events": self.shed_total,
        }

    # --- ingest ---

    def count_dropped(self, reason: str, n: int) -> None:
        self.metrics.add_dropped(reason, n)

    def ingest(self, events: Iterable[BlockedEvent]) -> int:
        """Count events (resolved to pods as of their own time). Returns how many were counted."""
        counted, _ = self.ingest_rows(events)
        return counted

    def ingest_rows(self, events: Iterable[Any], node: str | None = None) -> tuple[int, int]:
        """`ingest` for anything shaped like a `BlockedEvent` (e.g. the wire's ``DropEvent``,
        whose direction is the protobuf enum number and which has no ``node``: pass it).

        Returns (events counted, events refused as malformed). Built for speed: no object per
        event, resolution straight into the minute counters; recent-event records are kept as
        tuples and formatted at flush time, for the newest ``recent_per_flush`` only."""
        now = self._clock()
        oldest = now - self.store.retention
        resolve = self.resolver.resolve_ip
        pending = self._pending
        counts = pending.counts
        recent = self._recent
        blocked: Counter[tuple[str, int, str, str]] = Counter()
        room = self._max_entries - self.buffered_entries  # new (minute, flow) pairs we may add
        listener = self.listener
        rows: list[RecentRow] | None = [] if listener is not None and listener.wanted() else None
        too_old = shed = counted = bad = 0
        for ev in events:
            t = ev.time
            direction = _DIRECTION.get(ev.direction)
            src = ev.src
            dst = ev.dst
            proto = ev.protocol
            if direction is None or not src or not dst or not proto or "|" in proto:
                bad += 1
                continue
            if t < oldest:
                too_old += 1
                continue
            d = resolve(dst, t)
            s = resolve(src, t)
            dst_ns, dst_pod = d if d else _NOWHERE
            src_ns, src_pod = s if s else _NOWHERE
            dport = ev.dport
            key = f"{direction}|{proto}|{dport}|{dst_ns}|{dst_pod or dst}|{src_ns}|{src_pod or src}"
            minute = int(t // 60)
            bucket = counts.get(minute)
            if bucket is None:
                bucket = counts[minute] = Counter()
            if key in bucket:
                bucket[key] += 1
            elif room <= 0:
                pending.lost[minute] += 1
                shed += 1
                continue
            else:
                bucket[key] = 1
                room -= 1
                pending.entries += 1
            counted += 1
            blocked[(proto, dport, direction, dst_ns)] += 1
            row = (t, node or ev.node, direction, proto, src, ev.sport, dst, dport,
                   src_ns, src_pod, dst_ns, dst_pod, ev.chain)  # fmt: skip
            recent.append(row)
            if rows is not None:
                rows.append(row)
        pending.events += counted
        if rows and listener is not None:
            listener(rows)
        for m in [m for m, b in counts.items() if not b]:
            del counts[m]  # buckets created only to be shed into
        labels: Counter[LabelKey] = Counter()
        for (proto, dport, direction, ns), n in blocked.items():
            labels[(proto, flows.dport_label(dport), direction, ns or "external")] += n
        self.metrics.add_blocked(labels)
        self.metrics.add_dropped(REASON_TOO_OLD, too_old)
        self.metrics.add_dropped(REASON_INVALID, bad)
        if shed:
            self.shed_total += shed
            self.metrics.add_dropped(REASON_REDIS_BUFFER_FULL, shed)
            log.warning("drop counts: in-memory bound of %d flows hit; shed %d events", self._max_entries, shed)
        self.metrics.buffer_events.set(self.buffered_events)
        if pending.events >= self._flush_events:
            self._wake.set()
        return counted, bad

    def _records(self) -> list[str]:
        """The recent events waiting for the stream, as `store.RECORD_FIELDS` lines."""
        cache: dict[tuple[str, str, str], str] = {}
        out = []
        for t, node, direction, proto, src, sport, dst, dport, src_ns, src_pod, dst_ns, dst_pod, chain in self._recent:
            side = (dst_ns, dst_pod) if direction == "ingress" else (src_ns, src_pod)
            policies = ""
            if side[1]:
                pk = (side[0], side[1], direction)
                cached = cache.get(pk)
                if cached is None:
                    names = self.resolver.isolating_policies(side[0], side[1], Direction(direction))
                    cached = cache[pk] = ",".join(names)
                policies = cached
            out.append(
                f"{t:.3f}|{node}|{direction}|{proto}|{src}|{sport}|{dst}|{dport}|"
                f"{src_ns}|{src_pod}|{dst_ns}|{dst_pod}|{chain}|{policies}"
            )
        self._recent.clear()
        return out

    # --- flush ---

    async def flush(self) -> bool:
        """Write what is pending to Redis. False when Redis is away (the counts stay in memory)."""
        async with self._lock:
            if self._inflight is None:
                if self._pending.empty() and not self._recent:
                    self._release_waiters()
                    return True
                self._seq += 1
                batch, self._pending = self._pending, FlushBatch()
                batch.seq = self._seq
                batch.recent = self._records()
                self._inflight = batch
            batch = self._inflight
            try:
                if not (self._uncertain and await self.store.applied(self.writer_id, batch.seq)):
                    await self.store.write(batch, self.writer_id)
            except _OUTAGE as e:
                self._uncertain = True
                self.metrics.redis_errors.inc()
                if self.redis_up:
                    log.warning("Redis unavailable (%s); counting blocked connections in memory", e)
                self._set_up(False)
                return False
            except rexc.RedisError as e:
                # Redis refused the write itself: retrying would fail the same way forever.
                log.error("Redis rejected a flush of %d drop events: %s", batch.events, e)
                self.metrics.redis_errors.inc()
                self.metrics.add_dropped(REASON_REDIS_REJECTED, batch.events)
            self._inflight = None
            self._uncertain = False
            self._flushed_seq = batch.seq
            self._release_waiters()
            if not self.redis_up:
                log.info("Redis is back; counts flushed")
            self._set_up(True)
            self.metrics.buffer_events.set(self.buffered_events)
            return True

    # --- durability marks: acknowledge agents only once their events are in Redis ---

    def mark(self) -> int:
        """A mark for everything ingested so far; see `wait_flushed`."""
        return self._seq + 1  # what is pending now goes into the next flush batch

    def flushed(self, mark: int) -> bool:
        """Whether everything ingested before `mark` was taken is in Redis (or counted as lost)."""
        return self._flushed_seq >= mark or (mark > self._seq and self._inflight is None and self._pending.empty())

    async def wait_flushed(self, mark: int, timeout: float) -> bool:
        """Wait (flushing soon) until `flushed(mark)`; False after ``timeout`` seconds."""
        if self.flushed(mark):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (mark, fut)
        self._waiters.append(entry)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def congested(self) -> bool:
        """Redis takes writes but more counters wait for it than the high-water mark."""
        return self.redis_up and self.buffered_entries >= self._high_water

    async def room(self, timeout: float = 5.0) -> None:
        """Backpressure for producers: while `congested`, wait for flushes (up to ``timeout``).

        The memory bound is for Redis outages; when Redis is up but slower than the agents, the
        agents should wait (and buffer), not the brain shed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.congested() and (left := deadline - loop.time()) > 0:
            await self.wait_flushed(self.mark(), left)

    def _release_waiters(self) -> None:
        for _, fut in [w for w in self._waiters if self.flushed(w[0])]:
            if not fut.done():
                fut.set_result(None)

    def _set_up(self, up: bool) -> None:
        self.redis_up = up
        self.metrics.redis_up.set(1 if up else 0)

    async def run(self) -> None:
        """Flush periodically (sooner when a lot is pending); back off while Redis is away."""
        delay = self._flush_interval
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            ok = await self.flush()
            delay = self._flush_interval if ok else min(max(delay * 2, 0.25), self._max_backoff)

    async def close(self, timeout: float = 5.0) -> bool:
        """Stop `run` and make a last attempt to flush. True when nothing is left in memory."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), timeout)
        return self._inflight is None and self._pending.empty()
