"""The brain's end of `stockade.v1.DropService`: agents stream numbered batches of drop events.

Each agent process (node, instance) numbers its batches 1, 2, 3, …; a batch whose number was
already accepted (re-sent after a broken stream) is skipped, so events count once. The stream's
acknowledgement waits until its events are written to Redis; when Redis stays away longer than
``ack_timeout`` the stream fails with UNAVAILABLE and the agent keeps (and later re-sends) them. Agents also
report, cumulatively, how many events they had to shed; the increase is added to
``stockade_drop_events_dropped_total{reason="agent_…"}``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from stockade.brain.drops.aggregator import Aggregator
from stockade.v1 import drops_pb2, drops_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class _Instance:
    last_seq: int = 0
    shed: dict[str, int] = field(default_factory=dict)


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
    ) -> None:
        self._agg = aggregator
        self._node_of_peer = node_of_peer
        self._max_instances = max_instances
        self._ack_timeout = ack_timeout
        self._instances: OrderedDict[tuple[str, str], _Instance] = OrderedDict()

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

    def accept(self, batch: drops_pb2.DropBatch) -> tuple[int, int]:
        """Count one batch unless already counted. Returns (the instance's last seq, events counted)."""
        inst = self._instance(batch.node, batch.instance)
        metrics = self._agg.metrics
        for reason, total in batch.shed.items():
            prev = inst.shed.get(reason, 0)
            if total > prev:
                metrics.add_dropped(metrics.agent_reason(reason), total - prev)
                inst.shed[reason] = total
        if batch.seq and batch.seq <= inst.last_seq:
            return inst.last_seq, 0  # a re-send of a batch already counted
        n, _bad = self._agg.ingest_rows(batch.events, batch.node)
        if batch.seq:
            inst.last_seq = batch.seq
        return inst.last_seq, n

    async def ReportDrops(
        self, request_iterator: AsyncIterator[drops_pb2.DropBatch], context: grpc.aio.ServicerContext
    ) -> drops_pb2.DropAck:
        peer_node = self._node_of_peer(context) if self._node_of_peer else None
        batches = events = last_seq = 0
        async for batch in request_iterator:
            if not batch.node:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "DropBatch.node is empty: set the node name")
            if self._node_of_peer is not None and batch.node != peer_node:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"this client is node {peer_node!r}; it may not report drops for {batch.node!r}",
                )
            if self._agg.congested():
                await self._agg.room()  # stop reading: HTTP/2 flow control holds the agent back
            last_seq, n = self.accept(batch)
            batches += 1
            events += n
        # Acknowledge only what is in Redis: until then the agent keeps the batches (and re-sends
        # them; their numbers make the re-sends harmless), so a brain that dies with counts in
        # memory loses nothing.
        if batches and not await self._agg.wait_flushed(self._agg.mark(), self._ack_timeout):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "blocked-connection counts cannot be stored now (Redis is unavailable); keep them and retry",
            )
        return drops_pb2.DropAck(last_seq=last_seq, batches=batches, events=events)
