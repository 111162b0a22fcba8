"""Two brains act as one (issue 13 item 4): an agent is served by one brain at a time and moves
to the other when its brain goes away — killed, frozen, shut down — over real gRPC on loopback.

Both brains compile the same models (the same cluster), so the brain an agent moves to answers
its hello with a Resume: the move costs the dataplane nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from brain_process import BrainProcess
from sync_helpers import Brain, SyntheticCluster, TcpProxy, eventually, start_agent, start_brain

from stockade.agent.backends.base import MemoryDataplane
from stockade.agent.sync import AgentClient, Applier, Backoff, SyncCollector, channel_options
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import serve_sync
from stockade.dial import Candidate, order_for
from stockade.lab.apiserver import ApiServer
from stockade.tls import ClientTLS, ServerTLS, issue_brain_cert, issue_node_cert, make_ca
from stockade.tls.reload import ClientTLSFiles

NODE = "node-1"


def serving(brains: list[Brain], node: str = NODE) -> Brain | None:
    """The brain holding the node's stream (None while none does)."""
    holders = [b for b in brains if node in b.fanout.sessions]
    assert len(holders) <= 1, "two brains serve one node"
    return holders[0] if holders else None


def churn(cluster: SyntheticCluster, brains: list[Brain]) -> None:
    """A policy change: every brain's engine sees it (as both watch the same API server)."""
    deltas = cluster.churn()
    for b in brains:
        b.fanout.on_deltas(deltas)


async def two_brains(cluster: SyntheticCluster, tls: ServerTLS | None) -> list[Brain]:
    return [await start_brain(cluster.model_of, tls), await start_brain(cluster.model_of, tls)]


async def test_killed_brain_agent_moves_resumes_follows_and_stays(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster([NODE], seed=11)
    brains = await two_brains(cluster, server_tls)
    agent = start_agent(NODE, ",".join(b.address for b in brains), client_tls(NODE))
    try:
        await eventually(lambda: agent.dataplane.model == cluster.models[NODE], what="first snapshot")
        first = serving(brains)
        assert first is not None and agent.status.brain == first.address
        other = next(b for b in brains if b is not first)
        tx = agent.dataplane.transactions

        await first.stop()  # killed: no grace
        await eventually(lambda: serving([other]) is other and agent.status.connected, what="agent on the other brain")
        st = agent.status
        assert st.brain == other.address and st.brain_switches == 1 and st.connects == 2
        assert agent.dataplane.transactions == tx  # Resume: same digest, no snapshot, no kernel work
        assert any(f"moved to brain {other.address}" in e for e in st.history)
        await eventually(lambda: other.fanout.node_status(NODE).in_sync, what="the new brain's ack")

        # A policy change after the move reaches the agent through the new brain.
        churn(cluster, [other])
        await eventually(lambda: agent.dataplane.model == cluster.models[NODE], what="change after the move")

        # The old brain comes back: the agent stays where it is.
        port = first.port
        back = await start_brain(cluster.model_of, server_tls, port=port)
        brains = [back, other]
        cut_before = st.connects
        await asyncio.sleep(2.0)  # several keepalive rounds: nothing should happen
        assert serving(brains) is other and st.connects == cut_before and st.brain_switches == 1
    finally:
        await agent.shutdown()
        for b in brains:
            await b.stop()


async def test_metrics_name_the_serving_brain(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster([NODE], seed=5)
    brains = await two_brains(cluster, server_tls)
    agent = start_agent(NODE, ",".join(b.address for b in brains), client_tls(NODE))
    try:
        await eventually(lambda: agent.status.connected, what="connected")

        def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for m in SyncCollector(agent.status).collect()
                for s in m.samples
            }

        first = serving(brains)
        assert first is not None
        got = samples()
        assert got[("stockade_agent_brain_info", (("brain", first.address),))] == 1
        assert got[("stockade_agent_brain_switches_total", ())] == 0
        await first.stop()
        other = next(b for b in brains if b is not first)
        await eventually(lambda: serving([other]) is other and agent.status.connected, what="moved")
        got = samples()
        assert [k for k in got if k[0] == "stockade_agent_brain_info"] == [
            ("stockade_agent_brain_info", (("brain", other.address),))
        ]  # only the current one
        assert got[("stockade_agent_brain_switches_total", ())] == 1
        assert got[("stockade_agent_brain_connected", ())] == 1
    finally:
        await agent.shutdown()
        for b in brains:
            await b.stop()


async def test_silent_loss_is_noticed_by_keepalive(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    """The path to the serving brain stops carrying anything and never closes (a host gone)."""
    cluster = SyntheticCluster([NODE], seed=3)
    brains = await two_brains(cluster, server_tls)
    proxy = await TcpProxy(brains[0].port).start()
    # Through the relay, brain 0 is first in the node's order whatever the ports: a node whose
    # own brain it is.
    names = [f"node-{i}" for i in range(60)]
    cands = [Candidate(proxy.address), Candidate(brains[1].address)]
    node = next(n for n in names if order_for(n, cands)[0] == cands[0])
    cluster = SyntheticCluster([node], seed=3)
    for b in brains:
        b.fanout.model_of = cluster.model_of
    agent = start_agent(node, f"{proxy.address},{brains[1].address}", client_tls(node))
    try:
        await eventually(lambda: serving(brains, node) is brains[0] and agent.status.connected, what="on brain 0")
        await eventually(lambda: agent.dataplane.model == cluster.models[node], what="first snapshot")
        tx = agent.dataplane.transactions
        proxy.freeze_all()
        await eventually(lambda: serving(brains[1:], node) is brains[1] and agent.status.connected, 20, "moved")
        assert agent.status.brain == brains[1].address and agent.status.brain_switches == 1
        assert agent.dataplane.transactions == tx
    finally:
        await agent.shutdown()
        await proxy.stop()
        for b in brains:
            await b.stop()


async def test_a_name_resolving_to_two_brains_uses_both(tmp_path: Path) -> None:
    """A headless Service: one name, one port, an address per brain. The brains' certificate
    names only the Service, never an IP: the agent checks it against the name."""
    ca = make_ca()
    brain_pair = issue_brain_cert(ca, ["brains.test"])
    server = ServerTLS(brain_pair.cert, brain_pair.key, ca.cert)
    node_pair = issue_node_cert(ca, NODE)
    client = ClientTLS(node_pair.cert, node_pair.key, ca.cert)
    cluster = SyntheticCluster([NODE], seed=9)
    a = await start_brain(cluster.model_of, server)
    fanout = FanOut(cluster.model_of)
    srv, port, svc = await serve_sync(fanout, server, f"127.0.0.2:{a.port}")
    b = Brain(fanout, srv, port, svc)
    brains = [a, b]
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1", "127.0.0.2"] if host == "brains.test" else []

    applier = Applier(NODE, MemoryDataplane(), offload=False)
    agent = AgentClient(
        applier,
        f"brains.test:{a.port}",
        client,
        backoff=Backoff(0.05, 0.5),
        options=channel_options(1_000, 1_000),
        answer_timeout=5.0,
        resolver=resolver,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await eventually(lambda: agent.status.connected and serving(brains) is not None, what="connected by name")
        first = serving(brains)
        other = b if first is a else a
        assert {c.server_name for c in agent.brains.candidates} == {"brains.test"}
        assert len(agent.brains.candidates) == 2
        await first.stop()  # type: ignore[union-attr]
        await eventually(lambda: serving([other]) is other and agent.status.connected, what="moved to the other IP")
        assert agent.status.brain == f"127.0.0.{2 if other is b else 1}:{a.port}"
        assert lookups.count("brains.test") >= 2  # resolved again at the new round
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        for br in brains:
            await br.stop()


async def test_all_brains_down_backs_off_then_recovers(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster([NODE], seed=2)
    brains = await two_brains(cluster, server_tls)
    ports = [b.port for b in brains]
    agent = start_agent(NODE, ",".join(b.address for b in brains), client_tls(NODE))
    try:
        await eventually(lambda: agent.dataplane.model == cluster.models[NODE], what="first snapshot")
        held = agent.dataplane.model
        for b in brains:
            await b.stop()
        phases: set[str] = set()

        def backing_off() -> bool:
            phases.add(agent.status.phase)
            return "backoff" in phases and agent.client.backoff.attempt >= 2

        await eventually(backing_off, 20, "rounds that found no brain, with backoff")
        assert agent.status.fail_static and not agent.status.connected and agent.status.brain == ""
        assert agent.dataplane.model == held  # fail static
        back = await start_brain(cluster.model_of, server_tls, port=ports[1])
        brains = [back]
        await eventually(lambda: serving(brains) is back and agent.status.connected, 20, "recovered")
        assert agent.client.backoff.attempt == 0  # reset by the accepted stream
    finally:
        await agent.shutdown()
        for b in brains:
            await b.stop()


async def test_renewed_certificate_reconnects_to_the_same_brain(tmp_path: Path) -> None:
    ca = make_ca()
    pair = issue_brain_cert(ca)
    server_tls = ServerTLS(pair.cert, pair.key, ca.cert)
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    issue_node_cert(ca, NODE).write(tmp_path / f"{NODE}.crt", tmp_path / f"{NODE}.key")
    cluster = SyntheticCluster([NODE], seed=4)
    brains = await two_brains(cluster, server_tls)
    tls = ClientTLSFiles.from_files(
        tmp_path / f"{NODE}.crt", tmp_path / f"{NODE}.key", tmp_path / "ca.crt", server_name="localhost", node=NODE
    )
    agent = AgentClient(
        Applier(NODE, MemoryDataplane(), offload=False),
        ",".join(b.address for b in brains),
        tls,
        backoff=Backoff(0.05, 0.5),
        options=channel_options(1_000, 20_000),
        answer_timeout=5.0,
        tls_check_interval=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await eventually(lambda: agent.status.connected, 20, what="connected")
        first = serving(brains)
        assert first is not None
        renewed = issue_node_cert(ca, NODE)
        for suffix, data in ((".key", renewed.key), (".crt", renewed.cert)):  # atomic, as a Secret volume
            tmp = tmp_path / f"{NODE}{suffix}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, tmp_path / f"{NODE}{suffix}")
        await eventually(lambda: agent.renewals == 1 and agent.status.connected, 20, "reconnected with the renewal")
        assert serving(brains) is first and agent.status.brain == first.address
        assert agent.status.brain_switches == 0 and agent.status.connects == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        for b in brains:
            await b.stop()


# -- real brain processes: SIGTERM and SIGSTOP -------------------------------------------------


def cluster_objects(server: ApiServer) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    server.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    for i in range(3):
        server.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]},
                "status": {"podIP": f"10.1.0.{i + 2}", "podIPs": [{"ip": f"10.1.0.{i + 2}"}], "phase": "Running"},
            }
        )
    server.put_object(policy(80))


def policy(port: int) -> dict[str, object]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [{"protocol": "TCP", "port": port}]}],
        },
    }


@pytest.mark.parametrize("how", ["SIGTERM", "SIGSTOP"])
async def test_a_real_brain_stopping_or_freezing_sends_its_agent_to_the_other(tmp_path: Path, how: str) -> None:
    server = ApiServer()
    await server.start("127.0.0.1", 0)
    procs: list[BrainProcess] = []
    agent = None
    try:
        cluster_objects(server)
        kc = server.kubeconfig(tmp_path / "kc")
        procs = [BrainProcess(kc), BrainProcess(kc)]
        ports = [await asyncio.to_thread(p.port) for p in procs]
        agent = start_agent(NODE, ",".join(f"127.0.0.1:{p}" for p in ports), None)
        await eventually(lambda: agent.dataplane.model is not None and agent.status.connected, 60, "first rules")
        assert agent.dataplane.model.chains, "the policy reached the node"
        first = ports.index(int(agent.status.brain.rpartition(":")[2]))
        other = 1 - first
        tx = agent.dataplane.transactions
        os.kill(procs[first].proc.pid, getattr(signal, how))
        await eventually(
            lambda: agent.status.connected and agent.status.brain == f"127.0.0.1:{ports[other]}", 30, "moved"
        )
        assert agent.status.brain_switches == 1
        assert agent.dataplane.transactions == tx  # the other brain compiled the same model: Resume
        if how == "SIGTERM":
            assert await asyncio.to_thread(procs[first].proc.wait, 30) == 0
            assert "brain shutting down: reconnect to another brain" in agent.client._left_because
        # A change made now reaches the node through the other brain.
        before = agent.dataplane.model
        server.put_object(policy(8080))
        await eventually(lambda: agent.dataplane.model != before, 30, "the change through the other brain")
    finally:
        if agent is not None:
            await agent.shutdown()
        for p in procs:
            p.kill()
        await server.stop()
