"""Brain and agents over real gRPC with mTLS on loopback: sync, restarts, cuts, failures."""

from __future__ import annotations

import asyncio
import threading

from sync_helpers import SyntheticCluster, TcpProxy, eventually, start_agent, start_brain

from stockade.agent.backends.base import ApplyError, MemoryDataplane
from stockade.model import NodeDelta, NodeModel


def synced(cluster: SyntheticCluster, agents) -> bool:  # type: ignore[no-untyped-def]
    return all(a.dataplane.model == cluster.models[a.node] for a in agents)


async def test_follow_restart_brain_restart_agents_and_cuts(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    nodes = [f"node-{i}" for i in range(5)]
    cluster = SyntheticCluster(nodes, seed=7)
    brain = await start_brain(cluster.model_of, server_tls)
    port = brain.port
    agents = [start_agent(n, brain.address, client_tls(n)) for n in nodes]
    try:
        await eventually(lambda: synced(cluster, agents), what="initial snapshots")
        for _ in range(10):
            brain.fanout.on_deltas(cluster.churn())
            await asyncio.sleep(0)
        await eventually(lambda: synced(cluster, agents), what="deltas")
        await eventually(lambda: all(brain.fanout.node_status(n).in_sync for n in nodes), what="acks")
        assert all(a.status.connects == 1 for a in agents)

        # Cut one agent's stream: it comes back in the same epoch and catches up with steps.
        before = agents[0].dataplane.transactions
        agents[0].client.cut()
        brain.fanout.on_deltas(cluster.churn())
        await eventually(lambda: agents[0].status.connects == 2 and synced(cluster, agents), what="after cut")
        assert agents[0].dataplane.transactions == before + 1  # one delta, no snapshot

        # Brain goes away: agents keep their rules (fail static) and say so.
        held = {a.node: a.dataplane.model for a in agents}
        await brain.stop()
        await eventually(
            lambda: all(a.status.fail_static and not a.status.connected for a in agents), what="fail static"
        )
        assert all(a.dataplane.model == held[a.node] for a in agents)

        # A new brain (new epoch) on the same port: unchanged nodes resume by digest without a
        # transaction; changed ones get a snapshot.
        changed = nodes[:2]
        cluster.churn(changed)
        tx = {a.node: a.dataplane.transactions for a in agents}
        brain = await start_brain(cluster.model_of, server_tls, port=port)
        await eventually(
            lambda: synced(cluster, agents) and all(brain.fanout.node_status(n).in_sync for n in nodes),
            what="resync after brain restart",
        )
        assert all(not a.status.fail_static for a in agents)
        for a in agents:
            assert a.dataplane.transactions == tx[a.node] + (1 if a.node in changed else 0)
            assert a.status.epoch == brain.fanout.epoch

        # An agent restarts with an empty dataplane: it gets a snapshot.
        await agents[3].shutdown()
        agents[3] = start_agent(nodes[3], brain.address, client_tls(nodes[3]))
        await eventually(lambda: synced(cluster, agents), what="restarted agent")
    finally:
        for a in agents:
            await a.shutdown()
        await brain.stop()


class FlakyDataplane(MemoryDataplane):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        if self.fail:
            raise ApplyError("nft: Error: Could not process rule: No such file or directory")
        super().apply_delta(delta, model)

    def apply_snapshot(self, model: NodeModel) -> None:
        if self.fail:
            raise ApplyError("nft: Error: Could not process rule: No such file or directory")
        super().apply_snapshot(model)


async def test_a_failed_apply_is_reported_and_repaired(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster(["node-1"], seed=3)
    brain = await start_brain(cluster.model_of, server_tls, retry_min=0.05, retry_max=0.2)
    dp = FlakyDataplane()
    agent = start_agent("node-1", brain.address, client_tls("node-1"), dp)
    try:
        await eventually(lambda: synced(cluster, [agent]))
        good = dp.model
        dp.fail = True
        brain.fanout.on_deltas(cluster.churn())
        st = brain.fanout.node_status("node-1")
        await eventually(lambda: st.last_error is not None and "No such file" in st.last_error, what="error")
        assert dp.model == good and not st.in_sync  # the kernel keeps what it had
        assert agent.status.last_error is not None
        dp.fail = False
        await eventually(lambda: synced(cluster, [agent]) and st.in_sync, what="repair by snapshot")
        assert st.last_error is None
    finally:
        await agent.shutdown()
        await brain.stop()


class BlockingDataplane(MemoryDataplane):
    """A dataplane stuck in the kernel until released."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        self.gate.wait(30)
        super().apply_delta(delta, model)


async def test_a_stuck_agent_holds_no_one_up_and_catches_up_coalesced(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    from stockade.agent.sync import AgentClient, Applier, Backoff

    nodes = [f"node-{i}" for i in range(4)]
    cluster = SyntheticCluster(nodes, seed=5)
    brain = await start_brain(cluster.model_of, server_tls)
    stuck_dp = BlockingDataplane()
    applier = Applier(nodes[0], stuck_dp, offload=True)  # the kernel call runs in a thread
    client = AgentClient(applier, brain.address, client_tls(nodes[0]), backoff=Backoff(0.05, 0.5))
    stop = asyncio.Event()
    stuck_task = asyncio.create_task(client.run(stop))
    others = [start_agent(n, brain.address, client_tls(n)) for n in nodes[1:]]
    try:
        await eventually(lambda: stuck_dp.model == cluster.models[nodes[0]] and synced(cluster, others))
        stuck_dp.gate.clear()
        for _ in range(50):
            brain.fanout.on_deltas(cluster.churn())
            await asyncio.sleep(0.005)
        await eventually(lambda: synced(cluster, others), what="the others, while one agent is stuck")
        assert stuck_dp.model != cluster.models[nodes[0]]
        tx = stuck_dp.transactions
        stuck_dp.gate.set()
        await eventually(lambda: stuck_dp.model == cluster.models[nodes[0]], what="stuck agent catching up")
        # 50 generations passed while it was stuck: it needed far fewer transactions.
        assert stuck_dp.transactions - tx <= 3
        # the dataplane holds it before the ack is on its way: wait for the ack, not for luck
        await eventually(lambda: brain.fanout.node_status(nodes[0]).applied_generation == 51, what="its ack")
    finally:
        stuck_dp.gate.set()
        stop.set()
        await stuck_task
        for a in others:
            await a.shutdown()
        await brain.stop()


async def test_keepalive_detects_a_half_open_connection(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    cluster = SyntheticCluster(["node-1"], seed=9)
    brain = await start_brain(cluster.model_of, server_tls)  # keepalive: 1s ping, 1s timeout
    proxy = await TcpProxy(brain.port).start()
    from stockade.tls import ClientTLS

    tls = client_tls("node-1")
    tls = ClientTLS(tls.cert, tls.key, tls.ca, server_name="localhost")
    agent = start_agent("node-1", proxy.address, tls)
    try:
        await eventually(lambda: synced(cluster, [agent]) and brain.fanout.node_status("node-1").in_sync)
        proxy.freeze_all()  # packets vanish, no FIN, no RST
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await eventually(
            lambda: not brain.fanout.node_status("node-1").connected or agent.status.connects > 1,
            timeout=15,
            what="half-open connection noticed",
        )
        assert loop.time() - t0 < 10
        # The agent reconnects (through new proxy connections) and keeps in sync.
        brain.fanout.on_deltas(cluster.churn())
        await eventually(
            lambda: synced(cluster, [agent]) and brain.fanout.node_status("node-1").in_sync,
            timeout=15,
            what="resync after half-open",
        )
        assert agent.status.connects >= 2
    finally:
        await agent.shutdown()
        await proxy.stop()
        await brain.stop()
