"""Prometheus view of the agent's sync status, read at scrape time (no state of its own).

registry.register(SyncCollector(client.status))
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.agent.sync.applier import AgentStatus


class SyncCollector(Collector):
    def __init__(self, status: AgentStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status
        yield GaugeMetricFamily(
            "stockade_agent_brain_connected", "1 while the sync stream to the brain is up", value=int(st.connected)
        )
        yield GaugeMetricFamily(
            "stockade_agent_fail_static",
            "1 while the brain is unreachable and the last applied rules are kept in force",
            value=int(st.fail_static),
        )
        yield GaugeMetricFamily(
            "stockade_agent_applied_generation", "generation of the model the dataplane holds", value=st.generation
        )
        yield GaugeMetricFamily(
            "stockade_agent_last_apply_timestamp_seconds",
            "when the dataplane last took a change (0: never)",
            value=st.last_apply_time or 0.0,
        )
        yield CounterMetricFamily(
            "stockade_agent_applies", "changes the dataplane took (snapshots and deltas)", value=st.applies
        )
        yield CounterMetricFamily(
            "stockade_agent_apply_failures",
            "changes refused, by validation or by the dataplane (reported to the brain)",
            value=st.failures,
        )
        yield CounterMetricFamily("stockade_agent_brain_connects", "sync streams established", value=st.connects)
        yield CounterMetricFamily(
            "stockade_agent_brain_switches",
            "sync streams accepted by a brain other than the one that served the node before",
            value=st.brain_switches,
        )
        info = GaugeMetricFamily(
            "stockade_agent_brain_info",
            "1 for the brain serving this node now (no series while none does)",
            labels=["brain"],
        )
        if st.connected and st.brain:
            info.add_metric([st.brain], 1)
        yield info
        yield CounterMetricFamily(
            "stockade_agent_brain_refused",
            "sync streams this agent ended because the brain speaks an older sync protocol",
            value=st.brain_refusals,
        )
