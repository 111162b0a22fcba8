"""Answers of the Kubernetes API's reviews (TokenReview, SubjectAccessReview), kept briefly.

A reconnect storm or a burst of admin calls then costs one review per key, concurrent askers
share the one call in flight, and an answer is never kept past ``ttl`` (nor past a deadline the
caller knows, such as a token's own expiry). Errors the caller says are not the verdict (the
API unreachable) are not kept: the next ask reviews again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ReviewCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, V | Exception]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[V]] = {}

    async def get(
        self,
        key: bytes,
        review: Callable[[], Awaitable[V]],
        *,
        expires: float | None = None,
        keep: Callable[[Exception], bool] = lambda e: False,
    ) -> V:
        """The kept answer for ``key``, else ``review()``'s (an exception is kept when ``keep``
        says it is the verdict, and raised again to later askers)."""
        hit = self._cache.get(key)
        if hit is not None:
            until, result = hit
            if self.clock() < until:
                if isinstance(result, Exception):
                    raise result
                return result
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._checked(key, review, expires, keep))
            pending.add_done_callback(lambda t: self._done(key, t))
        # shielded: one asker giving up does not cancel the review the others wait for
        return await asyncio.shield(pending)

    def _done(self, key: bytes, task: asyncio.Future[V]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved, even when every asker gave up meanwhile

    async def _checked(
        self, key: bytes, review: Callable[[], Awaitable[V]], expires: float | None, keep: Callable[[Exception], bool]
    ) -> V:
        try:
            result = await review()
        except Exception as e:
            if keep(e):
                self._remember(key, e, expires)
            raise
        self._remember(key, result, expires)
        return result

    def _remember(self, key: bytes, result: V | Exception, expires: float | None) -> None:
        until = self.clock() + self.ttl
        if expires is not None:
            until = min(until, expires)
        self._cache[key] = (until, result)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
