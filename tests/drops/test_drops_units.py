"""Pure parts: flow keys, windows, grouping, port buckets, IP history."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockade.brain.drops import IpHistory, flows
from stockade.brain.drops.metrics import DropMetrics


def test_flow_key_round_trip() -> None:
    f = flows.Flow("ingress", "TCP", 5432, "prod", "db-0", "", "192.0.2.7")
    assert flows.decode(f.encode()) == {
        "direction": "ingress", "protocol": "TCP", "dport": "5432", "dst_namespace": "prod",
        "dst_pod": "db-0", "src_namespace": "", "src": "192.0.2.7",
    }  # fmt: skip
    assert f.encode().count("|") == 6  # a NetworkPolicy drop's key is as before tiers


def test_windows() -> None:
    now = 60 * 1000 + 59.9
    assert flows.window_buckets("1m", now) == [1000]
    assert flows.window_buckets("15m", now) == list(range(986, 1001))
    assert len(flows.window_buckets("24h", now)) == 1440
    with pytest.raises(ValueError, match="use one of 1m, 15m, 1h, 24h"):
        flows.window_buckets("2d", now)


def test_group_by_any_subset_and_where() -> None:
    a = flows.Flow("ingress", "TCP", 80, "prod", "web", "dev", "tool").encode()
    b = flows.Flow("egress", "UDP", 53, "", "192.0.2.1", "prod", "web").encode()
    hashes = [{a: 3, b: 1}, {a: 2, "garbage": 9}]
    assert flows.group_counts(hashes, ["dst_namespace"]) == Counter({("prod",): 5, ("",): 1})
    assert flows.group_counts(hashes, []) == Counter({(): 6})
    assert flows.group_counts(hashes, ["src"], {"direction": "egress"}) == Counter({("web",): 1})
    with pytest.raises(ValueError, match="cannot group by pod"):
        flows.group_counts(hashes, ["pod"])
    assert flows.top(Counter({("a",): 1, ("b",): 5, ("c",): 5}), ["src"], 2) == [
        {"src": "b", "count": 5},
        {"src": "c", "count": 5},
    ]


@given(st.integers(min_value=0, max_value=65535))
def test_dport_labels_are_bounded(port: int) -> None:
    label = flows.dport_label(port)
    assert label == str(port) if port in flows.KNOWN_PORTS else label.startswith(("other-", "none"))


@given(st.integers(min_value=0, max_value=65535), st.sampled_from(["TCP", "UDP", "SCTP"]))
def test_brain_dport_label_keeps_only_ports_the_pod_declares(port: int, proto: str) -> None:
    from prometheus_client import CollectorRegistry

    declared = {("prod", "web"): [(port, "TCP"), (8079, "TCP")]}
    m = DropMetrics(CollectorRegistry(), declared=lambda ns, pod: declared.get((ns, pod), []))
    label = m.dport_label(proto, port, "prod", "web")
    if port == 0:
        assert label == "none"  # protocols without ports
    else:
        assert label == (str(port) if proto == "TCP" else "other")
    assert m.dport_label("TCP", 8079, "prod", "other-pod") == "other"  # another pod does not declare it
    assert m.dport_label("TCP", 8079, "", "") == "other"  # no pod at all (external)


def test_brain_dport_labels_are_capped() -> None:
    from prometheus_client import CollectorRegistry

    from stockade.brain.drops.metrics import MAX_DPORTS

    m = DropMetrics(CollectorRegistry(), declared=lambda ns, pod: [(int(pod), "UDP")])
    labels = {m.dport_label("UDP", p, "ns", str(p)) for p in range(1, 2 * MAX_DPORTS)}
    assert len(labels - {"other"}) == MAX_DPORTS and "other" in labels
    broken = DropMetrics(CollectorRegistry(), declared=lambda ns, pod: 1 / 0)  # type: ignore[arg-type,return-value]
    assert broken.dport_label("TCP", 80, "ns", "p") == "other"  # a label never costs the count


def test_agent_reasons_are_bounded() -> None:
    from prometheus_client import CollectorRegistry

    m = DropMetrics(CollectorRegistry())
    assert m.agent_reason("agent_buffer_full") == "agent_buffer_full"
    assert m.agent_reason("x" * 5) == "agent_other"
    seen = {m.agent_reason(f"agent_r{'a' * i}") for i in range(40)}
    assert len(seen) <= 17


def test_ip_history_answers_as_of_the_time() -> None:
    h = IpHistory(per_ip=3)
    h.assign("10.0.0.1", ("a", "p1"), 100)
    h.assign("10.0.0.1", None, 200)
    h.assign("10.0.0.1", ("b", "p2"), 300)
    assert h.lookup("10.0.0.1", 50) is None  # before we knew it
    assert h.lookup("10.0.0.1", 150) == ("a", "p1")
    assert h.lookup("10.0.0.1", 250) is None
    assert h.lookup("10.0.0.1", 301) == ("b", "p2")
    h.assign("10.0.0.1", ("c", "p3"), 400)  # a 4th entry: the oldest goes
    assert h.lookup("10.0.0.1", 150) is None and h.lookup("10.0.0.1", 450) == ("c", "p3")
    assert h.lookup("10.9.9.9", 1) is None


def test_ip_history_from_pod_objects() -> None:
    h = IpHistory()
    pod = {"metadata": {"namespace": "prod", "name": "web"}, "status": {"podIP": "10.0.0.7", "phase": "Running"}}
    h.observe_pod(pod, at=10)
    h.observe_pod({**pod, "status": {"podIP": "10.0.0.7", "phase": "Succeeded"}}, at=20)
    other = {"metadata": {"namespace": "dev", "name": "job"}, "status": {"podIP": "10.0.0.7"}}
    h.observe_pod(other, at=30)
    h.observe_pod(pod, at=35, deleted=True)  # a late delete of the old owner changes nothing
    h.observe_pod({"metadata": {"name": "host"}, "spec": {"hostNetwork": True}, "status": {"podIP": "10.0.0.99"}}, at=1)
    assert [h.lookup("10.0.0.7", t) for t in (15, 25, 40)] == [("prod", "web"), None, ("dev", "job")]
    assert "10.0.0.99" not in h
