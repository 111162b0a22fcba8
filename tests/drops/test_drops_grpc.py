"""Real gRPC on loopback: agents' reporters → the brain's drop service → real Redis."""

from __future__ import annotations

import asyncio
import time

import grpc
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.agent.reporter.wire import encode_batch
from stockade.brain.drops import Aggregator
from stockade.brain.drops.servicer import DropServicer
from stockade.v1 import drops_pb2_grpc

from .conftest import RedisProcess, free_port, make_aggregator
from .data import RESOLVER, expected_counts, random_events

Brain = tuple[str, Aggregator, CollectorRegistry]


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _val(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    v = registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else float(v)


async def _stored(client: Redis, agg: Aggregator, minutes: list[int]) -> dict[int, dict[str, int]]:
    out = {}
    for m in minutes:
        h = await client.hgetall(agg.store.minute_key(m))
        if h:
            out[m] = {_s(k): int(v) for k, v in h.items()}
    return out


async def test_several_agents_aggregate_exactly(grpc_brain: Brain, redis_client: Redis) -> None:
    target, agg, registry = grpc_brain
    now = time.time()
    channels = [grpc.aio.insecure_channel(target) for _ in range(3)]
    reporters = [Reporter(f"node-{i}", ch, batch_events=300, stream_seconds=0.3) for i, ch in enumerate(channels)]
    tasks = [asyncio.create_task(r.run()) for r in reporters]
    all_events = []
    for i, r in enumerate(reporters):
        for part in range(4):  # offered in pieces, while the streams run
            evs = random_events(1000, now - 240, 240, seed=10 * i + part, node=r.node)
            all_events += evs
            r.offer(evs)
            await asyncio.sleep(0.05)
    for r in reporters:
        assert await r.flush(60)
    for r in reporters:
        r.close()
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close(None)
    assert await agg.flush()
    want = expected_counts(all_events)
    assert await _stored(redis_client, agg, sorted(want)) == want
    assert sum(r.acked_events for r in reporters) == len(all_events) == 12_000
    # Prometheus has the same number, split by bounded labels only
    samples = [s for m in registry.collect() if m.name == "stockade_brain_blocked_connections" for s in m.samples
               if s.name == "stockade_brain_blocked_connections_total"]  # fmt: skip
    assert sum(s.value for s in samples) == 12_000
    assert all(set(s.labels) == {"protocol", "dport", "direction", "namespace", "tier"} for s in samples)
    assert {s.labels["tier"] for s in samples} == {"netpol"}  # NetworkPolicy drops (no tier rule)
    assert {s.labels["namespace"] for s in samples} == {"prod", "dev", "external"}
    assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "agent_buffer_full"}) == 0
    for r in reporters:
        assert len(await agg.store.recent_events({"node": r.node}, limit=5000)) == 4000


async def test_resent_batches_count_once(grpc_brain: Brain, redis_client: Redis) -> None:
    """A batch re-sent after a broken stream (same instance, same seq) is not counted again."""
    target, agg, _ = grpc_brain
    now = time.time()
    evs = [random_events(100, now - 30, 30, seed=s) for s in range(3)]
    async with grpc.aio.insecure_channel(target) as ch:
        stub = drops_pb2_grpc.DropServiceStub(ch)
        call = stub.ReportDrops()
        for seq in (1, 2):
            await call.write(encode_batch("node-x", "inst-1", seq, evs[seq - 1], {}))
        await call.done_writing()
        ack = await call
        assert (ack.last_seq, ack.batches, ack.events) == (2, 2, 200)
        call = stub.ReportDrops()
        for seq in (2, 3):  # 2 again: its ack was "lost"
            await call.write(encode_batch("node-x", "inst-1", seq, evs[seq - 1], {}))
        await call.done_writing()
        ack = await call
        assert (ack.last_seq, ack.batches, ack.events) == (3, 2, 100)
    assert await agg.flush()
    want = expected_counts(evs[0] + evs[1] + evs[2])
    assert await _stored(redis_client, agg, sorted(want)) == want


async def test_agent_sheds_while_brain_is_away_and_says_so(redis_client: Redis) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    agent_registry = CollectorRegistry()
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    reporter = Reporter("node-z", channel, max_buffered_events=1500, batch_events=400, stream_seconds=0.3,
                        min_backoff=0.05, max_backoff=0.2, registry=agent_registry)  # fmt: skip
    task = asyncio.create_task(reporter.run())
    now = time.time()
    events = random_events(4000, now - 120, 120, seed=7, node="node-z")
    for i in range(0, 4000, 500):
        reporter.offer(events[i : i + 500])
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert not reporter.connected
    assert len(reporter.buffer) == 1500
    assert reporter.buffer.shed == {"agent_buffer_full": 2500}
    assert _val(agent_registry, "stockade_agent_drop_events_dropped_total", {"reason": "agent_buffer_full"}) == 2500
    assert _val(agent_registry, "stockade_agent_drop_reporter_buffer_events") == 1500

    # a batch already handed to gRPC is kept (the brain may have it); the rest are the newest
    inflight = [e for _, evs in reporter.buffer.unacked() for e in evs]
    kept = inflight + events[len(events) - (1500 - len(inflight)) :]

    # the brain comes up on that address
    agg, registry = make_aggregator(redis_client, RESOLVER)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg), server)
    server.add_insecure_port(target)
    await server.start()
    flusher = asyncio.create_task(agg.run())
    try:
        assert await reporter.flush(60)
        reporter.close()
        await task
        await agg.close()
        await flusher
        # what was kept reached Redis exactly; the 2500 shed are counted on the brain too
        want = expected_counts(kept)
        assert await _stored(redis_client, agg, sorted(want)) == want
        assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "agent_buffer_full"}) == 2500
        assert reporter.connected and len(reporter.buffer) == 0
    finally:
        await channel.close(None)
        await server.stop(0)


async def test_node_identity_is_enforced(redis_client: Redis) -> None:
    agg, _ = make_aggregator(redis_client, RESOLVER)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, node_of_peer=lambda ctx: "node-a"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = drops_pb2_grpc.DropServiceStub(ch).ReportDrops()
            await call.write(encode_batch("node-b", "i", 1, random_events(5, time.time(), 1, seed=1), {}))
            await call.done_writing()
            try:
                await call
                raise AssertionError("a batch for another node was accepted")
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert agg.buffered_events == 0
    finally:
        await server.stop(0)


async def test_acks_wait_for_redis(redis_proc: RedisProcess, redis_client: Redis) -> None:
    """While Redis is away the brain does not acknowledge: the agent keeps its batches, and once
    Redis is back they are counted exactly once (re-sends are skipped by their numbers)."""
    agg, registry = make_aggregator(redis_client, RESOLVER)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, ack_timeout=0.5), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    reporter = Reporter("node-r", channel, batch_events=250, stream_seconds=0.3, min_backoff=0.05, max_backoff=0.2)
    task = asyncio.create_task(reporter.run())
    try:
        redis_proc.stop(save=True)
        events = random_events(2000, time.time() - 60, 60, seed=12, node="node-r")
        reporter.offer(events)
        # every batch reaches the brain, which finds Redis away (a deadline for a busy machine;
        # what is asserted below holds however long it takes)
        deadline = time.monotonic() + 30
        while (agg.ready or agg.buffered_events < 2000) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not agg.ready
        assert reporter.acked_events == 0 and len(reporter.buffer) == 2000  # nothing acknowledged
        assert agg.buffered_events == 2000  # counted once in the brain's memory, re-sends skipped
        redis_proc.start()
        assert await reporter.flush(60)
        assert reporter.acked_events == 2000
        want = expected_counts(events)
        assert await _stored(redis_client, agg, sorted(want)) == want
        assert _val(registry, "stockade_brain_drops_redis_up") == 1
    finally:
        reporter.close()
        await task
        await channel.close(None)
        await agg.close()
        await flusher
        await server.stop(0)


async def test_slow_redis_holds_agents_back_instead_of_shedding(redis_client: Redis) -> None:
    """With Redis up, a full in-memory buffer makes the brain stop reading (backpressure to the
    agents) rather than shed: a tiny bound still ends with exact counts and nothing lost."""
    agg, registry = make_aggregator(redis_client, RESOLVER, max_pending_entries=300, flush_interval=0.05)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(2)]
    reporters = [Reporter(f"node-{i}", ch, batch_events=200, stream_seconds=0.3) for i, ch in enumerate(channels)]
    tasks = [asyncio.create_task(r.run()) for r in reporters]
    events = []
    try:
        for i, r in enumerate(reporters):
            evs = random_events(3000, time.time() - 60, 60, seed=20 + i, node=r.node)
            events += evs
            r.offer(evs)
        for r in reporters:
            assert await r.flush(30)
        assert agg.shed_total == 0
        assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "redis_buffer_full"}) == 0
        want = expected_counts(events)
        assert await _stored(redis_client, agg, sorted(want)) == want
    finally:
        for r in reporters:
            r.close()
        await asyncio.gather(*tasks)
        for ch in channels:
            await ch.close(None)
        await agg.close()
        await flusher
        await server.stop(0)
