"""The engine's owner: one worker thread for every change, and a gate that serialises reads with it.

Compiling can take long (a cold start of 10,000 pods; an ``ipBlock`` expanding to 100,000
CIDRs), and on the event loop it would stop health, sync and admin for that long. So every
engine *mutation* runs on one worker thread, and the loop keeps serving meanwhile. The engine
is not thread-safe, and readers must never see a half-applied change, so the rule is:

* **one change at a time**, and none while a reader holds a lease (`change` waits);
* **readers run on the loop, only between changes**: either inside ``async with reading()``
  (a lease: a change waits until it is given back; used by admin calls, which may await), or
  right after ``await idle()`` with no ``await`` before the synchronous read (nothing can start
  a change in between, since only loop code submits changes; used by the sync port's connect,
  /metrics and /v1/realized);
* a change's ``then`` (handing its deltas to the fan-out) runs on the loop *before* the engine
  is released, so a reader never sees an engine that is ahead of the fan-out;
* writers go first: a waiting change holds off new leases, so readers cannot starve it.

The thread is a daemon: a SIGTERM while compiling ends the process without waiting for the
compile (the result would be thrown away anyway). A change cancelled on the loop still runs to
the end on the thread and its ``then`` still runs: the fan-out always follows the engine.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")
T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class EngineWorker(Generic[E]):
    def __init__(self, engine: E, name: str = "stockade-engine") -> None:
        self.engine = engine
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._busy = False  # a change is running on the thread (or its `then` on the loop)
        self._writers = 0  # changes waiting for readers to finish
        self._readers = 0
        self._waiters: list[asyncio.Future[None]] = []
        self.changes = 0
        self.failures = 0

    @property
    def busy(self) -> bool:
        return self._busy

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, loop, fut = job
            try:
                result = fn()
            except BaseException as e:  # handed to the loop: the caller decides
                _deliver(loop, fut, None, e)
            else:
                _deliver(loop, fut, result, None)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not ready():
            fut = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                self._waiters.remove(fut)

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)

    async def change(self, fn: Callable[[E], T], then: Callable[[T], None] | None = None) -> T:
        """Run ``fn(engine)`` on the worker thread, then ``then(result)`` on the loop; the result."""
        self._writers += 1
        try:
            await self._wait(lambda: not self._busy and self._readers == 0)
        finally:
            self._writers -= 1
        self._busy = True  # no await since the wait: nothing else started in between
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        engine = self.engine

        def finished(f: asyncio.Future[T]) -> None:
            try:
                if then is not None and not f.cancelled() and f.exception() is None:
                    then(f.result())
            except Exception:
                log.exception("handing an engine change on failed")
            finally:
                self.changes += 1
                if f.cancelled() or f.exception() is not None:
                    self.failures += 1
                self._busy = False
                self._wake()

        fut.add_done_callback(finished)
        self._jobs.put((lambda: fn(engine), loop, fut))
        return await asyncio.shield(fut)

    async def idle(self) -> None:
        """Return when no change is running. Read synchronously right after (no ``await`` first)."""
        await self._wait(lambda: not self._busy)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[E]:
        """A read lease: no change starts until it is given back (waits for a running one)."""
        await self._wait(lambda: not self._busy and self._writers == 0)
        self._readers += 1
        try:
            yield self.engine
        finally:
            self._readers -= 1
            self._wake()

    def close(self) -> None:
        """Stop the thread after the change it is running (if any); it is a daemon either way."""
        self._jobs.put(None)


def _deliver(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any, error: BaseException | None
) -> None:
    def settle() -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass  # the loop is closed: the brain is exiting and nobody waits for this result


class GatedServicer:
    """A gRPC servicer whose listed unary methods run under a read lease of ``worker``: the
    methods that read the engine see it only between changes. Other attributes pass through."""

    def __init__(self, inner: object, worker: EngineWorker[Any], methods: frozenset[str]) -> None:
        self._inner = inner
        self._worker = worker
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr
        worker = self._worker

        async def leased(request: Any, context: Any) -> Any:
            async with worker.reading():
                return await attr(request, context)

        leased.__name__ = name
        return leased
