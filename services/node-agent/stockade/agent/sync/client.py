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

Several brains (``HOST:PORT[,HOST:PORT...]``, or a name resolving to several): one serves the
node at a time. The moment a stream that was up ends or a connect fails, the agent dials the
next brain of the round at once (`stockade.agent.sync.brains`); it backs off only after a whole
round failed. It stays on the brain it moved to, even when the old one comes back. Both brains
compile the same model, so the new one answers the hello with a Resume: a move costs the
dataplane nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from stockade.agent.backends.base import Dataplane
from stockade.agent.sync.applier import AgentStatus, Applier
from stockade.agent.sync.brains import BrainRounds, open_channel
from stockade.codec import ValidationError
from stockade.codec.validate import MAX_PROBLEM_TEXT, MAX_PROBLEMS
from stockade.codec.version import brain_too_old, compatible, spoken
from stockade.dial import Candidate, Resolver, system_resolver
from stockade.tls.reload import ClientTLSSource
from stockade.v1 import sync_pb2

log = logging.getLogger(__name__)

SYNC_METHOD = "/stockade.v1.Sync/Sync"
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
AGENT_VERSION = "stockade-agent/0.2"
RENEWED = "the certificate files were renewed"
_RENEWED: Any = object()  # what a read returns when the certificate files were renewed meanwhile

Readiness = tuple[bool, tuple[str, ...]]  # (ready, problems)
# Pings this often and this patient: a brain that froze or whose host vanished (no FIN, no RST)
# is noticed within 1.5 s, so the node is on another brain within the 2 s target.
KEEPALIVE_TIME = 0.5
KEEPALIVE_TIMEOUT = 1.0
# A stream that ends sooner than this after its brain was accepted is a flapping brain: the next
# round waits for the backoff instead of dialling again at once.
FLAP_SECONDS = 1.0


def channel_options(
    keepalive_time_ms: int = int(KEEPALIVE_TIME * 1000),
    keepalive_timeout_ms: int = int(KEEPALIVE_TIMEOUT * 1000),
    max_message: int = 256 * 1024 * 1024,
) -> list[tuple[str, Any]]:
    # Client pings too, so an agent behind a dead path notices and moves on (felix#1537).
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


# Refusals (bad credentials, a node the brain will not serve, an older brain) do not mend by
# themselves: retrying them often only loads the brain and its TokenReviews.
REFUSAL_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "FAILED_PRECONDITION")


class Backoff:
    """Exponential backoff with full jitter: a thousand agents do not reconnect in lockstep.

    ``cap`` bounds the wait for a brain that is unreachable (down, restarting): small, so that
    every agent is back within ~2 s of a restarted brain listening (issue 17). ``refused_cap``
    bounds it when every brain refused the agent."""

    def __init__(
        self, base: float = 0.2, cap: float = 1.0, rng: random.Random | None = None, refused_cap: float = 30.0
    ) -> None:
        self.base, self.cap, self.refused_cap = base, cap, refused_cap
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self, refused: bool = False) -> float:
        ceiling = min(self.refused_cap if refused else self.cap, self.base * 2**self.attempt)
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
        connect_timeout: float = 5.0,
        tls_check_interval: float = 5.0,
        resolver: Resolver = system_resolver,
    ) -> None:
        """``brain_address``: ``HOST:PORT[,HOST:PORT...]`` (`stockade.dial.TargetError` if not)."""
        if tls is None and not allow_insecure:
            raise ValueError("the agent needs mTLS to reach the brain (allow_insecure only in tests)")
        self.applier = applier
        self.status: AgentStatus = applier.status
        self.brains = BrainRounds(applier.node, brain_address, resolver)
        self.candidate: Candidate = self.brains.first  # the brain dialled last (or about to be)
        self.serving: Candidate | None = None  # the brain whose stream is up and accepted
        self._served_by: Candidate | None = None  # the brain that served the last accepted stream
        self._accepted_at: float | None = None  # when this attempt's brain was accepted
        self.tls = tls
        self.backoff = backoff or Backoff()
        self.options = list(options if options is not None else channel_options())
        self._call: Any = None
        self.answer_timeout = answer_timeout
        self.connect_timeout = connect_timeout
        self.tls_check_interval = tls_check_interval
        self.renewals = 0  # reconnects made to use renewed certificate files
        self.tls_version = -1  # the version of the certificate set the current channel uses
        self.readiness: Callable[[], Readiness] | None = None
        self._live: Any = None  # the call, once its brain was accepted: statuses may be written
        self._sent: Readiness | None = None  # the readiness the brain last heard on this stream
        self._writing = asyncio.Lock()  # acks and statuses come from different tasks
        self._left_because = ""  # why the last accepted stream ended (for the "moved" log line)

    @property
    def address(self) -> str:
        """The brain dialled last (or about to be), as HOST:PORT."""
        return self.candidate.endpoint

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sync until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        stopping = asyncio.create_task(stop.wait())
        pending: list[Candidate] = []  # this round's brains not tried yet
        back_off = False  # whether the next round waits first (the last one found no brain)
        refused = False  # whether every brain of this round refused the agent (so far)
        last: Candidate | None = None
        try:
            while not stop.is_set():
                if not pending:
                    if back_off and not await self._back_off(stop, refused):
                        break
                    pending = await self.brains.round(after=last)
                    back_off, refused = True, bool(pending)
                    if not pending:
                        self._link_down("no brain address resolves")
                        continue
                self.candidate = pending.pop(0)
                self._accepted_at = None
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
                    pending.insert(0, self.candidate)  # at once, to the same brain: only the credentials changed
                    continue
                self._link_down(reason)
                if stop.is_set():
                    break
                refused = refused and _is_refusal(reason, self.status.brain_refused)
                last = self.candidate
                if self._accepted_at is not None:  # a stream that was up ended: a new round, now
                    pending = []
                    back_off = time.monotonic() - self._accepted_at < FLAP_SECONDS
                elif pending:
                    log.info(
                        "node %s: brain %s unreachable (%s); trying brain %s at once",
                        self.status.node,
                        self.candidate,
                        reason,
                        pending[0],
                    )
        finally:
            stopping.cancel()

    async def _back_off(self, stop: asyncio.Event, refused: bool = False) -> bool:
        """Wait before the next round (every brain of the last one failed; ``refused``: each
        refused the agent); False once stopped."""
        delay = self.backoff.next(refused)
        self.status.phase = "backoff"
        tried = ", ".join(str(c) for c in self.brains.candidates) or "none resolved"
        log.info("node %s: no brain reachable (tried %s); next round in %.2fs", self.status.node, tried, delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
        return not stop.is_set()

    def cut(self) -> None:
        """Drop the current stream (tests: a connection cut); the agent reconnects by itself."""
        if self._call is not None:
            self._call.cancel()

    def _channel(self) -> grpc.aio.Channel:
        """A channel to the candidate with the newest whole certificate set on disk (re-read at
        every connect)."""
        if self.tls is None:
            return open_channel(self.candidate, None, self.options)
        self.tls.refresh()
        self.tls_version = self.tls.version
        tls = self.tls.current()
        self.tls.check_expiry()
        return open_channel(self.candidate, tls, self.options)

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
            # A brain that accepts TCP and never finishes the handshake (frozen): the next one.
            if not await _settled(channel, self.connect_timeout):
                return f"no connection within {self.connect_timeout:g}s"
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
                        self._accepted_at = time.monotonic()
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
                self.serving = None
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
        brain, before = self.candidate, self._served_by
        self.serving = self._served_by = brain
        st.brain = brain.endpoint
        if not st.connected:
            st.connected, st.fail_static = True, False
            st.connects += 1
            st.event("connected")
            self.backoff.reset()
            if before is not None and before != brain:
                st.brain_switches += 1
                st.event(f"moved to brain {brain.endpoint}")
                log.info(
                    "node %s: moved to brain %s (brain %s went away: %s)",
                    st.node,
                    brain,
                    before,
                    self._left_because,
                )
            else:
                log.info("node %s: connected to the brain at %s", st.node, brain)

    def _link_down(self, reason: str) -> None:
        st = self.status
        was = st.connected
        if was:
            self._left_because = reason
        st.connected = False
        st.brain = ""
        st.fail_static = self.applier.model is not None
        if was or not st.history or st.history[-1] != "disconnected":
            st.event("disconnected")
        if st.brain_refused is not None and reason == st.brain_refused:
            return  # said once, clearly, by _refuse_brain
        if st.fail_static:
            log.warning(
                "node %s: brain %s unreachable (%s); fail static: keeping generation %d in force",
                st.node,
                self.candidate,
                reason,
                st.generation,
            )
        else:
            log.warning("node %s: brain %s unreachable (%s); no rules received yet", st.node, self.candidate, reason)


async def _settled(channel: grpc.aio.Channel, timeout: float) -> bool:
    """Wait until the channel is connected or has failed (the call then fails at once, saying
    why); False if it is still connecting after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    state = channel.get_state(try_to_connect=True)
    while state not in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
        remaining = end - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
        except TimeoutError:
            return False
        state = channel.get_state(try_to_connect=True)
    return True


def _is_refusal(reason: str, brain_refused: str | None) -> bool:
    """Whether a stream's end is the brain refusing this agent (or the agent the brain)."""
    return reason == brain_refused or reason.split(":", 1)[0] in REFUSAL_CODES


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
