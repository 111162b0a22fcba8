"""List-then-watch one kind with the real kubernetes-asyncio client.

The loop, in the manner of kopf's: list (following `continue` pages) and turn the list into the
difference against what we hold; watch from the list's resourceVersion with bookmarks on; when the
stream ends or says nothing for `inactivity_timeout` seconds, watch again from the last version
seen (an event's or a bookmark's); on 410 Gone (the server forgot that version) list again; on
429 wait what Retry-After says; on any other error back off with jitter.

An optional kind (a custom resource, ``WatchedKind.optional``) may not be served at all (404: its
CRD is not installed, or was deleted). Then it counts as listed and empty, so the other kinds'
sync does not wait for it; what was held is passed on as deleted (deleting a CRD deletes its
objects); and it is listed again after ``absent_backoff`` (a few seconds, growing to
``ABSENT_RETRY_CAP``) until it is served. One log line when it goes, one when it comes.

The library's own `Watch` retries a 410 once and then raises, and builds a model object for every
event; this loop asks the generated list method for the raw response (`_preload_content=False`) and
reads the newline-delimited JSON itself, so objects stay plain dicts and a silent stream is
noticed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from .backoff import Backoff, parse_retry_after
from .events import SourceEvent
from .kinds import WatchedKind
from .state import Held, apply_watch_event, is_newer, malformed, relist_diff

log = logging.getLogger(__name__)

Emit = Callable[[SourceEvent], Awaitable[None]]

LIST_PAGE = 500
ABSENT_RETRY_CAP = 10.0  # seconds between two looks for an optional kind that is not served
YIELD_EVERY = 200  # events handed on from a list between two turns of the event loop


class Gone(Exception):
    """410: the version we asked for is no longer in the server's history."""


class NotServed(Exception):
    """404 on the collection: the API does not serve the kind (a custom resource without its CRD)."""


class TooManyRequests(Exception):
    def __init__(self, retry_after: float | None):
        super().__init__(f"429 Too Many Requests (Retry-After {retry_after})")
        self.retry_after = retry_after


class ApiFailure(Exception):
    """Any other answer than success from the API server."""


class ConsumerError(Exception):
    """The consumer's callback failed: not ours to retry (the event would be lost), so it ends the loop."""


def _failure(status: int, message: str, retry_after: str | None) -> Exception:
    if status == 410:
        return Gone(message)
    if status == 404:
        return NotServed(message)
    if status == 429 or (status == 503 and retry_after):  # an overloaded server says when to return
        return TooManyRequests(parse_retry_after(retry_after))
    return ApiFailure(f"{status}: {message}")


async def _check(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    try:
        body = await resp.text()
        message = json.loads(body).get("message", body)
    except (ValueError, aiohttp.ClientError):
        message = resp.reason or ""
    raise _failure(resp.status, message, resp.headers.get("Retry-After"))


class KindWatcher:
    def __init__(
        self,
        kind: WatchedKind,
        api_client: k8s.ApiClient,
        emit: Emit,
        *,
        inactivity_timeout: float = 120.0,
        watch_timeout: float = 300.0,
        request_timeout: float = 60.0,
        backoff: Backoff | None = None,
        absent_backoff: Backoff | None = None,
        on_listed: Callable[[WatchedKind], Awaitable[None]] | None = None,
        slim: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.kind = kind
        # What is kept of each object (slim.py), applied before it is held or passed on; None: whole.
        self._slim = slim
        self._list = functools.partial(
            getattr(getattr(k8s, kind.api_class)(api_client), kind.list_method), *kind.list_args
        )
        self._emit = emit
        self.inactivity_timeout = inactivity_timeout
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff or Backoff()
        self.absent_backoff = absent_backoff or Backoff(base=1.0, cap=ABSENT_RETRY_CAP)
        self.served: bool | None = None  # whether the API serves the kind (None: not known yet)
        self._on_listed = on_listed
        self.held: Held = {}
        self.rv: str = ""  # where the next watch starts
        self.seen: str = ""  # the newest version already covered (see state.apply_watch_event)
        self.listed = False
        self._progressed = False  # whether the current attempt has had a word from the watch
        # lists, watches, gone (410), throttled (429), errors, inactive (silent watches restarted),
        # events (passed on), skipped (not newer than held), bookmarks
        self.stats: Counter[str] = Counter()

    async def _send(self, ev: SourceEvent) -> None:
        try:
            await self._emit(ev)
        except Exception as e:  # the consumer's bug; retrying here would lose the event silently
            raise ConsumerError(f"the consumer failed on {ev.type} {ev.kind} {ev.namespace}/{ev.name}") from e

    async def run(self) -> None:
        need_list = True
        gone_in_a_row, gone_backoff = 0, Backoff(base=0.5, cap=30.0)
        while True:
            if self._progressed:
                gone_in_a_row = 0
            self._progressed = False
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                    self.backoff.reset()
                started = time.monotonic()
                if await self.watch_once():
                    self.backoff.reset()
                elif time.monotonic() - started < 1.0:
                    # A stream that ends at once with nothing in it: do not spin.
                    await asyncio.sleep(self.backoff.next())
            except Gone as e:
                self.stats["gone"] += 1
                log.info("%s: %s; listing again", self.kind.plural, e)
                need_list = True
                gone_in_a_row = 1 if self._progressed else gone_in_a_row + 1
                if gone_in_a_row == 1:
                    gone_backoff.reset()
                    await asyncio.sleep(random.uniform(0, 0.1))  # replicas should not re-list in step
                else:  # listed, watched, and gone again at once: a lagging server; don't hammer it
                    await asyncio.sleep(gone_backoff.next())
            except NotServed as e:
                if not self.kind.optional:
                    await self._failed(e)
                    continue
                need_list = True
                await self._not_served(e)
                await asyncio.sleep(self.absent_backoff.next())
            except TooManyRequests as e:
                self.stats["throttled"] += 1
                delay = e.retry_after if e.retry_after is not None else self.backoff.next()
                log.warning("%s: throttled by the API server; retrying in %.1fs", self.kind.plural, delay)
                await asyncio.sleep(delay * random.uniform(1.0, 1.1))
            except (
                TimeoutError,
                ApiFailure,
                ApiException,
                aiohttp.ClientError,
                OSError,
                ValueError,
                KeyError,
                TypeError,
            ) as e:
                await self._failed(e)

    async def _failed(self, e: Exception) -> None:
        self.stats["errors"] += 1
        if self._progressed:  # a long watch that broke is not a failing server: retry soon
            self.backoff.reset()
        delay = self.backoff.next()
        log.warning("%s: %s: %s; retrying in %.1fs", self.kind.plural, type(e).__name__, e, delay)
        await asyncio.sleep(delay)

    async def _not_served(self, e: NotServed) -> None:
        """An optional kind the API does not serve: empty, and listed as far as the sync goes."""
        self.stats["absent"] += 1
        if self.served is not False:
            log.warning(
                "%s: not served by the API server (%s): its CRD is not installed; going on without it, "
                "looking again every few seconds",
                self.kind.plural,
                e,
            )
        self.served = False
        for ev in relist_diff(self.held, self.kind, []):  # a deleted CRD takes its objects along
            self.stats["events"] += 1
            await self._send(ev)
        self.rv = self.seen = ""
        if not self.listed:
            self.listed = True
            if self._on_listed is not None:
                await self._on_listed(self.kind)

    async def relist(self) -> None:
        """List every object (all pages) and pass on the difference against what we hold."""
        items: list[dict[str, Any]] = []
        rv, cont = "", None
        while True:
            kwargs: dict[str, Any] = {
                "limit": LIST_PAGE,
                "_preload_content": False,
                "_request_timeout": self.request_timeout,
            }
            if cont:
                kwargs["_continue"] = cont
            resp = await self._list(**kwargs)
            try:
                await _check(resp)
                page = json.loads(await resp.read())
            finally:
                resp.release()
            if not isinstance(page, dict) or not isinstance(page.get("metadata") or {}, dict):
                raise ValueError("the list response is not a list object")
            meta = page.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")  # the snapshot is the first page's
            page_items = page.get("items") or []
            if not isinstance(page_items, list):
                raise ValueError("the list response's items are not a list")
            for item in page_items:
                if self._malformed(item):
                    continue
                items.append(self._slim(self.kind.kind, item) if self._slim else item)
            cont = meta.get("continue")
            if cont is not None and not isinstance(cont, str):
                raise ValueError("the list response's continue token is not a string")
            if not cont:
                break
        self.stats["lists"] += 1
        if self.kind.optional and self.served is False:
            log.warning("%s: now served by the API server; watching it", self.kind.plural)
            self.absent_backoff.reset()
        self.served = True
        for i, ev in enumerate(relist_diff(self.held, self.kind, items)):
            self.stats["events"] += 1
            await self._send(ev)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a consumer that never suspends must not hold the loop for a whole list
        self.rv = self.seen = rv  # a fresh list covers everything up to its version
        if not self.listed:
            self.listed = True
            if self._on_listed is not None:
                await self._on_listed(self.kind)

    async def watch_once(self) -> bool:
        """Watch from self.rv until the stream ends or goes silent; whether anything arrived."""
        self.stats["watches"] += 1
        timeout = aiohttp.ClientTimeout(connect=self.request_timeout, sock_connect=self.request_timeout)
        # The server ends the watch after about watch_timeout; spread them so they don't all restart
        # at the same instant.
        seconds = int(self.watch_timeout * random.uniform(1.0, 1.2))
        resp = await self._list(
            watch=True,
            resource_version=self.rv,
            allow_watch_bookmarks=True,
            timeout_seconds=seconds,
            _preload_content=False,
            _request_timeout=timeout,
        )
        got_any = False
        try:
            await _check(resp)
            pending = b""
            while True:
                try:
                    chunk = await asyncio.wait_for(resp.content.readany(), self.inactivity_timeout)
                except TimeoutError:
                    self.stats["inactive"] += 1
                    log.info(
                        "%s: the watch said nothing for %.0fs; restarting it", self.kind.plural, self.inactivity_timeout
                    )
                    return got_any
                if not chunk:
                    return got_any
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.strip():
                        got_any = True
                        await self._on_line(line)
        finally:
            resp.close()  # not release(): a silent or cut stream must not go back to the pool

    def _malformed(self, obj: Any) -> bool:
        """Skip (and count, and log) an object that cannot be tracked: one bad object must not
        stall its kind's list or watch, which would keep the brain from ever starting."""
        why = malformed(obj)
        if why:
            self.stats["malformed"] += 1
            log.warning("%s: skipping an object the API served that cannot be tracked: %s", self.kind.plural, why)
        return bool(why)

    async def _on_line(self, line: bytes) -> None:
        ev = json.loads(line)
        if not isinstance(ev, dict):
            raise ValueError("a watch event is not an object")
        type_, obj = ev.get("type"), ev.get("object") or {}
        if type_ == "ERROR":
            if not isinstance(obj, dict):
                obj = {}
            code = obj.get("code")
            raise _failure(code if isinstance(code, int) else 500, str(obj.get("message", "watch error")), None)
        self._progressed = True
        if type_ in ("ADDED", "MODIFIED", "DELETED"):
            if self._malformed(obj):
                return
            if self._slim is not None:
                obj = self._slim(self.kind.kind, obj)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata") or {}, dict):
            raise ValueError(f"a {type_!r} watch event without an object")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if type_ == "BOOKMARK":
            self.stats["bookmarks"] += 1
            if rv:
                self.rv = rv
                if not self.seen or is_newer(rv, self.seen):
                    self.seen = rv
            return
        if type_ not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {type_!r}")
        out = apply_watch_event(self.held, self.kind, type_, obj, self.seen)
        if rv:
            self.rv = rv
            if not self.seen or is_newer(rv, self.seen):
                self.seen = rv
        if out is None:
            self.stats["skipped"] += 1
            return
        self.stats["events"] += 1
        await self._send(out)
