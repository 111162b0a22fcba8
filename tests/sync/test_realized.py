"""The whole brain (sources from the lab's real API server, sync, HTTP) and a real agent client
over gRPC: ``/v1/realized`` (what `stockade lab apply --wait` waits for) does not count a node
whose agent says pod traffic bypasses its rules, and counts it once the agent says it is fixed."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sync_helpers import eventually, start_agent

from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer

PROBLEM = "traffic between pods on bridge cni0 bypasses the rules: net.bridge.bridge-nf-call-iptables is 0"


def objects() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}},
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.60.1.2", "podIPs": [{"ip": "10.60.1.2"}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "demo"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
    ]


@pytest.fixture
async def brain(tmp_path: Path) -> AsyncIterator[Brain]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start("127.0.0.1", 0)
    for obj in objects():
        server.put_object(obj)
    b = Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            http="127.0.0.1:0",
            insecure=True,
        )
    )
    await asyncio.wait_for(b.start(), 30)
    try:
        yield b
    finally:
        await b.stop()
        await server.stop()


def get(brain: Brain, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{brain.http_port}{path}", timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_realized_waits_for_the_node_to_be_ready(brain: Brain) -> None:
    problems = [PROBLEM]
    agent = start_agent("node-1", f"127.0.0.1:{brain.grpc_port}", None)
    agent.client.readiness = lambda: (not problems, tuple(problems))
    try:
        await eventually(lambda: brain.fanout.node_status("node-1").in_sync, what="the agent's ack")
        code, body = await asyncio.to_thread(get, brain, "/v1/realized?timeout=0.5")
        answer = json.loads(body)
        assert code == 504 and answer["realized"] is False and answer["pending"] == ["node-1"]
        assert answer["not_ready"] == {"node-1": PROBLEM}
        assert answer["reason"] == f"node node-1 is not ready: {PROBLEM}"  # what `lab apply --wait` prints
        _, metrics = await asyncio.to_thread(get, brain, "/metrics")
        assert 'stockade_node_ready{node="node-1"} 0.0' in metrics

        # A waiter in progress ends when the agent says the node is fixed.
        waiting = asyncio.create_task(asyncio.to_thread(get, brain, "/v1/realized?timeout=60"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        problems.clear()
        await agent.client.status_changed()
        code, body = await waiting
        assert code == 200 and json.loads(body) == {"realized": True, "resourceVersion": brain.seen_rv, "pending": []}
        _, metrics = await asyncio.to_thread(get, brain, "/metrics")
        assert 'stockade_node_ready{node="node-1"} 1.0' in metrics
    finally:
        await agent.shutdown()
