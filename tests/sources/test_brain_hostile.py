"""A real brain against the lab API server serving hostile objects (issue 11, item 2): present at
start and arriving later, the brain stays alive (/healthz), opens and keeps its sync port, enforces
the canary policy exactly as without them, and reports every bad object (rejections and metric).

The lab API server validates what it is sent like the real one, so the objects it would refuse
are written straight into its store (what an API server with a validation gap would serve).
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from engine.hostile import CANARY, HOSTILE, canary_view, storage_of  # type: ignore[import-not-found]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer
from stockade.v1 import admin_pb2, admin_pb2_grpc

EXPECTED = {what: field for _, what, field in HOSTILE}
TOKEN = "hostile-reader-token-0123456789"


def raw_put(server: ApiServer, obj: dict[str, Any]) -> None:
    """Store ``obj`` as it is, past the lab's validation, with a watch event like any write."""
    storage = storage_of(obj["kind"])
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    key = (meta.get("namespace") or "", meta["name"])
    old = server.store.objects[storage].get(key)
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    observers, server.store.observers = server.store.observers, []  # the lab's controllers read it too
    try:
        server.store._commit(storage, "MODIFIED" if old else "ADDED", obj, old)
    finally:
        server.store.observers = observers


def reference_view() -> dict[tuple[str, str, str], Any]:
    from engine.test_validate import loaded  # type: ignore[import-not-found]

    return canary_view(loaded(copy.deepcopy(CANARY)))


@pytest.fixture
async def brain_for(server: ApiServer, tmp_path: Path) -> AsyncIterator[Callable[[], Brain]]:
    made: list[Brain] = []

    def make() -> Brain:
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text(f"tokens: [{{name: reader, token: {TOKEN}, role: read}}]\n")
        b = Brain(
            BrainConfig(
                kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
                listen="127.0.0.1:0",
                admin_listen="127.0.0.1:0",
                admin_mtls_listen=None,
                http="127.0.0.1:0",
                insecure=True,
                admin_tokens_file=str(tokens),
            )
        )
        made.append(b)
        return b

    yield make
    for b in made:
        await b.stop()


async def until(brain: Brain, check: Callable[[], bool]) -> None:
    """Poll ``check`` (which reads the engine) between engine changes only."""
    while True:  # the caller's timeout bounds this
        await brain.worker.idle()
        if check():
            return
        await asyncio.sleep(0.05)


async def assert_alive_and_enforcing(brain: Brain) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{brain.http_port}/healthz") as r:
            assert r.status == 200 and await r.text() == "ok\n"
        async with http.get(f"http://127.0.0.1:{brain.http_port}/metrics") as r:
            metrics = await r.text()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{brain.grpc_port}") as ch:  # the sync port
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{brain.admin_port}") as ch:  # what the CLI shows
        admin = admin_pb2_grpc.AdminStub(ch)
        md = (("authorization", f"Bearer {TOKEN}"),)
        listed = await admin.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=md, timeout=10)
        lint = await admin.Lint(admin_pb2.LintRequest(), metadata=md, timeout=10)
    statuses = {f"{p.namespace}/{p.name}": p for p in listed.policies}
    assert statuses["canary/spec-text"].rejected.startswith("spec: ")  # `stockade policies`
    assert statuses["canary/canary"].rejected == "" and statuses["canary/canary"].nodes_needed == 2
    for what, field in EXPECTED.items():  # `stockade lint`: every refused object, field named
        assert any(r.startswith(f"{what}: {field}: ") for r in lint.rejected), (what, list(lint.rejected))
    await brain.worker.idle()
    assert canary_view(brain.engine) == reference_view()
    for node in ("node-1", "node-2"):  # what an agent would be sent agrees with the engine
        assert brain.fanout.feed(node).model == brain.engine.model(node)
    refused = {r.object: r.field for r in brain.engine.rejections()}
    assert refused == EXPECTED
    for kind in ("Pod", "Namespace", "Node", "Service", "NetworkPolicy"):
        n = sum(1 for what in EXPECTED if what.startswith(kind + " "))
        assert re.search(rf'^stockade_brain_objects_rejected\{{kind="{kind}"\}} {n}\.0$', metrics, re.M), kind


def put_canary(server: ApiServer) -> None:
    for obj in CANARY:
        server.put_object(copy.deepcopy(obj))


async def test_hostile_objects_present_at_start(server: ApiServer, brain_for: Callable[[], Brain]) -> None:
    put_canary(server)
    for obj, _, _ in HOSTILE:
        raw_put(server, obj)
    # and objects that cannot even be tracked (no usable name): skipped by the sources
    server.store.objects["pods"][("canary", "nameless")] = {
        "kind": "Pod",
        "metadata": {"name": ["x"], "namespace": "canary", "resourceVersion": "1"},
    }
    brain = brain_for()
    await asyncio.wait_for(brain.start(), 60)
    await assert_alive_and_enforcing(brain)
    assert brain.sources is not None and brain.sources.stats["Pod"]["malformed"] >= 1


async def test_hostile_objects_arriving_later(server: ApiServer, brain_for: Callable[[], Brain]) -> None:
    put_canary(server)
    brain = brain_for()
    await asyncio.wait_for(brain.start(), 60)
    before = reference_view()
    await brain.worker.idle()
    assert canary_view(brain.engine) == before
    nameless = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5, "namespace": "canary"}, "spec": [1]}
    observers, server.store.observers = server.store.observers, []
    try:
        server.store._commit("pods", "ADDED", nameless, None)  # a watch event that cannot be tracked
    finally:
        server.store.observers = observers
    for obj, _, _ in HOSTILE:
        raw_put(server, obj)
    await asyncio.wait_for(until(brain, lambda: len(brain.engine.rejections()) >= len(HOSTILE)), 60)
    assert brain.sources is not None and brain.sources.stats["Pod"]["malformed"] == 1  # skipped, the watch went on
    await assert_alive_and_enforcing(brain)
    # fixed, each refusal goes (a valid pod in place of a hostile one is accepted)
    good = copy.deepcopy(CANARY[3])
    good["metadata"]["name"] = "spec-list"
    good["spec"]["nodeName"] = "node-1"
    good["status"] = {"phase": "Running", "podIP": "10.244.1.50", "podIPs": [{"ip": "10.244.1.50"}]}
    server.put_object(good)
    await asyncio.wait_for(until(brain, lambda: brain.engine.endpoint("canary", "spec-list") is not None), 60)
    await brain.worker.idle()
    assert "Pod canary/spec-list" not in {r.object for r in brain.engine.rejections()}
