"""The brain's Prometheus registry: every series it exports is named ``stockade_brain_*``, so
that no query over brain and agent series together counts anything twice (agents export
``stockade_agent_*``); plus the process's own ``process_*``/``python_*`` metrics.

Per-node series for two brains (or more): a node is served by one brain at a time. Each brain
exports ``stockade_brain_node_agent_connected{node}`` for every node it knows, 1 only where it
holds the node's stream, and ``stockade_brain_node_generation_lag{node}`` only for the nodes it
serves (measured against what *that* brain wants the node at). So ``max by (node)`` over the
brains says whether a node is connected to any, and its lag behind the brain serving it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from stockade.brain.engine import NotRealized, Rejection, validate
from stockade.brain.fanout import FanOut, FanOutCollector

__all__ = ["BrainCollector", "register", "register_process"]


class EngineView(Protocol):
    def nodes(self) -> list[str]: ...

    def rejections(self) -> list[Rejection]: ...

    def not_realized(self) -> list[NotRealized]: ...


class BrainView(Protocol):
    """What the collector reads of `stockade.brain.main.Brain` (at scrape time, engine idle)."""

    @property
    def engine(self) -> EngineView: ...

    @property
    def fanout(self) -> FanOut: ...

    @property
    def ready(self) -> bool: ...

    @property
    def engine_errors(self) -> int: ...


class BrainCollector(Collector):
    """Per-node state and the engine's health, read at scrape time (names the alert rules use)."""

    def __init__(self, brain: BrainView) -> None:
        self.brain = brain

    def collect(self) -> Iterator[Metric]:
        b = self.brain
        connected = GaugeMetricFamily(
            "stockade_brain_node_agent_connected",
            "1 while this brain holds the node's agent stream (max by (node) over the brains)",
            labels=["node"],
        )
        lag = GaugeMetricFamily(
            "stockade_brain_node_generation_lag",
            "generations the node's agent has not applied yet, only from the brain serving the node",
            labels=["node"],
        )
        errors = CounterMetricFamily(
            "stockade_brain_node_apply_errors", "failed applies the node's agent reported here", labels=["node"]
        )
        ready = GaugeMetricFamily(
            "stockade_brain_node_ready",
            "1 while the node enforces what it applied, nothing bypassing it",
            labels=["node"],
        )
        for node in b.engine.nodes():
            st = b.fanout.node_status(node)
            serving = st.connected and node in b.fanout.sessions
            connected.add_metric([node], 1.0 if serving else 0.0)
            ready.add_metric([node], 1.0 if st.ready else 0.0)
            if serving:
                lag.add_metric([node], float(max(0, st.desired_generation - st.applied_generation)))
            errors.add_metric([node], float(st.failures_total))
        yield connected
        yield ready
        yield lag
        yield errors
        yield GaugeMetricFamily("stockade_brain_ready", "1 once the first full compute is done", value=float(b.ready))
        rejections = b.engine.rejections()
        yield GaugeMetricFamily(
            "stockade_brain_policies_rejected",
            "policies not enforced because they are malformed",
            value=float(sum(1 for r in rejections if r.object.startswith("NetworkPolicy"))),
        )
        rejected = GaugeMetricFamily(
            "stockade_brain_objects_rejected",
            "objects from the API refused by validation (not enforced, reported), by kind",
            labels=["kind"],  # the five kinds the brain reads: bounded by construction
        )
        by_kind = dict.fromkeys(validate.KINDS, 0)
        for r in rejections:
            kind = r.object.split(" ", 1)[0]
            if kind in by_kind:
                by_kind[kind] += 1
        for kind, n in by_kind.items():
            rejected.add_metric([kind], float(n))
        yield rejected
        yield CounterMetricFamily(
            "stockade_brain_engine_errors",
            "objects skipped because the engine failed on them (a bug: see the brain's log)",
            value=float(b.engine_errors),
        )
        left_out = GaugeMetricFamily(
            "stockade_brain_policies_not_realized",
            "(policy, node) pairs where an accepted policy is left out of the node's model, by limit",
            labels=["limit"],  # a fixed, small set of names: bounded by construction
        )
        by_limit: dict[str, int] = {}
        for nr in b.engine.not_realized():
            by_limit[nr.limit] = by_limit.get(nr.limit, 0) + 1
        for limit, n in sorted(by_limit.items()):
            left_out.add_metric([limit], float(n))
        yield left_out


def register_process(registry: CollectorRegistry) -> None:
    """``process_*`` (CPU, RSS, open fds, start time), ``python_info`` and ``python_gc_*`` on
    ``registry`` (the brain and the agent keep their own registry, never the global one)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def register(registry: CollectorRegistry, brain: BrainView) -> None:
    """Everything the brain exports apart from the drop metrics (`drops.DropMetrics`) and the
    certificate expiry (`servers.CertificateExpiry`)."""
    registry.register(BrainCollector(brain))
    registry.register(FanOutCollector(brain.fanout))
    register_process(registry)
