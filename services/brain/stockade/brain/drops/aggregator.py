"""Counts blocked-connection events in memory and flushes them to Redis.

`Aggregator.ingest` is synchronous and cheap: it resolves each event to pods, adds it to the
pending minute counters and the Prometheus counters, and returns. `Aggregator.run` flushes the
pending counts every ``flush_interval`` as one Redis transaction. While Redis is away the counts
keep accumulating in memory, up to ``max_pending_entries`` distinct (minute, flow) pairs; past
that bound a new flow's event is shed, and the shortfall is counted (metric, and the minute's
``lost`` key in Redis once it is back). Counts stay exact otherwise:

* a flush is one MULTI/EXEC, so it applies whole or not at all;
* a flush whose reply was lost is first looked up (its number is written in the same
  transaction) and only re-sent if Redis does not have it, so nothing is counted twice;
* an agent's numbered batches are counted apart, per agent process (`store.Piece`), and Redis
  adds them only if they come after the batch number it has stored for that process, whichever
  brain stored it: with two brains (or a restarted one) a batch counted by both is stored once.
  When Redis refuses a piece that overlaps what is stored, `on_refused` tells the drop service,
  which has the agent re-send from there.

Events are untrusted: each is validated (`validate`) and counted only against its own node's
quotas (`quota`): an invalid one, or one over its node's quota of new Redis counters, is
refused and counted per node (``stockade_drop_events_refused_total``, and in Redis for
``stockade drops top``); the rest of its batch is kept.

A drop by a ClusterNetworkPolicy tier rule (an event with a ``rule`` index) is attributed to
that rule (`resolve.Attributor`): its flow key names it (`flows`: the ``policy`` field), and the
blocked counter's ``tier`` label says which tier dropped it ("netpol" for NetworkPolicy drops).

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

from stockade.brain.drops import validate
from stockade.brain.drops.memory import RecentCounts
from stockade.brain.drops.metrics import (
    REASON_INVALID,
    REASON_NODE_QUOTA,
    REASON_REDIS_BUFFER_FULL,
    REASON_REDIS_REJECTED,
    REASON_TOO_OLD,
    REFUSED_BUFFER,
    REFUSED_INVALID,
    REFUSED_QUOTA,
    DropMetrics,
    LabelKey,
)
from stockade.brain.drops.nostore import NoStore
from stockade.brain.drops.quota import QuotaConfig, Quotas
from stockade.brain.drops.resolve import Attributor, PodRef, Resolver
from stockade.brain.drops.store import FlushBatch, Piece, RedisStore, record_text
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

log = logging.getLogger(__name__)

_NOWHERE = ("", "")
_UNSET = object()

# One counted event, resolved: (time, node, direction, protocol, src, sport, dst, dport,
# src_namespace, src_pod, dst_namespace, dst_pod, chain, policy); pod fields are "" for non-pods,
# policy "" unless a tier rule dropped it (`resolve.rule_text`).
RecentRow = tuple[float, str, str, str, str, int, str, int, str, str, str, str, str, str]

# Errors after which Redis is "away" (retry the same flush later), as opposed to a rejection.
OUTAGE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ReadOnlyError,  # a replica, until the failover completes
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.ClusterError,
    OSError,
    asyncio.TimeoutError,
)


def describe_error(e: BaseException) -> str:
    """A Redis error in one line (a bare timeout has no message of its own)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class EventListener(Protocol):
    """Gets every counted event, resolved, as a `RecentRow` (e.g. to feed live follow streams)."""

    def wanted(self) -> bool:
        """False when nobody listens: the aggregator then skips collecting rows for it."""
        ...

    def __call__(self, rows: list[RecentRow]) -> None: ...


class Aggregator:
    def __init__(
        self,
        store: RedisStore | NoStore,  # NoStore: no Redis, Prometheus counters only
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
        quota: QuotaConfig | None = None,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.attribute = Attributor(resolver)
        self.metrics = metrics
        self.writer_id = uuid.uuid4().hex[:16]
        self._max_entries = max_pending_entries
        self._high_water = high_water if high_water is not None else max_pending_entries // 2
        self._flush_interval = flush_interval
        self._flush_events = flush_events
        self._max_backoff = max_backoff
        self._clock = clock
        self.listener = listener
        self._quotas = Quotas(quota or QuotaConfig())
        self._ok_refs: set[PodRef] = set()  # resolved pods whose names were checked
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
        self._went_down = asyncio.Event()  # set while Redis is away: ack waits end early
        self.redis_up = True
        self.redis_down_since: float | None = None  # when the current outage began
        self.redis_error = ""  # the error that began it
        # What this brain counted (settled flushes), for `drops top` while Redis is away.
        self.memory = RecentCounts(clock())
        self.shed_total = 0  # events shed because the in-memory bound was hit
        self.refused_total = 0  # events refused: invalid, or over their node's quota (not shed)
        # Called with (node, instance, stored seq) when Redis refused an agent's piece that
        # overlaps what is stored: the drop service then asks the agent to re-send from there.
        self.on_refused: Callable[[str, str, int], None] | None = None
        # Events of agent batches Redis did not take from us: "stored" (another brain, or an
        # earlier flush, had them) and "resent" (refused; the agent re-sends them).
        self.dedupe: Counter[str] = Counter()
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
            "refused_events": self.refused_total,
            "redis_down_since": self.redis_down_since,
            "redis_error": self.redis_error,
        }

    def memory_hashes(self, minutes: Iterable[int]) -> list[Counter[str]]:
        """This brain's counts per minute (encoded flow → count): settled, in flight and pending."""
        parts = [b for b in (self._inflight, self._pending) if b is not None]
        out = []
        for m in minutes:
            h = Counter(self.memory.minute(m))
            for b in parts:
                for counts in b.all_counts():
                    h.update(counts.get(m, {}))
            out.append(h)
        return out

    def memory_refused(self, minutes: Iterable[int]) -> Counter[tuple[str, str]]:
        """This brain's refused events per (node, reason) over ``minutes``, settled or not."""
        ms = set(minutes)
        total = self.memory.refused(sorted(ms))
        for b in (self._inflight, self._pending):
            if b is not None:
                for (m, node, reason), n in b.refused.items():
                    if m in ms:
                        total[(node, reason)] += n
        return total

    # --- ingest ---

    def count_dropped(self, reason: str, n: int) -> None:
        self.metrics.add_dropped(reason, n)

    def ingest(self, events: Iterable[BlockedEvent]) -> int:
        """Count events (resolved to pods as of their own time). Returns how many were counted."""
        counted, _ = self.ingest_rows(events)
        return counted

    def ingest_rows(
        self, events: Iterable[Any], node: str | None = None, batch: tuple[str, int] | None = None
    ) -> tuple[int, int]:
        """`ingest` for anything shaped like a `BlockedEvent` (e.g. the wire's ``DropEvent``,
        whose direction is the protobuf enum number and which has no ``node``: pass the node
        the caller authenticated as; without it each event's own ``node`` is used).

        Every event is validated first (`validate.clean_event`); an invalid one is counted for
        its node and skipped, the rest are kept. Returns (events counted, events refused as
        invalid). Built for speed: no object per event, resolution straight into the minute
        counters; recent-event records are kept as tuples and formatted at flush time, for the
        newest ``recent_per_flush`` only.

        ``batch`` (agent instance, batch number), with ``node``: the events are that numbered
        batch's and are counted into its agent process's `Piece`."""
        now = self._clock()
        oldest = now - self.store.retention
        resolve = self.resolver.resolve_ip
        clean = validate.clean_event
        clean_rule = validate.clean_rule
        attribute = self.attribute
        attribute.reset()
        ok_refs = self._ok_refs
        check_ref = self._check_ref
        quotas = self._quotas
        charge = quotas.charge
        pending = self._pending
        counts = pending.counts
        piece: Piece | None = None
        if batch is not None and node is not None:
            instance, seq = batch
            piece = pending.pieces.get((node, instance))
            if piece is None:
                piece = pending.pieces[(node, instance)] = Piece(seq, seq)
            piece.hi = seq
            counts = piece.counts
        by_node = pending.by_node
        recent = self._recent
        blocked: Counter[tuple[str, int, str, str, str, str]] = Counter()
        refused: Counter[tuple[str, str]] = Counter()
        room = self._max_entries - self.buffered_entries  # new (minute, flow) pairs we may add
        shared = not self.redis_up  # while Redis is away, the buffer is shared between nodes
        listener = self.listener
        rows: list[RecentRow] | None = [] if listener is not None and listener.wanted() else None
        too_old = shed = counted = bad = 0
        cur: object = _UNSET  # the node of the previous event, as given
        n = "?"  # its name once checked ("?" when it is no valid node name: all its events are invalid)
        q = quotas.node(n, now)
        node_room = 0
        for ev in events:
            given = node if node is not None else getattr(ev, "node", None)
            if given != cur:
                cur = given
                n = given if isinstance(given, str) and validate.valid_node(given) else "?"
                q = quotas.node(n, now)
                node_room = self._node_room(n) if shared else room
            c = clean(ev, now) if n != "?" else None
            rule = clean_rule(ev) if c is not None else None
            if c is None or rule == validate.INVALID_RULE:
                bad += 1
                refused[(n, REFUSED_INVALID)] += 1
                continue
            t, direction, src, dst, proto, sport, dport, chain = c
            if t < oldest:
                too_old += 1
                continue
            d = resolve(dst, t)
            if d is not None and d not in ok_refs:
                d = check_ref(d)
            s = resolve(src, t)
            if s is not None and s not in ok_refs:
                s = check_ref(s)
            dst_ns, dst_pod = d if d else _NOWHERE
            src_ns, src_pod = s if s else _NOWHERE
            key = f"{direction}|{proto}|{dport}|{dst_ns}|{dst_pod or dst}|{src_ns}|{src_pod or src}"
            tier, policy = attribute(n, chain, rule)
            if policy:  # a tier rule's drop: its key names the rule (`flows`)
                key = f"{key}|{policy}"
            minute = int(t // 60)
            bucket = counts.get(minute)
            if bucket is None:
                bucket = counts[minute] = Counter()
            if key in bucket:
                bucket[key] += 1
            elif room <= 0 or node_room <= 0:
                pending.lost[minute] += 1
                shed += 1
                refused[(n, REFUSED_BUFFER)] += 1
                continue
            elif not charge(q, minute, key):
                refused[(n, REFUSED_QUOTA)] += 1
                if not q.warned:
                    q.warned = True
                    log.warning(
                        "node %s used up its quota of new drop counters (%d bytes per %g s); refusing "
                        "its new flows until the window ends (see `stockade drops top`)",
                        n, quotas.config.bytes_per_window, quotas.config.window,
                    )  # fmt: skip
                continue
            else:
                bucket[key] = 1
                room -= 1
                node_room -= 1
                pending.entries += 1
                by_node[n] += 1
            counted += 1
            blocked[(proto, dport, direction, dst_ns, dst_pod, tier)] += 1
            row = (t, n, direction, proto, src, sport, dst, dport, src_ns, src_pod, dst_ns, dst_pod, chain, policy)
            recent.append(row)
            if rows is not None:
                rows.append(row)
        pending.events += counted
        if piece is not None:
            piece.events += counted
        if rows and listener is not None:
            listener(rows)
        for m in [m for m, b in counts.items() if not b]:
            del counts[m]  # buckets created only to be shed into
        labels: Counter[LabelKey] = Counter()
        metrics = self.metrics
        for (proto, dport, direction, ns, pod, tier), k in blocked.items():
            ns_label = metrics.namespace_label(ns) if ns else "external"
            port = metrics.dport_label(proto, dport, ns, pod)  # its number if the pod declares it
            labels[(validate.protocol_label(proto), port, direction, ns_label, tier)] += k
        metrics.add_blocked(labels)
        metrics.add_dropped(REASON_TOO_OLD, too_old)
        metrics.add_dropped(REASON_INVALID, bad)
        if refused:
            this_minute = int(now // 60)
            for (rn, reason), k in refused.items():
                metrics.add_refused(rn, reason, k)
                pending.refused[(this_minute, rn, reason)] += k
                if reason == REFUSED_QUOTA:
                    metrics.add_dropped(REASON_NODE_QUOTA, k)
                if reason != REFUSED_BUFFER:  # those are in shed_total
                    self.refused_total += k
        if shed:
            self.shed_total += shed
            metrics.add_dropped(REASON_REDIS_BUFFER_FULL, shed)
            log.warning("drop counts: in-memory bound hit (%d flows, shared by the nodes); shed %d events",
                        self._max_entries, shed)  # fmt: skip
        metrics.buffer_events.set(self.buffered_events)
        if pending.events >= self._flush_events:
            self._wake.set()
        return counted, bad

    def _check_ref(self, ref: PodRef) -> PodRef | None:
        """A resolved pod, if its names are as the API allows them (else it counts as no pod:
        a name must never carry a delimiter into the Redis keys)."""
        try:
            ns, name = ref
        except (TypeError, ValueError):
            return None
        if not validate.valid_pod_ref(ns, name):
            return None
        if len(self._ok_refs) >= 200_000:
            self._ok_refs.clear()
        self._ok_refs.add(ref)
        return ref

    def _node_room(self, node: str) -> int:
        """New counters ``node`` may still add to the in-memory buffer (its fair share)."""
        inflight = self._inflight.by_node if self._inflight else Counter()
        holders = {n for n, k in self._pending.by_node.items() if k} | {n for n, k in inflight.items() if k}
        holders.add(node)
        share = self._quotas.buffer_share(self._max_entries, len(holders))
        return share - self._pending.by_node[node] - inflight[node]

    def _records(self) -> list[str]:
        """The recent events waiting for the stream, as `store.RECORD_FIELDS` lines."""
        cache: dict[tuple[str, str, str], str] = {}
        out = []
        for row in self._recent:
            t, node, direction, proto, src, sport, dst, dport, src_ns, src_pod, dst_ns, dst_pod, chain, policy = row
            side = (dst_ns, dst_pod) if direction == "ingress" else (src_ns, src_pod)
            policies = record_text(policy)  # a tier rule's drop: that rule, not the isolating policies
            if not policy and side[1]:
                pk = (side[0], side[1], direction)
                cached = cache.get(pk)
                if cached is None:
                    names = self.resolver.isolating_policies(side[0], side[1], Direction(direction))
                    cached = cache[pk] = ",".join(map(record_text, names))
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
                    if not self.redis_up:  # found away by a query, with nothing to write: back yet?
                        try:
                            await self.store.ping()
                        except OUTAGE:
                            return False
                        self._mark_up(0)
                    self._release_waiters()
                    return True
                self._seq += 1
                batch, self._pending = self._pending, FlushBatch()
                batch.seq = self._seq
                batch.recent = self._records()
                self._inflight = batch
            batch = self._inflight
            refused: dict[tuple[str, str], int] = {}
            try:
                if self._uncertain and await self.store.applied(self.writer_id, batch.seq):
                    refused = await self.store.refused_pieces(batch)
                else:
                    refused = await self.store.write(batch, self.writer_id) or {}  # None: a wrapped store
            except OUTAGE as e:
                self._uncertain = True
                self.note_outage(e)
                return False
            except rexc.RedisError as e:
                # Redis refused the write itself: retrying would fail the same way forever.
                log.error("Redis rejected a flush of %d drop events: %s", batch.events, e)
                self.metrics.redis_errors.inc()
                self.metrics.add_dropped(REASON_REDIS_REJECTED, batch.events)
            self._inflight = None
            self._uncertain = False
            self._flushed_seq = batch.seq
            self._settle_refused(batch, refused)
            self.memory.add(batch)
            self._release_waiters()
            self._mark_up(batch.events + self._pending.events)
            self.metrics.buffer_events.set(self.buffered_events)
            return True

    def _settle_refused(self, batch: FlushBatch, refused: dict[tuple[str, str], int]) -> None:
        """Take the pieces Redis did not add out of ``batch`` (they are not this brain's counts);
        for those it refused, also drop the agent's later pending piece (stored, it would make the
        re-sent batches before it look stored),
        and have the agent re-send from the stored number."""
        for key, stored in refused.items():
            piece = batch.pieces.pop(key, None)
            if piece is None:
                continue
            if stored >= piece.hi:
                self.dedupe["stored"] += piece.events
                continue
            self.dedupe["resent"] += piece.events
            later = self._pending.pieces.pop(key, None)
            if later is not None:
                entries = sum(len(c) for c in later.counts.values())
                self._pending.events -= later.events
                self._pending.entries -= entries
                self._pending.by_node[key[0]] -= entries
                self.dedupe["resent"] += later.events
            log.info("drop batches %d-%d of %s/%s: Redis has batch %d stored (another brain counted them); "
                     "asking the agent to re-send from there", piece.lo, piece.hi, key[0], key[1], stored)  # fmt: skip
            if self.on_refused is not None:
                self.on_refused(key[0], key[1], stored)

    def forget_stored(self, node: str, instance: str, stored: int) -> None:
        """Redis has the agent process's batches up to ``stored``: drop a pending piece within them."""
        piece = self._pending.pieces.get((node, instance))
        if piece is not None and piece.hi <= stored:
            del self._pending.pieces[(node, instance)]
            entries = sum(len(c) for c in piece.counts.values())
            self._pending.events -= piece.events
            self._pending.entries -= entries
            self._pending.by_node[node] -= entries
            self.dedupe["stored"] += piece.events

    def note_outage(self, e: BaseException) -> None:
        """Redis failed a write or a query with ``e``: it is away until a write (or ping) works."""
        self.metrics.redis_errors.inc()
        if self.redis_up:
            self.redis_down_since = self._clock()
            self.redis_error = describe_error(e)
            log.warning("Redis unavailable (%s); counting blocked connections in memory until it is back",
                        self.redis_error)  # fmt: skip
            self._wake.set()  # `run` retries (and backs off) from now on
        self._set_up(False)

    def _mark_up(self, events: int) -> None:
        if not self.redis_up:
            log.warning("Redis is back after %.1f s; writing the %d events counted in memory meanwhile",
                        self._clock() - (self.redis_down_since or self._clock()), events)  # fmt: skip
            self.redis_down_since = None
            self.redis_error = ""
        self._set_up(True)

    # --- durability marks: acknowledge agents only once their events are in Redis ---

    def mark(self) -> int:
        """A mark for everything ingested so far; see `wait_flushed`."""
        return self._seq + 1  # what is pending now goes into the next flush batch

    def flushed(self, mark: int) -> bool:
        """Whether everything ingested before `mark` was taken is in Redis (or counted as lost)."""
        return self._flushed_seq >= mark or (mark > self._seq and self._inflight is None and self._pending.empty())

    async def wait_flushed(self, mark: int, timeout: float, *, until_down: bool = False) -> bool:
        """Wait (flushing soon) until `flushed(mark)`; False after ``timeout`` seconds, or (with
        ``until_down``) as soon as Redis is found away."""
        if self.flushed(mark):
            return True
        if until_down and not self.redis_up:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (mark, fut)
        self._waiters.append(entry)
        self._wake.set()
        down = asyncio.ensure_future(self._went_down.wait()) if until_down else None
        try:
            waits: set[asyncio.Future[Any]] = {fut} if down is None else {fut, down}
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return fut.done()
        finally:
            if down is not None:
                down.cancel()
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
        if up:
            self._went_down.clear()
        else:
            self._went_down.set()
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
