"""The agent's Prometheus metrics, on a registry of its own (never the process-global one).

Every name starts ``stockade_agent_`` (the brain's start ``stockade_brain_``), so no query over
both counts a thing twice; plus the process's ``process_*``/``python_*``.

Cardinality of ``dport``: a blocked attempt can name any of 65,535 ports (a port scan would mint
a series per port), so a port becomes a label value only when it is a well-known port (<= 1024)
or a port the node's rules name (a single port, or either end of a range). Everything else is
``"other"``, and at most ``max_dports`` distinct values are ever minted; later newcomers fall
into ``"other"`` too. Protocols are a fixed set (TCP, UDP, SCTP, other); directions are two.
So are the reasons of ``stockade_agent_not_ready`` (`NOT_READY_REASONS`; any other is ``"other"``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from stockade.agent.sync.applier import AgentStatus
from stockade.agent.sync.metrics import SyncCollector
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction, NodeModel

OTHER = "other"
WELL_KNOWN_MAX = 1024
_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
# Why a node is not ready, bucketed: the preflight problem codes, plus no rules yet and a refused generation.
NOT_READY_REASONS = (
    "no_rules",
    "generation_refused",
    "br_netfilter",
    "bridge_sysctl",
    "ipv6_unenforced",
    "ipv6_unsupported",
    "check_failed",
    "foreign_override",  # a foreign iptables rule before our FORWARD jump (stockade.agent.tamper.overrides)
    OTHER,
)
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The tamper window's target is 100 ms, its worst case 1 s: buckets on both sides of each.
TAMPER_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def rule_ports(model: NodeModel) -> frozenset[int]:
    """Every port the node's rules name explicitly: these are worth a label of their own."""
    ports: set[int] = set()
    for chain in model.chains.values():
        for rule in chain.rules:
            for pm in rule.ports or ():
                if pm.port is not None:
                    ports.add(pm.port)
                if pm.end_port is not None:
                    ports.add(pm.end_port)
    return frozenset(ports)


def direction_of_chain(chain_id: str) -> str | None:
    if chain_id.startswith("in_"):
        return Direction.INGRESS.value
    if chain_id.startswith("out_"):
        return Direction.EGRESS.value
    return None


class AgentMetrics:
    """What the agent reports on ``/metrics``. The agent calls one method per thing that happened."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, max_dports: int = 256) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.blocked = Counter(
            "stockade_agent_blocked_connections",
            "Blocked new connections seen over NFLOG (detail; may miss some: see nflog_events_lost)",
            ["protocol", "dport", "direction"],
            registry=r,
        )
        self.blocked_kernel = Counter(
            "stockade_agent_blocked_connections_kernel",
            "Blocked new connections counted by the kernel's rule counters (exact)",
            ["direction"],
            registry=r,
        )
        self.nflog_lost = Counter(
            "stockade_agent_nflog_events_lost",
            "NFLOG messages the kernel logged but the agent never got",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "stockade_agent_apply_seconds",
            "Time to apply one snapshot or delta to the kernel",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            "stockade_agent_transactions", "Kernel transactions by result", ["result"], registry=r
        )
        self.drift_repairs = Counter(
            "stockade_agent_drift_repairs", "Repairs of kernel state found to differ from the model", registry=r
        )
        self.tamper_repairs = Counter(
            "stockade_agent_tamper_repairs",
            "Drift repaired because a ruleset change notification announced it (not the periodic check)",
            ["backend"],
            registry=r,
        )
        self.tamper_repair_seconds = Histogram(
            "stockade_agent_tamper_repair_seconds",
            "Open window of a tampering: its first change notification received to the repair committed",
            buckets=TAMPER_BUCKETS,
            registry=r,
        )
        self.tamper_no_drift = Counter(
            "stockade_agent_tamper_checks_no_drift",
            "Checks a foreign ruleset change caused that found our rules intact (harmless changes)",
            registry=r,
        )
        self.foreign_overrides = Gauge(
            "stockade_agent_foreign_overrides",
            "Foreign rules that can accept pod traffic before our rules see it (reported, not removed)",
            registry=r,
        )
        self.conntrack_deleted = Counter(
            "stockade_agent_conntrack_entries_deleted",
            "Established connections ended because a new model forbids them",
            registry=r,
        )
        self.ready = Gauge(
            "stockade_agent_ready",
            "1 while the node is ready: its rules in the kernel and no pod traffic bypassing them",
            registry=r,
        )
        self.not_ready = Gauge(
            "stockade_agent_not_ready",
            "1 for each reason the node is not ready (bucketed; see /readyz for the words)",
            ["reason"],
            registry=r,
        )
        self.brain_protocol = Gauge(
            "stockade_agent_brain_protocol", "sync protocol the brain last spoke (0: none yet)", registry=r
        )
        for reason in NOT_READY_REASONS:
            self.not_ready.labels(reason=reason)
        for result in ("ok", "failed"):
            self.transactions.labels(result=result)  # both series exist from the start, at 0
        for d in Direction:
            self.blocked_kernel.labels(direction=d.value)
        self.max_dports = max_dports
        self._known_ports: frozenset[int] = frozenset()
        self._minted: set[str] = set()
        self._kernel_last: dict[str, int] = {}
        self._nflog_lost_seen = 0
        # process_* (CPU, RSS, fds), python_info, python_gc_*: on this registry, not the global one
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # -- blocked connections ---------------------------------------------------------------

    def set_model(self, model: NodeModel) -> None:
        """Tell the metrics which ports the node's rules name (call after each apply)."""
        self._known_ports = rule_ports(model)

    def dport_label(self, dport: int) -> str:
        if dport <= WELL_KNOWN_MAX or dport in self._known_ports:
            label = str(dport)
            if label in self._minted:
                return label
            if len(self._minted) < self.max_dports:
                self._minted.add(label)
                return label
        return OTHER

    def blocked_events(self, events: Iterable[BlockedEvent]) -> None:
        for e in events:
            protocol = e.protocol if e.protocol in _PROTOCOLS else OTHER
            self.blocked.labels(protocol=protocol, dport=self.dport_label(e.dport), direction=e.direction.value).inc()

    def kernel_counters(self, per_chain: Mapping[str, int]) -> None:
        """Fold in the kernel's cumulative per-chain drop counts (chain id -> packets or attempts).

        Counters only go up: a chain whose count went down was re-created, so its whole new
        count is new; chains missing from ``per_chain`` are forgotten.
        """
        for chain, value in per_chain.items():
            direction = direction_of_chain(chain)
            if direction is None:
                continue
            last = self._kernel_last.get(chain, 0)
            increase = value - last if value >= last else value
            if increase:
                self.blocked_kernel.labels(direction=direction).inc(increase)
        self._kernel_last = {c: v for c, v in per_chain.items() if direction_of_chain(c) is not None}

    def nflog_lost_total(self, total: int) -> None:
        """Sync with the reader's cumulative lost count (`NflogStats.lost`)."""
        if total > self._nflog_lost_seen:
            self.nflog_lost.inc(total - self._nflog_lost_seen)
        self._nflog_lost_seen = total

    # -- applying --------------------------------------------------------------------------

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Time one transaction and count it as ok, or failed if the block raises."""
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.transactions.labels(result="failed").inc()
            raise
        finally:
            self.apply_seconds.observe(time.perf_counter() - start)
        self.transactions.labels(result="ok").inc()

    def transaction(self, ok: bool, seconds: float | None = None) -> None:
        self.transactions.labels(result="ok" if ok else "failed").inc()
        if seconds is not None:
            self.apply_seconds.observe(seconds)

    def drift_repaired(self, count: int = 1) -> None:
        self.drift_repairs.inc(count)

    def tamper_repaired(self, backend: str, seconds: float) -> None:
        self.tamper_repairs.labels(backend=backend).inc()
        self.tamper_repair_seconds.observe(seconds)

    def tamper_checked_in_sync(self) -> None:
        self.tamper_no_drift.inc()

    def set_foreign_overrides(self, count: int) -> None:
        self.foreign_overrides.set(count)

    def conntrack_ended(self, count: int) -> None:
        self.conntrack_deleted.inc(count)

    def watch_sync(self, status: AgentStatus) -> None:
        """Export the sync client's state (``stockade_agent_brain_connected``,
        ``stockade_agent_applied_generation``, ...), read from ``status`` at scrape time."""
        self.registry.register(SyncCollector(status))

    def set_readiness(self, reasons: Iterable[str]) -> None:
        """The node's not-ready reasons now (problem codes; none: ready)."""
        active = {r if r in NOT_READY_REASONS else OTHER for r in reasons}
        self.ready.set(0 if active else 1)
        for reason in NOT_READY_REASONS:
            self.not_ready.labels(reason=reason).set(1 if reason in active else 0)

    def set_brain_protocol(self, protocol: int) -> None:
        """The sync protocol the brain last spoke (its refusals: `SyncCollector`)."""
        self.brain_protocol.set(protocol)

    def render(self) -> bytes:
        """The text exposition format, for ``/metrics``."""
        return generate_latest(self.registry)
