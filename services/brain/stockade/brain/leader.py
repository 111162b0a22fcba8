"""Leader election by a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every brain serves agents; only the leader writes to the API (Events). A candidate reads the
Lease and takes it when it is free (no holder) or when its record has not changed for
``lease_duration`` as observed on this brain's own clock (so clocks of different machines never
matter); the holder renews it every ``retry`` seconds. Every write carries the resourceVersion
read, so two candidates cannot both win: the loser's write fails with 409.

``is_leader`` is true only while the last successful renewal is younger than ``renew_deadline``
(< ``lease_duration``): a leader that cannot renew stops writing before anyone else may take
over, even if this loop is stuck. On stop, the leader releases the Lease so another takes it at
its next try instead of after ``lease_duration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LEASE_NAME = "stockade-brain"
DEFAULT_NAMESPACE = "stockade-system"

# What this module calls (tests/deploy/test_deploy_rbac.py checks deploy/rbac.yaml grants it).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("coordination.k8s.io", "leases", ("get", "create", "update")),
)


def default_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or DEFAULT_NAMESPACE


def default_identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str = DEFAULT_NAMESPACE
    name: str = LEASE_NAME
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def check(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs an identity (--leader-identity, POD_NAME or the hostname)")
        if not 0 < self.retry < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election: need 0 < retry < renew deadline < lease duration "
                f"(got {self.retry}, {self.renew_deadline}, {self.lease_duration}); "
                "the leader must give up before another brain may take over"
            )


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(
        self,
        api: k8s.ApiClient,
        config: ElectionConfig,
        *,
        on_started: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config.check()
        self.config = config
        self.coord = k8s.CoordinationV1Api(api)
        self.on_started = on_started  # called once each time this brain becomes leader
        self.clock = clock
        self._renewed_at: float | None = None  # our clock, at our last successful write as holder
        self._observed: tuple[str, str] | None = None  # (resourceVersion, holder) last read
        self._observed_at = 0.0
        self._last_error = ""
        self.transitions = 0  # times this brain became leader

    @property
    def is_leader(self) -> bool:
        at = self._renewed_at
        return at is not None and self.clock() - at < self.config.renew_deadline

    @property
    def holder(self) -> str:
        return self._observed[1] if self._observed else ""

    async def run(self) -> None:
        """Try and renew every ``retry`` seconds until cancelled; errors are logged, never raised."""
        try:
            while True:
                was = self.is_leader
                try:
                    await self.try_acquire_or_renew()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the API away, a bug: keep trying, and say it once
                    self._error(f"{type(e).__name__}: {e}")
                now = self.is_leader
                if now and not was:
                    self.transitions += 1
                    log.info("became the leader (Lease %s/%s)", self.config.namespace, self.config.name)
                    if self.on_started is not None:
                        try:
                            self.on_started()
                        except Exception:
                            log.exception("leader start hook failed")
                elif was and not now:
                    log.warning("lost the leadership: no longer writing to the API")
                await asyncio.sleep(self.config.retry)
        finally:
            if self.is_leader:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release())

    def _error(self, text: str) -> None:
        if text != self._last_error:  # every retry would say the same
            log.warning("leader election (Lease %s/%s): %s", self.config.namespace, self.config.name, text)
        self._last_error = text

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if this brain holds the Lease afterwards."""
        cfg = self.config
        t = self.clock()
        try:
            lease = await self.coord.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=cfg.retry * 2)
        except ApiException as e:
            if e.status != 404:
                self._lost_write(e.status, f"cannot read the Lease: {e.status} {e.reason}{_hint(e)}")
                return False
            return await self._create(t)
        spec = lease.spec or k8s.V1LeaseSpec()
        holder = spec.holder_identity or ""
        seen = (lease.metadata.resource_version or "", holder)
        if seen != self._observed:
            self._observed, self._observed_at = seen, t
        if holder and holder != cfg.identity:
            self._renewed_at = None  # someone else holds it (maybe took it while we could not renew)
            duration = float(spec.lease_duration_seconds or cfg.lease_duration)
            if t - self._observed_at < duration:
                return False
        now = _now()
        if holder != cfg.identity or spec.acquire_time is None:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
        spec.holder_identity = cfg.identity
        spec.lease_duration_seconds = int(cfg.lease_duration)
        spec.renew_time = now
        lease.spec = spec
        try:
            done = await self.coord.replace_namespaced_lease(
                cfg.name, cfg.namespace, lease, _request_timeout=cfg.retry * 2
            )
        except ApiException as e:
            self._lost_write(e.status, f"cannot update the Lease: {e.status} {e.reason}{_hint(e)}")
            return False
        self._won(t, done)
        return True

    async def _create(self, t: float) -> bool:
        cfg = self.config
        now = _now()
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
            spec=k8s.V1LeaseSpec(
                holder_identity=cfg.identity,
                lease_duration_seconds=int(cfg.lease_duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            done = await self.coord.create_namespaced_lease(cfg.namespace, body, _request_timeout=cfg.retry * 2)
        except ApiException as e:
            if e.status != 409:  # 409: another brain created it first; read it next round
                self._error(f"cannot create the Lease: {e.status} {e.reason}{_hint(e)}")
            return False
        self._won(t, done)
        return True

    def _won(self, t: float, lease: Any) -> None:
        self._renewed_at = t  # the time before the read: the write cannot have happened earlier
        self._observed = (lease.metadata.resource_version or "", self.config.identity)
        self._observed_at = t
        self._last_error = ""

    def _lost_write(self, status: int | None, text: str) -> None:
        # is_leader runs out by itself after renew_deadline; a conflict means someone else won
        if status == 409:
            self._renewed_at = None
        self._error(text)

    async def release(self) -> None:
        """Give the Lease up (holder cleared), so another brain takes it at its next try."""
        if not self.is_leader:
            return
        self._renewed_at = None  # stop writing first
        cfg = self.config
        try:
            lease = await self.coord.read_namespaced_lease(cfg.name, cfg.namespace, _request_timeout=2.0)
            if lease.spec is None or lease.spec.holder_identity != cfg.identity:
                return
            lease.spec.holder_identity = ""  # as client-go releases it: free for anyone
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now()
            await self.coord.replace_namespaced_lease(cfg.name, cfg.namespace, lease, _request_timeout=2.0)
            log.info("released the leadership (Lease %s/%s)", cfg.namespace, cfg.name)
        except Exception as e:  # the others take over after lease_duration instead
            log.warning("could not release the Lease: %s", e)


def _hint(e: ApiException) -> str:
    if e.status == 403:
        return "; grant the brain get/create/update on leases in its namespace (deploy/rbac.yaml)"
    if e.status == 404:
        return "; does the namespace exist? (POD_NAMESPACE or --leader-namespace)"
    return ""


class LeaderCollector(Collector):
    """``stockade_brain_leader``: 1 on the brain that writes to the API, 0 on the others."""

    def __init__(self, is_leader: Callable[[], bool]) -> None:
        self.is_leader = is_leader

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "stockade_brain_leader", "1 if this brain holds the leader Lease and writes to the API (Events)"
        )
        g.add_metric([], 1.0 if self.is_leader() else 0.0)
        yield g
