"""Two brains (or a restarted one) store an agent's drop batches exactly once.

Redis keeps, per agent process, the highest batch number any brain stored, and takes a brain's
counts of that agent's batches only if they come after it, in the same transaction. Real parts: a
redis-server of our own, two brains (`Aggregator` + `DropServicer` on real gRPC servers) on it,
the agent's real `Reporter`. Flushes the tests order are called by hand; everything else waits
for a state with generous deadlines."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
import pytest
from redis.asyncio import Redis

from stockade.agent.reporter.wire import encode_batch
from stockade.brain.drops import RedisStore
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.store import FlushBatch, Piece
from stockade.v1 import drops_pb2, drops_pb2_grpc

from .conftest import RedisProcess
from .data import expected_counts
from .test_resend import Agent, Brain, _events, _outage, _recover, _settled, _stored, _until
from .test_resend import redis as redis


class _LosesAcks(drops_pb2_grpc.DropServiceServicer):
    """A brain whose acks never arrive (it stores the batches, then the stream breaks)."""

    def __init__(self, inner: DropServicer) -> None:
        self.inner = inner

    async def ReportDrops(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> drops_pb2.DropAck:
        await self.inner.ReportDrops(request_iterator, context)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the ack is lost")
        raise AssertionError("unreachable")


async def _no_lookup(node: str, batch: drops_pb2.DropBatch) -> None:
    return None


async def _seq_records(redis: RedisProcess) -> dict[str, tuple[int, int]]:
    """Every `P:seq:` record: key -> (stored batch number, seconds to live)."""
    client = Redis.from_url(redis.url, socket_timeout=5)
    try:
        out = {}
        async for key in client.scan_iter(match="{stockade}:drops:seq:*"):
            out[key.decode()] = (int(await client.get(key)), int(await client.ttl(key)))
        return out
    finally:
        await client.aclose()


@pytest.mark.parametrize("check", ["lookup", "redis"])
async def test_a_lost_ack_is_not_counted_again_by_the_other_brain(redis: RedisProcess, check: str) -> None:
    """``lookup``: the other brain reads what is stored before counting the re-sends (Redis up).
    ``redis``: it does not (as when Redis was away then), and the flush's own check refuses them."""
    old = await Brain(redis.url, servicer=_LosesAcks).start()
    new = await Brain(redis.url).start()
    if check == "redis":
        new.servicer.catch_up = _no_lookup  # type: ignore[method-assign]
    agent = Agent(old.address)
    try:
        agent.offer(_events(300, seed=31))
        want = expected_counts(agent.sent)
        await _until(lambda: old.agg.ready and not old.agg.buffered_events and old.blocked() == 300)
        assert await _stored(redis, sorted(want)) == want  # stored, but the agent was never told
        assert len(agent.reporter.buffer) == 300
        await old.crash()  # and dies
        agent.channel.move(new.address)
        agent.offer(_events(100, seed=32))
        await _settled(agent, new)
        exact = expected_counts(agent.sent)
        assert await _stored(redis, sorted(exact)) == exact
        if check == "lookup":  # the re-sends counted nothing here, not even in the counter
            assert new.blocked() == 100
            assert new.servicer.stats.duplicate_events == 300 and new.servicer.stats.lookups >= 1
        else:  # Redis refused them; the agent re-sent the new ones, which then followed
            assert new.agg.dedupe["resent"] + new.agg.dedupe["stored"] >= 300
    finally:
        await agent.stop()
        await new.stop()


@pytest.mark.parametrize("first", ["old", "new"])
async def test_the_old_brain_flushing_late_after_the_move_is_exact(redis: RedisProcess, first: str) -> None:
    """The agent moves while its old brain still holds its counts; both brains have counted the
    same batches (the new one also later ones), and their flushes reach Redis in either order."""
    old = await Brain(redis.url, ack_timeout=0.3).start(flush=False)
    new = await Brain(redis.url, ack_timeout=0.3).start(flush=False)
    agent = Agent(old.address)
    try:
        agent.offer(_events(300, seed=41))
        await _until(lambda: old.blocked() == 300)  # counted, not stored: no ack
        agent.channel.move(new.address)
        await _until(lambda: new.blocked() == 300)  # it had everything re-sent ...
        agent.offer(_events(100, seed=42))
        await _until(lambda: new.blocked() == 400)  # ... and the new ones
        assert old.blocked() == 300
        flushes = [old, new] if first == "old" else [new, old]
        for brain in flushes:
            assert await brain.agg.flush()
        if first == "old":  # the new brain's piece overlaps what the old one stored: refused whole
            assert new.agg.dedupe["resent"] == 400
        else:  # the old brain's piece is all stored already
            assert old.agg.dedupe["stored"] == 300 and not new.agg.dedupe
        new.flushing()
        old.flushing()
        await _settled(agent, new, old)
        exact = expected_counts(agent.sent)
        assert await _stored(redis, sorted(exact)) == exact
    finally:
        await agent.stop()
        await old.stop()
        await new.stop()


@pytest.mark.parametrize("events", [20, 400])
async def test_a_dead_brains_flush_queued_in_a_stopped_redis_lands_once(redis: RedisProcess, events: int) -> None:
    """The old brain's flush waits in a SIGSTOPped Redis's socket when it dies; the agent re-sends
    everything to the other brain. On SIGCONT Redis runs the dead brain's transaction if it reads
    it whole (a small one, 20 events; a big one is read in parts, and once the first reply finds
    the socket closed the rest is discarded), and the other brain's counts of the same batches are
    then refused."""
    old = await Brain(redis.url).start()
    new = await Brain(redis.url).start(flush=False)  # flushes once the old brain's write had its chance
    agent = Agent(old.address)
    try:
        agent.offer(_events(300, seed=61))
        await _settled(agent, old)
        before = old.agg._flushed_seq  # its last flush number stored
        _outage(redis, "sigstop")
        agent.offer(_events(events, seed=62))
        await _until(lambda: old.blocked() == 300 + events and not old.agg.ready)  # its write timed out in the socket
        await old.crash()
        agent.channel.move(new.address)
        await _until(lambda: new.blocked() == events)  # every unstored event re-sent to it
        _recover(redis, "sigstop")
        landed = await _flushed_by(redis, old.agg.writer_id, before)
        new.flushing()
        await _settled(agent, new)
        exact = expected_counts(agent.sent)
        assert await _stored(redis, sorted(exact)) == exact
        assert landed or events > 20  # a small transaction is read whole
        if landed:  # the dead brain's flush stored (some of) the re-sent batches first
            assert new.agg.dedupe["resent"] + new.agg.dedupe["stored"] > 0
    finally:
        await agent.stop()
        await new.stop()


async def _flushed_by(redis: RedisProcess, writer: str, after: int, deadline: float = 5.0) -> bool:
    """Whether Redis ran a flush of ``writer`` numbered above ``after`` (within ``deadline``)."""
    client = Redis.from_url(redis.url, socket_timeout=5)
    try:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            n = await client.get(RedisStore(client).flushed_key(writer))
            if n is not None and int(n) > after:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await client.aclose()


@pytest.mark.parametrize("to", ["same", "other"])
async def test_a_restarted_agent_is_counted_from_its_new_first_batch(redis: RedisProcess, to: str) -> None:
    """A restarted agent numbers its batches from 1 again, under a new instance id: nothing of it
    is skipped, by the brain that served it or the other one. The records expire."""
    one = await Brain(redis.url).start()
    two = await Brain(redis.url).start()
    agent = Agent(one.address)
    sent = []
    try:
        agent.offer(_events(300, seed=51))
        await _settled(agent, one)
        sent += agent.sent
        await agent.stop()
        target = one if to == "same" else two
        agent = Agent(target.address)
        agent.offer(_events(200, seed=52))
        await _settled(agent, target)
        sent += agent.sent
        exact = expected_counts(sent)
        assert await _stored(redis, sorted(exact)) == exact
        assert target.servicer.stats.held_batches == 0 and not target.agg.dedupe
        records = await _seq_records(redis)
        assert len(records) == 2  # one per agent process
        assert all(n >= 1 and 0 < ttl <= one.store.retention for n, ttl in records.values())
    finally:
        await agent.stop()
        await one.stop()
        await two.stop()


def _piece(lo: int, hi: int, flows: dict[str, int], minute: int) -> Piece:
    return Piece(lo, hi, {minute: Counter(flows)}, sum(flows.values()))


async def test_redis_adds_a_piece_only_if_none_of_it_is_stored(redis_client: Redis) -> None:
    store = RedisStore(redis_client)
    minute = int(time.time() // 60)
    key = ("node-a", "i1")

    async def write(lo: int, hi: int, n: int, seq: int) -> dict[tuple[str, str], int]:
        batch = FlushBatch(seq=seq, pieces={key: _piece(lo, hi, {"f": n}, minute)})
        return await store.write(batch, "w")

    assert await write(1, 3, 5, 1) == {}  # no record yet: added
    assert await write(1, 3, 5, 2) == {key: 3}  # the same batches again: all stored
    assert await write(2, 5, 7, 3) == {key: 3}  # overlaps: refused whole
    assert await write(6, 6, 7, 4) == {}  # a gap (4, 5: stored without a record, or lost): added
    assert await write(4, 5, 11, 5) == {key: 6}  # before what is stored: refused
    assert (await store.minute_hashes([minute]))[0] == {"f": 12}
    assert await store.stored_seqs([key, ("node-a", "other")]) == [6, 0]
    # the record shares the counts' hash tag, so a flush stays one transaction on a Cluster
    assert store.seq_key(*key).startswith("{stockade}:")


async def test_after_a_refusal_the_agent_is_asked_to_resend_and_never_held_forever(redis: RedisProcess) -> None:
    """After Redis refused its piece (stored: 1), the brain counts nothing past batch 2 until the
    agent re-sends from 2; an agent that, told so twice, still starts later (it no longer has
    those batches: an older brain stored them without a record) is taken from there."""
    brain = await Brain(redis.url).start()
    try:
        async with grpc.aio.insecure_channel(brain.address) as ch:
            stub = drops_pb2_grpc.DropServiceStub(ch)

            async def stream(instance: str, *seqs: int) -> drops_pb2.DropAck:
                call = stub.ReportDrops()
                for seq in seqs:
                    await call.write(encode_batch("node-a", instance, seq, _events(5, seed=seq), {}))
                await call.done_writing()
                ack: drops_pb2.DropAck = await call
                return ack

            for instance in ("resends", "cannot"):
                assert (await stream(instance, 1)).last_seq == 1  # stored
                brain.servicer.resync("node-a", instance, 1)  # as Redis refusing its 2..3 makes it
            held = brain.servicer.stats.held_batches
            ack = await stream("resends", 4)  # not told yet: held
            assert (ack.accepted_seq, brain.servicer.stats.held_batches) == (1, held + 1)
            assert (await stream("resends", 2, 3, 4)).last_seq == 4  # the re-send: counted, stored

            acks = [await stream("cannot", 4) for _ in range(4)]
            assert [a.last_seq for a in acks] == [1, 1, 4, 4]  # told by the first ack, twice
            assert await brain.store.stored_seqs([("node-a", "resends"), ("node-a", "cannot")]) == [4, 4]
    finally:
        await brain.stop()
