"""A Redis outage as operators see it (issue 17 item 4): a real redis-server stopped with SIGSTOP
(timeouts) or killed (refusals), a real agent reporter streaming over real gRPC to the brain's
drop service, and `stockade drops top` / `drops follow` over the real admin API meanwhile.

They answer from the brain's memory and say that Redis is unavailable (exit 0, no traceback in
the log); the Prometheus counter keeps counting while Redis is still away; the agent keeps what
is not stored; once Redis is back every event is in Redis exactly once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.drops import Aggregator, DropMetrics, FeedListener, RedisStore, connect
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.view import DropsView
from stockade.brain.engine import Engine
from stockade.cli.commands import admin as cli_admin
from stockade.v1 import admin_pb2_grpc, drops_pb2_grpc

from .conftest import RedisProcess
from .data import RESOLVER, expected_counts, random_events

TOKEN = "o" * 20
MD = [("authorization", f"Bearer {TOKEN}")]
BLOCKED = "stockade_brain_blocked_connections_total"


@dataclass
class Rig:
    redis: RedisProcess
    agg: Aggregator
    store: RedisStore
    registry: CollectorRegistry
    admin: admin_pb2_grpc.AdminStub
    reporter: Reporter
    check: Redis  # a client of the test's own, to read what Redis holds


def _blocked(registry: CollectorRegistry) -> float:
    """The brain's blocked-connections counter, summed over its labels."""
    return sum(s.value for m in registry.collect() for s in m.samples if s.name == BLOCKED)


async def _until(what: Callable[[], bool] | Callable[[], Awaitable[bool]], deadline: float = 60.0) -> None:
    """Wait for a state (generous deadline: the machine may be slow; nothing here is timed)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = what()
        if got if isinstance(got, bool) else await got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("state not reached before the deadline")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # Kill -9 must lose nothing already written: an append-only file synced on every write.
    rp = RedisProcess(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    rp.start()
    registry = CollectorRegistry()
    store = RedisStore(connect(rp.url, socket_timeout=1.0, socket_connect_timeout=1.0))
    agg = Aggregator(store, RESOLVER, DropMetrics(registry), flush_interval=0.05, max_backoff=0.5)
    flusher = asyncio.create_task(agg.run())
    drops = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg, ack_timeout=30.0, outage_hold=0.5), drops)
    drops_port = drops.add_insecure_port("127.0.0.1:0")
    admin = grpc.aio.server()
    svc = AdminService(Engine(), Authorizer({TOKEN: Caller("ops", "read")}), objects=list, drops=DropsView(agg))
    svc.follow_poll = 0.1
    agg.listener = FeedListener(svc.feed, RESOLVER)
    admin_pb2_grpc.add_AdminServicer_to_server(svc, admin)
    admin_port = admin.add_insecure_port("127.0.0.1:0")
    await drops.start()
    await admin.start()
    agent_ch = grpc.aio.insecure_channel(f"127.0.0.1:{drops_port}", options=CHANNEL_OPTIONS)
    reporter = Reporter("node-a", agent_ch, batch_events=200, stream_seconds=0.5, max_backoff=0.5)
    sender = asyncio.create_task(reporter.run())
    admin_ch = grpc.aio.insecure_channel(f"127.0.0.1:{admin_port}")
    check = Redis.from_url(rp.url, socket_timeout=5, socket_connect_timeout=2)
    try:
        yield Rig(rp, agg, store, registry, admin_pb2_grpc.AdminStub(admin_ch), reporter, check)
    finally:
        if rp.proc is not None:
            rp.proc.send_signal(signal.SIGCONT)
        reporter.close()
        await sender
        await agent_ch.close(None)
        await admin_ch.close(None)
        await drops.stop(0)
        await admin.stop(0)
        await agg.close(2)
        await flusher
        await check.aclose()
        rp.stop()


async def _top(rig: Rig, capsys: pytest.CaptureFixture[str]) -> str:
    args = argparse.Namespace(window="15m", by="src_namespace", limit=50, output="table")
    assert await cli_admin._drops_top(rig.admin, MD, 30.0, args) == 0
    return capsys.readouterr().out


def _top_total(out: str) -> int:
    """The sum of the COUNT column of a `drops top` table."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("SRC_NAMESPACE"))
    return sum(int(line.split()[-1]) for line in lines[head + 1 :] if line.strip() and line.split()[-1].isdigit())


async def _stored_total(rig: Rig, minutes: list[int]) -> dict[int, dict[str, int]]:
    out = {}
    for m in minutes:
        h = await rig.check.hgetall(rig.store.minute_key(m))
        if h:
            out[m] = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in h.items()}
    return out


@pytest.mark.parametrize("fault", ["sigstop", "kill"])
async def test_outage_is_said_counted_and_lands_once(
    rig: Rig, fault: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = time.time()
    before = random_events(500, now - 300, 290, seed=71)
    rig.reporter.offer(before)
    await _until(lambda: rig.reporter.acked_events == 500 and not rig.agg.buffered_events)
    out = await _top(rig, capsys)
    assert "Redis unavailable" not in out and _top_total(out) == 500

    assert rig.redis.proc is not None
    if fault == "sigstop":
        rig.redis.proc.send_signal(signal.SIGSTOP)  # connections are accepted, nothing is answered
    else:
        rig.redis.proc.kill()
        rig.redis.proc.wait()
    during: list = []
    for round_ in range(3):  # the counter follows each round while Redis is still away
        evs = random_events(300, time.time() - 200, 190, seed=80 + round_)
        during += evs
        rig.reporter.offer(evs)
        total = 500 + len(during)
        await _until(lambda total=total: _blocked(rig.registry) == total)
    await _until(lambda: not rig.agg.ready)
    # the agent still holds what is not stored, and sends nothing twice into the counts
    assert len(rig.reporter.buffer) == len(during)
    assert rig.agg.buffered_events == len(during)

    out = await _top(rig, capsys)
    assert "Redis unavailable since" in out
    assert f"{rig.agg.buffered_events} events buffered" in out
    assert "this brain's in-memory counts" in out
    assert _top_total(out) == 500 + len(during)  # stored before, and buffered since
    args = argparse.Namespace(window="15m", by="src_namespace", limit=50, output="json")
    assert await cli_admin._drops_top(rig.admin, MD, 30.0, args) == 0
    assert '"source": "memory"' in capsys.readouterr().out

    # `drops follow` says it at once, then prints the blocked connections as they come
    follow = argparse.Namespace(namespace=None, pod=None, direction=None, protocol=None, port=None, count=1,
                                duration=60, output="table")  # fmt: skip
    task = asyncio.create_task(cli_admin._drops_follow(rig.admin, MD, 30.0, follow))
    last = random_events(1, time.time() - 1, 0.5, seed=99)
    while not task.done():  # one event at a time until the follow has printed one
        rig.reporter.offer(last)
        during += last
        await asyncio.wait({task}, timeout=0.5)
    assert task.result() == 0
    out = capsys.readouterr().out
    assert out.startswith("-- ") and "Redis unavailable since" in out and " BLOCKED " in out

    assert not [r for r in caplog.records if r.exc_info], "a traceback in the log"
    downs = [r for r in caplog.records if r.name.startswith("stockade") and "Redis unavailable" in r.getMessage()]
    assert len(downs) == 1, [r.getMessage() for r in downs]

    if fault == "sigstop":
        rig.redis.proc.send_signal(signal.SIGCONT)
    else:
        rig.redis.start()  # reloads the append-only file
    await _until(lambda: rig.agg.ready and not rig.agg.buffered_events and not len(rig.reporter.buffer))
    want = expected_counts(before + during)
    assert await _stored_total(rig, sorted(want)) == want  # every event once: none lost, none twice
    assert _blocked(rig.registry) == len(before) + len(during)
    out = await _top(rig, capsys)
    assert "Redis unavailable" not in out and _top_total(out) == len(before) + len(during)
    assert any("Redis is back" in r.getMessage() for r in caplog.records)
