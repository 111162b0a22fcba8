"""Redis going away and coming back: nothing lost beyond what the metrics (and Redis) say."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from .conftest import RedisProcess, make_aggregator
from .data import RESOLVER, expected_counts, random_events


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _val(registry: object, name: str, labels: dict[str, str] | None = None) -> float:
    v = registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return 0.0 if v is None else float(v)


async def _redis_counts(client: Redis, agg: object, minutes: list[int]) -> dict[int, dict[str, int]]:
    out = {}
    for m in minutes:
        h = await client.hgetall(agg.store.minute_key(m))  # type: ignore[attr-defined]
        if h:
            out[m] = {_s(k): int(v) for k, v in h.items()}
    return out


async def test_restart_in_the_middle_loses_nothing(redis_proc: RedisProcess, redis_client: Redis) -> None:
    now = time.time()
    agg, registry = make_aggregator(redis_client, RESOLVER)
    events = random_events(6000, now - 300, 300, seed=3)
    agg.ingest(events[:2000])
    assert await agg.flush()

    redis_proc.stop(save=True)  # a restart: the data survives on disk
    agg.ingest(events[2000:4000])
    assert not await agg.flush()  # Redis away: counts stay in memory
    assert not agg.ready
    assert _val(registry, "stockade_brain_drops_redis_up") == 0
    assert _val(registry, "stockade_brain_redis_errors_total") >= 1
    assert _val(registry, "stockade_brain_drops_buffer_events") == 2000
    agg.ingest(events[4000:5000])
    assert not await agg.flush()
    assert _val(registry, "stockade_brain_drops_buffer_events") == 3000

    redis_proc.start()
    agg.ingest(events[5000:])
    assert await agg.flush()  # the batch that failed
    assert await agg.flush()  # what came since
    assert agg.ready and _val(registry, "stockade_brain_drops_redis_up") == 1
    assert _val(registry, "stockade_brain_drops_buffer_events") == 0
    want = expected_counts(events)
    assert await _redis_counts(redis_client, agg, sorted(want)) == want
    assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "redis_buffer_full"}) == 0
    assert await agg.store.lost("15m", now=now) == 0


async def test_bound_hit_while_away_is_counted(redis_proc: RedisProcess, redis_client: Redis) -> None:
    now = time.time()
    agg, registry = make_aggregator(redis_client, RESOLVER, max_pending_entries=50)
    redis_proc.stop(save=False)
    events = random_events(3000, now - 120, 120, seed=4)
    counted = agg.ingest(events)
    assert not await agg.flush()
    shed = len(events) - counted
    assert shed > 0 and agg.buffered_entries == 50
    assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "redis_buffer_full"}) == shed

    redis_proc.start()  # empty: it lost everything, but nothing had been written yet
    assert await agg.flush()
    minutes = sorted(expected_counts(events))
    stored = await _redis_counts(redis_client, agg, minutes)
    # exactly what was counted is in Redis, and the shortfall is recorded next to it
    assert sum(sum(h.values()) for h in stored.values()) == counted
    assert await agg.store.lost("15m", now=now) == shed
    assert counted + shed == len(events)
    # what was kept is exact for the flows kept
    want = expected_counts(events)
    for m, h in stored.items():
        for k, n in h.items():
            assert n <= want[m][k]


async def test_lost_reply_is_not_applied_twice(redis_client: Redis) -> None:
    """A flush that reached Redis but whose reply was lost is looked up, not re-applied."""
    now = time.time()
    agg, _ = make_aggregator(redis_client, RESOLVER)
    events = random_events(500, now - 60, 60, seed=5)
    agg.ingest(events)
    real_write = agg.store.write

    async def write_then_fail(batch, writer):  # type: ignore[no-untyped-def]
        await real_write(batch, writer)
        raise ConnectionError("reply lost")

    agg.store.write = write_then_fail  # type: ignore[method-assign]
    assert not await agg.flush()
    agg.store.write = real_write  # type: ignore[method-assign]
    assert await agg.flush()
    want = expected_counts(events)
    assert await _redis_counts(redis_client, agg, sorted(want)) == want
