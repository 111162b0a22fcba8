"""`stockade drops follow` over every brain: each brain shares its live records on a Redis channel.

An agent reports to one brain at a time, so one brain's feed has only its own agents' drops.
`SharedFeed` is the feed the aggregator's `FeedListener` publishes to: the records go to this
brain's own follow streams (the local `DropFeed`) and, while any other brain has a follower, to
the channel ``<prefix>:follow`` (hash-tagged like every drops key). While this brain has a
follower it subscribes to the channel and hands the other brains' records to its own streams
(its own, echoed back, are skipped by brain id). It is a live view, bounded, not a log: at most
``max_queued`` records wait to be published (the oldest are lost first, and counted), and a
message carries at most ``per_message`` records.

Without Redis, or while it is away, follow goes on with this brain's records only: a failed
publish, subscription or health check tells the aggregator (``note_outage``), so the follow
streams' notice says Redis is unavailable and the records are this brain's agents' only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from redis import exceptions as rexc

from stockade.brain.drops.aggregator import OUTAGE, Aggregator
from stockade.brain.drops.store import RedisStore
from stockade.v1 import admin_pb2

log = logging.getLogger(__name__)

_MAGIC = b"SDF1"
_ID_LEN = 16
_LEN = struct.Struct(">I")


class LocalFeed(Protocol):
    """What `stockade.brain.admin.service.DropFeed` offers."""

    @property
    def followers(self) -> int: ...

    def publish(self, records: Iterable[admin_pb2.DropRecord]) -> None: ...


def encode(brain: str, records: Iterable[admin_pb2.DropRecord]) -> bytes:
    """One channel message: magic, the sending brain's id, then length-prefixed records."""
    parts = [_MAGIC, brain.encode("ascii")[:_ID_LEN].ljust(_ID_LEN, b"-")]
    for rec in records:
        body = rec.SerializeToString()
        parts += (_LEN.pack(len(body)), body)
    return b"".join(parts)


def decode(data: bytes) -> tuple[str, list[admin_pb2.DropRecord]]:
    """(sending brain, records); ValueError for anything else on the channel."""
    head = len(_MAGIC) + _ID_LEN
    if not data.startswith(_MAGIC) or len(data) < head:
        raise ValueError("not a drop records message")
    brain = data[len(_MAGIC) : head].decode("ascii", "replace")
    out, i = [], head
    while i < len(data):
        if i + _LEN.size > len(data):
            raise ValueError("truncated drop records message")
        (n,) = _LEN.unpack_from(data, i)
        i += _LEN.size
        if i + n > len(data):
            raise ValueError("truncated drop records message")
        out.append(admin_pb2.DropRecord.FromString(data[i : i + n]))
        i += n
    return brain, out


class SharedFeed:
    def __init__(
        self,
        local: LocalFeed,
        client: Any | None,  # redis.asyncio.Redis (or a Cluster client); None: no Redis
        *,
        channel: str,
        aggregator: Aggregator | None = None,
        brain_id: str | None = None,
        max_queued: int = 5_000,
        per_message: int = 200,
        poll: float = 1.0,
    ) -> None:
        self.local = local
        self.client = client
        self.channel = channel
        self.agg = aggregator
        self.brain_id = (brain_id or uuid.uuid4().hex)[:_ID_LEN].ljust(_ID_LEN, "-")
        self._queue: deque[admin_pb2.DropRecord] = deque()
        self._max_queued = max_queued
        self._per_message = per_message
        self._poll = poll
        self._wake = asyncio.Event()
        self.remote_followers = 0  # other brains subscribed to the channel (PUBSUB NUMSUB)
        self.subscribed = False
        self.lost = 0  # records not published: the queue was full, or Redis away
        self.received = 0  # other brains' records handed to our streams

    @classmethod
    def of(cls, local: LocalFeed, aggregator: Aggregator, **kw: Any) -> SharedFeed:
        """The shared feed of a brain's aggregator (its Redis client and key prefix, if any)."""
        store = aggregator.store
        if isinstance(store, RedisStore):
            return cls(local, store.client, channel=f"{store.prefix}:follow", aggregator=aggregator, **kw)
        return cls(local, None, channel="", aggregator=aggregator, **kw)

    # --- the Feed the FeedListener publishes to ---

    @property
    def followers(self) -> int:
        return self.local.followers + self.remote_followers

    def publish(self, records: list[admin_pb2.DropRecord]) -> None:
        self.local.publish(records)
        if self.client is None or not self.remote_followers:
            return
        self._queue.extend(records)
        over = len(self._queue) - self._max_queued
        for _ in range(max(0, over)):
            self._queue.popleft()
        self.lost += max(0, over)
        self._wake.set()

    # --- the Redis side ---

    def _outage(self, e: BaseException) -> None:
        if self.agg is not None:
            self.agg.note_outage(e)  # the follow streams' notice: Redis away, local records only

    async def run(self) -> None:
        """Publish and subscribe until cancelled (nothing to do without Redis). Follow is a view:
        whatever goes wrong here is logged, and the brain's own records still reach its streams."""
        if self.client is None:
            return
        await asyncio.gather(self._guarded(self._publisher), self._guarded(self._subscriber))

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("drops follow: sharing records with the other brains failed; retrying")
                self.subscribed = False
                await asyncio.sleep(self._poll * 5)

    async def _publisher(self) -> None:
        assert self.client is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            try:
                async with asyncio.timeout(self._poll * 3):
                    [(_, n)] = await self.client.pubsub_numsub(self.channel)
                    self.remote_followers = max(0, int(n) - (1 if self.subscribed else 0))
                    while self._queue:
                        chunk = [self._queue.popleft() for _ in range(min(self._per_message, len(self._queue)))]
                        await self.client.publish(self.channel, encode(self.brain_id, chunk))
            except (TimeoutError, rexc.RedisError, OSError) as e:
                self.lost += len(self._queue)
                self._queue.clear()
                if isinstance(e, OUTAGE):
                    self._outage(e)

    async def _subscriber(self) -> None:
        assert self.client is not None
        while True:
            if not self.local.followers:
                await asyncio.sleep(self._poll / 4)
                continue
            pubsub = self.client.pubsub()
            try:
                await self._follow(pubsub)
            except (TimeoutError, rexc.RedisError, OSError) as e:
                if isinstance(e, OUTAGE):
                    self._outage(e)
                await asyncio.sleep(self._poll)  # then try again
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _follow(self, pubsub: Any) -> None:
        """Hand the other brains' records to our streams while we have followers."""
        assert self.client is not None
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._poll * 3):
            await pubsub.subscribe(self.channel)
        self.subscribed = True
        checked = loop.time()
        while self.local.followers:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self._poll)
            if msg is not None and msg.get("type") == "message":
                try:
                    brain, records = decode(msg["data"])
                except ValueError:
                    continue  # not ours: someone else on the channel
                if brain != self.brain_id:
                    self.received += len(records)
                    self.local.publish(records)
            if loop.time() - checked >= self._poll:
                # A stopped Redis sends nothing, which looks like quiet: ask it.
                checked = loop.time()
                async with asyncio.timeout(self._poll * 2):
                    await self.client.ping()
