"""Units: what `validate` lets through (canonical) and refuses; how `quota` charges a node."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis

from stockade.brain.drops import validate
from stockade.brain.drops.quota import ENTRY_OVERHEAD, QuotaConfig, Quotas
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

from .conftest import make_aggregator
from .data import RESOLVER

NOW = 1_700_000_000.0


def _ev(**kw: object) -> BlockedEvent:
    base: dict[str, object] = dict(time=NOW, node="node-a", direction=Direction.INGRESS, src="10.2.0.10",
                                   dst="10.1.0.20", protocol="TCP", sport=1, dport=80, chain="in_0a")  # fmt: skip
    base.update(kw)
    return BlockedEvent(**base)  # type: ignore[arg-type]


def test_valid_fields_come_out_canonical() -> None:
    assert validate.clean_event(_ev(), NOW) == (NOW, "ingress", "10.2.0.10", "10.1.0.20", "TCP", 1, 80, "in_0a")
    got = validate.clean_event(_ev(src="FD00:0::63", dst="fd00:0:0::1"), NOW)
    assert got is not None and got[2:4] == ("fd00::63", "fd00::1")
    assert validate.clean_event(_ev(protocol="1", sport=0, dport=0), NOW) is not None  # ICMP, no ports
    assert validate.clean_event(_ev(direction=Direction.EGRESS, chain="out_ff"), NOW) is not None


@pytest.mark.parametrize(
    "kw",
    [
        {"src": "010.001.000.020"},
        {"dst": "999.1.1.1"},
        {"src": "fe80::1%eth0"},
        {"src": "10.0.0.1", "dst": "fd00::1"},  # two families in one packet
        {"src": "1.2.3.4\x00"},
        {"protocol": "tcp"},
        {"protocol": "256"},
        {"protocol": "06"},
        {"dport": 65536},
        {"sport": -1},
        {"dport": True},
        {"chain": "in_0a\n"},
        {"chain": "in_XYZ"},
        {"chain": "out_0a"},  # egress chain, ingress event
        {"time": NOW + 3600},
        {"time": float("nan")},
        {"direction": 0},
    ],
)
def test_invalid_fields_are_refused(kw: dict[str, object]) -> None:
    assert validate.clean_event(_ev(**kw), NOW) is None


def test_names() -> None:
    assert validate.valid_node("node-1.example")
    assert not validate.valid_node("node-1\n") and not validate.valid_node("Node") and not validate.valid_node("")
    assert validate.valid_pod_ref("prod", "web-1.x")
    assert not validate.valid_pod_ref("prod|x", "web") and not validate.valid_pod_ref("prod", "web\n")
    assert validate.valid_instance("0f" * 16) and not validate.valid_instance("a b")
    assert validate.protocol_label("TCP") == "TCP" and validate.protocol_label("47") == "other"


def test_a_counter_is_charged_once_per_window() -> None:
    key = "ingress|TCP|80|prod|db-0||10.2.0.10"
    cost = len(key) + ENTRY_OVERHEAD
    quotas = Quotas(QuotaConfig(bytes_per_window=3 * cost, window=60))
    q = quotas.node("n", NOW)
    assert all(quotas.charge(q, 100, key) for _ in range(50))  # the same flow, flush after flush
    assert q.used == cost
    assert quotas.charge(q, 101, key) and quotas.charge(q, 102, key)  # other minutes: new counters
    assert not quotas.charge(q, 103, key)  # over the quota
    assert quotas.charge(quotas.node("other", NOW), 103, key)  # another node has its own
    q = quotas.node("n", NOW + 61)  # a new window
    assert q.used == 0 and quotas.charge(q, 103, key)


def test_quota_from_env() -> None:
    assert QuotaConfig.from_env({}) == QuotaConfig()
    assert QuotaConfig.from_env({"STOCKADE_DROPS_NODE_QUOTA": "0"}).bytes_per_window == 0
    with pytest.raises(ValueError, match="STOCKADE_DROPS_NODE_QUOTA"):
        QuotaConfig.from_env({"STOCKADE_DROPS_NODE_QUOTA": "lots"})
    with pytest.raises(ValueError, match="window"):
        QuotaConfig(window=0)


async def test_one_node_over_quota_the_rest_of_its_batch_and_others_counted(redis_client: Redis) -> None:
    now = time.time()
    agg, registry = make_aggregator(redis_client, RESOLVER, quota=QuotaConfig(bytes_per_window=1000))
    flows = [_ev(time=now, node="node-a", dport=p) for p in range(1, 41)]  # 40 new counters: ~10 fit
    counted = agg.ingest(flows + flows[:3] * 10)  # repeats of counters it has: always counted
    assert 5 < counted - 30 < 15
    assert agg.ingest([_ev(time=now, node="node-b", dport=p) for p in range(1, 11)]) == 10
    refused = registry.get_sample_value(
        "stockade_brain_drop_events_refused_total", {"node": "node-a", "reason": "quota"}
    )
    assert refused == 70 - counted
    assert registry.get_sample_value("stockade_brain_drop_events_dropped_total", {"reason": "node_quota"}) == refused
    assert await agg.flush()
    assert await agg.store.refused("15m", now=now) == [{"node": "node-a", "reason": "quota", "count": refused}]
