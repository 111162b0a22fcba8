"""The brain's Prometheus metrics for blocked connections (registered on a registry passed in).

Every name starts ``stockade_brain_``: the agents count the same connections as
``stockade_agent_blocked_connections_total``, so a ``sum()`` never adds the two. The blocked
counter does not need Redis (without ``--redis-url`` the aggregator counts with `NoStore`).

Label cardinality is bounded by construction: no pod or IP labels; ``protocol`` is TCP, UDP,
SCTP, 1 (ICMP), 58 (ICMPv6) or "other"; ``dport`` is the port number when the destination pod
declares it (a ``containerPort`` of that protocol in one of its containers; at most
`MAX_DPORTS` distinct numbers), "none" for protocols without ports, "other" for the rest;
``namespace`` is the destination's namespace as the engine knows it ("external" when the
destination is no known pod; at most `MAX_NAMESPACES` distinct ones, then "other");
``direction`` is ingress or egress; ``tier`` the tier whose chain dropped it: admin, baseline
(a ClusterNetworkPolicy rule), netpol (a NetworkPolicy chain), or unknown (a tier rule of a
chain the brain could not place, see `resolve.Attributor`); ``node`` is an authenticated node name (at most
`MAX_NODES`, then "other"); ``reason`` comes from a fixed set plus agent reasons matching
``agent_[a-z_]+`` (at most `MAX_AGENT_REASONS`, then "agent_other").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

# Why an event never reached the Redis counts.
REASON_REDIS_BUFFER_FULL = "redis_buffer_full"  # Redis was away and the in-memory bound was hit
REASON_REDIS_REJECTED = "redis_rejected"  # Redis answered a write with an error (not an outage)
REASON_TOO_OLD = "too_old"  # older than the retention: its minute bucket has already expired
REASON_INVALID = "invalid"  # a field failed validation (see `validate.clean_event`)
REASON_NODE_QUOTA = "node_quota"  # its node had used up its quota of new Redis counters
BRAIN_REASONS = (REASON_REDIS_BUFFER_FULL, REASON_REDIS_REJECTED, REASON_TOO_OLD, REASON_INVALID, REASON_NODE_QUOTA)
# Per-node refusals (`stockade_drop_events_refused_total`), also kept in Redis for `drops top`.
REFUSED_INVALID = "invalid"
REFUSED_QUOTA = "quota"
REFUSED_BUFFER = "buffer_full"  # its share of the in-memory buffer was full while Redis was away
REFUSED_REASONS = (REFUSED_INVALID, REFUSED_QUOTA, REFUSED_BUFFER)

MAX_AGENT_REASONS = 16
MAX_DPORTS = 256
MAX_NAMESPACES = 1000
MAX_NODES = 2000
_AGENT_REASON = re.compile(r"agent_[a-z_]{1,40}")

LabelKey = tuple[str, str, str, str, str]  # protocol, dport label, direction, namespace, tier
# (namespace, pod) -> the (port, protocol) pairs its containers declare
DeclaredPorts = Callable[[str, str], Iterable[tuple[int, str]]]


class DropMetrics:
    """``redis=False``: the brain runs without Redis; the Redis series are not exported."""

    def __init__(
        self, registry: CollectorRegistry, *, redis: bool = True, declared: DeclaredPorts | None = None
    ) -> None:
        redis_registry = registry if redis else None
        self.blocked = PromCounter(
            "stockade_brain_blocked_connections_total",
            "Blocked new connections reported by the node agents (the brain's count, by destination).",
            ["protocol", "dport", "direction", "namespace", "tier"],
            registry=registry,
        )
        self.dropped = PromCounter(
            "stockade_brain_drop_events_dropped_total",
            "Blocked-connection events that never reached the Redis counts, by reason "
            "(agent_* reasons: shed by the agent before reaching the brain).",
            ["reason"],
            registry=registry,
        )
        self.refused = PromCounter(
            "stockade_brain_drop_events_refused_total",
            "Blocked-connection events the brain refused from a node: invalid (a field failed "
            "validation), quota (over its quota of new Redis counters), buffer_full (over its share "
            "of the in-memory buffer while Redis was away).",
            ["node", "reason"],
            registry=registry,
        )
        self.redis_errors = PromCounter(
            "stockade_brain_redis_errors_total",
            "Failed Redis operations of the drop aggregator.",
            registry=redis_registry,
        )
        self.buffer_events = Gauge(
            "stockade_brain_drops_buffer_events",
            "Blocked-connection events counted in memory and not yet written to Redis.",
            registry=redis_registry,
        )
        self.redis_up = Gauge(
            "stockade_brain_drops_redis_up",
            "1 when the last write of drop counts to Redis succeeded.",
            registry=redis_registry,
        )
        self.declared = declared
        self._dports: set[str] = set()
        for r in BRAIN_REASONS:  # export zeros, so rate() works from the start
            self.dropped.labels(r)
        self._agent_reasons: set[str] = set()
        self._namespaces: set[str] = set()
        self._nodes: set[str] = set()
        self._blocked_children: dict[LabelKey, Any] = {}

    def add_blocked(self, counts: Counter[LabelKey]) -> None:
        children = self._blocked_children
        for key, n in counts.items():
            child = children.get(key)
            if child is None:  # `labels()` is slow; the label sets are few (bounded), so keep them
                child = children[key] = self.blocked.labels(*key)
            child.inc(n)

    def dport_label(self, proto: str, dport: int, namespace: str, pod: str) -> str:
        """The ``dport`` label of a blocked connection to ``namespace/pod`` (pod "" when the
        destination is no known pod): its number only when that pod declares the port."""
        if dport <= 0:
            return "none"  # protocols without ports
        if not pod or self.declared is None:
            return "other"
        try:
            declared = (dport, proto) in set(self.declared(namespace, pod))
        except Exception:  # a label must never cost the count
            declared = False
        if not declared:
            return "other"
        return self._bounded(self._dports, str(dport), MAX_DPORTS)

    def add_dropped(self, reason: str, n: int) -> None:
        if n > 0:
            self.dropped.labels(reason).inc(n)

    def add_refused(self, node: str, reason: str, n: int) -> None:
        if n > 0:
            self.refused.labels(self._bounded(self._nodes, node, MAX_NODES), reason).inc(n)

    def namespace_label(self, namespace: str) -> str:
        """A namespace the engine knows, as a bounded label value."""
        return self._bounded(self._namespaces, namespace, MAX_NAMESPACES)

    @staticmethod
    def _bounded(seen: set[str], value: str, limit: int) -> str:
        if value not in seen:
            if len(seen) >= limit:
                return "other"
            seen.add(value)
        return value

    def agent_reason(self, reason: str) -> str:
        """An agent-reported reason as a bounded label value."""
        if not _AGENT_REASON.fullmatch(reason):
            return "agent_other"
        if reason not in self._agent_reasons:
            if len(self._agent_reasons) >= MAX_AGENT_REASONS:
                return "agent_other"
            self._agent_reasons.add(reason)
        return reason


class PodInfoSource(Protocol):  # the part of `stockade.brain.engine.Engine` read here
    def pod_info(self, namespace: str, name: str) -> Any: ...


class EnginePorts:
    """`DeclaredPorts` from the engine's pods. The engine is read only between changes
    (``busy``: one is under way on the brain's worker); during one, the last answer is used."""

    CACHE = 4096

    def __init__(self, engine: PodInfoSource, busy: Callable[[], bool]) -> None:
        self._engine = engine
        self._busy = busy
        self._cache: dict[tuple[str, str], tuple[tuple[int, str], ...]] = {}

    def __call__(self, namespace: str, pod: str) -> tuple[tuple[int, str], ...]:
        key = (namespace, pod)
        if self._busy():
            return self._cache.get(key, ())
        info = self._engine.pod_info(namespace, pod)
        ports = tuple((int(p), str(proto)) for p, proto in info.ports) if info is not None else ()
        if len(self._cache) >= self.CACHE:
            self._cache.clear()  # bounded; only consulted while the engine is busy
        self._cache[key] = ports
        return ports
