"""The brain's Prometheus metrics for blocked connections (registered on a registry passed in).

Label cardinality is bounded: no pod or IP labels; ``dport`` is bucketed (`flows.dport_label`);
``namespace`` is the destination's namespace ("external" when the destination is no known pod);
``reason`` comes from a fixed set plus agent reasons matching ``agent_[a-z_]+`` (at most
`MAX_AGENT_REASONS` distinct ones, then "agent_other").
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

# Why an event never reached the Redis counts.
REASON_REDIS_BUFFER_FULL = "redis_buffer_full"  # Redis was away and the in-memory bound was hit
REASON_REDIS_REJECTED = "redis_rejected"  # Redis answered a write with an error (not an outage)
REASON_TOO_OLD = "too_old"  # older than the retention: its minute bucket has already expired
REASON_INVALID = "invalid"  # malformed on the wire (unknown direction, ...)
BRAIN_REASONS = (REASON_REDIS_BUFFER_FULL, REASON_REDIS_REJECTED, REASON_TOO_OLD, REASON_INVALID)

MAX_AGENT_REASONS = 16
_AGENT_REASON = re.compile(r"agent_[a-z_]{1,40}")

LabelKey = tuple[str, str, str, str]  # protocol, dport label, direction, namespace


class DropMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocked = PromCounter(
            "stockade_blocked_connections_total",
            "Blocked new connections reported by the node agents.",
            ["protocol", "dport", "direction", "namespace"],
            registry=registry,
        )
        self.dropped = PromCounter(
            "stockade_drop_events_dropped_total",
            "Blocked-connection events that never reached the Redis counts, by reason "
            "(agent_* reasons: shed by the agent before reaching the brain).",
            ["reason"],
            registry=registry,
        )
        self.redis_errors = PromCounter(
            "stockade_redis_errors_total",
            "Failed Redis operations of the drop aggregator.",
            registry=registry,
        )
        self.buffer_events = Gauge(
            "stockade_drops_buffer_events",
            "Blocked-connection events counted in memory and not yet written to Redis.",
            registry=registry,
        )
        self.redis_up = Gauge(
            "stockade_drops_redis_up",
            "1 when the last write of drop counts to Redis succeeded.",
            registry=registry,
        )
        for r in BRAIN_REASONS:  # export zeros, so rate() works from the start
            self.dropped.labels(r)
        self._agent_reasons: set[str] = set()
        self._blocked_children: dict[LabelKey, Any] = {}

    def add_blocked(self, counts: Counter[LabelKey]) -> None:
        children = self._blocked_children
        for key, n in counts.items():
            child = children.get(key)
            if child is None:  # `labels()` is slow; the label sets are few (bounded), so keep them
                child = children[key] = self.blocked.labels(*key)
            child.inc(n)

    def add_dropped(self, reason: str, n: int) -> None:
        if n > 0:
            self.dropped.labels(reason).inc(n)

    def agent_reason(self, reason: str) -> str:
        """An agent-reported reason as a bounded label value."""
        if not _AGENT_REASON.fullmatch(reason):
            return "agent_other"
        if reason not in self._agent_reasons:
            if len(self._agent_reasons) >= MAX_AGENT_REASONS:
                return "agent_other"
            self._agent_reasons.add(reason)
        return reason
