"""The agent's connection to the brain: connect, hello, apply, ack; reconnect with backoff.

Fail static: while the brain is unreachable nothing is removed from the dataplane; the last
applied rules stay in force, and the status flag and the logs say so until the link is back.
The same holds for a brain of an older sync protocol (`stockade.codec.version`): its first
message carries no version, the agent closes the stream with a clear log line, keeps its
rules and retries with backoff (the brain may be upgraded meanwhile).

Renewed certificates: the channel's credentials are read from the files (`ClientTLSFiles`) at
every connect, and the files are polled while a stream is up; once a renewed client
certificate, key or CA bundle is whole on disk, the agent finishes the message it is applying,
closes the stream and reconnects at once with the new set (no backoff, rules stay in force).

The node's readiness (``readiness``: a callable the agent sets) goes to the brain in the hello
and, on a stream whose brain was accepted, in a `Status` message whenever it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from stockade.agent.backends.base import Dataplane
from stockade.agent.sync.applier import AgentStatus, Applier
from stockade.codec import ValidationError
from stockade.codec.validate import MAX_PROBLEM_TEXT, MAX_PROBLEMS
from stockade.codec.version import brain_too_old, compatible, spoken
from stockade.tls.reload import ClientTLSSource
from stockade.v1 import sync_pb2

log = logging.getLogger(__name__)

SYNC_METHOD = "/stockade.v1.Sync/Sync"
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
AGENT_VERSION = "stockade-agent/0.2"
RENEWED = "the certificate files were renewed"
_RENEWED: Any = object()  # what a read returns when the certificate files were renewed meanwhile

Readiness = tuple[bool, tuple[str, ...]]  # (ready, problems)


def channel_options(
    keepalive_time_ms: int = 10_000, keepalive_timeout_ms: int = 5_000, max_message: int = 256 * 1024 * 1024
) -> list[tuple[str, Any]]:
    # Client pings too, so an agent behind a dead path notices and reconnects (felix#1537).
    return [
        ("grpc.keepalive_time_ms", keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive_timeout_ms),
        # Newer gRPC cores time out an unanswered ping with this, not with keepalive_timeout.
        ("grpc.http2.ping_timeout_ms", keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", max_message),
        # Our own backoff governs reconnects; don't let a channel sit in gRPC's long backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.enable_retries", 0),
    ]


class Backoff:
    """Exponential backoff with full jitter: a thousand agents do not reconnect in lockstep."""

    def __init__(self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class AgentClient:
    def __init__(
        self,
        applier: Applier,
        brain_address: str,
        tls: ClientTLSSource | None,
        *,
        allow_insecure: bool = False,
        backoff: Backoff | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        answer_timeout: float = 15.0,
        tls_check_interval: float = 5.0,
    ) -> None:
        if tls is None and not allow_insecure:
            raise ValueError("the agent needs mTLS to reach the brain (allow_insecure only in tests)")
        self.applier = applier
        self.status: AgentStatus = applier.status
        self.address = brain_address
        self.tls = tls
        self.backoff = backoff or Backoff()
        self.options = list(options if options is not None else channel_options())
        self._call: Any = None
        self.answer_timeout = answer_timeout
        self.tls_check_interval = tls_check_interval
        self.renewals = 0  # reconnects made to use renewed certificate files
        self.tls_version = -1  # the version of the certificate set the current channel uses
        self.readiness: Callable[[], Readiness] | None = None
        self._live: Any = None  # the call, once its brain was accepted: statuses may be written
        self._sent: Readiness | None = None  # the readiness the brain last heard on this stream
        self._writing = asyncio.Lock()  # acks and statuses come from different tasks

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sync until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self.status.phase = "connecting"
                streaming = asyncio.create_task(self._stream_once())
                await asyncio.wait({streaming, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not streaming.done():
                    streaming.cancel()
                reason = await _outcome(streaming)
                if reason == RENEWED and not stop.is_set():
                    self.renewals += 1
                    self.status.connected = False
                    self.status.event("reconnecting: certificate renewed")
                    continue  # at once: the brain is there, only the credentials changed
                self._link_down(reason)
                if stop.is_set():
                    break
                delay = self.backoff.next()
                self.status.phase = "backoff"
                log.info("node %s: reconnecting to %s in %.2fs", self.status.node, self.address, delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            stopping.cancel()

    def cut(self) -> None:
        """Drop the current stream (tests: a connection cut); the agent reconnects by itself."""
        if self._call is not None:
            self._call.cancel()

    def _channel(self) -> grpc.aio.Channel:
        """A channel with the newest whole certificate set on disk (re-read at every connect)."""
        if self.tls is None:
            return grpc.aio.insecure_channel(self.address, options=self.options)
        self.tls.refresh()
        self.tls_version = self.tls.version
        tls = self.tls.current()
        self.tls.check_expiry()
        return grpc.aio.secure_channel(self.address, tls.credentials(), options=self.options + tls.channel_options())

    async def _watch_tls(self, renewed: asyncio.Event) -> None:
        """Set ``renewed`` once the certificate files hold a newer whole set than the channel's."""
        assert self.tls is not None
        while True:
            await asyncio.sleep(self.tls_check_interval)
            self.tls.refresh()
            self.tls.check_expiry()
            if self.tls.version != self.tls_version:
                log.info(
                    "node %s: certificate files renewed; reconnecting to %s with them after the current message",
                    self.status.node,
                    self.address,
                )
                renewed.set()
                return

    async def _read(self, call: Any, renewed: asyncio.Event) -> Any:
        """The next message, or _RENEWED when the certificate files were renewed first."""
        if renewed.is_set():
            return _RENEWED
        reading = asyncio.ensure_future(call.read())
        waiting = asyncio.ensure_future(renewed.wait())
        try:
            await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if reading.done():
            return reading.result()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading
        return _RENEWED

    async def _stream_once(self) -> str:
        channel = self._channel()
        renewed = asyncio.Event()
        watching = asyncio.create_task(self._watch_tls(renewed)) if self.tls is not None else None
        try:
            return await self._stream_on(channel, renewed)
        finally:
            if watching is not None:
                watching.cancel()

    async def _stream_on(self, channel: grpc.aio.Channel, renewed: asyncio.Event) -> str:
        async with channel:
            multi: Any = channel.stream_stream(
                SYNC_METHOD, request_serializer=sync_pb2.AgentMessage.SerializeToString, response_deserializer=None
            )
            call = multi()
            self._call = call
            try:
                # The brain answers every hello at once; no answer in time means a wedged
                # connection (a handshake that hangs, a relay that swallows): start over.
                try:
                    raw = await asyncio.wait_for(self._hello_exchange(call), self.answer_timeout)
                except TimeoutError:
                    return f"no answer to the hello within {self.answer_timeout:.0f}s"
                while True:
                    if raw is _RENEWED:
                        return RENEWED
                    if raw is _EOF:
                        return "the brain closed the stream"
                    try:
                        msg = sync_pb2.BrainMessage.FromString(raw)
                    except Exception as e:
                        raise ValidationError(f"malformed BrainMessage: {e}") from None
                    if self._live is None:  # the brain's first message: is it one we can follow?
                        if not compatible(msg.protocol):
                            return self._refuse_brain(msg.protocol)
                        self.status.brain_protocol = spoken(msg.protocol)
                        self._link_up()
                        self._live = call
                        await self.status_changed()
                    self.status.phase = "applying"
                    ack = await self.applier.handle(msg)
                    self.status.phase = "acking"
                    await self._write(call, ack)
                    await self.status_changed()  # e.g. ready now that rules are in, or a generation refused
                    self.status.phase = "waiting"
                    raw = await self._read(call, renewed)
            finally:
                self._call = self._live = None
                call.cancel()

    def _readiness(self) -> Readiness | None:
        """The node's readiness within what the brain accepts (longer would end the stream)."""
        if self.readiness is None:
            return None
        ready, problems = self.readiness()
        return ready, tuple((p or "unspecified")[:MAX_PROBLEM_TEXT] for p in problems[:MAX_PROBLEMS])

    async def _hello_exchange(self, call: Any) -> Any:
        readiness = self._readiness()
        await call.write(self.applier.hello(AGENT_VERSION, readiness))
        self._sent = readiness
        self.status.phase = "waiting"
        return await call.read()

    async def _write(self, call: Any, msg: sync_pb2.AgentMessage) -> None:
        async with self._writing:
            await call.write(msg)

    async def status_changed(self) -> None:
        """Tell the brain the node's readiness if it changed since it last heard it (a no-op
        while no accepted stream is up: the next hello carries it)."""
        call = self._live
        readiness = self._readiness()
        if call is None or readiness is None or readiness == self._sent:
            return
        ready, problems = readiness
        try:
            await self._write(call, sync_pb2.AgentMessage(status=sync_pb2.Status(ready=ready, problems=problems)))
        except Exception as e:  # the stream is going down; the stream loop says why
            log.debug("node %s: readiness not sent: %s", self.status.node, e)
            return
        self._sent = readiness

    def _refuse_brain(self, protocol: int) -> str:
        st = self.status
        st.brain_protocol = spoken(protocol)
        st.brain_refused = brain_too_old(self.address, protocol)
        st.brain_refusals += 1
        held = f"keeping generation {st.generation} in force (fail static)" if self.applier.model else "no rules yet"
        log.error("node %s: refusing the brain: %s; %s; retrying with backoff", st.node, st.brain_refused, held)
        return st.brain_refused

    def _link_up(self) -> None:
        st = self.status
        st.brain_refused = None
        if not st.connected:
            st.connected, st.fail_static = True, False
            st.connects += 1
            st.event("connected")
            self.backoff.reset()
            log.info("node %s: connected to the brain at %s", st.node, self.address)

    def _link_down(self, reason: str) -> None:
        st = self.status
        was = st.connected
        st.connected = False
        st.fail_static = self.applier.model is not None
        if was or not st.history or st.history[-1] != "disconnected":
            st.event("disconnected")
        if st.brain_refused is not None and reason == st.brain_refused:
            return  # said once, clearly, by _refuse_brain
        if st.fail_static:
            log.warning(
                "node %s: brain unreachable (%s); fail static: keeping generation %d in force",
                st.node,
                reason,
                st.generation,
            )
        else:
            log.warning("node %s: brain unreachable (%s); no rules received yet", st.node, reason)


async def _outcome(task: asyncio.Task[str]) -> str:
    try:
        return await task
    except asyncio.CancelledError:
        return "stopped"
    except grpc.aio.AioRpcError as e:
        return f"{e.code().name}: {e.details()}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"


async def run_agent(
    node: str,
    brain_address: str,
    dataplane: Dataplane,
    tls: ClientTLSSource | None,
    *,
    stop: asyncio.Event | None = None,
    allow_insecure: bool = False,
    offload: bool = True,
    backoff: Backoff | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> AgentStatus:
    """Keep ``dataplane`` in sync with the brain's model for ``node`` until ``stop`` is set.

    Returns the final status. For a status to watch while running, build `Applier` and
    `AgentClient` directly and read ``client.status``.
    """
    applier = Applier(node, dataplane, offload=offload)
    client = AgentClient(applier, brain_address, tls, allow_insecure=allow_insecure, backoff=backoff, options=options)
    await client.run(stop)
    return client.status
