"""--redis-url: one server, Sentinel and Cluster, each with real redis-server processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from stockade.brain.drops import connect
from stockade.brain.drops.store import RedisStore

from .conftest import RedisProcess, free_port, make_aggregator
from .data import RESOLVER, random_events


def test_url_schemes_choose_the_client() -> None:
    assert isinstance(connect("redis://127.0.0.1:23999/2"), Redis)
    c = connect("redis+sentinel://:secret@127.0.0.1:23998,127.0.0.2:23997/primary/3?sentinel_password=s")
    assert isinstance(c, Redis) and isinstance(c.connection_pool, SentinelConnectionPool)
    assert c.connection_pool.service_name == "primary"
    assert c.connection_pool.connection_kwargs["db"] == 3
    assert c.connection_pool.connection_kwargs["password"] == "secret"
    hosts = [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
             for s in c.connection_pool.sentinel_manager.sentinels]  # fmt: skip
    assert hosts == [("127.0.0.1", 23998), ("127.0.0.2", 23997)]
    assert isinstance(connect("redis+cluster://127.0.0.1:23996,127.0.0.1:23995"), RedisCluster)
    with pytest.raises(ValueError, match="unsupported Redis URL scheme 'http'"):
        connect("http://127.0.0.1")


async def _roundtrip(url: str) -> None:
    """Counts flushed through a client made from ``url`` come back exactly."""
    client = connect(url, socket_timeout=2)
    try:
        agg, _ = make_aggregator(client, RESOLVER)  # type: ignore[arg-type]
        now = time.time()
        events = random_events(400, now - 30, 30, seed=11)
        agg.ingest(events)
        assert await agg.flush()
        store: RedisStore = agg.store
        assert await store.top_flows("15m", [], now=now) == [{"count": 400}]
        assert len(await store.recent_events(limit=1000)) == 400
    finally:
        await client.aclose()


async def test_sentinel_url(redis_proc: RedisProcess, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {redis_proc.port} 1\n")
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                r = Redis(port=port)
                info = await r.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
                await r.aclose()
                if info:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.1)
        await _roundtrip(f"redis+sentinel://127.0.0.1:{port}/mymaster")
    finally:
        sentinel.terminate()
        sentinel.wait(10)


async def test_cluster_url(tmp_path: Path) -> None:
    nodes = []
    try:
        for i in range(3):
            d = tmp_path / f"n{i}"
            d.mkdir()
            rp = RedisProcess(d, "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                              "--cluster-config-file", str(d / "nodes.conf"))  # fmt: skip
            rp.start()
            nodes.append(rp)
        create = ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
                  "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        r = Redis(port=nodes[0].port)
        for _ in range(100):
            if b"cluster_state:ok" in await r.execute_command("CLUSTER", "INFO"):
                break
            await asyncio.sleep(0.1)
        await r.aclose()
        await _roundtrip(f"redis+cluster://127.0.0.1:{nodes[1].port}")
    finally:
        for n in nodes:
            n.stop()
