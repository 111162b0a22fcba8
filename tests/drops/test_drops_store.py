"""Real Redis: exact counts, TTLs, windows and top-N, recent events, resolution at event time."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from stockade.brain.drops import StaticResolver
from stockade.brain.drops.store import DEFAULT_RETENTION
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

from .conftest import make_aggregator
from .data import PODS, RESOLVER, expected_counts, random_events


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _sample(registry: object, name: str, labels: dict[str, str]) -> float:
    v = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if v is None else float(v)


async def test_counts_are_exact_and_expire(redis_client: Redis) -> None:
    now = time.time()
    agg, registry = make_aggregator(redis_client, RESOLVER)
    agg.metrics.declared = lambda ns, pod: [(80, "TCP")] if ns == "prod" else []  # prod's pods serve TCP 80
    events = random_events(5000, now - 600, 600, seed=1)
    for i in range(0, len(events), 700):  # several ingests and flushes
        assert agg.ingest(events[i : i + 700]) == len(events[i : i + 700])
        assert await agg.flush()
    want = expected_counts(events)
    assert len(want) >= 10
    for minute, flows in want.items():
        key = agg.store.minute_key(minute)
        got = {_s(k): int(v) for k, v in (await redis_client.hgetall(key)).items()}
        assert got == flows
        ttl = await redis_client.ttl(key)
        # expires retention after the end of its minute: at least 24 h from now, at most 25 h + 1 min
        assert 24 * 3600 < ttl <= (minute + 1) * 60 + DEFAULT_RETENTION - now + 1
    assert 0 < await redis_client.ttl(agg.store.recent_key) <= DEFAULT_RETENTION
    # every key we wrote has a TTL
    async for key in redis_client.scan_iter(match="{stockade}:drops:*"):
        assert await redis_client.ttl(key) > 0, key
    # Prometheus: the total over all label sets is the number of events; no pod or IP label
    total = sum(
        s.value
        for m in registry.collect()
        if m.name == "stockade_brain_blocked_connections"
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert total == len(events)
    prod = {ip for ip, (ns, _) in PODS.items() if ns == "prod"}
    prod_tcp_80_in = sum(
        1
        for e in events
        if e.protocol == "TCP" and e.dport == 80 and e.direction is Direction.INGRESS and e.dst in prod
    )
    labels = {"protocol": "TCP", "dport": "80", "direction": "ingress", "namespace": "prod", "tier": "netpol"}
    assert _sample(registry, "stockade_brain_blocked_connections_total", labels) == prod_tcp_80_in
    # 31337 is no port prod's pods declare: "other"
    assert _sample(registry, "stockade_brain_blocked_connections_total", {**labels, "dport": "other"}) > 0
    assert _sample(registry, "stockade_brain_blocked_connections_total", {**labels, "dport": "31337"}) == 0
    assert _sample(registry, "stockade_brain_drops_buffer_events", {}) == 0


async def test_windows_and_top_n(redis_client: Redis) -> None:
    agg, _ = make_aggregator(redis_client, RESOLVER)
    now = (time.time() // 60) * 60 + 30  # half way through the current minute

    def ev(t: float, src: str, dst: str, port: int, proto: str = "TCP") -> BlockedEvent:
        return BlockedEvent(t, "node-a", Direction.INGRESS, src, dst, proto, 40000, port, "in_0a")

    events = (
        [ev(now - 5, "10.2.0.10", "10.1.0.20", 5432)] * 7  # current minute: dev/tool -> prod/db-0
        + [ev(now - 5, "192.0.2.7", "10.1.0.10", 80)] * 3  # current minute: external -> prod/web-1
        + [ev(now - 10 * 60, "10.2.0.11", "10.1.0.20", 5432)] * 20  # 10 minutes ago
        + [ev(now - 30 * 60, "10.2.0.11", "10.1.0.11", 443, "UDP")] * 50  # 30 minutes ago
        + [ev(now - 5 * 3600, "192.0.2.7", "10.1.0.20", 22)] * 100  # 5 hours ago
    )
    agg.ingest(events)
    assert await agg.flush()
    store = agg.store

    assert await store.top_flows("1m", ["dst_pod", "src"], now=now) == [
        {"dst_pod": "db-0", "src": "tool", "count": 7},
        {"dst_pod": "web-1", "src": "192.0.2.7", "count": 3},
    ]
    assert await store.top_flows("15m", ["dst_pod"], now=now) == [
        {"dst_pod": "db-0", "count": 27},
        {"dst_pod": "web-1", "count": 3},
    ]
    assert await store.top_flows("1h", ["protocol", "dport"], now=now, limit=2) == [
        {"protocol": "UDP", "dport": "443", "count": 50},
        {"protocol": "TCP", "dport": "5432", "count": 27},
    ]
    assert await store.top_flows("24h", ["src_namespace"], now=now) == [
        {"src_namespace": "", "count": 103},
        {"src_namespace": "dev", "count": 77},
    ]
    assert await store.top_flows("24h", [], now=now) == [{"count": 180}]
    assert await store.top_flows("24h", ["src"], now=now, where={"dst_pod": "db-0", "dport": "5432"}) == [
        {"src": "shell", "count": 20},
        {"src": "tool", "count": 7},
    ]


async def test_recent_events_filter_and_policies(redis_client: Redis) -> None:
    agg, _ = make_aggregator(redis_client, RESOLVER)
    now = time.time()
    events = random_events(2000, now - 60, 60, seed=2)
    agg.ingest(events)
    assert await agg.flush()
    recent = await agg.store.recent_events({"dst_namespace": "prod", "direction": "ingress"}, limit=50)
    want = [e for e in events if e.direction is Direction.INGRESS and e.dst in {"10.1.0.10", "10.1.0.11", "10.1.0.20"}]
    assert len(recent) == 50
    # newest first: the last 50 matching events in arrival order
    assert [(r["src"], r["dst"], r["sport"]) for r in recent] == [
        (e.src, e.dst, str(e.sport)) for e in reversed(want[-50:])
    ]
    for r in recent:
        pod = r["dst_pod"]
        assert r["policies"] == {"db-0": "prod/db-only-web", "web-1": "prod/default-deny",
                                 "web-2": "prod/default-deny"}[pod]  # fmt: skip
    egress = await agg.store.recent_events({"src_pod": "tool", "direction": "egress"}, limit=5)
    assert len(egress) == 5 and all(r["policies"] == "dev/no-egress" for r in egress)
    either = await agg.store.recent_events({"pod": "tool"}, limit=10_000)
    assert len(either) == sum(1 for e in events if "10.2.0.10" in (e.src, e.dst))
    udp = await agg.store.recent_events({"namespace": "dev", "protocol": "UDP", "dport": "443"}, limit=10_000)
    assert len(udp) == sum(
        1 for e in events if e.protocol == "UDP" and e.dport == 443
        and "dev" in {(RESOLVER.resolve_ip(e.src, 0) or ("",))[0], (RESOLVER.resolve_ip(e.dst, 0) or ("",))[0]}
    )  # fmt: skip


async def test_resolution_as_of_event_time(redis_client: Redis) -> None:
    """An IP that moved from one pod to another: each event goes to the pod that held it then."""
    resolver = StaticResolver()
    t_move = time.time() - 120
    resolver.history.assign("10.9.0.5", ("a", "old-pod"), 0.0)
    resolver.history.assign("10.9.0.5", None, t_move - 1)  # deleted
    resolver.history.assign("10.9.0.5", ("b", "new-pod"), t_move)  # its IP reused
    agg, _ = make_aggregator(redis_client, resolver)
    ev = lambda t: BlockedEvent(t, "n", Direction.INGRESS, "192.0.2.1", "10.9.0.5", "TCP", 1, 80, "in_0a")  # noqa: E731
    agg.ingest([ev(t_move - 30), ev(t_move - 30), ev(t_move - 0.5), ev(t_move + 5)])
    assert await agg.flush()
    assert await agg.store.top_flows("15m", ["dst_namespace", "dst_pod"], now=t_move + 10) == [
        {"dst_namespace": "a", "dst_pod": "old-pod", "count": 2},
        {"dst_namespace": "", "dst_pod": "10.9.0.5", "count": 1},
        {"dst_namespace": "b", "dst_pod": "new-pod", "count": 1},
    ]


async def test_too_old_events_are_counted_as_dropped(redis_client: Redis) -> None:
    agg, registry = make_aggregator(redis_client, RESOLVER)
    old = BlockedEvent(time.time() - DEFAULT_RETENTION - 60, "n", Direction.INGRESS, "1.2.3.4", "10.1.0.10",
                       "TCP", 1, 80, "in_0a")  # fmt: skip
    assert agg.ingest([old]) == 0
    assert _sample(registry, "stockade_brain_drop_events_dropped_total", {"reason": "too_old"}) == 1


async def test_recent_stream_keeps_the_newest_of_each_flush(redis_client: Redis) -> None:
    agg, _ = make_aggregator(redis_client, RESOLVER, recent_per_flush=100)
    events = random_events(500, time.time() - 60, 60, seed=9)
    assert agg.ingest(events) == 500
    assert await agg.flush()
    recent = await agg.store.recent_events(limit=1000)
    assert [(r["src"], r["sport"]) for r in recent] == [(e.src, str(e.sport)) for e in reversed(events[-100:])]
    # the counts are exact all the same
    assert sum(h["count"] for h in await agg.store.top_flows("15m", [], now=time.time())) == 500  # type: ignore[misc]
