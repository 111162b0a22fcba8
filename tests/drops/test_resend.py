"""No re-send storm while Redis is away: an agent re-sends to a brain process only the batches it
has not counted, and everything unstored to any other brain process (a restarted brain, the other
of two, an older brain that does not name itself), so Redis still gets every event exactly once.

Real parts: a redis-server of our own (SIGSTOPped: timeouts; or killed and restarted from its
append-only file: refusals), brains of `Aggregator` + `DropServicer` on real gRPC servers, and the
agent's real `Reporter`. Everything waits for a state, with generous deadlines; nothing is timed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.agent.reporter.buffer import ReportBuffer
from stockade.agent.reporter.client import RenewingChannel
from stockade.brain.drops import Aggregator, DropMetrics, RedisStore, connect
from stockade.brain.drops.servicer import DropServicer
from stockade.model.events import BlockedEvent
from stockade.v1 import drops_pb2, drops_pb2_grpc

from .conftest import RedisProcess
from .data import RESOLVER, expected_counts, random_events

BLOCKED = "stockade_brain_blocked_connections_total"


async def _until(what: Callable[[], bool] | Callable[[], Awaitable[bool]], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = what()
        if got if isinstance(got, bool) else await got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("state not reached before the deadline")


class Brain:
    """One brain process's drop path: its own Redis client, aggregator, servicer and gRPC server."""

    def __init__(
        self,
        redis_url: str,
        port: int = 0,
        servicer: Callable[[DropServicer], Any] | None = None,
        ack_timeout: float = 30.0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.store = RedisStore(connect(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0))
        self.agg = Aggregator(self.store, RESOLVER, DropMetrics(self.registry), flush_interval=0.05, max_backoff=0.5)
        self.servicer = DropServicer(self.agg, ack_timeout=ack_timeout, outage_hold=0.3)
        self.server = grpc.aio.server()
        wrapped = servicer(self.servicer) if servicer else self.servicer
        drops_pb2_grpc.add_DropServiceServicer_to_server(wrapped, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.flusher: asyncio.Task[None] | None = None

    async def start(self, flush: bool = True) -> Brain:
        """``flush`` False: the aggregator only flushes when the test says (`flushing`)."""
        await self.server.start()
        if flush:
            self.flushing()
        return self

    def flushing(self) -> None:
        self.flusher = asyncio.create_task(self.agg.run())

    def blocked(self) -> float:
        return sum(s.value for m in self.registry.collect() for s in m.samples if s.name == BLOCKED)

    async def crash(self) -> None:
        """Die with the counts in memory: streams cut, no last flush."""
        await self.server.stop(0)
        if self.flusher is not None:
            self.flusher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.flusher
            self.flusher = None
        await self.store.client.aclose()

    async def stop(self) -> None:
        await self.server.stop(0)
        if self.flusher is not None:
            await self.agg.close(2)
            await self.flusher
        await self.store.client.aclose()


class MovableChannel(RenewingChannel):
    """The agent's channel to whichever brain the test names (as the agent's FollowingChannel
    follows the sync stream's brain): the next stream opens on the new address."""

    def move(self, address: str) -> None:
        self.address = address

    async def current(self) -> grpc.aio.Channel:
        if self.address != self._opened:
            old, self.channel = self.channel, self._open()
            await old.close(None)
        return self.channel

    def _open(self) -> grpc.aio.Channel:
        self._opened = self.address
        return super()._open()


class Agent:
    def __init__(self, address: str, **kw: Any) -> None:
        self.channel = MovableChannel(address, None, CHANNEL_OPTIONS)
        self.reporter = Reporter("node-a", self.channel, batch_events=200, stream_seconds=0.5, max_backoff=0.5, **kw)
        self.task = asyncio.create_task(self.reporter.run())
        self.sent: list[BlockedEvent] = []

    def offer(self, events: list[BlockedEvent]) -> None:
        self.sent += events
        self.reporter.offer(events)

    async def stop(self) -> None:
        self.reporter.close()
        await self.task
        await self.channel.close(None)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    rp = RedisProcess(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    rp.start()
    yield rp
    if rp.proc is not None:
        rp.proc.send_signal(signal.SIGCONT)
    rp.stop()


async def _stored(redis: RedisProcess, minutes: list[int]) -> dict[int, dict[str, int]]:
    check = Redis.from_url(redis.url, socket_timeout=5, socket_connect_timeout=2)
    store = RedisStore(check)
    out = {}
    try:
        for m in minutes:
            h = await check.hgetall(store.minute_key(m))
            if h:
                out[m] = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in h.items()}
    finally:
        await check.aclose()
    return out


def _events(n: int, seed: int) -> list[BlockedEvent]:
    return random_events(n, time.time() - 200, 190, seed=seed)


def _outage(redis: RedisProcess, fault: str) -> None:
    assert redis.proc is not None
    if fault == "sigstop":
        redis.proc.send_signal(signal.SIGSTOP)  # connections accepted, nothing answered
    else:
        redis.proc.kill()
        redis.proc.wait()


def _recover(redis: RedisProcess, fault: str) -> None:
    if fault == "sigstop":
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGCONT)
    else:
        redis.start()  # reloads the append-only file


async def _settled(agent: Agent, *brains: Brain) -> None:
    """Redis took everything: the agent's buffer and every live brain's memory are empty."""
    await _until(
        lambda: not len(agent.reporter.buffer) and all(b.agg.ready and not b.agg.buffered_events for b in brains)
    )


def test_buffer_resends_to_a_brain_only_what_it_has_not_counted() -> None:
    b = ReportBuffer(100)
    b.add(random_events(30, time.time(), 1, seed=9))
    sent = [b.next_batch(10) for _ in range(3)]
    assert [s[0] for s in sent if s] == [1, 2, 3]
    assert not b.knows_counted() and len(b.to_resend("x")) == 3  # nothing known: all of them
    b.counted("x", 2)
    assert b.knows_counted()
    assert [seq for seq, _ in b.to_resend("x")] == [3]  # brain x counted 1 and 2
    assert [seq for seq, _ in b.to_resend("y")] == [1, 2, 3]  # any other brain: all unstored
    assert [seq for seq, _ in b.to_resend(None)] == [1, 2, 3]  # not known whom we reached
    b.acked(2)
    assert not b.knows_counted()  # what x counted is stored now
    b.counted("", 5)  # an older brain names nobody: nothing is known counted
    assert (b.counted_by, b.counted_seq) == ("", 0) and [seq for seq, _ in b.to_resend("x")] == [3]


async def test_same_brain_counts_each_event_once_through_a_long_outage(redis: RedisProcess) -> None:
    brain = await Brain(redis.url).start()
    agent = Agent(brain.address)
    try:
        agent.offer(_events(300, seed=1))
        await _settled(agent, brain)
        _outage(redis, "sigstop")
        for round_ in range(4):  # new events keep coming while Redis stays away
            agent.offer(_events(500, seed=10 + round_))
            total = len(agent.sent)
            await _until(lambda total=total: brain.blocked() == total)  # the counter follows at once
            await _until(lambda: not brain.agg.ready)
            # several streams of this brain process pass; each re-sends nothing it has counted
            skipped = agent.reporter.skipped_batches
            await _until(
                lambda skipped=skipped: (
                    agent.reporter.skipped_batches >= skipped + 3 * len(agent.reporter.buffer.unacked())
                )
            )
        assert len(agent.reporter.buffer) == len(agent.sent) - 300  # kept until stored
        assert brain.servicer.stats.events == len(agent.sent)  # every event parsed once ...
        assert brain.servicer.stats.duplicate_events == 0  # ... and none re-sent to it
        assert agent.reporter.resent_batches == 0
        assert brain.blocked() == len(agent.sent)

        _recover(redis, "sigstop")
        await _settled(agent, brain)
        want = expected_counts(agent.sent)
        assert await _stored(redis, sorted(want)) == want  # none lost, none twice
        assert brain.servicer.stats.duplicate_events == 0
    finally:
        await agent.stop()
        await brain.stop()


@pytest.mark.parametrize("fault", ["kill", "sigstop"])
@pytest.mark.parametrize("how", ["restart", "move"])
async def test_other_brain_process_gets_everything_unstored(redis: RedisProcess, fault: str, how: str) -> None:
    """``restart``: the brain dies during the outage and comes back on its port with a new id.
    ``move``: the brain dies and the agent goes to the other brain, which served it earlier (its
    record of this agent's batches is stale, all of them stored)."""
    first = await Brain(redis.url).start()
    other = await Brain(redis.url).start() if how == "move" else None
    agent = Agent(other.address if other else first.address)
    brains = [b for b in (first, other) if b is not None]
    try:
        agent.offer(_events(300, seed=2))
        await _settled(agent, *brains)
        if other is not None:
            agent.channel.move(first.address)
            agent.offer(_events(300, seed=3))
            await _settled(agent, *brains)
        _outage(redis, fault)
        for round_ in range(3):
            agent.offer(_events(400, seed=20 + round_))
            # `first` counts each round while Redis is away (in move mode `other` had the first 300)
            await _until(lambda: first.blocked() == len(agent.sent) - (300 if other else 0))
        await _until(lambda: agent.reporter.skipped_batches > 0)  # it had stopped re-sending to `first`
        unstored = len(agent.sent) - 300 * len(brains)
        assert len(agent.reporter.buffer) == unstored and first.agg.buffered_events == unstored
        # A flush sent to a stopped Redis waits in its socket and, if it got there whole, lands when
        # Redis resumes, brain dead or not: Redis then takes `second`'s counts of the same batches
        # only past what that flush stored.
        await first.crash()

        if other is None:
            second = await Brain(redis.url, port=first.port).start()
            brains = [second]
        else:
            second = other
            brains = [other]
            agent.channel.move(other.address)
        assert second.servicer.brain_id != first.servicer.brain_id
        await _until(lambda: second.blocked() - (300 if other else 0) == unstored)  # re-sent to it, counted once
        assert second.servicer.stats.duplicate_events == 0
        _recover(redis, fault)
        await _settled(agent, *brains)
        exact = expected_counts(agent.sent)
        got = await _stored(redis, sorted(exact))
        assert got == exact  # nothing lost, nothing twice
    finally:
        await agent.stop()
        for b in brains:
            await b.stop()


class _OldContext:
    """A servicer context that, like an older brain's, sends no initial metadata of its own."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    async def send_initial_metadata(self, metadata: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _OldBrain(drops_pb2_grpc.DropServiceServicer):
    """A brain from before brains named themselves: no id in the metadata or the ack."""

    def __init__(self, inner: DropServicer) -> None:
        self.inner = inner

    async def ReportDrops(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> drops_pb2.DropAck:
        ack = await self.inner.ReportDrops(request_iterator, _OldContext(context))  # type: ignore[arg-type]
        return drops_pb2.DropAck(last_seq=ack.last_seq, batches=ack.batches, events=ack.events)


async def test_agent_moving_to_an_older_brain_resends_everything(redis: RedisProcess) -> None:
    """The dangerous mix in a rolling upgrade: the agent knows what the new brain counted, then
    reaches an older brain, which would take the new batches and skip the earlier ones as
    re-sends. The older brain does not say who it is, so the agent re-sends everything."""
    new = await Brain(redis.url).start()
    old = await Brain(redis.url, servicer=_OldBrain).start()
    agent = Agent(new.address, brain_wait=0.5)
    try:
        _outage(redis, "kill")
        agent.offer(_events(500, seed=4))
        await _until(lambda: new.blocked() == 500 and agent.reporter.buffer.knows_counted())
        await new.crash()
        agent.channel.move(old.address)
        agent.offer(_events(100, seed=5))
        await _until(lambda: old.blocked() == 600)
        _recover(redis, "kill")
        await _settled(agent, old)
        want = expected_counts(agent.sent)
        assert await _stored(redis, sorted(want)) == want
    finally:
        await agent.stop()
        await old.stop()


async def test_older_agent_with_a_new_brain(redis: RedisProcess) -> None:
    """An agent that re-sends everything, as before: the brain skips the re-sends by seq."""
    brain = await Brain(redis.url).start()
    agent = Agent(brain.address, skip_counted=False)
    try:
        _outage(redis, "sigstop")
        agent.offer(_events(500, seed=6))
        await _until(lambda: brain.blocked() == 500 and brain.servicer.stats.duplicate_events >= 1000)
        assert brain.servicer.stats.events == 500
        _recover(redis, "sigstop")
        await _settled(agent, brain)
        want = expected_counts(agent.sent)
        assert await _stored(redis, sorted(want)) == want
    finally:
        await agent.stop()
        await brain.stop()
