"""Prometheus view of the fan-out, read at scrape time: ``registry.register(FanOutCollector(fanout))``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.brain.fanout.hub import FanOut


class FanOutCollector(Collector):
    def __init__(self, fanout: FanOut) -> None:
        self.fanout = fanout

    def collect(self) -> Iterator[Metric]:
        statuses = list(self.fanout.status.values())
        yield GaugeMetricFamily(
            "stockade_sync_agents_connected", "agents with a live sync stream", value=len(self.fanout.sessions)
        )
        yield GaugeMetricFamily(
            "stockade_sync_nodes_in_sync",
            "nodes whose agent acked the generation the brain wants them at",
            value=sum(s.in_sync for s in statuses),
        )
        yield CounterMetricFamily(
            "stockade_sync_apply_failures", "failed applies reported by agents", value=self.fanout.failed_acks
        )
        yield GaugeMetricFamily(
            "stockade_sync_nodes_not_ready",
            "nodes where pod traffic may bypass the rules (the agent says so, or it was refused)",
            value=sum(s.not_ready_reason is not None for s in statuses),
        )
        yield CounterMetricFamily(
            "stockade_sync_agents_refused",
            "agent streams refused for speaking an older sync protocol",
            value=self.fanout.refused_agents,
        )
        desired = GaugeMetricFamily(
            "stockade_sync_desired_generation", "generation the brain wants a node at", labels=["node"]
        )
        applied = GaugeMetricFamily(
            "stockade_sync_applied_generation", "generation a node's agent acked", labels=["node"]
        )
        for s in statuses:
            desired.add_metric([s.node], s.desired_generation)
            applied.add_metric([s.node], s.applied_generation)
        yield desired
        yield applied
