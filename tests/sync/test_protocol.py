"""The sync protocol's version over real gRPC with mTLS on loopback: an agent of the previous
release (a Hello without a version) is refused with FAILED_PRECONDITION and its node shows as
refused; an agent refuses a brain of the previous release (no version in its messages), keeps
its rules and retries; and readiness reported by the agent decides realization."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sync_helpers import SyntheticCluster, eventually, random_model, start_agent, start_brain

from stockade.agent.sync import SyncCollector
from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.engine import Engine
from stockade.brain.fanout import FanOut
from stockade.cli.commands import admin as admin_cmd
from stockade.codec import model_to_proto
from stockade.codec.version import MIN_PEER, PROTOCOL
from stockade.model import NodeModel
from stockade.tls import ClientTLS, ServerTLS
from stockade.v1 import admin_pb2, admin_pb2_grpc, sync_pb2

METHOD = "/stockade.v1.Sync/Sync"
TOKEN = "t" * 24
NS = "demo"


def cluster_objects(nodes: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """One pod per node, and a policy selecting all of them."""
    pods = [
        {
            "kind": "Pod",
            "metadata": {"name": f"web-{i}", "namespace": NS, "labels": {"app": "web"}},
            "spec": {"nodeName": n},
            "status": {"phase": "Running", "podIP": f"10.50.{i}.2"},
        }
        for i, n in enumerate(nodes)
    ]
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
    }
    return {
        "namespaces": [{"kind": "Namespace", "metadata": {"name": NS}}],
        "pods": pods,
        "policies": [policy],
        "nodes": [{"kind": "Node", "metadata": {"name": n}} for n in nodes],
    }


async def start_admin(engine: Engine, fanout: FanOut) -> tuple[grpc.aio.Server, admin_pb2_grpc.AdminStub]:
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(
        AdminService(engine, Authorizer({TOKEN: Caller("test", "read")}), objects=list, status=fanout), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, admin_pb2_grpc.AdminStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))


async def cli_nodes(stub: admin_pb2_grpc.AdminStub, output: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What `stockade nodes -o OUTPUT` prints (its real code, over the real admin API)."""
    capsys.readouterr()
    md = [("authorization", f"Bearer {TOKEN}")]
    assert await admin_cmd._nodes(stub, md, 10.0, argparse.Namespace(output=output)) == 0
    return capsys.readouterr().out


async def exchange(address: str, creds: grpc.ChannelCredentials, frames: Sequence[bytes]) -> tuple[Any, str, list]:
    """Raw frames on a Sync stream: the final status, its details and what came back."""
    got: list = []
    async with grpc.aio.secure_channel(address, creds) as channel:
        call: Any = channel.stream_stream(
            METHOD, request_serializer=None, response_deserializer=sync_pb2.BrainMessage.FromString
        )()
        try:
            for f in frames:
                await call.write(f)
            await call.done_writing()
            async for msg in call:
                got.append(msg)
            return await call.code(), await call.details(), got
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or "", got


def old_hello(node: str) -> bytes:
    """The previous release's hello: everything but a protocol version."""
    hello = sync_pb2.Hello(node=node, agent_version="stockade-agent/0.1", backend="nftables")
    return sync_pb2.AgentMessage(hello=hello).SerializeToString()


async def test_an_old_agent_is_refused_clearly_and_its_node_shows_refused(  # type: ignore[no-untyped-def]
    server_tls, client_tls, capsys
) -> None:
    assert PROTOCOL == MIN_PEER == 3
    nodes = ["node-1", "node-2"]
    engine = Engine()
    engine.load(**cluster_objects(nodes))
    brain = await start_brain(engine.model, server_tls)
    admin_server, stub = await start_admin(engine, brain.fanout)
    good = start_agent("node-1", brain.address, client_tls("node-1"))
    newer: Any = None
    try:
        await eventually(lambda: brain.fanout.node_status("node-1").ready, what="node-1 ready")

        code, details, got = await exchange(brain.address, client_tls("node-2").credentials(), [old_hello("node-2")])
        assert code == grpc.StatusCode.FAILED_PRECONDITION and not got  # not one rule sent to it
        for text in ("node node-2", "stockade-agent/0.1", "sync protocol 1 (IPv4-only model)", "sync protocol 3"):
            assert text in details, details
        assert "upgrade the agent on node node-2" in details
        st = brain.fanout.node_status("node-2")
        assert st.refused == details and not st.ready and not st.connected and st.protocol == 1

        # The nodes view: the admin API, and the CLI's table and JSON over it.
        by_name = {n.name: n for n in (await stub.ListNodes(admin_pb2.ListNodesRequest(), metadata=_md())).nodes}
        assert by_name["node-2"].refused == details and not by_name["node-2"].ready
        assert by_name["node-1"].ready and by_name["node-1"].protocol == PROTOCOL
        table = await cli_nodes(stub, "table", capsys)
        row = next(line for line in table.splitlines() if line.startswith("node-2"))
        assert "REFUSED" in row and "upgrade the agent on node node-2" in row
        assert "READY" in table.splitlines()[0]
        listed = {n["name"]: n for n in json.loads(await cli_nodes(stub, "json", capsys))["items"]}
        assert listed["node-2"]["refused"] == details and listed["node-2"]["ready"] is False
        assert listed["node-1"]["ready"] is True

        # Realization: the policy is applied on node-1 only; node-2 enforces nothing of it.
        real = brain.fanout.policy_realization(NS, "web", engine.policy_nodes(NS, "web"))
        assert real.pending == ("node-2",) and real.nodes_applied == 1
        assert not await brain.fanout.wait_synced(nodes, timeout=0.2, ready=True)
        assert await brain.fanout.wait_synced(["node-1"], timeout=5, ready=True)

        # The node's agent is upgraded: accepted, and the refusal is gone.
        newer = start_agent("node-2", brain.address, client_tls("node-2"))
        await eventually(lambda: brain.fanout.node_status("node-2").ready, what="the upgraded agent")
        assert st.refused is None and st.protocol == PROTOCOL
        assert brain.fanout.policy_realization(NS, "web", nodes).complete
        assert good.status.connects == 1  # the refusal disturbed no one else
    finally:
        if newer is not None:
            await newer.shutdown()
        await good.shutdown()
        await admin_server.stop(None)
        await brain.stop()


def _md() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {TOKEN}")]


class OldBrain:
    """The previous release's brain, as the agent sees it: answers every hello with a snapshot
    whose messages carry no protocol version (and counts what it got)."""

    def __init__(self, model_of: Callable[[str], NodeModel]) -> None:
        self.model_of = model_of
        self.hellos = 0
        self.acks = 0
        self.server: grpc.aio.Server | None = None

    async def _sync(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        async for raw in requests:
            msg = sync_pb2.AgentMessage.FromString(raw)
            if msg.WhichOneof("kind") == "hello":
                self.hellos += 1
                model = self.model_of(msg.hello.node)
                snap = sync_pb2.Snapshot(epoch="old", generation=1, digest=model.digest(), model=model_to_proto(model))
                yield sync_pb2.BrainMessage(snapshot=snap).SerializeToString()
            elif msg.WhichOneof("kind") == "ack":
                self.acks += 1

    async def start(self, tls: ServerTLS, port: int) -> None:
        handler = grpc.method_handlers_generic_handler(
            "stockade.v1.Sync",
            {"Sync": grpc.stream_stream_rpc_method_handler(self._sync)},  # raw bytes both ways
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        assert self.server.add_secure_port(f"127.0.0.1:{port}", tls.credentials()) == port
        await self.server.start()

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)


async def test_the_agent_refuses_an_old_brain_keeps_its_rules_and_retries(  # type: ignore[no-untyped-def]
    server_tls, client_tls, caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="stockade.agent.sync.client")
    cluster = SyntheticCluster(["node-1"], seed=21)
    brain = await start_brain(cluster.model_of, server_tls)
    port = brain.port
    tls: ClientTLS = client_tls("node-1")
    agent = start_agent("node-1", brain.address, tls)
    registry = CollectorRegistry()
    registry.register(SyncCollector(agent.status))
    try:
        await eventually(lambda: agent.dataplane.model == cluster.models["node-1"], what="first sync")
        held, transactions = agent.dataplane.model, agent.dataplane.transactions
        await brain.stop()

        # The old brain would hand it another model: none of it may reach the dataplane.
        other = random_model("node-1", random.Random(5))
        assert other != held
        old = OldBrain(lambda node: other)
        await old.start(server_tls, port)
        try:
            await eventually(lambda: agent.status.brain_refusals >= 3, what="refused, and retried")
            assert old.hellos >= 3 and old.acks == 0
            assert agent.dataplane.model == held and agent.dataplane.transactions == transactions
            st = agent.status
            assert st.brain_refused is not None and not st.connected and st.fail_static
            for text in ("sync protocol 1 (IPv4-only model)", "sync protocol 3", "upgrade the brain"):
                assert text in st.brain_refused
            assert agent.client.backoff.attempt >= 3  # backing off: a refused brain does not reset it
            assert any("refusing the brain" in r.message and "fail static" in r.message for r in caplog.records)
            text = generate_latest(registry).decode()
            assert f"stockade_agent_brain_refused_total {float(st.brain_refusals)}" in text
        finally:
            await old.stop()

        # Upgraded: the agent follows the brain again by itself.
        cluster.churn()
        brain = await start_brain(cluster.model_of, server_tls, port=port)
        await eventually(
            lambda: agent.dataplane.model == cluster.models["node-1"] and agent.status.connected, what="resync"
        )
        assert agent.status.brain_refused is None and agent.status.brain_protocol == PROTOCOL
    finally:
        await agent.shutdown()
        await brain.stop()


async def test_readiness_reaches_the_brain_and_decides_realization(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    nodes = ["node-1"]
    engine = Engine()
    engine.load(**cluster_objects(nodes))
    brain = await start_brain(engine.model, server_tls)
    agent = start_agent("node-1", brain.address, client_tls("node-1"))
    problems: list[str] = ["pods on bridge br0 bypass the rules: net.bridge.bridge-nf-call-iptables is 0"]
    agent.client.readiness = lambda: (not problems, tuple(problems))
    try:
        await eventually(lambda: brain.fanout.node_status("node-1").in_sync, what="sync")
        st = brain.fanout.node_status("node-1")
        assert agent.dataplane.model == engine.model("node-1")
        await eventually(lambda: st.problems == tuple(problems), what="the problems at the brain")
        assert not st.ready and not st.agent_ready and "bridge-nf-call-iptables" in (st.not_ready_reason or "")
        assert brain.fanout.policy_realization(NS, "web", nodes).pending == ("node-1",)
        waiting = asyncio.create_task(brain.fanout.wait_synced(nodes, timeout=30, ready=True))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # acked, but not enforcing: not realized

        problems.clear()  # fixed: the agent says so on the stream, and the wait ends
        await agent.client.status_changed()
        assert await waiting
        assert st.ready and st.agent_ready and st.problems == ()
        assert brain.fanout.policy_realization(NS, "web", nodes).complete
        assert agent.status.connects == 1  # all on one stream
    finally:
        await agent.shutdown()
        await brain.stop()


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (sync_pb2.Status(problems=["x" * 2000]), "longer than 1000"),
        (sync_pb2.Status(problems=[""]), "empty problem"),
        (sync_pb2.Status(problems=["p"] * 100), "more than the limit"),
    ],
    ids=["long", "empty", "many"],
)
async def test_a_malformed_status_ends_its_stream(server_tls, client_tls, status, text) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster(["node-1"], seed=2)
    brain = await start_brain(cluster.model_of, server_tls)
    try:
        hello = sync_pb2.AgentMessage(hello=sync_pb2.Hello(node="node-1", protocol=PROTOCOL))
        frames = [hello.SerializeToString(), sync_pb2.AgentMessage(status=status).SerializeToString()]
        code, details, _ = await exchange(brain.address, client_tls("node-1").credentials(), frames)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "status.problems" in details and text in details
        hello.hello.status.CopyFrom(status)  # and in the hello
        creds = client_tls("node-1").credentials()
        code, details, _ = await exchange(brain.address, creds, [hello.SerializeToString()])
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "hello.status.problems" in details and text in details
    finally:
        await brain.stop()


async def test_the_agent_keeps_its_readiness_within_what_the_brain_accepts(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    from stockade.codec.validate import MAX_PROBLEM_TEXT, MAX_PROBLEMS

    cluster = SyntheticCluster(["node-1"], seed=3)
    brain = await start_brain(cluster.model_of, server_tls)
    agent = start_agent("node-1", brain.address, client_tls("node-1"))
    agent.client.readiness = lambda: (False, tuple(f"{i}: " + "x" * 5000 for i in range(100)))
    try:
        await eventually(lambda: brain.fanout.node_status("node-1").in_sync, what="sync")
        problems = brain.fanout.node_status("node-1").problems
        assert len(problems) == MAX_PROBLEMS and all(len(p) == MAX_PROBLEM_TEXT for p in problems)
        assert agent.status.connects == 1  # the stream was never ended for it
    finally:
        await agent.shutdown()
        await brain.stop()
