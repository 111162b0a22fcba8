"""The brain's end of `stockade.v1.DropService`: agents stream numbered batches of drop events.

Each agent process (node, instance) numbers its batches 1, 2, 3, …; a batch whose number was
already accepted (re-sent after a broken stream) is skipped, so events count once. The stream's
acknowledgement waits until its events are written to Redis; when Redis stays away longer than
``ack_timeout`` the stream fails with UNAVAILABLE and the agent keeps (and later re-sends) them. Agents also
report, cumulatively, how many events they had to shed; the increase is added to
``stockade_brain_drop_events_dropped_total{reason="agent_…"}``.

The reporting node is the authenticated one (the mTLS peer name) and nothing the batch says:
a batch naming another node is refused, and every event is counted for the peer's node. Only
in ``--insecure`` test mode, where nobody is authenticated, is the batch's ``node`` taken (and
checked like a node name). The events themselves are validated by the aggregator.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from stockade.brain.drops import validate
from stockade.brain.drops.aggregator import Aggregator
from stockade.brain.drops.metrics import MAX_AGENT_REASONS
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
        if batch.seq and batch.seq <= inst.last_seq:
            return inst.last_seq, 0  # a re-send of a batch already counted
        n, _bad = self._agg.ingest_rows(batch.events, node)
        if batch.seq:
            inst.last_seq = batch.seq
        return inst.last_seq, n

    async def ReportDrops(
        self, request_iterator: AsyncIterator[drops_pb2.DropBatch], context: grpc.aio.ServicerContext
    ) -> drops_pb2.DropAck:
        peer_node = self._node_of_peer(context) if self._node_of_peer else None
        batches = events = last_seq = 0
        if self._node_of_peer is not None and not validate.valid_node(peer_node):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this client's certificate names no valid node ({str(peer_node)[:80]!r}); drops are "
                "taken only from node agents with a node certificate",
            )
        batches_in = aiter(request_iterator)
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
            if self._agg.congested():
                await self._agg.room()  # stop reading: HTTP/2 flow control holds the agent back
            last_seq, n = self.accept(batch, node)
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
