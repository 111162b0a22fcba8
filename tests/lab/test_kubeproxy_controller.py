"""The lab's kube-proxy controller around the renderer: what it applies, when, and how it reports
(a recording runner stands in for nft here; the lab tests drive the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

from stockade.brain.sources import SYNCED, SourceEvent
from stockade.lab.kubeproxy.controller import Proxy


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.scripts: list[str] = []
        self.fail = fail

    def run(self, text: str, json: bool = False, terse: bool = False) -> tuple[bool, str, str]:
        self.scripts.append(text)
        return (not self.fail), "", "Error: boom" if self.fail else ""


def upsert(kind: str, obj: dict[str, Any]) -> SourceEvent:
    meta = obj["metadata"]
    return SourceEvent("upsert", kind, meta.get("namespace", ""), meta["name"], obj)


SVC = {
    "metadata": {"name": "a", "namespace": "x", "resourceVersion": "7"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
}
BAD = {"metadata": {"name": "b", "namespace": "x", "resourceVersion": "8"}, "spec": {"clusterIP": "nope", "ports": []}}
SLICE = {
    "metadata": {
        "name": "a-1",
        "namespace": "x",
        "resourceVersion": "9",
        "labels": {"kubernetes.io/service-name": "a"},
    },
    "addressType": "IPv4",
    "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
    "endpoints": [{"addresses": ["10.244.1.5"], "nodeName": "node-1"}],
}


def test_applies_only_what_changed_and_skips_a_bad_object_loudly() -> None:
    runners: dict[str, Recorder] = {}
    proxy = Proxy({"node-1": "ns1", "node-2": "ns2"}, lambda ns: runners.setdefault(ns, Recorder()))

    async def feed() -> None:
        for ev in (upsert("Service", SVC), upsert("Service", BAD), upsert("EndpointSlice", SLICE), SYNCED):
            await proxy.on_event(ev)

    asyncio.run(feed())
    status = proxy.sync()
    assert status["synced"] and not status["failed"]
    assert status["errors"] == ["Service x/b: spec.clusterIPs[0]: 'nope' is not an IP address"]
    assert status["versions"] == {"Service/x/a": "7", "Service/x/b": "8", "EndpointSlice/x/a-1": "9"}
    for r in runners.values():
        assert len(r.scripts) == 1 and "dnat ip to 10.244.1.5:80" in r.scripts[0]
    proxy.sync()  # nothing changed: nothing re-applied
    assert all(len(r.scripts) == 1 for r in runners.values())


def test_a_failed_apply_is_reported_and_retried() -> None:
    runner = Recorder(fail=True)
    proxy = Proxy({"node-1": "ns1"}, lambda ns: runner)
    asyncio.run(proxy.on_event(SYNCED))
    status = proxy.sync()
    assert not status["synced"] and status["failed"] == {"node-1": "Error: boom"}
    runner.fail = False
    assert proxy.sync()["synced"] and len(runner.scripts) == 2  # the next round tries again


def test_a_gone_udp_endpoint_is_forgotten_by_conntrack() -> None:
    forgotten: list[tuple[str, list[str]]] = []
    proxy = Proxy({"node-1": "ns1"}, lambda ns: Recorder(), forget=lambda ns, argv: forgotten.append((ns, argv)))
    udp = {
        "metadata": {"name": "d", "namespace": "x", "resourceVersion": "1"},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.53",
            "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053}],
        },
    }
    sl = {
        "metadata": {
            "name": "d-1",
            "namespace": "x",
            "resourceVersion": "2",
            "labels": {"kubernetes.io/service-name": "d"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.1.6"]}],
    }
    node = {"metadata": {"name": "node-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.240.0.11"}]}}

    async def feed(*events: SourceEvent) -> None:
        for ev in events:
            await proxy.on_event(ev)

    asyncio.run(feed(upsert("Service", udp), upsert("EndpointSlice", sl), upsert("Node", node), SYNCED))
    proxy.sync()
    assert forgotten == []  # nothing went yet
    sl["endpoints"] = [{"addresses": ["10.244.1.6"]}]
    asyncio.run(feed(upsert("EndpointSlice", sl)))
    proxy.sync()
    base = ["conntrack", "-D", "-p", "udp"]
    assert sorted(forgotten) == sorted(
        [
            ("ns1", [*base, "--orig-dst", "10.96.0.53", "--orig-port-dst", "53", "--dst-nat", "10.244.1.5"]),
            ("ns1", [*base, "--orig-port-dst", "30053", "--dst-nat", "10.244.1.5"]),
        ]
    )
