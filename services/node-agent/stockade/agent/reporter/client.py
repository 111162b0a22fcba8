"""Streams the agent's blocked-connection events to the brain (`stockade.v1.DropService`).

The capture side calls `Reporter.offer` (from the event loop's thread; it never blocks) and
`Reporter.count_shed` for events it lost itself. `Reporter.run` opens a client stream whenever
there is something to send, writes numbered batches, and closes the stream after
``stream_seconds`` (or once idle) to get the brain's acknowledgement; acknowledged batches leave
the buffer, the others are re-sent on the next stream. While the brain is unreachable the events
wait in the bounded buffer (see `buffer.ReportBuffer`), and what it sheds is counted and reported.

Re-sends are only what the brain may lack. The ack names the brain process and the last batch it
has counted (stored or not: while Redis is away nothing is stored). When unacknowledged batches
are known counted, a stream first reads the brain's id from its initial metadata: the same brain
process gets only the batches it has not counted (and, if there is nothing else, an empty batch
numbered 0 that asks what is stored now); another brain, or one that does not say who it is
within ``brain_wait`` (an older brain), gets every unacknowledged batch, so nothing is lost.

Given a `RenewingChannel`, each stream starts on a channel with the newest certificate files:
once they are renewed, the next stream opens a new channel and the old one is closed (no stream
is on it then: one stream at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from stockade.agent.reporter.buffer import ReportBuffer
from stockade.agent.reporter.wire import encode_batch
from stockade.model.events import BlockedEvent
from stockade.tls.reload import ClientTLSSource
from stockade.v1 import drops_pb2_grpc

# The brain's id in a ReportDrops stream's initial metadata (the brain's `servicer.BRAIN_METADATA`).
BRAIN_METADATA = "stockade-drops-brain"

log = logging.getLogger(__name__)


# Options for the agent's channel to the brain: gRPC's own reconnect backoff grows to 120 s by
# default, which would leave events waiting long after the brain is back.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.keepalive_time_ms", 30_000),
]


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.buffer = Gauge(
            "stockade_agent_drop_reporter_buffer_events",
            "Blocked-connection events waiting for the brain's acknowledgement.",
            registry=registry,
        )
        self.dropped = PromCounter(
            "stockade_agent_drop_events_dropped_total",
            "Blocked-connection events this agent shed before the brain had them, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connected = Gauge(
            "stockade_agent_drop_reporter_connected",
            "1 when the last stream of drop reports to the brain was acknowledged.",
            registry=registry,
        )


class RenewingChannel:
    """A channel to the brain whose credentials follow the certificate files (`ClientTLSFiles`)."""

    def __init__(self, address: str, tls: ClientTLSSource | None, options: Sequence[tuple[str, Any]] = ()) -> None:
        self.address = address
        self.tls = tls
        self.options = list(options)
        self.version = -1
        self.channel = self._open()

    def _open(self) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, options=self.options)
        self.tls.refresh()
        self.version = self.tls.version
        tls = self.tls.current()
        return grpc.aio.secure_channel(self.address, tls.credentials(), options=self.options + tls.channel_options())

    async def current(self) -> grpc.aio.Channel:
        """The channel to use now: a new one (and the old one closed) once the files were renewed."""
        if self.tls is not None:
            self.tls.refresh()
            if self.tls.version != self.version:
                old, self.channel = self.channel, self._open()
                log.info("drop reports: certificate files renewed; using them from this stream on")
                await old.close(None)
        return self.channel

    async def close(self, grace: float | None = None) -> None:
        await self.channel.close(grace)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Done callback of a future nobody awaits any more (no "exception never retrieved")."""
    if not fut.cancelled():
        fut.exception()


def _describe(e: Exception) -> str:
    return e.code().name if isinstance(e, grpc.aio.AioRpcError) else repr(e)


class Reporter:
    def __init__(
        self,
        node: str,
        channel: grpc.aio.Channel | RenewingChannel,
        *,
        max_buffered_events: int = 100_000,
        batch_events: int = 1000,
        stream_seconds: float = 2.0,
        idle_close: float = 0.2,
        min_backoff: float = 0.2,
        max_backoff: float = 5.0,
        registry: CollectorRegistry | None = None,
        skip_counted: bool = True,
        brain_wait: float = 5.0,
    ) -> None:
        """``skip_counted`` False: re-send every unacknowledged batch on every stream (the behaviour
        before brains named themselves; kept for benchmarks)."""
        self.node = node
        self.instance = uuid.uuid4().hex
        self.buffer = ReportBuffer(max_buffered_events)
        self._channels = channel if isinstance(channel, RenewingChannel) else None
        self._channel = channel.channel if isinstance(channel, RenewingChannel) else channel
        self._stub = drops_pb2_grpc.DropServiceStub(self._channel)
        self._batch_events = batch_events
        self._stream_seconds = stream_seconds
        self._idle_close = idle_close
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._metrics = _Metrics(registry) if registry is not None else None
        self._skip_counted = skip_counted
        self._brain_wait = brain_wait
        self._wake = asyncio.Event()
        # One stream at a time: the brain skips any batch numbered at or below the last one it
        # accepted, so batches must reach it in order.
        self._sending = asyncio.Lock()
        self._stopping = False
        self.connected = False
        self.acked_events = 0
        self.resent_batches = 0  # unacknowledged batches sent again
        self.skipped_batches = 0  # unacknowledged batches not re-sent: the brain had counted them

    # --- capture side ---

    def offer(self, events: Iterable[BlockedEvent]) -> int:
        """Queue events for the brain. Returns how many (older) events were shed to make room."""
        shed = self.buffer.add(events)
        if self._metrics:
            self._metrics.buffer.set(len(self.buffer))
            if shed:
                self._metrics.dropped.labels("agent_buffer_full").inc(shed)
        self._wake.set()
        return shed

    def count_shed(self, reason: str, n: int) -> None:
        """Count events the capture itself lost (e.g. ``agent_nflog_overrun``); reported to the brain."""
        self.buffer.count_shed(reason, n)
        if self._metrics and n > 0:
            self._metrics.dropped.labels(reason).inc(n)
        self._wake.set()

    # --- sending ---

    def _pending(self) -> bool:
        return bool(self.buffer.unsent or self.buffer.inflight_batches or self.buffer.shed_changed())

    async def _wait_wake(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def send_once(self) -> None:
        """One stream: re-send unacknowledged batches, send new ones for a while, get the ack."""
        async with self._sending:
            await self._stream()

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        if self._channels is not None and (channel := await self._channels.current()) is not self._channel:
            self._channel, self._stub = channel, drops_pb2_grpc.DropServiceStub(channel)
        call = self._stub.ReportDrops(timeout=self._stream_seconds + 30.0)
        buffer = self.buffer
        brain = await self._brain_of(call) if self._skip_counted and buffer.knows_counted() else None
        resend = buffer.to_resend(brain)
        self.resent_batches += len(resend)
        self.skipped_batches += buffer.inflight_batches - len(resend)
        shed = buffer.shed
        for seq, events in resend:
            await call.write(encode_batch(self.node, self.instance, seq, events, shed))
        written = len(resend)
        deadline = loop.time() + self._stream_seconds
        idle_since = loop.time()
        while not self._stopping:
            now = loop.time()
            if now >= deadline:
                break
            nxt = self.buffer.next_batch(self._batch_events)
            if nxt is None:
                if now - idle_since >= self._idle_close:
                    break
                await self._wait_wake(min(self._idle_close, deadline - now))
                continue
            seq, events = nxt
            await call.write(encode_batch(self.node, self.instance, seq, events, self.buffer.shed))
            written += 1
            idle_since = loop.time()
        if not written and buffer.inflight_batches:  # all counted: ask what is stored (seq 0 counts nothing)
            await call.write(encode_batch(self.node, self.instance, 0, (), buffer.shed))
        await call.done_writing()
        ack = await call
        self.acked_events += buffer.acked(ack.last_seq)
        if self._skip_counted:
            buffer.counted(ack.brain, ack.accepted_seq)
        self._set_connected(True)
        if self._metrics:
            self._metrics.buffer.set(len(self.buffer))

    async def _brain_of(self, call: Any) -> str | None:
        """The brain process a stream reached, from its initial metadata; None when it does not say
        within ``brain_wait`` (an older brain sends it only with the ack) or the call failed."""
        md = asyncio.ensure_future(call.initial_metadata())
        done, _ = await asyncio.wait({md}, timeout=self._brain_wait)
        if not done:
            md.add_done_callback(_retrieve)
            return None
        if md.exception() is not None:
            return None
        for key, value in md.result() or ():
            if key == BRAIN_METADATA:
                return value if isinstance(value, str) else value.decode("ascii", "replace")
        return None

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            log.info("drop reports to the brain: %s", "connected" if up else "disconnected")
        self.connected = up
        if self._metrics:
            self._metrics.connected.set(1 if up else 0)

    async def run(self) -> None:
        """Send until `close`; back off (doubling, up to ``max_backoff``) while the brain is away."""
        backoff = self._min_backoff
        while not self._stopping:
            if not self._pending():
                await self._wait_wake(1.0)
                continue
            try:
                await self.send_once()
                backoff = self._min_backoff
            except Exception as e:  # any failure: keep the events, retry later, never die
                if self.connected:
                    log.warning("drop reports: brain unreachable (%s); buffering", _describe(e))
                self._set_connected(False)
                await self._wait_stop(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _wait_stop(self, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while not self._stopping and (left := end - asyncio.get_running_loop().time()) > 0:
            await self._wait_wake(left)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Send everything now, retrying, and wait for the acks. True when the buffer is empty."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending():
                    try:
                        await self.send_once()
                    except grpc.aio.AioRpcError:
                        self._set_connected(False)
                        await asyncio.sleep(self._min_backoff)
        return not self._pending()

    def close(self) -> None:
        """Make `run` return (after its current stream)."""
        self._stopping = True
        self._wake.set()
