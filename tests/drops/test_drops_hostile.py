"""Drop events are untrusted: the attacks from issue 11, reproduced over real mTLS gRPC into real Redis.

* 30,000 distinct ``protocol`` strings → a handful of Prometheus series, all counted as invalid;
* a delimiter (newline, ``|``) in any field → no record forged for another node;
* one node flooding distinct flows into a small Redis → refused over its quota (and said by
  ``stockade drops top``) while another node's events are all stored; without the quota the
  same flood starves the other node (so the test can fail);
* the in-memory buffer, while Redis is away, shared between nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio import Redis

from stockade.agent.reporter.wire import encode_batch
from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.drops import Aggregator, StaticResolver
from stockade.brain.drops.quota import QuotaConfig
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.store import RECORD_FIELDS
from stockade.brain.engine import Engine
from stockade.cli.commands import admin as cli_admin
from stockade.model.rules import Direction
from stockade.tls.certs import issue_brain_cert, issue_node_cert, make_ca
from stockade.tls.config import ClientTLS
from stockade.v1 import admin_pb2_grpc, drops_pb2, drops_pb2_grpc

from .conftest import RedisProcess, make_aggregator
from .data import PODS, POLICIES, RESOLVER, expected_counts, random_events


def _s(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def _val(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    v = registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else float(v)


def _cn(context: grpc.aio.ServicerContext) -> str | None:
    """The node a client certificate names (its CN), as the brain's mTLS check gives it."""
    names = context.auth_context().get("x509_common_name") or []
    return _s(names[0]) if names else None


@dataclass
class MtlsBrain:
    target: str
    agg: Aggregator
    registry: CollectorRegistry
    ca: object

    def channel(self, node: str) -> grpc.aio.Channel:
        pair = issue_node_cert(self.ca, node)  # type: ignore[arg-type]
        tls = ClientTLS(pair.cert, pair.key, self.ca.cert)  # type: ignore[attr-defined]
        return grpc.aio.secure_channel(self.target, tls.credentials())


async def _mtls_brain(agg: Aggregator, registry: CollectorRegistry) -> AsyncIterator[MtlsBrain]:
    ca = make_ca()
    brain_cert = issue_brain_cert(ca, ["127.0.0.1"])
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, node_of_peer=_cn), server)
    creds = grpc.ssl_server_credentials([(brain_cert.key, brain_cert.cert)], ca.cert, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    flusher = asyncio.create_task(agg.run())
    try:
        yield MtlsBrain(f"127.0.0.1:{port}", agg, registry, ca)
    finally:
        await server.stop(0)
        await agg.close()
        await flusher


@pytest.fixture
async def brain(redis_client: Redis) -> AsyncIterator[MtlsBrain]:
    agg, registry = make_aggregator(redis_client, RESOLVER, recent_per_flush=100_000)
    async for b in _mtls_brain(agg, registry):
        yield b


async def _report(channel: grpc.aio.Channel, batches: Iterable[drops_pb2.DropBatch]) -> drops_pb2.DropAck:
    call = drops_pb2_grpc.DropServiceStub(channel).ReportDrops()
    for b in batches:
        await call.write(b)
    await call.done_writing()
    return await call


def _ev(**kw: object) -> drops_pb2.DropEvent:
    base: dict[str, object] = dict(time=time.time(), direction=1, src="10.2.0.10", dst="10.1.0.20", protocol="TCP",
                                   sport=40000, dport=5432, chain="in_0a")  # fmt: skip
    base.update(kw)
    return drops_pb2.DropEvent(**base)  # type: ignore[arg-type]


async def _records(client: Redis, key: str) -> list[str]:
    lines = []
    for _id, data in await client.xrange(key):
        lines += _s(data[b"e"]).split("\n")
    return lines


async def test_distinct_protocols_make_no_new_series(brain: MtlsBrain, redis_client: Redis) -> None:
    batches = []
    for b in range(30):
        evs = [_ev(protocol=f"P{b * 1000 + i}") for i in range(1000)]
        evs.append(_ev())  # one valid event per batch: kept, whatever the rest is
        batches.append(drops_pb2.DropBatch(instance="fuzz", seq=b + 1, events=evs))
    async with brain.channel("node-a") as ch:
        ack = await _report(ch, batches)
    assert (ack.batches, ack.events) == (30, 30)
    reg = brain.registry
    series = [s for m in reg.collect() if m.name == "stockade_brain_blocked_connections" for s in m.samples
              if s.name == "stockade_brain_blocked_connections_total"]  # fmt: skip
    assert [(s.labels["protocol"], s.value) for s in series] == [("TCP", 30.0)]
    assert _val(reg, "stockade_brain_drop_events_refused_total", {"node": "node-a", "reason": "invalid"}) == 30_000
    assert _val(reg, "stockade_brain_drop_events_dropped_total", {"reason": "invalid"}) == 30_000
    assert len(generate_latest(reg)) < 20_000  # was 13 MB
    assert await brain.agg.flush()
    top = await brain.agg.store.top_flows("15m", ["protocol"], now=time.time())
    assert top == [{"protocol": "TCP", "count": 30}]
    assert await brain.agg.store.refused("15m", now=time.time()) == [
        {"node": "node-a", "reason": "invalid", "count": 30_000}
    ]


async def test_no_field_value_forges_a_record(redis_client: Redis) -> None:
    forged = "\n1700000000.000|node-victim|ingress|TCP|10.9.9.9|1|10.1.0.20|22|||prod|db-0|in_0a|"
    pods = {**PODS, "10.3.0.5": ("prod", "evil|x\n1.0|node-victim"), "10.3.0.6": ("prod\n", "p")}
    resolver = StaticResolver(pods, {**POLICIES, ("prod", "db-0", Direction.INGRESS): ["prod/a|b\nnode-victim"]})
    agg, registry = make_aggregator(redis_client, resolver, recent_per_flush=100_000)
    hostile = [
        _ev(chain="in_0a" + forged),
        _ev(chain="in_0a\n"),  # a regex ending in `$` would let this one through
        _ev(protocol="TCP" + forged),
        _ev(src="10.2.0.10" + forged),
        _ev(dst="10.1.0.20|node-victim"),
        _ev(src="fe80::1%eth0|x"),
        _ev(chain="out_0a"),  # an egress chain on an ingress event
        _ev(dport=70000),
        _ev(protocol="1", dport=80),  # ports on a protocol without them
        _ev(time=float("nan")),
        _ev(time=float("inf")),
        _ev(time=time.time() + 86400),
        _ev(direction=7),
    ]
    good = [_ev(), _ev(dst="10.3.0.5"), _ev(src="10.3.0.6"), _ev(src="FD00:0::63", dst="fd00::1", chain="in_0b")]
    async for brain in _mtls_brain(agg, registry):
        async with brain.channel("node-a") as ch:
            ack = await _report(ch, [drops_pb2.DropBatch(node="node-a", instance="i", seq=1, events=hostile + good)])
            assert ack.events == len(good)
            # a batch naming another node is refused whole, with the reason
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _report(ch, [drops_pb2.DropBatch(node="node-victim", instance="i", seq=2, events=good)])
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "node-victim" in (e.value.details() or "")
    assert await agg.flush()
    assert _val(registry, "stockade_brain_drop_events_refused_total", {"node": "node-a", "reason": "invalid"}) == len(
        hostile
    )
    lines = await _records(redis_client, agg.store.recent_key)
    assert len(lines) == len(good)
    recs = [dict(zip(RECORD_FIELDS, line.split("|"), strict=True)) for line in lines]  # strict: no extra field
    assert {r["node"] for r in recs} == {"node-a"}
    assert not [r for r in recs if any("victim" in v for k, v in r.items() if k != "policies")]
    by_dst = {r["dst"]: r for r in recs}
    assert by_dst["10.1.0.20"]["policies"] == "prod/a%7Cb%0Anode-victim"  # quoted, not a delimiter
    assert by_dst["10.3.0.5"]["dst_pod"] == ""  # a pod name the API would refuse: no pod, its IP
    assert {r["src"] for r in recs} >= {"fd00::63"}  # canonical
    (again,) = [r for r in await agg.store.recent_events({"dst": "10.1.0.20"}) if r["src"] == "10.2.0.10"]
    assert again["policies"] == "prod/a|b\nnode-victim"  # the reader gives the value back
    for m in {int(r["time"].split(".")[0]) // 60 for r in recs}:
        for k in await redis_client.hkeys(agg.store.minute_key(m)):
            parts = _s(k).split("|")
            assert len(parts) == 7 and not any("\n" in p for p in parts)
    series = {s.labels["namespace"] for m in registry.collect() for s in m.samples if s.name.endswith("ions_total")}
    assert series <= {"prod", "external"}


def _flood(node: str, batches: int, per_batch: int = 1000) -> list[drops_pb2.DropBatch]:
    """Every event a flow of its own: a new Redis counter each."""
    out, now = [], time.time()
    for b in range(batches):
        evs = []
        for i in range(per_batch):
            n = b * per_batch + i
            evs.append(_ev(time=now, src=f"203.0.{n // 250 % 250}.{n % 250 + 1}", dport=n % 60000 + 1))
        out.append(drops_pb2.DropBatch(instance="flood", seq=b + 1, events=evs))
    return out


@pytest.mark.parametrize("quota", [256 * 1024, 0], ids=["with-quota", "no-quota"])
async def test_flooding_node_cannot_starve_another(
    tmp_path: Path, quota: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rp = RedisProcess(tmp_path, "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    rp.start()
    client = Redis.from_url(rp.url, socket_timeout=5)
    try:
        agg, registry = make_aggregator(client, RESOLVER, quota=QuotaConfig(bytes_per_window=quota))
        good = random_events(3000, time.time() - 30, 30, seed=31, node="node-good")
        async for brain in _mtls_brain(agg, registry):
            flooded = 0
            async with brain.channel("node-flood") as ch:
                for batch in _flood("node-flood", 60):  # a stream each: every one flushed on its own
                    flooded += (await _report(ch, [batch])).events
            async with brain.channel("node-good") as ch:
                good_ack = await _report(ch, [encode_batch("node-good", "g", i + 1, good[i * 500 : (i + 1) * 500], {})
                                              for i in range(6)])  # fmt: skip
        assert good_ack.events == 3000
        want = expected_counts(good)
        stored = {}
        for m in want:
            stored[m] = {_s(k): int(v) for k, v in (await client.hgetall(agg.store.minute_key(m))).items()}
        good_stored = all(stored[m].get(k) == n for m, flows in want.items() for k, n in flows.items())
        refused = _val(registry, "stockade_brain_drop_events_refused_total", {"node": "node-flood", "reason": "quota"})
        if not quota:  # the attack as it was: the flood fills Redis, the other node's counts are refused
            assert not good_stored
            assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "redis_rejected"}) > 0
            return
        assert good_stored
        assert _val(registry, "stockade_brain_drop_events_dropped_total", {"reason": "redis_rejected"}) == 0
        assert flooded + refused == 60_000 and 1000 < flooded < 5000
        assert _val(registry, "stockade_brain_drop_events_refused_total", {"node": "node-good", "reason": "quota"}) == 0
        assert await agg.store.refused("15m", now=time.time()) == [
            {"node": "node-flood", "reason": "quota", "count": refused}
        ]
        # `stockade drops top` says it, over the real admin API
        server = grpc.aio.server()
        svc = AdminService(Engine(), Authorizer({"t" * 20: Caller("ops", "read")}), objects=list, drops=agg.store)
        admin_pb2_grpc.add_AdminServicer_to_server(svc, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                args = argparse.Namespace(window="15m", by="dst_namespace,dst_pod", limit=3, output="table")
                md = [("authorization", "Bearer " + "t" * 20)]
                assert await cli_admin._drops_top(admin_pb2_grpc.AdminStub(ch), md, 5.0, args) == 0
        finally:
            await server.stop(0)
        out = capsys.readouterr().out
        assert f"node node-flood: {refused:.0f} events refused over its quota" in out
        assert "Blocked connections, last 15m:" in out
    finally:
        await client.aclose()
        rp.stop()


async def test_buffer_is_shared_while_redis_is_away(redis_proc: RedisProcess, redis_client: Redis) -> None:
    agg, registry = make_aggregator(redis_client, RESOLVER, max_pending_entries=400,
                                    quota=QuotaConfig(bytes_per_window=0, buffer_min_nodes=4))  # fmt: skip
    redis_proc.stop(save=False)
    first = random_events(1, time.time() - 5, 1, seed=1, node="node-good")
    agg.ingest(first)
    assert not await agg.flush()  # Redis is away: from now on the buffer is shared
    flood = [e for b in _flood("node-flood", 1) for e in b.events]
    counted, bad = agg.ingest_rows(flood, "node-flood")
    assert (counted, bad) == (100, 0)  # a quarter of the buffer, however much it sends
    good = random_events(40, time.time() - 30, 30, seed=32, node="node-good") * 50  # at most 40 flows
    assert agg.ingest(good) == 2000  # the other node still gets its share
    redis_proc.start()
    assert await agg.flush() and await agg.flush()
    want = expected_counts(first + good)
    for m, flows in want.items():
        h = {_s(k): int(v) for k, v in (await redis_client.hgetall(agg.store.minute_key(m))).items()}
        assert all(h.get(k) == n for k, n in flows.items())
    assert (
        _val(registry, "stockade_brain_drop_events_refused_total", {"node": "node-flood", "reason": "buffer_full"})
        == 900
    )
    assert await agg.store.lost("15m", now=time.time()) == 900
    assert {"node": "node-flood", "reason": "buffer_full", "count": 900} in await agg.store.refused(
        "15m", now=time.time()
    )
