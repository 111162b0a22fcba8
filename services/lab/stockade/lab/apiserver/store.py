"""The object store: objects by resource, one global resourceVersion counter (like etcd), a bounded
history of change events for watches, and the watchers themselves.

Every write is synchronous and hands its event to every matching watcher's queue before it returns,
so a watcher sees events in resourceVersion order and a bookmark queued after them is never ahead
of what it delivered. Stored objects are never mutated in place: a write stores a new dict, so
events and list results can share them without copying.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .decoding import check_types
from .errors import ApiError, not_found
from .resources import CRD_STORAGE, STORAGE_VIEW
from .validation import check_metadata

if TYPE_CHECKING:
    from .kinds.base import KindBehaviour

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
Matcher = Callable[[Obj], bool]

log = logging.getLogger(__name__)


@dataclass
class Event:
    rv: int
    storage: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None  # the state before, for MODIFIED (label-selected watches need it)
    line: bytes | None = None  # the serialised event in the storage view, made once, shared


@dataclass(frozen=True)
class Bookmark:
    rv: int  # the store's version when it was queued: everything before it is delivered by then


@dataclass(eq=False)
class Watcher:
    storage: str
    namespace: str  # "" for all namespaces
    matcher: Matcher | None
    queue: asyncio.Queue[Event | Bookmark | None] = field(default_factory=asyncio.Queue)
    frozen: bool = False  # a fault: says nothing more, not even bookmarks, until closed
    dropped: bool = False  # a fault or an overflow: the server cuts the connection
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, ev: Event) -> str | None:
        """The event type this watcher should see for ev (None: not at all)."""
        if self.namespace and ev.obj["metadata"].get("namespace") != self.namespace:
            return None
        if self.matcher is None:
            return ev.type
        now = self.matcher(ev.obj)
        if ev.type != "MODIFIED":
            return ev.type if now else None
        before = ev.old is not None and self.matcher(ev.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def drop(self) -> None:
        self.dropped = True
        self.queue.put_nowait(None)

    def freeze(self) -> None:
        self.frozen = True
        self.queue.put_nowait(None)

    def bookmark(self, rv: int) -> None:
        if not (self.frozen or self.dropped):
            self.queue.put_nowait(Bookmark(rv))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sans_rv(obj: Obj) -> Obj:
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    return {**obj, "metadata": meta}


class Store:
    def __init__(
        self,
        history_size: int = 10_000,
        watch_queue_limit: int = 50_000,
        behaviours: Mapping[str, KindBehaviour] | None = None,
    ):
        self.behaviours: Mapping[str, KindBehaviour] = behaviours or {}
        # Called with every committed event, after the watchers (the in-process controllers).
        self.observers: list[Callable[[Event], None]] = []
        self.rv = 1
        self.floor = 1  # every event with rv > floor is in the history
        self.objects: dict[str, dict[Key, Obj]] = {s: {} for s in STORAGE_VIEW}
        self.history: deque[Event] = deque()
        self.history_size = history_size
        self.watch_queue_limit = watch_queue_limit
        self.watchers: set[Watcher] = set()
        # Objects stored by fault injection, past validation (see inject_raw).
        self.injected: set[tuple[str, Key]] = set()

    # -- reads -----------------------------------------------------------------------------------

    def get(self, storage: str, namespace: str, name: str) -> Obj:
        obj = self.objects[storage].get((namespace, name))
        if obj is None:
            raise not_found(storage, name)
        return obj

    def list(self, storage: str, namespace: str = "", matcher: Matcher | None = None) -> tuple[list[Obj], int]:
        items = [
            o
            for (ns, _), o in sorted(self.objects[storage].items())
            if (not namespace or ns == namespace) and (matcher is None or matcher(o))
        ]
        return items, self.rv

    # -- writes ----------------------------------------------------------------------------------

    def _check_namespace(self, storage: str, namespace: str) -> None:
        if STORAGE_VIEW[storage].namespaced:
            if not namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object must be set")
            if ("", namespace) not in self.objects["namespaces"]:
                raise ApiError(
                    404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
                )

    def _stamp(self, storage: str, obj: Obj, namespace: str) -> Obj:
        view = STORAGE_VIEW[storage]
        obj["kind"], obj["apiVersion"] = view.kind, view.api_version
        meta = obj.setdefault("metadata", {})
        if view.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if storage == "namespaces":
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {**(obj.get("status") or {}), "phase": "Active"}
        return obj

    def _hook(self, storage: str, dry_run: bool, call: Callable[[KindBehaviour], None]) -> None:
        """Run a behaviour hook; in a dry run, what it allocated is given back afterwards."""
        behaviour = self.behaviours.get(storage)
        if behaviour is None:
            return
        if not dry_run:
            call(behaviour)
            return
        state = behaviour.snapshot()
        try:
            call(behaviour)
        finally:
            behaviour.restore(state)

    def create(self, storage: str, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Store a new object (obj is taken over, not copied); 409 if it exists.

        As the real server orders it: typed decoding (400), the namespace (404), metadata and
        the kind's own validation (422), then existence (409). Nothing is stored on an error.
        A dry run does all of it and answers the object as it would be stored (uid and
        creationTimestamp set, no resourceVersion), storing nothing and telling no watcher.
        """
        check_types(storage, obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", "metadata: Required value")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        name, namespace = meta.get("name"), meta.get("namespace") or ""
        if not name or not isinstance(name, str):
            raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
        self._check_namespace(storage, namespace)
        check_metadata(storage, obj)
        if (namespace, name) in self.objects[storage]:
            raise ApiError(409, "AlreadyExists", f'{storage} "{name}" already exists', {"name": name, "kind": storage})
        self._stamp(storage, obj, namespace)
        if STORAGE_VIEW[storage].status_apart:
            obj.pop("status", None)  # as for a CRD's objects: a create sets no status
        self._hook(storage, dry_run, lambda b: b.on_create(obj))  # defaults, validates, allocates; raises to refuse
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("deletionTimestamp", None)
        if dry_run:
            meta.pop("resourceVersion", None)
            return obj
        return self._commit(storage, "ADDED", obj, None)

    def update(self, storage: str, obj: Obj, *, status_only: bool = False, dry_run: bool = False) -> Obj:
        """Replace an object (obj is taken over); 404 if missing, 409 on a stale resourceVersion.
        A dry run answers the object as it would be stored, with the stored resourceVersion."""
        check_types(storage, obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        key = (meta.get("namespace") or "", meta["name"])
        old = self.objects[storage].get(key)
        if old is None:
            raise not_found(storage, key[1])
        want = meta.get("resourceVersion")
        if want not in (None, "") and want != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {storage} "{key[1]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": key[1], "kind": storage},
            )
        if status_only:
            status = obj.get("status")
            obj = {k: v for k, v in old.items() if k != "status"}
            if status is not None:
                obj["status"] = status
        else:
            check_metadata(storage, obj)
            self._stamp(storage, obj, key[0])
            if STORAGE_VIEW[storage].status_apart:  # only /status writes it: keep what is stored
                obj.pop("status", None)
                if "status" in old:
                    obj["status"] = old["status"]
            if (storage, key) in self.injected:
                new = obj
                self._hook(storage, dry_run, lambda b: b.on_create(new))  # injected: never went through it
            else:
                new, before = obj, old
                self._hook(storage, dry_run, lambda b: b.on_update(new, before))
        meta = obj["metadata"] = {**obj["metadata"]}
        for kept in ("uid", "creationTimestamp"):
            meta[kept] = old["metadata"][kept]
        meta["generation"] = old["metadata"].get("generation", 1) + (obj.get("spec") != old.get("spec"))
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if obj == old:
            return old  # a no-op write is no change: no new resourceVersion, no event
        if dry_run:
            return obj
        if not status_only:
            self.injected.discard((storage, key))
        return self._commit(storage, "MODIFIED", obj, old)

    def delete(self, storage: str, namespace: str, name: str, *, dry_run: bool = False) -> Obj:
        """Delete an object at once (a namespace takes what is in it along). A dry run answers the
        object as deleted and deletes nothing."""
        old = self.get(storage, namespace, name)
        if dry_run:
            return {**old, "metadata": {**old["metadata"], "deletionTimestamp": _now()}}
        if storage == "namespaces":  # what is in a namespace goes with it, each with its own event
            for other in self.objects:
                if STORAGE_VIEW[other].namespaced:
                    for key in [k for k in self.objects[other] if k[0] == name]:
                        self.delete(other, *key)
        served = CRD_STORAGE.get(name) if storage == "customresourcedefinitions" else None
        if served is not None:  # a CRD's objects go with it, as the real server deletes them
            for key in list(self.objects[served]):
                self.delete(served, *key)
            for w in list(self.watchers):  # and its watches end: the resource is not served any more
                if w.storage == served:
                    w.drop()
        gone = {**old, "metadata": {**old["metadata"], "deletionTimestamp": _now()}}
        behaviour = self.behaviours.get(storage)
        if behaviour is not None and (storage, (namespace, name)) not in self.injected:
            behaviour.on_delete(old)  # release what it held (cluster IPs, node ports)
        self.injected.discard((storage, (namespace, name)))
        return self._commit(storage, "DELETED", gone, old)

    def _commit(self, storage: str, type_: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        if type_ == "DELETED":
            del self.objects[storage][key]
        else:
            self.objects[storage][key] = obj
        ev = Event(self.rv, storage, type_, obj, old)
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.floor = self.history.popleft().rv
        for w in list(self.watchers):
            if w.storage == storage and not w.dropped and w.wants(ev):
                if w.queue.qsize() >= self.watch_queue_limit:
                    w.drop()  # like the real server: a watcher that cannot keep up is cut off
                else:
                    w.queue.put_nowait(ev)
        for observe in self.observers:
            try:
                observe(ev)
            except Exception:  # the write is committed: a controller's failure must not undo or 500 it
                log.exception("a controller failed on %s %s %s/%s", type_, storage, key[0], key[1])
        return obj

    def put(self, storage: str, obj: Obj) -> Obj:
        """Create or replace, whatever the stored resourceVersion (for tests and the lab)."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        if (meta.get("namespace") or "", meta.get("name")) in self.objects[storage]:
            return self.update(storage, obj)
        return self.create(storage, obj)

    def inject_raw(self, storage: str, obj: Obj) -> Obj:
        """FAULT INJECTION, for tests only: store ``obj`` verbatim, past decoding, validation and
        the kind's behaviour, as an API server with a validation gap (a bug, a newer version, a
        conversion webhook) would serve it. Only metadata.name (and the namespace of a namespaced
        kind) must be strings, to file it; resourceVersion is set, uid and creationTimestamp
        only when missing. Watchers and controllers see it like any write."""
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        namespace = (meta.get("namespace") or "") if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or not isinstance(name, str) or not name or not isinstance(namespace, str):
            raise ApiError(400, "BadRequest", "fault injection: metadata.name (and namespace) must be strings")
        if STORAGE_VIEW[storage].namespaced and not namespace:
            raise ApiError(400, "BadRequest", "fault injection: a namespaced object needs metadata.namespace")
        key = (namespace, name)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        old = self.objects[storage].get(key)
        if old is not None and (storage, key) not in self.injected:
            behaviour = self.behaviours.get(storage)
            if behaviour is not None:
                behaviour.on_delete(old)  # the validated object it replaces lets go of its allocations
        self.injected.add((storage, key))
        return self._commit(storage, "MODIFIED" if old is not None else "ADDED", obj, old)

    # -- watches ---------------------------------------------------------------------------------

    def watch(self, storage: str, namespace: str, matcher: Matcher | None, since: int | None) -> Watcher:
        """A registered watcher, its queue primed with what happened after `since`.

        since=None ("", "0" or absent in the request): synthetic ADDED events for every current
        object, then live changes. A `since` the history no longer covers is 410 Expired.
        """
        w = Watcher(storage, namespace, matcher)
        if since is None:
            items, _rv = self.list(storage, namespace, matcher)
            for o in items:
                w.queue.put_nowait(Event(int(o["metadata"]["resourceVersion"]), storage, "ADDED", o, None))
        else:
            if since < self.floor:
                raise ApiError(410, "Expired", f"too old resource version: {since} ({self.floor})")
            for ev in self.history:
                if ev.rv > since and ev.storage == storage and w.wants(ev):
                    w.queue.put_nowait(ev)
        self.watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self.watchers.discard(w)
        w.closed.set()

    def compact(self, keep: int = 0) -> None:
        """Forget all but the last `keep` events: older watches get 410 Expired."""
        while len(self.history) > keep:
            self.floor = self.history.popleft().rv
        if keep == 0:
            self.floor = self.rv
