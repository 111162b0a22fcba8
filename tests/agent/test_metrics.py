"""The agent's metrics: rendered in the text format, parsed back, values checked."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.agent.metrics import AgentMetrics
from stockade.agent.sync.applier import AgentStatus
from stockade.model.events import BlockedEvent
from stockade.model.rules import Chain, Direction, NodeModel, PortMatch, Protocol, Rule

Sample = tuple[str, tuple[tuple[str, str], ...]]


def parse(metrics: AgentMetrics) -> dict[Sample, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }


def blocked(protocol: str, dport: int, direction: Direction = Direction.INGRESS) -> BlockedEvent:
    chain = "in_1" if direction is Direction.INGRESS else "out_1"
    return BlockedEvent(1.0, "n1", direction, "10.0.0.1", "10.0.0.2", protocol, 40000, dport, chain)


def model_with_ports() -> NodeModel:
    chain = Chain.of(
        Direction.INGRESS,
        [Rule(None, (PortMatch(Protocol.TCP, 5432), PortMatch(Protocol.TCP, 30000, 30100)))],
    )
    return NodeModel("n1", chains={chain.id: chain}, ingress={"10.0.0.2": chain.id})


def bc(protocol: str, dport: str, direction: str = "ingress") -> Sample:
    labels = (("direction", direction), ("dport", dport), ("protocol", protocol))
    return ("stockade_agent_blocked_connections_total", labels)


def test_blocked_connections_by_protocol_port_and_direction() -> None:
    m = AgentMetrics()
    m.set_model(model_with_ports())
    m.blocked_events(
        [
            blocked("TCP", 80),
            blocked("TCP", 80),
            blocked("UDP", 53, Direction.EGRESS),
            blocked("TCP", 5432),  # above 1024 but named by a rule
            blocked("TCP", 30100),  # a range's end
            blocked("TCP", 30050),  # inside a range: not a label of its own
            blocked("TCP", 40000),
            blocked("1", 0),  # ICMP
        ]
    )
    s = parse(m)
    assert s[bc("TCP", "80")] == 2
    assert s[bc("UDP", "53", "egress")] == 1
    assert s[bc("TCP", "5432")] == 1 and s[bc("TCP", "30100")] == 1
    assert s[bc("TCP", "other")] == 2
    assert s[bc("other", "0")] == 1


def test_dport_label_values_are_capped() -> None:
    m = AgentMetrics(max_dports=3)
    m.blocked_events(blocked("TCP", port) for port in (1, 2, 3, 4, 5, 1))
    s = parse(m)
    ports = {dict(k[1])["dport"] for k in s if k[0] == "stockade_agent_blocked_connections_total"}
    assert ports == {"1", "2", "3", "other"}
    assert s[bc("TCP", "1")] == 2 and s[bc("TCP", "other")] == 2


def test_kernel_counters_follow_cumulative_counts_through_resets() -> None:
    m = AgentMetrics()
    kernel = ("stockade_agent_blocked_connections_kernel_total", (("direction", "ingress"),))
    egress = ("stockade_agent_blocked_connections_kernel_total", (("direction", "egress"),))
    assert parse(m)[kernel] == 0 and parse(m)[egress] == 0
    m.kernel_counters({"in_a": 10, "in_b": 5, "out_c": 2, "forward": 99})
    m.kernel_counters({"in_a": 12, "in_b": 5, "out_c": 2})
    m.kernel_counters({"in_a": 3, "out_c": 7})  # in_a re-created (counts anew), in_b gone
    m.kernel_counters({"in_a": 3, "in_b": 1, "out_c": 7})  # in_b back: all of it is new
    s = parse(m)
    assert s[kernel] == 10 + 5 + 2 + 3 + 1
    assert s[egress] == 7


def test_apply_transactions_and_gauges() -> None:
    m = AgentMetrics()
    with m.applying():
        pass
    with pytest.raises(RuntimeError), m.applying():
        raise RuntimeError("kernel said no")
    m.transaction(ok=True, seconds=0.003)
    m.drift_repaired()
    m.drift_repaired(2)
    m.nflog_lost_total(4)
    m.nflog_lost_total(4)
    m.nflog_lost_total(9)
    m.nflog_lost_total(2)  # the reader was re-opened: counts start again
    m.nflog_lost_total(3)
    m.conntrack_ended(5)
    status = AgentStatus("node-1", connected=True, generation=42)
    m.watch_sync(status)  # the sync client's state, read at scrape time
    s = parse(m)
    assert s[("stockade_agent_transactions_total", (("result", "ok"),))] == 2
    assert s[("stockade_agent_transactions_total", (("result", "failed"),))] == 1
    assert s[("stockade_agent_apply_seconds_count", ())] == 3
    assert s[("stockade_agent_apply_seconds_bucket", (("le", "0.005"),))] >= 1
    assert s[("stockade_agent_drift_repairs_total", ())] == 3
    assert s[("stockade_agent_nflog_events_lost_total", ())] == 9 + 1
    assert s[("stockade_agent_conntrack_entries_deleted_total", ())] == 5
    assert s[("stockade_agent_brain_connected", ())] == 1
    assert s[("stockade_agent_applied_generation", ())] == 42
    status.connected = False
    assert parse(m)[("stockade_agent_brain_connected", ())] == 0


def test_every_series_is_the_agents_and_the_process_is_measured() -> None:
    """Names start stockade_agent_ (the brain's start stockade_brain_), so a sum over both never
    adds one thing twice; the registry also carries the process's own metrics."""
    m = AgentMetrics()
    m.watch_sync(AgentStatus("node-1"))
    names = {f.name for f in m.registry.collect()}
    ours = {n for n in names if n.startswith("stockade_")}
    assert ours and all(n.startswith("stockade_agent_") for n in ours), sorted(ours)
    s = parse(m)
    assert s[("process_resident_memory_bytes", ())] > 1e6
    assert ("stockade_agent_brain_connected", ()) in s and ("stockade_agent_fail_static", ()) in s


def test_each_instance_has_its_own_registry() -> None:
    a, b = AgentMetrics(), AgentMetrics()
    a.drift_repaired()
    assert parse(b)[("stockade_agent_drift_repairs_total", ())] == 0
    assert a.content_type.startswith("text/plain")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition() -> None:
    m = AgentMetrics()
    m.blocked_events([blocked("TCP", 80)])
    with m.applying():
        pass
    out = subprocess.run(["promtool", "check", "metrics"], input=m.render(), capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
