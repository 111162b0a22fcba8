"""Fixtures: our own redis-server processes and a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from stockade.brain.drops import Aggregator, DropMetrics, RedisStore, Resolver
from stockade.brain.drops.servicer import DropServicer
from stockade.v1 import drops_pb2_grpc

PORTS = range(23000, 24000)


def free_port() -> int:
    """A free loopback TCP port from this test suite's range."""
    for port in random.sample(PORTS, 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 23000-23999")


class RedisProcess:
    """A redis-server of our own, with a data directory so it can be restarted with its data."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.dir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self, save: bool = False) -> None:
        """Shut the server down (saving its data first when ``save``, so a restart reloads it)."""
        if self.proc is None:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n" if save else b"SHUTDOWN NOSAVE\r\n")
                s.recv(64)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    rp = RedisProcess(tmp_path)
    rp.start()
    yield rp
    rp.stop()


@pytest.fixture
async def redis_client(redis_proc: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_proc.url, socket_timeout=2, socket_connect_timeout=1)
    yield client
    await client.aclose()


def make_aggregator(client: Redis, resolver: Resolver, **kw: object) -> tuple[Aggregator, CollectorRegistry]:
    registry = CollectorRegistry()
    store = RedisStore(client)
    return Aggregator(store, resolver, DropMetrics(registry), **kw), registry  # type: ignore[arg-type]


@pytest.fixture
async def grpc_brain(redis_client: Redis) -> AsyncIterator[tuple[str, Aggregator, CollectorRegistry]]:
    """A brain's drop service on a loopback port: (target, aggregator, registry)."""
    from .data import RESOLVER

    agg, registry = make_aggregator(redis_client, RESOLVER, recent_per_flush=100_000)
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(DropServicer(agg), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    yield f"127.0.0.1:{port}", agg, registry
    await server.stop(0)
    await agg.close()
    await flusher
