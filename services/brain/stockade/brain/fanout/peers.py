"""Brains share their agents' status through Redis, so each one answers for every node.

Each agent holds a stream to one brain. Every brain publishes the nodes it serves and reads
what its peers publish (`peerview.PeerView`), so `stockade nodes`, policy realization and
``/v1/realized`` on any brain count a node served by another one. Without Redis a brain sees
its own agents only (as with one brain).

Keys (``P`` is the prefix, ``{stockade}:peers`` by default; one hash tag, one Cluster slot):

* ``P:brains`` — sorted set, brain id → ``time.time()`` of its last refresh: the directory of
  brains to read. Liveness is not this score (clocks differ) but the brain's own key's TTL.
* ``P:brain:<id>`` — hash, node → `peerview.encode` JSON, for every node whose agent stream
  the brain holds. Expires ``ttl`` seconds after the last refresh (every ``refresh`` seconds),
  so a dead brain's nodes vanish; rewritten field by field as a status changes, so realization
  on the peers is prompt; deleted when the brain stops.

Redis load: per brain, O(nodes it serves) written per refresh and O(all nodes) read per poll,
each a pipeline. A Redis outage costs nothing but the peers' view (logged once, retried):
enforcement and this brain's own view do not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError

from stockade.brain.drops.redis_url import RedisClient
from stockade.brain.fanout.hub import FanOut
from stockade.brain.fanout.peerview import PeerEntry, PeerView, check_brain_id, decode, encode
from stockade.codec.validate import ValidationError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "{stockade}:peers"
MAX_BRAINS = 16  # peers read (the newest refreshed first): a deployment runs two or three
MAX_NODES_PER_BRAIN = 50_000
DIRECTORY_RETENTION = 3600.0  # seconds: a brain not refreshed for this long leaves the directory
MAX_LOGGED = 10_000  # malformed entries remembered so each is logged once
CHANGE_LOG = 1000  # revisions a brain's change log keeps: a peer further behind reads it all
MAX_CHANGE_ENTRIES = 256  # log entries read per peer and poll (the rest at the next poll)
MAX_LOG_TEXT = 1 << 20  # characters of one log entry's node names


def brain_id(epoch: str, name: str = "") -> str:
    """``name`` (the brain's leader identity) or the pod name (what operators see in ``kubectl
    get pods``), and this process's epoch."""
    pod = name or os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname() or "brain"
    pod = "".join(c if c.isalnum() or c in "._-" else "-" for c in pod)[:100].lstrip("._-") or "brain"
    return check_brain_id(f"{pod}-{epoch[:8]}")


class PeerSync:
    """Publishes ``fanout``'s served nodes and keeps ``fanout.peers`` current. ``before_feed``
    waits until the engine is between changes (feeds start from its models)."""

    def __init__(
        self,
        client: RedisClient,
        fanout: FanOut,
        *,
        before_feed: Callable[[], Awaitable[None]] | None = None,
        prefix: str = DEFAULT_PREFIX,
        refresh: float = 1.0,
        ttl: float = 5.0,
        poll: float = 0.5,
        brain: str | None = None,
    ) -> None:
        self.client = client
        self.fanout = fanout
        self.before_feed = before_feed
        self.prefix = prefix
        self.refresh, self.ttl, self.poll = refresh, ttl, poll
        self.brain = check_brain_id(brain or brain_id(fanout.epoch))
        self.view = PeerView(ttl)
        fanout.brain_id, fanout.peers, fanout.on_status = self.brain, self.view, self.changed
        self._dirty: set[str] = set()
        self._since: dict[str, float] = {}
        self._rewrite = True  # the whole hash, not field by field (at start, after an outage)
        self._wake = asyncio.Event()
        self._healthy = True
        self._logged: set[tuple[str, str]] = set()
        # Per peer: its valid entries, every field as last read (an unchanged one is not decoded
        # again), and the revision of its hash that read reflects.
        self._entries: dict[str, dict[str, PeerEntry]] = {}
        self._raw: dict[str, dict[str, Any]] = {}
        self._revs: dict[str, int] = {}
        self._revision = 0  # of this brain's hash: changes with every write of its fields
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    @property
    def directory_key(self) -> str:
        return f"{self.prefix}:brains"

    def brain_key(self, brain: str) -> str:
        return f"{self.prefix}:brain:{brain}"

    def changes_key(self, brain: str) -> str:
        """A stream: entry ``<revision>-0`` lists the nodes written at that revision."""
        return f"{self.prefix}:changes:{brain}"

    def revision_key(self, brain: str) -> str:
        """Changes with every write of the brain's fields: its peers skip reading a hash unchanged."""
        return f"{self.prefix}:rev:{brain}"

    def _revise(self, p: Any, nodes: Iterable[str] | None) -> None:
        """Next revision; ``nodes``: the fields it wrote (None: the whole hash, the log restarts)."""
        self._revision += 1  # never repeats within this brain id (a process's epoch)
        p.set(self.revision_key(self.brain), self._revision, px=self.ttl_ms)
        changes = self.changes_key(self.brain)
        if nodes is None:
            p.delete(changes)
        else:
            p.xadd(changes, {"n": "\n".join(nodes)}, id=f"{self._revision}-0", maxlen=CHANGE_LOG, approximate=True)
            p.pexpire(changes, self.ttl_ms)

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def changed(self, node: str) -> None:
        """The fan-out's hook: a node's status changed here."""
        self._dirty.add(node)
        self._wake.set()

    # ---- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="peer-status")

    async def run(self) -> None:
        next_refresh = next_poll = 0.0
        while not self._stopped:
            now = time.monotonic()
            try:
                if now >= next_refresh or self._rewrite:
                    next_refresh = now + self.refresh
                    await self.publish()
                elif self._dirty:
                    await self.publish_changes()
                if now >= next_poll:
                    next_poll = now + self.poll
                    await self.read_peers()
                if not self._healthy:
                    log.info("peer status: Redis reachable again; sharing node status with the other brains")
                    self._healthy = True
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as e:
                self._away(e)
            except Exception:  # a bug must not stop the loop (or anything else)
                log.exception("peer status: unexpected failure; retrying")
                self._away(None)
            self._wake.clear()
            wait = max(0.0, min(next_refresh, next_poll) - time.monotonic())
            if self._dirty and self._healthy:
                wait = 0.0
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    def _away(self, e: BaseException | None) -> None:
        self._rewrite = True
        if self._healthy:
            log.warning(
                "peer status: Redis unreachable (%s); nodes served by other brains count as not connected "
                "here until it is back, enforcement is unaffected",
                e or "see above",
            )
            self._healthy = False

    async def close(self) -> None:
        """Stop, and take this brain's entries out at once: its peers need not wait for the TTL."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()  # no write of the loop's may land after the delete below
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with self.client.pipeline(transaction=True) as p:
                p.delete(self.brain_key(self.brain), self.revision_key(self.brain), self.changes_key(self.brain))
                p.zrem(self.directory_key, self.brain)
                await p.execute()
        except (RedisError, OSError, TimeoutError) as e:
            log.info("peer status: could not remove this brain's entries (%s); they expire in %.0f s", e, self.ttl)
        finally:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.client.aclose()

    # ---- writing -------------------------------------------------------------------------------

    def _served(self, node: str) -> bool:
        session = self.fanout.sessions.get(node)
        return session is not None and session.end is None and self.fanout.status[node].connected

    def _encoded(self, node: str) -> str:
        return encode(self.fanout.status[node], self._since.setdefault(node, time.time()))

    async def publish(self) -> None:
        """The whole hash when needed (start, outage, expired), else only its TTL and the directory."""
        key = self.brain_key(self.brain)
        if not self._rewrite:
            async with self.client.pipeline(transaction=True) as p:
                p.pexpire(key, self.ttl_ms)
                p.pexpire(self.revision_key(self.brain), self.ttl_ms)
                p.pexpire(self.changes_key(self.brain), self.ttl_ms)
                p.zadd(self.directory_key, {self.brain: time.time()})
                alive = (await p.execute())[0]
            if alive or not self.fanout.sessions:
                await self.publish_changes()
                return
            # The key expired (Redis restarted, or a stall longer than the TTL): write it all.
        self._dirty.clear()
        served = {n for n in self.fanout.sessions if self._served(n)}
        self._since = {n: t for n, t in self._since.items() if n in served}
        entries = {n: self._encoded(n) for n in served}
        async with self.client.pipeline(transaction=True) as p:
            p.delete(key)
            if entries:
                p.hset(key, mapping=entries)  # type: ignore[arg-type]
                p.pexpire(key, self.ttl_ms)
            self._revise(p, None)
            p.zadd(self.directory_key, {self.brain: time.time()})
            p.zremrangebyscore(self.directory_key, "-inf", time.time() - DIRECTORY_RETENTION)
            await p.execute()
        self._rewrite = False

    async def publish_changes(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        key = self.brain_key(self.brain)
        gone = [n for n in dirty if not self._served(n)]
        for n in gone:
            self._since.pop(n, None)
        fresh = {n: self._encoded(n) for n in dirty if self._served(n)}
        try:
            async with self.client.pipeline(transaction=True) as p:
                p.pexpire(key, self.ttl_ms)  # first: whether the hash is still there to amend
                if gone:
                    p.hdel(key, *gone)
                if fresh:
                    p.hset(key, mapping=fresh)  # type: ignore[arg-type]
                    p.pexpire(key, self.ttl_ms)  # in the same transaction: never a key without a TTL
                self._revise(p, sorted(dirty))
                alive = (await p.execute())[0]
            if not alive and self.fanout.sessions:
                self._rewrite = True  # it expired: the fields written now are not all of it
        except BaseException:
            self._dirty |= dirty
            raise

    # ---- reading -------------------------------------------------------------------------------

    async def read_peers(self) -> None:
        ids = await self.client.zrevrange(self.directory_key, 0, MAX_BRAINS)
        peers = []
        for raw in ids:
            brain = _text(raw)
            if brain == self.brain:
                continue
            try:
                peers.append(check_brain_id(brain))
            except ValidationError as e:
                self._malformed(brain[:80], "-", str(e))
        peers = peers[:MAX_BRAINS]
        async with self.client.pipeline(transaction=False) as p:
            for brain in peers:
                p.hlen(self.brain_key(brain))
                p.get(self.revision_key(brain))
            replies = await p.execute()
        revs: dict[str, int | None] = {}
        for brain, size, rev in zip(peers, replies[::2], replies[1::2], strict=True):
            if int(size) > MAX_NODES_PER_BRAIN:
                self._malformed(brain, "-", f"{size} entries, more than {MAX_NODES_PER_BRAIN}: ignored")
            elif int(size) > 0:
                revs[brain] = _revision(rev)
        # A revision is read before the hash it goes with: a write in between is read now and
        # again next time, never missed. Unchanged hashes are not read; changed ones, field by
        # field from their change log while it reaches back far enough.
        full, steps = [], {}
        for brain, rev in revs.items():
            last = self._revs.get(brain)
            if rev is None or last is None or brain not in self._entries:
                full.append(brain)
            elif rev != last:
                steps[brain] = last
        gone = self._entries.keys() - revs.keys()
        if not full and not steps and not gone:
            self.view.touch()
            return
        logged = await self._read_steps(steps, full)
        async with self.client.pipeline(transaction=False) as p:
            for brain in full:
                p.hgetall(self.brain_key(brain))
            for brain in steps:
                p.hmget(self.brain_key(brain), sorted(logged[brain][0]))
            replies = await p.execute()
        touched: set[str] = set()
        for brain, h in zip(full, replies, strict=False):
            fields = {_text(k): v for k, v in h.items()}
            touched.update(fields, self._entries.get(brain, {}))
            self._take(brain, fields, whole=True)
            rev = revs[brain]
            if rev is None:
                self._revs.pop(brain, None)  # no revision to go by: read it whole next time too
            else:
                self._revs[brain] = rev
        for brain, values in zip(steps, replies[len(full) :], strict=True):
            nodes = sorted(logged[brain][0])
            self._take(brain, dict(zip(nodes, values, strict=True)))
            self._revs[brain] = logged[brain][1]
            touched.update(nodes)
        for brain in gone:
            touched.update(self._entries.pop(brain))
            self._raw.pop(brain, None)
            self._revs.pop(brain, None)
        await self._start_feeds(self._entries, touched)
        changed = self.view.update(self._entries, touched)
        if changed:
            self.fanout.peers_changed(changed)

    async def _read_steps(self, steps: dict[str, int], full: list[str]) -> dict[str, tuple[set[str], int]]:
        """The nodes each peer in ``steps`` wrote since the revision read last, and the revision
        that brings it to; a peer whose log no longer reaches back that far moves to ``full``."""
        async with self.client.pipeline(transaction=False) as p:
            for brain, last in steps.items():
                p.xrange(self.changes_key(brain), min=f"{last + 1}-0", max="+", count=MAX_CHANGE_ENTRIES)
            logs = await p.execute()
        out: dict[str, tuple[set[str], int]] = {}
        for (brain, last), log_entries in zip(list(steps.items()), logs, strict=True):
            nodes: set[str] = set()
            rev = last
            for entry_id, fields in log_entries:
                this = _revision(_text(entry_id).split("-", 1)[0])
                names = _text((fields or {}).get(b"n") or (fields or {}).get("n") or "")
                if this is None or this != rev + 1 or len(names) > MAX_LOG_TEXT:
                    break  # a gap (trimmed, or the hash was rewritten whole), or not a log entry
                rev = this
                nodes.update(names.split("\n"))
            else:
                nodes.discard("")
                if rev > last and 0 < len(nodes) <= MAX_NODES_PER_BRAIN:
                    out[brain] = (nodes, rev)
                    continue
            del steps[brain]
            full.append(brain)
        return out

    def _take(self, brain: str, fields: Mapping[str, Any], whole: bool = False) -> None:
        """Peer ``brain``'s fields as read (None: gone; ``whole``: all it has): decoded, unless
        unchanged since the last read."""
        entries, raw = self._entries.setdefault(brain, {}), self._raw.setdefault(brain, {})
        if whole:
            for node in raw.keys() - fields.keys():
                entries.pop(node, None)
                del raw[node]
        for node, v in fields.items():
            if v is None:
                entries.pop(node, None)
                raw.pop(node, None)
                continue
            if raw.get(node) == v:
                continue
            raw[node] = v
            try:
                entries[node] = decode(brain, node, v)
            except ValidationError as e:
                entries.pop(node, None)
                self._malformed(brain, node[:80], str(e))
            else:
                self._logged.discard((brain, node))

    def _malformed(self, brain: str, node: str, why: str) -> None:
        if (brain, node) in self._logged:
            return
        if len(self._logged) >= MAX_LOGGED:
            self._logged.clear()
        self._logged.add((brain, node))
        log.warning("peer status: ignoring brain %s's entry for node %s: %s", brain, node, why)

    async def _start_feeds(self, by_brain: Mapping[str, Mapping[str, PeerEntry]], nodes: set[str]) -> None:
        """A digest to compare with needs this brain's feed for the node: start the missing ones
        (between engine changes, like a connecting agent's)."""
        fo = self.fanout
        missing = [n for n in nodes if n not in fo.feeds and any(n in e for e in by_brain.values())]
        if not missing:
            return
        if self.before_feed is not None:
            await self.before_feed()
        for node in missing:
            if node not in fo.feeds:
                fo.feed(node)


def _revision(v: Any) -> int | None:
    """A revision as read (None: absent, e.g. expired, or not a number: read the whole hash)."""
    try:
        n = int(_text(v)) if v is not None else None
    except ValueError:
        return None
    return n if n is not None and 0 < n < 2**62 else None


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
