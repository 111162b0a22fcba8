"""Soak with agents (issue 17, item 6): the real brain object serving two agents over real gRPC,
each applying to a real nftables table in a network namespace of its own, through policy
create/delete cycles and pod churn. Afterwards each namespace holds exactly the kernel objects
it held before (tables, chains, rules, sets, maps and their elements), the kernel matches the
model, and the agents' own structures are back to their sizes before.
(The 10,000-cycle run with `stockade agent` processes and RSS is `benchmarks/soak.py`.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator

import grpc
import pytest
from soak_churn import bounded, census, cycle, event, grown, started_brain

from stockade.agent import netns as ns
from stockade.agent.backends.nftables import NftablesBackend
from stockade.agent.sync import AgentClient, Applier, Backoff, channel_options
from stockade.brain.main import Brain
from stockade.brain.sync_service import SyncService, server_options

pytestmark = pytest.mark.root

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs on one machine pick distinct slots
NODES = ["node-1", "node-2"]
NETNS = {n: f"st{_SLOT}-soak-{n}" for n in NODES}
WARM_UP, CYCLES = 30, 300  # the warm-up gives every address of the pool its first owner
SYNCED = 30.0  # seconds an agent may take to ack a change (generous: the machine is shared)


def kernel_objects(netns: str) -> dict[str, int]:
    """Everything nftables holds in ``netns``, counted by kind (set and map elements summed)."""
    proc = ns.run(["nft", "-j", "list", "ruleset"], netns, check=True)
    counts = {"table": 0, "chain": 0, "rule": 0, "set": 0, "map": 0, "element": 0}
    for entry in json.loads(proc.stdout)["nftables"]:
        for kind, body in entry.items():
            if kind in counts:
                counts[kind] += 1
            if kind in ("set", "map"):
                counts["element"] += len(body.get("elem", ()))
    return counts


class Stack:
    def __init__(self, brain: Brain, server: grpc.aio.Server, agents: dict[str, AgentClient]) -> None:
        self.brain, self.server, self.agents = brain, server, agents

    async def synced(self) -> None:
        assert await self.brain.fanout.wait_synced(NODES, SYNCED), "an agent did not ack in time"

    async def run(self, cycles: range) -> None:
        for i in cycles:
            for op, obj in cycle(i, NODES):
                await self.brain.on_event(event(op, obj))
                await self.synced()  # each change a delta of its own on the nodes it reaches

    def backend(self, node: str) -> NftablesBackend:
        dp = self.agents[node].applier.dataplane
        assert isinstance(dp, NftablesBackend)
        return dp


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    for name in NETNS.values():
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "add", name], check=True)
    brain = await started_brain(NODES)
    server = grpc.aio.server(options=server_options(1_000, 1_000))
    server.add_generic_rpc_handlers(
        (SyncService(brain.fanout, allow_insecure=True, before_connect=brain.worker.idle).handler(),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    agents, tasks = {}, []
    for node in NODES:
        applier = Applier(node, NftablesBackend(NETNS[node]))
        agents[node] = client = AgentClient(
            applier,
            f"127.0.0.1:{port}",
            None,
            allow_insecure=True,
            backoff=Backoff(0.05, 0.5),
            options=channel_options(keepalive_time_ms=1_000, keepalive_timeout_ms=1_000),
        )
        tasks.append(asyncio.create_task(client.run(stop)))
    try:
        yield Stack(brain, server, agents)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await server.stop(None)
        brain.worker.close()
        for client in agents.values():
            client.applier.dataplane.close()
        for name in NETNS.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def agent_census(stack: Stack) -> dict[str, dict[str, int]]:
    return {n: census(client, "AgentClient") for n, client in stack.agents.items()}


async def test_agents_kernel_and_state_come_back_to_where_they_were(stack: Stack) -> None:
    await stack.synced()
    await stack.run(range(1, WARM_UP + 1))
    kernel = {n: kernel_objects(NETNS[n]) for n in NODES}
    assert all(k["chain"] > 0 and k["element"] > 0 for k in kernel.values())  # the base cluster's rules
    before = agent_census(stack)
    brain_before = census(stack.brain)
    applies = {n: c.status.applies for n, c in stack.agents.items()}
    await stack.run(range(WARM_UP + 1, WARM_UP + CYCLES + 1))
    for n in NODES:
        client = stack.agents[n]
        assert client.status.applies - applies[n] >= CYCLES  # each change reached the node on its own
        assert client.status.failures == 0
        model = stack.brain.engine.model(n)
        assert client.applier.model == model
        assert stack.backend(n).verify(model) == []  # the kernel holds exactly the model
        assert kernel_objects(NETNS[n]) == kernel[n]
        # AgentStatus.history keeps the last 20 link events; nothing else may grow
        assert grown(before[n], census(client, "AgentClient"), {".status.history": 20}) == {}
    assert grown(brain_before, census(stack.brain), bounded(stack.brain, NODES)) == {}
    assert stack.brain.fanout.tracked_policies() == 0 and stack.brain.fanout.failed_acks == 0
