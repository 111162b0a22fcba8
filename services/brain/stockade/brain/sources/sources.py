"""The watches together: one task per kind, one ordered stream of events to the consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from .backoff import Backoff
from .events import SYNCED, SourceEvent
from .kinds import KINDS, WatchedKind
from .watcher import KindWatcher

log = logging.getLogger(__name__)

Sink = asyncio.Queue[SourceEvent] | Callable[[SourceEvent], Awaitable[None]]


async def api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """A client from a kubeconfig file, or in-cluster when there is none (KUBERNETES_SERVICE_HOST)."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=cfg)
        return k8s.ApiClient(cfg)
    return await k8s_config.new_client_from_config(config_file=kubeconfig)


class Sources:
    """List-then-watch every kind of `KINDS`; hand every change to `sink`.

    The sink is an asyncio.Queue or an async callback; the callback is never called concurrently,
    and a kind's events reach it in the order the API server made them. Each object's events come
    exactly once however the watches break (see `watcher.py`); after the first list of every kind
    comes one `SYNCED` event; an optional kind the API does not serve (ClusterNetworkPolicy without
    its CRD) counts as listed and empty, and is looked for again every ``absent_backoff()`` delay
    (a few seconds) until it is served. ``slim(kind, obj)``: what is held and passed on of each object
    (`slim.slim` keeps what the brain reads); None keeps objects whole.
    """

    def __init__(
        self,
        client: k8s.ApiClient,
        sink: Sink,
        *,
        kinds: tuple[WatchedKind, ...] = KINDS,
        inactivity_timeout: float = 120.0,
        watch_timeout: float = 300.0,
        request_timeout: float = 60.0,
        backoff: Callable[[], Backoff] = Backoff,
        absent_backoff: Callable[[], Backoff] | None = None,
        slim: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self._client = client
        self._sink = sink
        self._lock = asyncio.Lock()
        self.synced = asyncio.Event()
        self._pending = {k.kind for k in kinds}
        self.watchers = [
            KindWatcher(
                k,
                client,
                self._emit,
                inactivity_timeout=inactivity_timeout,
                watch_timeout=watch_timeout,
                request_timeout=request_timeout,
                backoff=backoff(),
                absent_backoff=absent_backoff() if absent_backoff else None,
                on_listed=self._listed,
                slim=slim,
            )
            for k in kinds
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def _emit(self, ev: SourceEvent) -> None:
        if isinstance(self._sink, asyncio.Queue):
            await self._sink.put(ev)
            return
        async with self._lock:
            await self._sink(ev)

    async def _listed(self, kind: WatchedKind) -> None:
        self._pending.discard(kind.kind)
        if not self._pending and not self.synced.is_set():
            self.synced.set()
            await self._emit(SYNCED)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(w.run(), name=f"watch-{w.kind.plural}") for w in self.watchers]

    async def wait(self) -> None:
        """Until a watcher fails for good (only a consumer error does that): then raise it."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            t.result()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    async def __aenter__(self) -> Sources:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def snapshot(self) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
        """What is held now, by kind then (namespace, name)."""
        return {w.kind.kind: dict(w.held) for w in self.watchers}

    @property
    def stats(self) -> dict[str, Counter[str]]:
        return {w.kind.kind: w.stats for w in self.watchers}
