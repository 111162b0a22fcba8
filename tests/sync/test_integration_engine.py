"""50 agents and one brain over real gRPC with mTLS, driven by the real Engine under random
churn, with the brain restarted, agents restarted and connections cut at random. In the end
every agent holds exactly its node's model and every ack matches."""

from __future__ import annotations

import asyncio
import random

from sync_churn import ClusterChurn
from sync_helpers import Agent, Brain, TcpProxy, eventually, start_agent, start_brain

from stockade.brain.engine import Engine

NODES = [f"node-{i}" for i in range(50)]


def fresh_engine(churn: ClusterChurn) -> Engine:
    k = churn.by_kind()
    eng = Engine()
    eng.load(namespaces=k["Namespace"], pods=k["Pod"], policies=k["NetworkPolicy"], nodes=k["Node"])
    return eng


def apply_op(engine: Engine, brain: Brain, op: str, arg: object) -> None:
    if op == "upsert":
        obj = arg  # type: ignore[assignment]
        deltas = engine.upsert(obj)  # type: ignore[arg-type]
        meta = obj["metadata"]  # type: ignore[index]
        policy = (meta["namespace"], meta["name"]) if obj["kind"] == "NetworkPolicy" else None  # type: ignore[index]
    else:
        kind, ns, name = arg  # type: ignore[misc]
        deltas = engine.delete(kind, ns, name)
        policy = (ns, name) if kind == "NetworkPolicy" else None
    brain.fanout.on_deltas(deltas, policy=policy)


async def test_fifty_agents_under_churn_and_chaos(server_tls, client_tls) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(2026)
    churn = ClusterChurn(NODES, seed=42, pods=200)
    engine = fresh_engine(churn)
    brain = await start_brain(engine.model, server_tls)
    port = brain.port
    proxy = await TcpProxy(port).start()  # half the agents go through a relay we can cut
    agents: dict[str, Agent] = {
        n: start_agent(n, proxy.address if i % 2 else brain.address, client_tls(n)) for i, n in enumerate(NODES)
    }
    restarts = cuts = 0
    try:
        await eventually(
            lambda: all(a.dataplane.model == engine.model(n) for n, a in agents.items()),
            timeout=30,
            what="initial sync of 50 agents",
        )
        for i in range(400):
            op, arg = churn.step()
            apply_op(engine, brain, op, arg)
            r = rng.random()
            if r < 0.03:  # cut one agent's stream
                rng.choice(list(agents.values())).client.cut()
                cuts += 1
            elif r < 0.04:  # cut every relayed connection at once
                proxy.cut_all()
                cuts += 1
            elif r < 0.05:  # restart an agent with an empty dataplane
                n = rng.choice(NODES)
                await agents[n].shutdown()
                agents[n] = start_agent(n, proxy.address if NODES.index(n) % 2 else brain.address, client_tls(n))
                restarts += 1
            if i == 200:  # restart the brain: a new process computes from the API afresh
                assert brain.fanout.failed_acks == 0
                await brain.stop()
                for _ in range(10):  # the API keeps changing while it is down
                    op, arg = churn.step()
                await asyncio.sleep(0.3)
                engine = fresh_engine(churn)
                brain = await start_brain(engine.model, server_tls, port=port)
            if i % 20 == 0:
                await asyncio.sleep(0.05)
            else:
                await asyncio.sleep(0)

        def settled() -> bool:
            return all(
                a.dataplane.model == engine.model(n) and brain.fanout.node_status(n).in_sync for n, a in agents.items()
            )

        try:
            await eventually(settled, timeout=30, what="every agent in sync and acked")
        except AssertionError:
            for n, a in agents.items():
                st = brain.fanout.node_status(n)
                if not (a.dataplane.model == engine.model(n) and st.in_sync):
                    s = brain.fanout.sessions.get(n)
                    print(
                        "UNSETTLED",
                        n,
                        a.status,
                        st,
                        s and (s.inflight, s.sent_generation, s.end),
                        brain.fanout.feeds[n].generation,
                    )
            raise
        reference = fresh_engine(churn)  # the model a fresh full compute gives
        for n, a in agents.items():
            model = engine.model(n)
            assert a.dataplane.model == model, n
            assert reference.model(n) == model, f"incremental engine differs from a fresh compute on {n}"
            st = brain.fanout.node_status(n)
            assert st.applied_generation == brain.fanout.feeds[n].generation == st.desired_generation
            assert st.applied_digest == model.digest() == a.status.digest
            assert a.status.epoch == brain.fanout.epoch and a.status.generation == st.applied_generation
            assert st.last_error is None and a.dataplane.verify(model) == []
        assert sum(len(engine.model(n).ingress) + len(engine.model(n).egress) for n in NODES) > 0
        assert restarts > 0 and cuts > 0
        assert brain.fanout.failed_acks == 0  # no agent ever had to refuse what it was sent
        # Realization agrees: every policy is applied on every node that needs it.
        report = brain.fanout.realization(engine)
        assert len(report) == sum(k[0] == "NetworkPolicy" for k in churn.objects)
        assert all(r.complete for r in report), [r for r in report if not r.complete]
        assert any(r.nodes_needed > 0 for r in report)
    finally:
        for a in agents.values():
            await a.shutdown()
        await proxy.stop()
        await brain.stop()
