"""`stockade drops follow` on either of two brains shows both brains' drops (shared over Redis
pub/sub), each once; while Redis is stopped it goes on with the answering brain's own records
and a notice. Real parts: a redis-server of our own, two brains (drop service and admin service
on real gRPC servers), two agents' real `Reporter`s, one per brain."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService, DropFeed
from stockade.brain.drops import Aggregator, DropMetrics, FeedListener, RedisStore, connect
from stockade.brain.drops.peers import SharedFeed, decode, encode
from stockade.brain.drops.servicer import DropServicer
from stockade.brain.drops.view import DropsView
from stockade.brain.engine import Engine
from stockade.cli.commands import admin as cli_admin
from stockade.v1 import admin_pb2, admin_pb2_grpc, drops_pb2_grpc

from .conftest import RedisProcess
from .data import RESOLVER, random_events

TOKEN = "f" * 20
MD = [("authorization", f"Bearer {TOKEN}")]


async def _until(what: Callable[[], bool] | Callable[[], Awaitable[bool]], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = what()
        if got if isinstance(got, bool) else await got:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("state not reached before the deadline")


class Brain:
    """A brain's drop path and admin service; its follow stream's records land in `followed`."""

    def __init__(self, redis_url: str) -> None:
        self.store = RedisStore(connect(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0))
        self.agg = Aggregator(self.store, RESOLVER, DropMetrics(CollectorRegistry()), flush_interval=0.05,
                              max_backoff=0.5)  # fmt: skip
        self.feed = DropFeed()
        self.shared = SharedFeed.of(self.feed, self.agg, poll=0.2)
        self.agg.listener = FeedListener(self.shared, RESOLVER)
        self.drops = grpc.aio.server()
        drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(self.agg, outage_hold=0.3), self.drops)
        self.drops_address = f"127.0.0.1:{self.drops.add_insecure_port('127.0.0.1:0')}"
        self.admin = grpc.aio.server()
        svc = AdminService(Engine(), Authorizer({TOKEN: Caller("ops", "read")}), objects=list,
                           drops=DropsView(self.agg), feed=self.feed)  # fmt: skip
        svc.follow_poll = 0.1
        admin_pb2_grpc.add_AdminServicer_to_server(svc, self.admin)
        self.admin_address = f"127.0.0.1:{self.admin.add_insecure_port('127.0.0.1:0')}"
        self.tasks: list[asyncio.Task[Any]] = []
        self.followed: list[admin_pb2.DropRecord] = []

    async def start(self) -> Brain:
        await self.drops.start()
        await self.admin.start()
        self.tasks += [asyncio.create_task(self.agg.run()), asyncio.create_task(self.shared.run())]
        self.tasks.append(asyncio.create_task(self._follow()))
        return self

    async def _follow(self) -> None:
        async with grpc.aio.insecure_channel(self.admin_address) as ch:
            async for rec in admin_pb2_grpc.AdminStub(ch).FollowDrops(admin_pb2.FollowDropsRequest(), metadata=MD):
                self.followed.append(rec)

    def nodes(self) -> Counter[str]:
        return Counter(r.node for r in self.followed if not r.HasField("store"))

    def notices(self) -> list[admin_pb2.DropStoreStatus]:
        return [r.store for r in self.followed if r.HasField("store")]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.drops.stop(0)
        await self.admin.stop(0)
        await self.store.client.aclose()


class Agent:
    def __init__(self, node: str, address: str) -> None:
        self.node = node
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.reporter = Reporter(node, self.channel, batch_events=200, stream_seconds=0.5, max_backoff=0.5)
        self.task = asyncio.create_task(self.reporter.run())

    def offer(self, n: int, seed: int) -> None:
        self.reporter.offer(random_events(n, time.time() - 5, 4, seed=seed, node=self.node))

    async def stop(self) -> None:
        self.reporter.close()
        await self.task
        await self.channel.close(None)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, Brain, Brain, Agent, Agent]]:
    rp = RedisProcess(tmp_path)
    rp.start()
    one, two = await Brain(rp.url).start(), await Brain(rp.url).start()
    a, b = Agent("node-a", one.drops_address), Agent("node-b", two.drops_address)
    try:
        # each brain's follower is subscribed, and each brain knows the other has one
        await _until(lambda: one.shared.remote_followers >= 1 and two.shared.remote_followers >= 1)
        yield rp, one, two, a, b
    finally:
        if rp.proc is not None:
            rp.proc.send_signal(signal.SIGCONT)
        await a.stop()
        await b.stop()
        await one.stop()
        await two.stop()
        rp.stop()


async def test_follow_on_either_brain_shows_both_brains_drops_once(
    cluster: tuple[RedisProcess, Brain, Brain, Agent, Agent], capsys: pytest.CaptureFixture[str]
) -> None:
    _, one, two, a, b = cluster
    a.offer(40, seed=1)
    b.offer(60, seed=2)
    for brain in (one, two):
        await _until(lambda brain=brain: brain.nodes() == Counter({"node-a": 40, "node-b": 60}))
    await asyncio.sleep(0.5)  # and no echo of its own records arrives late
    assert one.nodes() == two.nodes() == Counter({"node-a": 40, "node-b": 60})
    assert not one.notices() and not two.notices()
    # the CLI on brain one prints the other brain's agent's drops too
    async with grpc.aio.insecure_channel(one.admin_address) as ch:
        args = argparse.Namespace(namespace=None, pod=None, direction=None, protocol=None, port=None,
                                  duration=30.0, count=5, output="table")  # fmt: skip
        follow = asyncio.create_task(cli_admin._drops_follow(admin_pb2_grpc.AdminStub(ch), MD, 30.0, args))
        # drops made before its stream is up are not followed: offer more until it has its five
        # (however long subscribing takes on a busy machine; it stops by itself after 30 s)
        seed = 3
        while not follow.done():
            b.offer(5, seed=seed)
            seed += 1
            await asyncio.wait({follow}, timeout=1.0)
        assert follow.result() == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(" BLOCKED " in line and " on node-b" in line for line in lines), lines


async def test_follow_goes_on_with_local_drops_while_redis_is_stopped(
    cluster: tuple[RedisProcess, Brain, Brain, Agent, Agent],
) -> None:
    rp, one, two, a, b = cluster
    assert rp.proc is not None
    rp.proc.send_signal(signal.SIGSTOP)
    await _until(lambda: any(not n.redis_available for n in one.notices()))  # the follow stream says so
    a.offer(30, seed=11)
    b.offer(20, seed=12)  # brain two's agent: not seen on brain one until Redis is back
    await _until(lambda: one.nodes()["node-a"] == 30)
    await asyncio.sleep(0.5)
    assert one.nodes() == Counter({"node-a": 30})
    down = next(n for n in one.notices() if not n.redis_available)
    assert down.redis_configured and down.source == "memory" and down.error

    rp.proc.send_signal(signal.SIGCONT)
    await _until(lambda: one.notices()[-1].redis_available)  # and says when Redis is back
    await _until(lambda: one.shared.subscribed and two.shared.remote_followers >= 1)
    b.offer(10, seed=13)
    await _until(lambda: one.nodes()["node-b"] >= 10)
    assert one.nodes()["node-a"] == 30


def test_channel_messages_round_trip_and_foreign_ones_are_refused() -> None:
    recs = [admin_pb2.DropRecord(time=1.5, node="n-1", direction="ingress", dport=80, policies=["a/b"])] * 3
    brain, back = decode(encode("b" * 16, recs))
    assert brain == "b" * 16 and back == recs
    for junk in (b"", b"hello", encode("b" * 16, recs)[:-1]):
        with pytest.raises(ValueError):
            decode(junk)
