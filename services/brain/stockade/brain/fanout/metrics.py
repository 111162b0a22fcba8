"""Prometheus view of the fan-out, read at scrape time: ``registry.register(FanOutCollector(fanout))``
(done by `stockade.brain.metrics.register`). Names start ``stockade_brain_sync_``: agents
export ``stockade_agent_*``, so a sum over both never counts a thing twice."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.brain.fanout.hub import FanOut


class FanOutCollector(Collector):
    def __init__(self, fanout: FanOut) -> None:
        self.fanout = fanout

    def collect(self) -> Iterator[Metric]:
        fo = self.fanout
        statuses = list(fo.status.values())
        yield GaugeMetricFamily(
            "stockade_brain_sync_agents_connected",
            "agents with a live sync stream to this brain",
            value=len(fo.sessions),
        )
        yield GaugeMetricFamily(
            "stockade_brain_sync_nodes_in_sync",
            "nodes whose agent acked the generation this brain wants them at",
            value=sum(s.in_sync for s in statuses),
        )
        yield CounterMetricFamily(
            "stockade_brain_sync_apply_failures", "failed applies reported by agents", value=fo.failed_acks
        )
        yield GaugeMetricFamily(
            "stockade_brain_sync_nodes_not_ready",
            "nodes where pod traffic may bypass the rules (the agent says so, or it was refused)",
            value=sum(s.not_ready_reason is not None for s in statuses),
        )
        yield CounterMetricFamily(
            "stockade_brain_sync_agents_refused",
            "agent streams refused for speaking an older sync protocol",
            value=fo.refused_agents,
        )
        desired = GaugeMetricFamily(
            "stockade_brain_sync_desired_generation",
            "generation this brain wants a node at (nodes whose agent it served)",
            labels=["node"],
        )
        applied = GaugeMetricFamily(
            "stockade_brain_sync_applied_generation", "generation a node's agent acked to this brain", labels=["node"]
        )
        for s in statuses:
            desired.add_metric([s.node], s.desired_generation)
            applied.add_metric([s.node], s.applied_generation)
        yield desired
        yield applied
        rt = fo.realization_times
        h = rt.histogram
        yield HistogramMetricFamily(
            "stockade_brain_policy_realization_seconds",
            "from the brain seeing an API change to a node's agent acking it applied, one per (change, node)",
            buckets=rt.histogram.cumulative(),
            sum_value=h.total,
        )
        last = GaugeMetricFamily(
            "stockade_brain_node_realization_seconds",
            "the delay of the node's latest realized change (see stockade_brain_policy_realization_seconds)",
            labels=["node"],
        )
        for node, delay in sorted(rt.last.items()):
            last.add_metric([node], delay)
        yield last
        yield CounterMetricFamily(
            "stockade_brain_policy_realization_untracked",
            "changes not timed because their node had too many unacked changes already",
            value=rt.untracked,
        )
