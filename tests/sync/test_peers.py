"""Two whole brains (one lab API server, one real redis-server) with real agents over gRPC split
across them: each brain answers for every node, through the status its peer shares in Redis
(services/brain/stockade/brain/fanout/peers.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from drops.conftest import RedisProcess
from redis.asyncio import Redis
from sync_helpers import Agent, eventually, start_agent

from stockade.brain.fanout import FanOut
from stockade.brain.fanout.peers import DEFAULT_PREFIX, PeerSync
from stockade.brain.fanout.peerview import PeerView, decode, encode
from stockade.brain.fanout.status import NodeStatus
from stockade.brain.main import Brain, BrainConfig
from stockade.cli.commands import admin as admin_cmd
from stockade.codec.validate import ValidationError
from stockade.lab.apiserver import ApiServer
from stockade.model import NodeModel
from stockade.v1 import admin_pb2, admin_pb2_grpc

TOKEN = "reader-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
NODES = ["node-1", "node-2", "node-3", "node-4"]
ON_A, ON_B = NODES[:2], NODES[2:]


def objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}]
    for i, node in enumerate(NODES, 1):
        out.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        ip = f"10.60.{i}.2"
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "namespace": "demo", "labels": {"app": "web"}},
                "spec": {"nodeName": node, "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
        )
    out.append(policy("deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    return out


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    rp = RedisProcess(tmp_path)
    rp.start()
    yield rp
    rp.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start("127.0.0.1", 0)
    for obj in objects():
        server.put_object(obj)
    yield server
    await server.stop()


class Rig:
    """Brains on one API server; each test stops what it started."""

    def __init__(self, api: ApiServer, tmp: Path, redis_url: str | None) -> None:
        self.api, self.tmp, self.redis_url = api, tmp, redis_url
        self.tokens = tmp / "tokens.json"
        self.tokens.write_text(
            json.dumps(
                {
                    "tokens": [
                        {"name": "reader", "token": TOKEN, "role": "read"},
                        {"name": "ops", "token": ADMIN_TOKEN, "role": "admin"},
                    ]
                }
            )
        )
        self.brains: list[Brain] = []
        self.agents: list[Agent] = []

    async def brain(self) -> Brain:
        b = Brain(
            BrainConfig(
                kubeconfig=str(self.api.kubeconfig(self.tmp / f"kc{len(self.brains)}")),
                listen="127.0.0.1:0",
                admin_listen="127.0.0.1:0",
                admin_mtls_listen=None,
                http="127.0.0.1:0",
                insecure=True,
                admin_tokens_file=str(self.tokens),
                redis_url=self.redis_url,
                remove_startup_taints=False,
                events=False,
            )
        )
        self.brains.append(b)
        await asyncio.wait_for(b.start(), 30)
        return b

    def agent(self, node: str, brain: Brain) -> Agent:
        a = start_agent(node, f"127.0.0.1:{brain.grpc_port}", None)
        self.agents.append(a)
        return a

    async def close(self) -> None:
        for a in self.agents:
            await a.shutdown()
        for b in self.brains:
            await b.stop()


@pytest.fixture
async def rig(api: ApiServer, tmp_path: Path, redis_proc: RedisProcess) -> AsyncIterator[Rig]:
    r = Rig(api, tmp_path, redis_proc.url)
    try:
        yield r
    finally:
        await r.close()


async def two_brains(rig: Rig) -> tuple[Brain, Brain]:
    a, b = await rig.brain(), await rig.brain()
    for node in ON_A:
        rig.agent(node, a)
    for node in ON_B:
        rig.agent(node, b)
    return a, b


def get(brain: Brain, path: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{brain.http_port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def cli_nodes(brain: Brain, capsys: pytest.CaptureFixture[str], output: str = "json") -> Any:
    """What `stockade nodes` prints: its real code over the brain's real admin port."""
    capsys.readouterr()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{brain.admin_port}") as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        md = [("authorization", f"Bearer {TOKEN}")]
        assert await admin_cmd._nodes(stub, md, 10.0, argparse.Namespace(output=output)) == 0
    out = capsys.readouterr().out
    return json.loads(out) if output == "json" else out


def serving(brain: Brain, nodes: list[str], by: Brain) -> bool:
    """Every node is connected, in sync and ready in ``brain``'s view, served by brain ``by``."""
    return all(
        (st := brain.fanout.node_view(n)).connected and st.brain == by.fanout.brain_id and st.in_sync and st.ready
        for n in nodes
    )


def realized_on(brain: Brain, name: str) -> tuple[int, tuple[str, ...]]:
    real = brain.fanout.policy_realization("demo", name, brain.engine.policy_nodes("demo", name))
    return real.nodes_applied, real.pending


async def test_each_brain_answers_for_every_node(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = await two_brains(rig)
    assert a.fanout.brain_id != b.fanout.brain_id
    for brain in (a, b):
        await eventually(
            lambda brain=brain: serving(brain, ON_A, a) and serving(brain, ON_B, b),  # type: ignore[misc]
            timeout=30,
            what="every node served, as each brain sees it",
        )
        assert realized_on(brain, "deny") == (4, ())
    # Metrics stay first-hand: 1 only on the brain holding the stream (alerts take max by node).
    assert set(a.fanout.sessions) == set(ON_A) and set(b.fanout.sessions) == set(ON_B)

    # `stockade nodes` on either brain: every node, connected, with the brain serving it.
    for brain in (a, b):
        answer = await cli_nodes(brain, capsys)
        rows = {n["name"]: n for n in answer["items"]}
        assert sorted(rows) == NODES
        for node in NODES:
            assert rows[node]["connected"] is True and rows[node]["ready"] is True
            owner = a if node in ON_A else b
            assert rows[node]["brain"] == owner.fanout.brain_id
        assert "every brain's agents" in answer["view"]
    table = await cli_nodes(a, capsys, "table")
    assert "BRAIN" in table.splitlines()[0] and b.fanout.brain_id in table

    # Only the brain holding a node's stream can resend its model; the other names that brain.
    admin = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    for brain, other in ((a, b), (b, a)):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{brain.admin_port}") as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            theirs = ON_B[0] if brain is a else ON_A[0]
            resp = await stub.Resync(admin_pb2.ResyncRequest(node=theirs), metadata=admin, timeout=10)
            assert not resp.ok and other.fanout.brain_id in resp.message, resp.message
            ours = ON_A[0] if brain is a else ON_B[0]
            assert (await stub.Resync(admin_pb2.ResyncRequest(node=ours), metadata=admin, timeout=10)).ok

    # A policy change: /v1/realized on either brain waits for all four nodes, two of them the peer's.
    put = rig.api.put_object(policy("allow-web", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    rv = put["metadata"]["resourceVersion"]
    answers = await asyncio.gather(
        *(asyncio.to_thread(get, brain, f"/v1/realized?NetworkPolicy={rv}&timeout=60") for brain in (a, b))
    )
    for code, body in answers:
        assert code == 200 and body["realized"] is True and body["pending"] == [], body
    for brain in (a, b):
        assert realized_on(brain, "allow-web") == (4, ())
        # Both brains compiled the same models: that is what makes the peers' digests comparable.
        for node in NODES:
            assert brain.fanout.feed(node).digest() == rig.agents[NODES.index(node)].dataplane.model.digest()


async def test_a_dead_brains_nodes_expire_until_they_reconnect(
    rig: Rig, redis_proc: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await two_brains(rig)
    await eventually(lambda: serving(a, ON_B, b), timeout=30, what="brain A to see brain B's nodes")
    # Brain B dies: it publishes nothing more and removes nothing (as after SIGKILL).
    assert b.peers is not None
    key = b.peers.brain_key(b.peers.brain)
    b.peers._stopped = True
    assert b.peers._task is not None
    b.peers._task.cancel()
    b.peers = None
    redis = Redis.from_url(redis_proc.url)
    try:
        assert 0 < await redis.pttl(key) <= 5000  # still there: it expires, nobody deletes it
        for agent in rig.agents[2:]:
            await agent.shutdown()
        await b.stop()
        await eventually(
            lambda: not any(a.fanout.node_view(n).connected for n in ON_B), timeout=30, what="B's entries to expire"
        )
        assert await redis.exists(key) == 0
    finally:
        await redis.aclose()
    assert realized_on(a, "deny") == (2, tuple(ON_B))
    code, body = await asyncio.to_thread(get, a, "/v1/realized?timeout=0.5")
    assert code == 504 and body["pending"] == ON_B
    rows = {n["name"]: n for n in (await cli_nodes(a, capsys))["items"]}
    assert [rows[n]["connected"] for n in ON_B] == [False, False]
    assert all(rows[n]["brain"] == "" for n in ON_B)

    # They reconnect to brain A (an agent's failover): counted again.
    for node in ON_B:
        rig.agent(node, a)
    await eventually(lambda: serving(a, NODES, a), timeout=30, what="B's nodes back, on brain A")
    assert realized_on(a, "deny") == (4, ())


async def test_a_stopping_brain_takes_its_entries_out_at_once(rig: Rig, redis_proc: RedisProcess) -> None:
    a, b = await two_brains(rig)
    await eventually(lambda: serving(a, ON_B, b), timeout=30, what="brain A to see brain B's nodes")
    # An agent leaving brain B leaves A's view at once (B says so), not at the TTL.
    await rig.agents[3].shutdown()
    await eventually(lambda: not a.fanout.node_view("node-4").connected, timeout=4, what="node-4 to leave A's view")
    assert serving(a, ["node-3"], b)
    assert b.peers is not None
    key = b.peers.brain_key(b.peers.brain)
    await b.stop()
    redis = Redis.from_url(redis_proc.url)
    try:
        assert await redis.exists(key) == 0
        assert b.fanout.brain_id.encode() not in await redis.zrange(f"{DEFAULT_PREFIX}:brains", 0, -1)
    finally:
        await redis.aclose()
    await eventually(
        lambda: not any(a.fanout.node_view(n).connected for n in ON_B), timeout=10, what="B's nodes to leave A's view"
    )


async def test_malformed_peer_entries_are_ignored(
    rig: Rig, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    a = await rig.brain()
    rig.agent("node-1", a)
    await eventually(lambda: serving(a, ["node-1"], a), timeout=30, what="node-1 on brain A")
    await a.worker.idle()
    digest = a.fanout.feed("node-3").digest()
    good = NodeStatus("node-3", applied_generation=7, applied_digest=digest, agent_ready=True, backend="nftables")
    stale = NodeStatus("node-2", applied_generation=3, applied_digest="ab" * 32, agent_ready=True)
    caplog.set_level(logging.WARNING, logger="stockade.brain.fanout.peers")
    redis = Redis.from_url(redis_proc.url)
    try:
        key = f"{DEFAULT_PREFIX}:brain:rogue-brain-0001"
        await redis.hset(
            key,
            mapping={
                "node-3": encode(good, 1.0),  # valid, holding what brain A wants: counts
                "node-2": encode(stale, 1.0),  # valid, holding another model: connected, not applied
                "node-4": "{not json",
                "Bad_Node!": encode(good, 1.0),
                "node-1": json.dumps({"p": [123]}),  # served by A anyway; and malformed
                "node-5": "x" * 100_000,
            },
        )
        await redis.pexpire(key, 30_000)
        await redis.zadd(f"{DEFAULT_PREFIX}:brains", {"rogue-brain-0001": 1.0, "not a brain id!": 2.0})
        await eventually(lambda: a.fanout.node_view("node-3").connected, timeout=10, what="the valid entry read")
        n3, n2 = a.fanout.node_view("node-3"), a.fanout.node_view("node-2")
        assert n3.brain == "rogue-brain-0001" and n3.in_sync and n3.ready and n3.backend == "nftables"
        assert n2.connected and not n2.in_sync and not n2.ready
        assert not a.fanout.node_view("node-4").connected
        assert a.fanout.node_view("node-1").brain == a.fanout.brain_id  # its own stream comes first
        assert realized_on(a, "deny") == (2, ("node-2", "node-4"))
        logged = caplog.text
        for why in ("node-4", "Bad_Node", "node-1", "node-5", "not a brain id"):
            assert why in logged
        assert a.peers is not None and a.peers._task is not None and not a.peers._task.done()
        # Each malformed entry is logged once, not at every poll.
        await asyncio.sleep(1.5)
        assert caplog.text.count("entry for node node-4") == 1
    finally:
        await redis.aclose()


async def test_a_redis_outage_keeps_the_local_view(
    rig: Rig, redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await two_brains(rig)
    await eventually(lambda: serving(a, ON_B, b), timeout=30, what="brain A to see brain B's nodes")
    caplog.set_level(logging.INFO, logger="stockade.brain.fanout.peers")
    redis_proc.stop()
    # The peers' nodes leave the view (nobody can vouch for them); the brain's own stay, and work.
    await eventually(
        lambda: not any(a.fanout.node_view(n).connected for n in ON_B), timeout=30, what="B's nodes to leave A's view"
    )
    assert serving(a, ON_A, a) and serving(b, ON_B, b)
    put = rig.api.put_object(policy("during-outage", {"podSelector": {}, "policyTypes": ["Egress"]}))
    rv = put["metadata"]["resourceVersion"]
    code, body = await asyncio.to_thread(get, b, f"/v1/realized?NetworkPolicy={rv}&timeout=1")
    assert code == 504 and body["pending"] == ON_A  # B's own nodes realized it; A's are unknown to B
    assert realized_on(b, "during-outage") == (2, tuple(ON_A))
    # once per brain: each logs it at its own next round, B's not necessarily by now
    await eventually(lambda: caplog.text.count("peer status: Redis unreachable") >= 2, what="both brains to say so")
    assert caplog.text.count("peer status: Redis unreachable") == 2
    redis_proc.start()
    for brain, other, theirs in ((a, b, ON_B), (b, a, ON_A)):
        await eventually(
            lambda brain=brain, other=other, theirs=theirs: serving(brain, theirs, other),  # type: ignore[misc]
            timeout=30,
            what="the peers' nodes back after the outage",
        )
    assert "Redis reachable again" in caplog.text
    assert realized_on(b, "during-outage") == (4, ())


async def test_without_redis_each_brain_sees_its_own_agents(
    api: ApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = Rig(api, tmp_path, None)
    try:
        a, b = await two_brains(rig)
        assert a.peers is None and b.peers is None
        await eventually(lambda: serving(a, ON_A, a) and serving(b, ON_B, b), timeout=30, what="agents on each")
        await asyncio.sleep(1.0)  # what a peer poll would have brought by now
        assert not any(a.fanout.node_view(n).connected for n in ON_B)
        assert realized_on(a, "deny") == (2, tuple(ON_B))
        answer = await cli_nodes(a, capsys)
        assert "this brain's agents only" in answer["view"]
        rows = {n["name"]: n for n in answer["items"]}
        assert rows["node-1"]["brain"] == a.fanout.brain_id and rows["node-3"]["connected"] is False
    finally:
        await rig.close()


async def test_reads_follow_the_change_log_and_recover_from_gaps(redis_proc: RedisProcess) -> None:
    """Two `PeerSync`s over fan-outs whose sessions stand in for agents' streams."""

    def fanout(nodes: list[str]) -> FanOut:
        fo = FanOut(lambda n: NodeModel(n))
        for n in nodes:
            fo.sessions[n] = SimpleNamespace(end=None)  # type: ignore[assignment]
            fo.status[n] = NodeStatus(n, connected=True, applied_generation=1, agent_ready=True)
        return fo

    x = PeerSync(Redis.from_url(redis_proc.url), fanout(["node-1", "node-2", "node-3"]), brain="brain-x-1")
    y = PeerSync(Redis.from_url(redis_proc.url), fanout([]), brain="brain-y-2")
    full_reads = 0
    take = y._take

    def counting(brain: str, fields: Any, whole: bool = False) -> None:
        nonlocal full_reads
        full_reads += whole
        take(brain, fields, whole)

    y._take = counting  # type: ignore[method-assign]

    def seen() -> dict[str, int]:
        return {n: e.applied_generation for n in sorted(y.view.nodes()) if (e := y.view.entry(n)) is not None}

    try:
        await x.publish()
        await y.read_peers()
        assert seen() == {"node-1": 1, "node-2": 1, "node-3": 1} and full_reads == 1
        # Changes and a disconnect: read from the log, field by field.
        x.fanout.status["node-1"].applied_generation = 2
        del x.fanout.sessions["node-3"]
        x.changed("node-1")
        x.changed("node-3")
        await x.publish_changes()
        x.fanout.status["node-2"].applied_generation = 5
        x.changed("node-2")
        await x.publish_changes()
        await y.read_peers()
        assert seen() == {"node-1": 2, "node-2": 5} and full_reads == 1
        await y.read_peers()  # nothing new: only the revision is read
        assert full_reads == 1
        # The log lost what y had not read (trimmed): y reads the hash whole.
        x.fanout.status["node-1"].applied_generation = 3
        x.changed("node-1")
        await x.publish_changes()
        await x.client.delete(x.changes_key(x.brain))
        x.fanout.status["node-2"].applied_generation = 6
        x.changed("node-2")
        await x.publish_changes()
        await y.read_peers()
        assert seen() == {"node-1": 3, "node-2": 6} and full_reads == 2
        # A whole rewrite (after an outage) restarts the log: y reads it whole again.
        x.fanout.sessions["node-3"] = SimpleNamespace(end=None)  # type: ignore[assignment]
        x._rewrite = True
        await x.publish()
        await y.read_peers()
        assert seen() == {"node-1": 3, "node-2": 6, "node-3": 1} and full_reads == 3
        # x stops: its entries are gone from y's next read.
        await x.close()
        await y.read_peers()
        assert seen() == {}
    finally:
        await y.close()


# ---- entries from Redis are input ------------------------------------------------------------


def test_decode_checks_every_field() -> None:
    st = NodeStatus("node-1", applied_generation=4, applied_digest="ab" * 32, agent_ready=True, problems=("p",))
    e = decode("brain-1-abcdef12", "node-1", encode(st, 12.5))
    assert (e.digest, e.applied_generation, e.problems, e.since, e.agent_ready) == ("ab" * 32, 4, ("p",), 12.5, True)
    bad = [
        ("brain-1", "node_1", "{}"),
        ("-brain", "node-1", "{}"),
        ("brain-1", "node-1", "[]"),
        ("brain-1", "node-1", '{"d": "XYZ"}'),
        ("brain-1", "node-1", '{"g": -1}'),
        ("brain-1", "node-1", '{"g": 1.5}'),
        ("brain-1", "node-1", '{"s": NaN}'),
        ("brain-1", "node-1", '{"r": "yes"}'),
        ("brain-1", "node-1", json.dumps({"p": ["x"] * 33})),
        ("brain-1", "node-1", json.dumps({"v": "v" * 300})),
        ("brain-1", "node-1", b"\xff\xfe"),
    ]
    for brain, node, raw in bad:
        with pytest.raises(ValidationError):
            decode(brain, node, raw)


def test_the_view_forgets_what_it_cannot_refresh() -> None:
    now = [0.0]
    view = PeerView(ttl=5.0, clock=lambda: now[0])
    e1 = decode("b1", "node-1", encode(NodeStatus("node-1"), 1.0))
    e2 = decode("b2", "node-1", encode(NodeStatus("node-1"), 2.0))
    assert view.replace({"b1": {"node-1": e1}, "b2": {"node-1": e2}}) == {"node-1"}
    assert view.entry("node-1") == e2  # the newer claim
    assert view.replace({"b1": {"node-1": e1}, "b2": {"node-1": e2}}) == set()
    now[0] = 6.0
    assert view.entry("node-1") is None and view.nodes() == set()
