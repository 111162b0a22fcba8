"""Soak, in process (issue 17, item 6): the real brain (its event path, engine and fan-out) under
a few hundred policy create/delete cycles and pod churn, its nodes' sessions acking everything.
Once the churn is over, every structure the brain holds is back to its size before: a deleted
policy, pod or IP leaves nothing behind, and the fan-out forgets each deleted policy's marks.
(The 10,000-cycle run with real agents and RSS is `benchmarks/soak.py`.)"""

from __future__ import annotations

from soak_churn import bounded, census, cycle, event, grown, policy, started_brain

from stockade.brain.fanout import FanOut
from stockade.brain.fanout.session import Session
from stockade.brain.main import Brain
from stockade.codec import delta_from_proto, model_from_proto
from stockade.model import NodeModel, apply
from stockade.v1 import sync_pb2

NODES = ["node-1", "node-2"]
CYCLES = 300
WARM_UP = 30  # cycles: the IP history fills up to its per-address depth, the caches warm


class Agents:
    """Each node's session, acked as an agent would: replay what comes, ack it with its digest."""

    def __init__(self, fanout: FanOut) -> None:
        self.fanout = fanout
        self.sessions: dict[str, Session] = {}
        self.held: dict[str, NodeModel] = {}

    def connect(self, node: str) -> None:
        self.sessions[node], _ = self.fanout.connect(sync_pb2.Hello(node=node))

    async def drain(self) -> None:
        for node, session in self.sessions.items():
            while (msg := session.next_message()) is not None:
                self.held[node] = replay(self.held.get(node), msg)
                gen = getattr(msg, str(msg.WhichOneof("kind"))).generation
                await self.fanout.ack(session, sync_pb2.Ack(generation=gen, ok=True, digest=self.held[node].digest()))


def replay(model: NodeModel | None, msg: sync_pb2.BrainMessage) -> NodeModel:
    kind = msg.WhichOneof("kind")
    if kind == "snapshot":
        return model_from_proto(msg.snapshot.model)
    assert model is not None
    if kind == "deltas":
        for step in msg.deltas.steps:
            model = apply(model, delta_from_proto(step))
    return model


async def run(brain: Brain, agents: Agents, cycles: range) -> None:
    for i in cycles:
        for op, obj in cycle(i, NODES):
            await brain.on_event(event(op, obj))
            await agents.drain()


async def test_churn_leaves_the_brain_as_it_found_it() -> None:
    brain = await started_brain(NODES)
    try:
        agents = Agents(brain.fanout)
        for n in NODES:
            agents.connect(n)
        await agents.drain()
        await run(brain, agents, range(1, WARM_UP + 1))
        before = census(brain)
        tracked = brain.fanout.tracked_policies()
        for i in range(WARM_UP + 1, CYCLES + 1):
            pol = policy(i)
            meta = pol["metadata"]
            for op, obj in cycle(i, NODES):
                await brain.on_event(event(op, obj))
                if obj is pol and op == "upsert" and brain.engine.policy(meta["namespace"], meta["name"]):
                    # accepted: realization tracks the nodes its change reached
                    assert brain.fanout.tracked_policies() == tracked + 1
                await agents.drain()
            assert brain.fanout.tracked_policies() == tracked  # deleted: forgotten
        after = census(brain)
        assert grown(before, after, bounded(brain, NODES)) == {}
        assert brain.engine_errors == 0 and brain.fanout.failed_acks == 0
        for n in NODES:  # and what the nodes hold is still exactly the brain's models
            assert agents.held[n] == brain.engine.model(n)
        assert all(r.complete for r in brain.fanout.realization(brain.engine))
    finally:
        brain.worker.close()


async def test_a_policy_made_again_under_its_name_is_realized_by_its_own_change() -> None:
    brain = await started_brain(NODES)
    try:
        agents = Agents(brain.fanout)
        for n in NODES:
            agents.connect(n)
        await agents.drain()
        pol = policy(8, name="again")  # selects app=web pods, on both nodes
        ns, name = pol["metadata"]["namespace"], "again"

        def realized() -> tuple[int, tuple[str, ...]]:
            r = brain.fanout.policy_realization(ns, name, brain.engine.policy_nodes(ns, name))
            return r.nodes_applied, r.pending

        await brain.on_event(event("upsert", pol))
        assert realized() == (0, tuple(NODES))
        await agents.drain()
        assert realized() == (2, ())
        await brain.on_event(event("delete", pol))
        assert brain.engine.policy(ns, name) is None and brain.fanout.tracked_policies() == 0
        await agents.drain()
        # Made again: pending on every node until each acks the generation carrying it anew.
        await brain.on_event(event("upsert", pol))
        assert realized() == (0, tuple(NODES))
        first = agents.sessions[NODES[0]]
        msg = first.next_message()
        assert msg is not None
        agents.held[NODES[0]] = replay(agents.held[NODES[0]], msg)
        await brain.fanout.ack(
            first, sync_pb2.Ack(generation=msg.deltas.generation, ok=True, digest=agents.held[NODES[0]].digest())
        )
        assert realized() == (1, (NODES[1],))
        await agents.drain()
        assert realized() == (2, ())
        # Refused on an update (malformed): the engine holds it no more, nor does realization.
        await brain.on_event(event("upsert", policy(7, name=name, namespace=ns)))
        assert brain.engine.policy(ns, name) is None and brain.fanout.tracked_policies() == 0
    finally:
        brain.worker.close()
