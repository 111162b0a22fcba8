"""Shared pieces for the sync tests: synthetic node models and brain/agent harnesses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from stockade.agent.backends.base import MemoryDataplane
from stockade.agent.sync import AgentClient, Applier, Backoff, channel_options
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import SyncService, serve_sync
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, diff
from stockade.tls import ClientTLS, ServerTLS


def random_model(node: str, rng: random.Random, pods: int = 5, sets: int = 4) -> NodeModel:
    set_ids = [f"ag_{rng.getrandbits(32):08x}" for _ in range(sets)]
    model = NodeModel(node)
    for sid in set_ids:
        model.sets[sid] = frozenset(
            f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}/32" for _ in range(rng.randrange(0, 6))
        )
    for i in range(pods):
        ip = f"10.1.{rng.randrange(256)}.{i + 1}"
        for direction in Direction:
            if rng.random() < 0.6:
                rules = [
                    Rule(
                        rng.choice([None, *set_ids]),
                        rng.choice(
                            [
                                None,
                                (PortMatch(Protocol.TCP, rng.randrange(1, 65535)),),
                                (PortMatch(Protocol.UDP, 1000, 2000), PortMatch(Protocol.SCTP)),
                            ]
                        ),
                    )
                    for _ in range(rng.randrange(0, 3))
                ]
                chain = Chain.of(direction, rules)
                model.chains[chain.id] = chain
                model.dispatch(direction)[ip] = chain.id
    # drop sets no chain uses only sometimes: unused sets are legal in the model
    return model


class SyntheticCluster:
    """Stands in for the engine before it lands: per-node models changing at random."""

    def __init__(self, nodes: list[str], seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.models = {n: random_model(n, self.rng) for n in nodes}

    def model_of(self, node: str) -> NodeModel:
        return self.models.get(node, NodeModel(node)).copy()

    def churn(self, nodes: list[str] | None = None) -> dict[str, NodeDelta]:
        out = {}
        for n in nodes or list(self.models):
            new = random_model(n, self.rng) if self.rng.random() < 0.3 else self._tweak(self.models[n])
            out[n] = diff(self.models[n], new)
            self.models[n] = new
        return out

    def _tweak(self, model: NodeModel) -> NodeModel:
        new = model.copy()
        if new.sets:
            sid = self.rng.choice(sorted(new.sets))
            new.sets[sid] = new.sets[sid] ^ {f"10.9.{self.rng.randrange(256)}.{self.rng.randrange(256)}/32"}
        return new


@dataclass
class Brain:
    fanout: FanOut
    server: grpc.aio.Server
    port: int
    service: SyncService

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(grace=None)


async def start_brain(
    model_of: Callable[[str], NodeModel], tls: ServerTLS | None, port: int = 0, **kw: object
) -> Brain:
    fanout = FanOut(model_of, **kw)  # type: ignore[arg-type]
    server, bound, service = await serve_sync(
        fanout,
        tls,
        f"127.0.0.1:{port}",
        allow_insecure=tls is None,
        keepalive_time_ms=1_000,
        keepalive_timeout_ms=1_000,
    )
    return Brain(fanout, server, bound, service)


@dataclass
class Agent:
    node: str
    dataplane: MemoryDataplane
    client: AgentClient
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def status(self):  # type: ignore[no-untyped-def]
        return self.client.status

    async def shutdown(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


def start_agent(node: str, address: str, tls: ClientTLS | None, dataplane: MemoryDataplane | None = None) -> Agent:
    dp = dataplane or MemoryDataplane()
    applier = Applier(node, dp, offload=False)
    client = AgentClient(
        applier,
        address,
        tls,
        allow_insecure=tls is None,
        backoff=Backoff(0.05, 0.5),
        options=channel_options(keepalive_time_ms=1_000, keepalive_timeout_ms=1_000),
        answer_timeout=3.0,
    )
    agent = Agent(node, dp, client)
    agent.task = asyncio.create_task(client.run(agent.stop))
    return agent


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait for ``check()``; the deadline bounds a hang on a busy machine, it measures nothing."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class TcpProxy:
    """A loopback TCP relay that can cut every connection (RST-free close) or freeze them
    (stop relaying without closing: a half-open path, as when a node vanishes)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []

    async def start(self) -> TcpProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        frozen = asyncio.Event()
        self.links.append((w, uw, frozen))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if frozen.is_set():
                        await asyncio.Event().wait()  # swallow: never deliver, never close
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                if not frozen.is_set():
                    dst.close()

        try:
            await asyncio.gather(pump(r, uw), pump(ur, w))
        except asyncio.CancelledError:
            pass

    def cut_all(self) -> None:
        for w, uw, _ in self.links:
            w.close()
            uw.close()
        self.links.clear()

    def freeze_all(self) -> None:
        for _, _, frozen in self.links:
            frozen.set()
        self.links.clear()

    async def stop(self) -> None:
        self.cut_all()
        if self.server is not None:
            self.server.close()
