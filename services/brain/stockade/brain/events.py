"""Kubernetes Events about the objects the brain refuses or cannot realize, as ``kubectl describe``
shows them (core v1 Events, source component ``stockade-brain``), written by the leader only.

Like client-go's event recorder: an Event that repeats (same object, type, reason and message)
bumps the existing one's ``count`` and ``lastTimestamp`` with a PATCH instead of making another;
each object has a token bucket (a burst of 25, then one Event per ``refill`` seconds) so one
flapping object cannot flood the API. ``record`` never blocks and never raises: Events go
through a bounded queue to one writer task, and what does not fit is dropped and counted.
Failed writes are logged; nothing here can stop the brain or the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.brain.engine import NotRealized, Rejection

log = logging.getLogger(__name__)

COMPONENT = "stockade-brain"
WARNING = "Warning"
POLICY_REJECTED = "PolicyRejected"
POLICY_NOT_REALIZED = "PolicyNotRealized"
OBJECT_REJECTED = "ObjectRejected"

MESSAGE_LIMIT = 1024  # the API server's limit on a note (events.k8s.io); kubectl shows it whole
NAME_LIMIT = 253 - 17  # the Event's name is "<object>.<16 hex digits>", a DNS subdomain

# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (("", "events", ("create", "patch")),)

API_VERSIONS = {"NetworkPolicy": "networking.k8s.io/v1", "Service": "v1", "Pod": "v1", "Namespace": "v1", "Node": "v1"}


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"kind": self.kind, "name": self.name}
        for key, value in (
            ("namespace", self.namespace),
            ("uid", self.uid),
            ("apiVersion", self.api_version),
            ("resourceVersion", self.resource_version),
        ):
            if value:
                out[key] = value
        return out


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def ref_of(kind: str, namespace: str, name: str, obj: Mapping[str, Any] | None) -> ObjectRef:
    """The involvedObject for an object (its last state from the watch, when there is one)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    api_version = _str(obj.get("apiVersion")) if isinstance(obj, Mapping) else ""
    return ObjectRef(
        kind,
        namespace,
        name,
        uid=_str(meta.get("uid")),
        api_version=api_version or API_VERSIONS.get(kind, ""),
        resource_version=_str(meta.get("resourceVersion")),
    )


def parse_described(text: str) -> tuple[str, str, str] | None:
    """``Kind namespace/name`` or ``Kind name`` (the engine's way of naming an object) → parts."""
    kind, _, rest = text.partition(" ")
    if not kind or not rest or rest.endswith("?"):
        return None
    ns, _, name = rest.rpartition("/")
    return (kind, ns, name) if name else None


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Pending:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    at: float  # wall clock


class _Bucket:
    def __init__(self, burst: int, at: float) -> None:
        self.tokens = float(burst)
        self.at = at


class EventRecorder:
    def __init__(
        self,
        is_leader: Callable[[], bool],
        instance: str,
        *,
        queue_size: int = 1024,
        burst: int = 25,
        refill: float = 5.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_leader = is_leader
        self.instance = instance
        self.burst = burst
        self.refill = refill
        self.cache_size = cache_size
        self.clock = clock
        self.core: k8s.CoreV1Api | None = None
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._buckets: OrderedDict[tuple[str, str, str, str], _Bucket] = OrderedDict()
        # (object, type, reason, message) -> (namespace, Event name, count): what to PATCH on a repeat
        self._seen: OrderedDict[tuple[Any, ...], tuple[str, str, int]] = OrderedDict()
        self.dropped: dict[str, int] = {"queue_full": 0, "rate_limited": 0}
        self.created = 0
        self.patched = 0
        self.failed = 0
        self._last_error = ""

    def attach(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)

    def record(self, ref: ObjectRef, type_: str, reason: str, message: str) -> bool:
        """Queue an Event; False if it was not (not the leader, rate limited, queue full)."""
        try:
            if not self.is_leader():
                return False  # the leader sees the same objects and writes it
            if not self._allow(ref):
                self.dropped["rate_limited"] += 1
                return False
            if len(message) > MESSAGE_LIMIT:
                message = message[: MESSAGE_LIMIT - 3] + "..."
            self.queue.put_nowait(_Pending(ref, type_, reason, message, time.time()))
            return True
        except asyncio.QueueFull:
            self.dropped["queue_full"] += 1
            return False
        except Exception:  # reporting must never get in the engine's way
            log.exception("cannot queue an Event about %s %s/%s", ref.kind, ref.namespace, ref.name)
            return False

    def _allow(self, ref: ObjectRef) -> bool:
        key = (ref.kind, ref.namespace, ref.name, ref.uid)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.cache_size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def run(self) -> None:
        """The writer: one Event at a time, until cancelled."""
        while True:
            item = await self.queue.get()
            if not self.is_leader():
                continue  # lost the lease since it was queued: stop writing at once
            try:
                await self._write(item)
                self._last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failed += 1
                text = f"{e.status} {e.reason}" if isinstance(e, ApiException) else f"{type(e).__name__}: {e}"
                if text != self._last_error:  # a down API server would say it for every Event
                    hint = "; grant the brain create/patch on events (deploy/rbac.yaml)" if "403" in text else ""
                    log.warning("cannot write an Event about %s %s: %s%s", item.ref.kind, item.ref.name, text, hint)
                self._last_error = text

    def _namespace(self, ref: ObjectRef) -> str:
        return ref.namespace or "default"  # Events about cluster-scoped objects live in default

    async def _write(self, item: _Pending) -> None:
        if self.core is None:
            raise RuntimeError("the recorder has no API client")
        ref = item.ref
        key = (ref.kind, ref.namespace, ref.name, ref.uid, ref.api_version, item.type, item.reason, item.message)
        known = self._seen.get(key)
        if known is not None:
            ns, name, count = known
            patch = {"count": count + 1, "lastTimestamp": _stamp(item.at)}
            try:
                await self.core.patch_namespaced_event(
                    name, ns, patch, _content_type="application/merge-patch+json", _request_timeout=10
                )  # type: ignore[call-arg]  # the stubs omit _content_type, which the client honours
                self._seen[key] = (ns, name, count + 1)
                self._seen.move_to_end(key)
                self.patched += 1
                return
            except ApiException as e:
                if e.status != 404:
                    raise
                del self._seen[key]  # it expired (the API server's event TTL): make a new one
        ns = self._namespace(ref)
        name = f"{ref.name[:NAME_LIMIT]}.{time.time_ns():x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": ref.as_dict(),
            "reason": item.reason,
            "message": item.message,
            "type": item.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": _stamp(item.at),
            "lastTimestamp": _stamp(item.at),
            "count": 1,
        }
        await self.core.create_namespaced_event(ns, cast(Any, body), _request_timeout=10)  # a dict serialises as is
        self.created += 1
        self._seen[key] = (ns, name, 1)
        if len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)


class EventsCollector(Collector):
    def __init__(self, recorder: EventRecorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        r = self.recorder
        dropped = CounterMetricFamily(
            "stockade_brain_events_dropped",
            "Kubernetes Events not written: the queue was full, or the object's rate limit was reached",
            labels=["reason"],
        )
        for reason, n in sorted(r.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        written = CounterMetricFamily(
            "stockade_brain_events_written", "Kubernetes Events written by this brain", labels=["verb"]
        )
        written.add_metric(["create"], r.created)
        written.add_metric(["patch"], r.patched)
        yield written
        failed = CounterMetricFamily("stockade_brain_events_failed", "Kubernetes Event writes that failed")
        failed.add_metric([], r.failed)
        yield failed


class ObjectEvents:
    """The brain's reports as Events: refused objects and policies left out of a node's model."""

    def __init__(self, recorder: EventRecorder, lookup: Callable[[tuple[str, str, str]], Mapping[str, Any] | None]):
        self.recorder = recorder
        self.lookup = lookup  # (kind, namespace, name) -> the object's last state from the watch

    def _ref(self, kind: str, namespace: str, name: str) -> ObjectRef:
        return ref_of(kind, namespace, name, self.lookup((kind, namespace, name)))

    def rejected(self, rejection: Rejection) -> None:
        try:
            parts = parse_described(rejection.object)
            if parts is None:
                return  # an object without a usable name: logged and counted, nothing to attach to
            kind, ns, name = parts
            reason = POLICY_REJECTED if kind == "NetworkPolicy" else OBJECT_REJECTED
            message = f"not enforced: {rejection.field}: {rejection.message}"
            self.recorder.record(self._ref(kind, ns, name), WARNING, reason, message)
        except Exception:
            log.exception("cannot report %s as an Event", rejection.object)

    def not_realized(self, nr: NotRealized) -> None:
        try:
            ns, _, name = nr.policy.rpartition("/")
            message = f"not realized on node {nr.node} ({nr.limit}): {nr.message}"
            self.recorder.record(self._ref("NetworkPolicy", ns, name), WARNING, POLICY_NOT_REALIZED, message)
        except Exception:
            log.exception("cannot report %s as an Event", nr)
