"""The brain's end of `stockade.v1.DropService`: agents stream numbered batches of drop events.

Each agent process (node, instance) numbers its batches 1, 2, 3, …; a batch whose number was
already accepted (re-sent after a broken stream) is skipped, so events count once. The stream's
acknowledgement names the last batch whose events are written to Redis, so the agent keeps (and
later re-sends) the rest. It waits for that write up to ``ack_timeout`` while Redis takes writes
(a slow Redis: then UNAVAILABLE, and the agent backs off); while Redis is away it waits only
``outage_hold`` and acknowledges what is stored, so the agent's next stream follows at once and
its new events reach the counters (Prometheus, `drops top` from memory) without waiting for
Redis. So that an outage costs no re-send storm, the brain names itself (a random id per
process: `BRAIN_METADATA` at the start of each stream, and ``DropAck.brain``) and acknowledges
what it has *counted* as well (``accepted_seq``): an agent then re-sends only what this brain
process has not counted, and everything unstored when it reaches another brain process. Agents
With two brains (or a restarted one) a batch may reach more than one brain process: Redis keeps,
per agent process, the highest batch number stored by any brain, and takes a brain's counts of
that agent's batches only if they come after it (`store.Piece`). So that what another brain stored
is not counted here at all, a stream's first batch from an agent process this brain has not been
following looks that number up first (when Redis is up). When Redis refuses a brain's piece
(another brain stored part of it), the brain forgets what it counted of that agent past the
stored number and acknowledges only that number, so the agent re-sends the rest; until the
re-send begins, later batches are not counted (an agent told twice that still starts past it no
longer has those batches: then it goes on from there). Agents also report, cumulatively, how
many events they had to shed; the increase is added to
``stockade_brain_drop_events_dropped_total{reason="agent_…"}``.

The reporting node is the authenticated one (the mTLS peer name) and nothing the batch says:
a batch naming another node is refused, and every event is counted for the peer's node. Only
in ``--insecure`` test mode, where nobody is authenticated, is the batch's ``node`` taken (and
checked like a node name). The events themselves are validated by the aggregator.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from redis import exceptions as rexc

from stockade.brain.drops import validate
from stockade.brain.drops.aggregator import OUTAGE, Aggregator
from stockade.brain.drops.metrics import MAX_AGENT_REASONS
from stockade.v1 import drops_pb2, drops_pb2_grpc

log = logging.getLogger(__name__)

# Initial metadata of every ReportDrops stream: this brain process's id, sent before any batch is
# read, so that an agent knows whom it reached before it decides what to re-send.
BRAIN_METADATA = "stockade-drops-brain"


@dataclass
class ReportStats:
    """What the drop service parsed: fresh batches and events, and re-sent ones it skipped."""

    batches: int = 0
    events: int = 0
    duplicate_batches: int = 0
    duplicate_events: int = 0
    held_batches: int = 0  # not counted: they came before the re-send Redis asked for
    lookups: int = 0  # stored batch numbers looked up in Redis


@dataclass
class _Instance:
    last_seq: int = 0
    shed: dict[str, int] = field(default_factory=dict)
    # (highest seq, aggregator mark) of counted batches not yet known stored, oldest first; marks
    # only grow, and batches sharing one are kept as one entry (so few while Redis is away).
    unstored: deque[tuple[int, int]] = field(default_factory=deque)
    stored: int = 0  # the highest seq known stored
    # Set when Redis refused our counts past this seq: batches after seq + 1 are not counted
    # until the agent re-sends from seq + 1 ...
    resync: int | None = None
    told: bool = False  # ... which it does once an ack has told it (accepted_seq = resync)
    # Streams begun since: an agent that was told yet starts past resync + 1 no longer has
    # those batches (stored by a brain that keeps no record, e.g. an older one): go on.
    streams_since_told: int = 0

    def counted(self, seq: int, mark: int) -> None:
        if self.unstored and self.unstored[-1][1] == mark:
            self.unstored[-1] = (seq, mark)
        else:
            self.unstored.append((seq, mark))

    def stored_seq(self, agg: Aggregator) -> int:
        """The highest seq of this instance whose events are all in Redis."""
        while self.unstored and agg.flushed(self.unstored[0][1]):
            self.stored = max(self.stored, self.unstored.popleft()[0])
        return self.stored if self.unstored else self.last_seq


class DropServicer(drops_pb2_grpc.DropServiceServicer):
    """``node_of_peer``, when given, names the node the caller authenticated as (from its mTLS
    certificate); a batch for any other node is refused."""

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        node_of_peer: Callable[[grpc.aio.ServicerContext], str | None] | None = None,
        max_instances: int = 10_000,
        ack_timeout: float = 10.0,
        outage_hold: float = 1.0,
        lookup_timeout: float = 1.0,
    ) -> None:
        self._agg = aggregator
        self._node_of_peer = node_of_peer
        self._max_instances = max_instances
        self._ack_timeout = ack_timeout
        # Long enough that an agent re-sending its unstored batches does so about once a second,
        # short enough that its new events are counted within about that.
        self._outage_hold = outage_hold
        self._lookup_timeout = lookup_timeout
        aggregator.on_refused = self.resync
        self._instances: OrderedDict[tuple[str, str], _Instance] = OrderedDict()
        # What this process counted dies with it: a restarted brain has a new id.
        self.brain_id = uuid.uuid4().hex[:16]
        self.stats = ReportStats()

    def _instance(self, node: str, instance: str) -> _Instance:
        key = (node, instance)
        inst = self._instances.get(key)
        if inst is None:
            inst = self._instances[key] = _Instance()
            while len(self._instances) > self._max_instances:
                self._instances.popitem(last=False)  # the longest-silent agent process
        else:
            self._instances.move_to_end(key)
        return inst

    def accept(self, batch: drops_pb2.DropBatch, node: str | None = None) -> tuple[int, int]:
        """Count one batch unless already counted. Returns (the instance's last seq, events counted).

        ``node`` is who sent it (the authenticated peer); without it, the batch's own node."""
        node = node or batch.node
        inst = self._instance(node, batch.instance)
        metrics = self._agg.metrics
        for reason, total in batch.shed.items():
            prev = inst.shed.get(reason)
            if prev is None and len(inst.shed) >= MAX_AGENT_REASONS:
                continue  # a flood of made-up reasons: remember no more of them
            if total > (prev or 0):
                metrics.add_dropped(metrics.agent_reason(reason), total - (prev or 0))
                inst.shed[reason] = total
        stats = self.stats
        if batch.seq and batch.seq <= inst.last_seq:
            stats.duplicate_batches += 1
            stats.duplicate_events += len(batch.events)
            return inst.last_seq, 0  # a re-send of a batch already counted
        if batch.seq and inst.resync is not None:
            if batch.seq > inst.resync + 1 and inst.streams_since_told < 2:
                stats.held_batches += 1
                return inst.last_seq, 0  # the agent has yet to re-send from resync + 1
            inst.resync = None
            inst.told = False
            inst.streams_since_told = 0
        if batch.seq:  # seq 0: an agent asking what is stored now (its batch is empty)
            stats.batches += 1
        stats.events += len(batch.events)
        n, _bad = self._agg.ingest_rows(batch.events, node, (batch.instance, batch.seq) if batch.seq else None)
        if batch.seq:
            inst.last_seq = batch.seq
            inst.counted(batch.seq, self._agg.mark())
        return inst.last_seq, n

    def resync(self, node: str, instance: str, stored: int) -> None:
        """Redis refused this brain's counts of the agent's batches after ``stored``: forget them,
        and have the agent re-send from there (the ack says ``stored``, counted and stored)."""
        inst = self._instance(node, instance)
        inst.last_seq = inst.stored = stored
        inst.unstored.clear()
        inst.resync = stored
        inst.told = False
        inst.streams_since_told = 0

    async def catch_up(self, node: str, batch: drops_pb2.DropBatch) -> None:
        """Before the first batch of a stream from an agent process that does not simply go on
        where this brain left it (new to us, or back from another brain): learn from Redis which
        of its batches are stored, by any brain, so that re-sends of those count nothing here."""
        inst = self._instances.get((node, batch.instance))
        if not batch.seq or (inst is not None and batch.seq == inst.last_seq + 1):
            return
        lookup = getattr(self._agg.store, "stored_seqs", None)
        if lookup is None or not self._agg.redis_up:
            return  # without Redis (or while it is away) Redis's own check must do
        self.stats.lookups += 1
        try:
            [stored] = await asyncio.wait_for(lookup([(node, batch.instance)]), self._lookup_timeout)
        except OUTAGE as e:
            self._agg.note_outage(e)  # later lookups wait for Redis to be back
            return
        except rexc.RedisError:
            return
        inst = self._instance(node, batch.instance)
        if stored > inst.last_seq:
            inst.last_seq = stored
            inst.stored = max(inst.stored, stored)
            if inst.resync is not None:
                inst.resync = max(inst.resync, stored)
            self._agg.forget_stored(node, batch.instance, stored)

    async def ReportDrops(
        self, request_iterator: AsyncIterator[drops_pb2.DropBatch], context: grpc.aio.ServicerContext
    ) -> drops_pb2.DropAck:
        peer_node = self._node_of_peer(context) if self._node_of_peer else None
        batches = events = last_seq = 0
        inst: _Instance | None = None
        if self._node_of_peer is not None and not validate.valid_node(peer_node):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this client's certificate names no valid node ({str(peer_node)[:80]!r}); drops are "
                "taken only from node agents with a node certificate",
            )
        await context.send_initial_metadata(((BRAIN_METADATA, self.brain_id),))
        batches_in = aiter(request_iterator)
        looked_up: set[str] = set()
        while True:
            try:
                batch = await anext(batches_in)
            except StopAsyncIteration:
                break
            except DecodeError as e:  # e.g. a string field that is not UTF-8: say so, not "unknown"
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a DropBatch could not be parsed ({e}); the batches before it on this stream were counted",
                )
                raise AssertionError("unreachable") from None
            if self._node_of_peer is not None:
                node = peer_node
                if batch.node and batch.node != peer_node:
                    await context.abort(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"this client is node {peer_node!r}; it may not report drops for {batch.node[:80]!r}",
                    )
            else:
                node = batch.node
                if not validate.valid_node(node):
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"DropBatch.node {node[:80]!r} is not a node name (an RFC 1123 DNS subdomain): "
                        "set the reporting node's name",
                    )
            if not validate.valid_instance(batch.instance):
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"DropBatch.instance {batch.instance[:80]!r} is not an instance id (1-64 of "
                    "[0-9A-Za-z_-]): send the id the agent chose at start",
                )
            if batch.instance not in looked_up:
                looked_up.add(batch.instance)
                held = self._instances.get((node or batch.node, batch.instance))
                if held is not None and held.told:
                    held.streams_since_told += 1
                await self.catch_up(node or batch.node, batch)
            if self._agg.congested():
                await self._agg.room()  # stop reading: HTTP/2 flow control holds the agent back
            last_seq, n = self.accept(batch, node)
            inst = self._instances.get((node or batch.node, batch.instance))
            batches += 1
            events += n
        # Acknowledge only what is in Redis: until then the agent keeps the batches (and re-sends
        # them; their numbers make the re-sends harmless), so a brain that dies with counts in
        # memory loses nothing.
        if not batches or inst is None:
            return drops_pb2.DropAck(last_seq=last_seq, batches=batches, events=events, brain=self.brain_id)
        agg, mark = self._agg, self._agg.mark()
        if not await agg.wait_flushed(mark, self._ack_timeout, until_down=True):
            if agg.redis_up:  # up but slower than the timeout: let the agent back off
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "blocked-connection counts cannot be stored now (Redis is slow); keep them and retry",
                )
            await agg.wait_flushed(mark, self._outage_hold)  # Redis away: hold briefly, it may be back
        if inst.resync is not None:
            inst.told = True  # this ack says accepted_seq = resync: the agent re-sends from there
        return drops_pb2.DropAck(
            last_seq=inst.stored_seq(agg),
            batches=batches,
            events=events,
            brain=self.brain_id,
            accepted_seq=inst.last_seq,
        )
