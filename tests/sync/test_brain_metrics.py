"""The whole brain (sources from the lab's real API server, sync, drops, HTTP) run without Redis,
with a real agent sync client and real drop batches over gRPC: what its ``/metrics`` says.

- blocked connections are counted without Redis, by protocol, namespace, direction and a
  ``dport`` that keeps its number only when the destination pod declares that port;
- a policy change is timed from the brain seeing it to the node's ack (the realization histogram);
- the fan-out's ``stockade_brain_sync_*`` series and the process metrics are exported;
- a brain exports a node's lag only while it serves the node (so two brains aggregate by node).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sync_helpers import eventually, start_agent

from stockade.brain.drops import NoStore
from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer
from stockade.v1 import drops_pb2, drops_pb2_grpc

WEB_IP, CLIENT_IP, OUTSIDE_IP = "10.60.1.2", "10.60.1.3", "10.99.0.1"
DECLARED = 8079  # the seed's own port: web declares it, so it keeps its number


def pod(name: str, ip: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "labels": {"app": name}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def policy(name: str, port: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}
    if port is not None:
        spec["ingress"] = [{"ports": [{"protocol": "TCP", "port": port}]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }


def objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
        pod("web", WEB_IP, [{"containerPort": DECLARED, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]),
        pod("client", CLIENT_IP, []),
        policy("deny"),
    ]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Brain, ApiServer]]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start("127.0.0.1", 0)
    for obj in objects():
        server.put_object(obj)
    b = Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            admin_mtls_listen=None,
            http="127.0.0.1:0",
            insecure=True,
            redis_url=None,
        )
    )
    await asyncio.wait_for(b.start(), 30)
    try:
        yield b, server
    finally:
        await b.stop()
        await server.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return str(r.read().decode())


async def scrape(brain: Brain) -> dict[str, Any]:
    """Metric families by name (counters without ``_total``), from the live /metrics."""
    text = await asyncio.to_thread(_get, f"http://127.0.0.1:{brain.http_port}/metrics")
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    fam = families.get(name)
    if fam is None:
        return {}
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name in (name, f"{name}_total")}


def event(dst: str, dport: int, *, protocol: str = "TCP", direction: int = 1, chain: str = "in_0a") -> Any:
    sport = 40000 if dport else 0
    return drops_pb2.DropEvent(
        time=time.time(), direction=direction, src=CLIENT_IP, dst=dst, protocol=protocol, sport=sport, dport=dport,
        chain=chain,
    )  # fmt: skip


async def test_blocked_connections_counted_without_redis_with_declared_ports(
    env: tuple[Brain, ApiServer],
) -> None:
    brain, _ = env
    assert isinstance(brain.aggregator.store if brain.aggregator else None, NoStore)
    events = (
        [event(WEB_IP, DECLARED)] * 3  # declared by web: its number
        + [event(WEB_IP, 9999)] * 2  # web declares no 9999: "other"
        + [event(WEB_IP, 53)]  # web declares 53 for UDP only: "other" for TCP
        + [event(WEB_IP, 53, protocol="UDP")]  # declared: its number
        + [event(WEB_IP, 0, protocol="1")]  # ICMP: no port
        + [event(OUTSIDE_IP, DECLARED, direction=2, chain="out_0a")]  # no pod: "other"
    )
    batch = drops_pb2.DropBatch(node="node-1", instance="t1", seq=1, events=events)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{brain.grpc_port}") as ch:
        ack = await drops_pb2_grpc.DropServiceStub(ch).ReportDrops(iter([batch]), timeout=10)
    assert ack.last_seq == 1

    def key(protocol: str, dport: str, direction: str, namespace: str) -> tuple[tuple[str, str], ...]:
        labels = {"protocol": protocol, "dport": dport, "direction": direction, "namespace": namespace}
        labels["tier"] = "netpol"  # NetworkPolicy drops: no tier rule
        return tuple(sorted(labels.items()))

    got = samples(await scrape(brain), "stockade_brain_blocked_connections")
    got = {k: v for k, v in got.items() if v}
    assert got == {
        key("TCP", str(DECLARED), "ingress", "demo"): 3,
        key("TCP", "other", "ingress", "demo"): 3,
        key("UDP", "53", "ingress", "demo"): 1,
        key("1", "none", "ingress", "demo"): 1,
        key("TCP", "other", "egress", "external"): 1,
    }
    families = await scrape(brain)
    # No Redis: its series are not exported (not a "down" that would page someone).
    assert "stockade_brain_drops_redis_up" not in families and "stockade_brain_redis_errors" not in families


async def test_realization_sync_and_process_metrics(env: tuple[Brain, ApiServer]) -> None:
    brain, server = env
    agent = start_agent("node-1", f"127.0.0.1:{brain.grpc_port}", None)
    try:
        await eventually(lambda: brain.fanout.node_status("node-1").in_sync, what="the agent's first ack")
        fam = (await scrape(brain))["stockade_brain_policy_realization_seconds"]
        count_before = next(s.value for s in fam.samples if s.name.endswith("_count"))
        generation = brain.fanout.node_status("node-1").desired_generation

        server.put_object(policy("allow-8079", DECLARED))  # changes node-1's model
        await eventually(
            lambda: brain.fanout.node_status("node-1").desired_generation > generation, what="the change to compile"
        )
        await eventually(lambda: brain.fanout.node_status("node-1").in_sync, what="the node's ack of the change")
        families = await scrape(brain)
        fam = families["stockade_brain_policy_realization_seconds"]
        by_name = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
        assert by_name[("stockade_brain_policy_realization_seconds_count", None)] == count_before + 1
        assert by_name[("stockade_brain_policy_realization_seconds_bucket", "+Inf")] == count_before + 1
        delay = samples(families, "stockade_brain_node_realization_seconds")[(("node", "node-1"),)]
        assert 0 <= delay < 60 and by_name[("stockade_brain_policy_realization_seconds_sum", None)] >= delay

        # The fan-out's collector is registered, and speaks of this node.
        assert samples(families, "stockade_brain_sync_agents_connected") == {(): 1}
        assert samples(families, "stockade_brain_sync_nodes_in_sync") == {(): 1}
        assert samples(families, "stockade_brain_sync_applied_generation")[(("node", "node-1"),)] >= generation + 1
        # Per node, from the brain serving it: connected and its lag.
        assert samples(families, "stockade_brain_node_agent_connected") == {(("node", "node-1"),): 1}
        assert samples(families, "stockade_brain_node_generation_lag") == {(("node", "node-1"),): 0}
        # The process itself.
        assert samples(families, "process_resident_memory_bytes")[()] > 10e6
        assert samples(families, "process_cpu_seconds")[()] > 0
        assert "python_info" in families
    finally:
        await agent.shutdown()
    # Not serving the node any more: connected 0, and no lag of its own to report (another brain
    # serving the node reports it; `max by (node)` over the brains reads the one that serves it).
    await eventually(lambda: not brain.fanout.node_status("node-1").connected, what="the disconnect")
    families = await scrape(brain)
    assert samples(families, "stockade_brain_node_agent_connected") == {(("node", "node-1"),): 0}
    assert samples(families, "stockade_brain_node_generation_lag") == {}
