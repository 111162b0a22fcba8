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

READ_TOKEN = "reader-token-0123456789"
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
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"name": "reader", "token": READ_TOKEN, "role": "read"}]}))
    b = Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            http="127.0.0.1:0",
            insecure=True,
            admin_tokens_file=str(tokens),
        )
    )
    await asyncio.wait_for(b.start(), 30)
    try:
        yield b
    finally:
        await b.stop()
        await server.stop()


def get(brain: Brain, path: str, token: str | None = READ_TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{brain.http_port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
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
        assert 'stockade_brain_node_ready{node="node-1"} 0.0' in metrics

        # A waiter in progress ends when the agent says the node is fixed.
        waiting = asyncio.create_task(asyncio.to_thread(get, brain, "/v1/realized?timeout=60"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        problems.clear()
        await agent.client.status_changed()
        code, body = await waiting
        assert code == 200 and json.loads(body) == {"realized": True, "resourceVersion": brain.seen_rv, "pending": []}
        _, metrics = await asyncio.to_thread(get, brain, "/metrics")
        assert 'stockade_brain_node_ready{node="node-1"} 1.0' in metrics
    finally:
        await agent.shutdown()


async def test_realized_needs_an_admin_token(brain: Brain) -> None:
    # Probes and the scraper need no credentials; /v1/realized (cluster state) does.
    assert (await asyncio.to_thread(get, brain, "/healthz", None))[0] == 200
    assert (await asyncio.to_thread(get, brain, "/metrics", None))[0] == 200
    code, body = await asyncio.to_thread(get, brain, "/v1/realized?timeout=0.1", None)
    assert code == 401 and "credentials" in json.loads(body)["error"]
    code, body = await asyncio.to_thread(get, brain, "/v1/realized?timeout=0.1", "wrong-token-0123456789")
    assert code == 401 and "not in the brain's --admin-tokens-file" in json.loads(body)["error"]
    code, _ = await asyncio.to_thread(get, brain, "/v1/realized?timeout=0.1")
    assert code in (200, 504)  # answered: whether realized depends on the agents


def test_http_listens_on_loopback_by_default() -> None:
    assert BrainConfig().http.startswith("127.0.0.1:")
