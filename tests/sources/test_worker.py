"""The engine worker (brain/worker.py): changes on one thread, reads on the loop only between them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from stockade.brain.worker import EngineWorker, GatedServicer


class Pair:
    """A stand-in engine whose invariant (a == b) holds only between changes."""

    def __init__(self) -> None:
        self.a = 0
        self.b = 0
        self.published = 0  # what the "fan-out" has seen

    def bump(self) -> int:
        self.a += 1
        time.sleep(0.02)  # half-applied for a while, on the worker thread
        self.b += 1
        return self.a


async def test_readers_never_see_a_change_in_flight() -> None:
    pair = Pair()
    worker: EngineWorker[Pair] = EngineWorker(pair)
    seen: list[tuple[int, int, int]] = []
    stop = asyncio.Event()

    def publish(n: int) -> None:
        pair.published = n

    async def writer() -> None:
        for _ in range(15):
            await worker.change(lambda p: p.bump(), then=publish)
        stop.set()

    async def idle_reader() -> None:
        while not stop.is_set():
            await worker.idle()
            seen.append((pair.a, pair.b, pair.published))  # no await since idle(): between changes
            await asyncio.sleep(0.001)

    async def leased_reader() -> None:
        while not stop.is_set():
            async with worker.reading() as p:
                first = (p.a, p.b, p.published)
                await asyncio.sleep(0.003)  # awaiting inside a lease: still no change under it
                assert (p.a, p.b, p.published) == first
                seen.append(first)

    try:
        await asyncio.wait_for(asyncio.gather(writer(), idle_reader(), idle_reader(), leased_reader()), 60)
    finally:
        worker.close()
    assert pair.a == pair.b == pair.published == 15
    assert seen  # the readers ran (how often depends on scheduling, so no count)
    assert all(a == b == pub for a, b, pub in seen), [s for s in seen if not s[0] == s[1] == s[2]][:5]


async def test_changes_run_on_the_worker_thread_and_then_on_the_loop() -> None:
    worker: EngineWorker[dict[str, Any]] = EngineWorker({})
    where: dict[str, int] = {}

    def fn(engine: dict[str, Any]) -> int:
        where["fn"] = threading.get_ident()
        return 7

    def then(result: int) -> None:
        where["then"] = threading.get_ident()
        assert worker.busy  # the engine is not released before the fan-out has the change

    try:
        assert await worker.change(fn, then=then) == 7
        assert where["fn"] != threading.get_ident() and where["then"] == threading.get_ident()
        assert not worker.busy
    finally:
        worker.close()


async def test_a_failed_change_raises_and_releases_the_engine() -> None:
    worker: EngineWorker[dict[str, Any]] = EngineWorker({})
    called: list[Any] = []

    def boom(engine: dict[str, Any]) -> None:
        raise ValueError("bug")

    try:
        with pytest.raises(ValueError, match="bug"):
            await worker.change(boom, then=called.append)
        assert called == [] and not worker.busy and worker.failures == 1
        await asyncio.wait_for(worker.idle(), 5)
    finally:
        worker.close()


async def test_a_cancelled_caller_still_hands_the_change_on() -> None:
    pair = Pair()
    worker: EngineWorker[Pair] = EngineWorker(pair)
    started, release = threading.Event(), threading.Event()

    def held_bump(p: Pair) -> int:
        # the change stays in flight until the caller is cancelled: by construction, not by timing
        started.set()
        release.wait(30)
        return p.bump()

    try:
        task = asyncio.create_task(worker.change(held_bump, then=lambda n: setattr(pair, "published", n)))
        assert await asyncio.to_thread(started.wait, 30)
        assert worker.busy
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.wait_for(worker.idle(), 30)  # released only once the thread finished
        assert pair.a == pair.b == pair.published == 1
    finally:
        worker.close()


async def test_a_waiting_change_holds_off_new_leases() -> None:
    worker: EngineWorker[Pair] = EngineWorker(Pair())
    order: list[str] = []
    try:
        async with worker.reading():
            change = asyncio.create_task(worker.change(lambda p: order.append("change")))
            await asyncio.sleep(0.01)
            assert order == []  # waits for the lease

            async def late_reader() -> None:
                async with worker.reading():
                    order.append("reader")

            reader = asyncio.create_task(late_reader())
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(change, reader), 5)
        assert order == ["change", "reader"]
    finally:
        worker.close()


async def test_gated_servicer_leases_only_the_listed_methods() -> None:
    worker: EngineWorker[Pair] = EngineWorker(Pair())

    class Svc:
        async def Read(self, request: Any, context: Any) -> Any:
            return worker._readers

        async def Other(self, request: Any, context: Any) -> Any:
            return worker._readers

    try:
        gated: Any = GatedServicer(Svc(), worker, frozenset({"Read"}))
        assert await gated.Read(None, None) == 1
        assert await gated.Other(None, None) == 0
    finally:
        worker.close()
