"""The resolver over the real engine: IPs to pods, isolating policies, and IP reuse over time."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from stockade.brain.drops import EngineResolver
from stockade.brain.engine import Engine
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

from .conftest import make_aggregator


def _pod(ns: str, name: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c"}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def _engine() -> tuple[Engine, list[dict[str, Any]]]:
    pods = [_pod("prod", "web", "10.1.0.10", {"app": "web"}), _pod("dev", "tool", "10.2.0.10", {"app": "tool"})]
    policies = [
        {"kind": "NetworkPolicy", "metadata": {"namespace": "prod", "name": "deny-web"},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}},
        {"kind": "NetworkPolicy", "metadata": {"namespace": "dev", "name": "no-egress"},
         "spec": {"podSelector": {}, "policyTypes": ["Egress"]}},
    ]  # fmt: skip
    namespaces = [{"kind": "Namespace", "metadata": {"name": n}} for n in ("prod", "dev")]
    eng = Engine()
    eng.load(namespaces=namespaces, pods=pods, policies=policies, nodes=[])
    return eng, pods


def test_engine_resolution() -> None:
    eng, _ = _engine()
    r = EngineResolver(eng)
    assert r.resolve_ip("10.1.0.10", time.time()) == ("prod", "web")
    assert r.resolve_ip("192.0.2.1", time.time()) is None
    assert r.isolating_policies("prod", "web", Direction.INGRESS) == ["prod/deny-web"]
    assert r.isolating_policies("prod", "web", Direction.EGRESS) == []
    assert r.isolating_policies("dev", "tool", Direction.EGRESS) == ["dev/no-egress"]


async def test_events_attributed_through_the_engine(redis_client: Redis) -> None:
    eng, pods = _engine()
    r = EngineResolver(eng)
    for p in pods:
        r.history.observe_pod(p, at=0.0)
    now = time.time()
    # the web pod is replaced; its IP goes to a pod of another namespace a minute ago
    moved = _pod("dev", "scratch", "10.1.0.10", {"app": "scratch"})
    eng.delete("Pod", "prod", "web")
    r.history.observe_pod(pods[0], at=now - 61, deleted=True)
    eng.upsert(moved)
    r.history.observe_pod(moved, at=now - 60)
    agg, _ = make_aggregator(redis_client, r)
    chain = {Direction.INGRESS: "in_0a", Direction.EGRESS: "out_0a"}
    ev = lambda t, d: BlockedEvent(t, "node-a", d, "10.2.0.10", "10.1.0.10", "TCP", 40000, 80, chain[d])  # noqa: E731
    agg.ingest(
        [ev(now - 120, Direction.INGRESS)] * 2 + [ev(now - 10, Direction.INGRESS), ev(now - 5, Direction.EGRESS)]
    )
    assert await agg.flush()
    assert await agg.store.top_flows("15m", ["direction", "dst_namespace", "dst_pod", "src"], now=now) == [
        {"direction": "ingress", "dst_namespace": "prod", "dst_pod": "web", "src": "tool", "count": 2},
        {"direction": "egress", "dst_namespace": "dev", "dst_pod": "scratch", "src": "tool", "count": 1},
        {"direction": "ingress", "dst_namespace": "dev", "dst_pod": "scratch", "src": "tool", "count": 1},
    ]
    egress = await agg.store.recent_events({"direction": "egress"})
    assert [e["policies"] for e in egress] == ["dev/no-egress"]


def test_ipv6_addresses_resolve_to_their_pod() -> None:
    dual = _pod("prod", "api", "10.1.0.20", {"app": "api"})
    dual["status"]["podIPs"] = [{"ip": "10.1.0.20"}, {"ip": "fd00:10:1::14"}]
    eng, _ = _engine()
    eng.upsert(dual)
    r = EngineResolver(eng)
    now = time.time()
    assert r.resolve_ip("fd00:10:1::14", now) == ("prod", "api")
    assert r.resolve_ip("FD00:10:1:0::14", now) == ("prod", "api")  # any spelling of the address
    assert r.resolve_ip("10.1.0.20", now) == ("prod", "api")
    assert r.resolve_ip("fd00:10:1::15", now) is None
    assert r.resolve_ip("not-an-ip", now) is None
    # The history records every address of the pod, and its release.
    r.history.observe_pod(dual, at=now - 30)
    assert r.history.lookup("fd00:10:1::14", now) == ("prod", "api")
    r.history.observe_pod(dual, at=now - 10, deleted=True)
    assert r.resolve_ip("fd00:10:1::14", now) is None
    assert r.resolve_ip("fd00:10:1::14", now - 20) == ("prod", "api")


def test_malformed_pods_are_recorded_as_nothing() -> None:
    r = EngineResolver(_engine()[0])
    for bad in ({"kind": "Pod", "spec": [1]}, {"kind": "Pod", "status": "Running"},
                {"kind": "Pod", "metadata": {"name": "x"}, "status": {"podIP": "010.001.000.020"}}):  # fmt: skip
        r.history.observe_pod(bad, at=1.0)
    assert "010.001.000.020" not in r.history and "10.1.0.20" not in r.history
