"""The limits contract end to end: the real Engine, FanOut and SyncService with mTLS, real agents
(the real Applier and codec, with the default limits) over real gRPC on loopback, and the real
`stockade policies` against the real admin API.

A 1,001-port policy and a 10,001-rule policy next to a canary: both are rejected with the limit
named, and every change of the canary reaches every node. Then many accepted policies on one
pod overflow its chain: only the overflowing one is left out, on that node only, and reported;
the canary still reaches every node, and no agent ever refused a message."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from typing import Any

import grpc
from sync_helpers import Agent, Brain, eventually, start_agent, start_brain

from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.engine import Engine
from stockade.model import NodeModel
from stockade.v1 import admin_pb2_grpc

NODES = ["node-1", "node-2", "node-3"]
TOKEN = "t" * 24


def obj_pod(name: str, ip: str, node: str, app: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIP": ip},
    }


def obj_policy(name: str, app: str | None, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    sel = {"matchLabels": {"app": app}} if app else {}
    return {
        "kind": "NetworkPolicy",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": sel, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def canary(port: int) -> dict[str, Any]:
    return obj_policy("canary", None, [{"ports": [{"port": port}]}])  # every pod, every node


def peers(first: int, n: int) -> list[dict[str, Any]]:
    return [
        {"ipBlock": {"cidr": f"10.{200 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32"}} for i in range(first, first + n)
    ]


def ports_held(model: NodeModel | None) -> set[int]:
    if model is None:
        return set()
    return {p.port for c in model.chains.values() for r in c.rules for p in r.ports or () if p.port}


def upsert(engine: Engine, brain: Brain, obj: dict[str, Any]) -> None:
    brain.fanout.on_deltas(engine.upsert(obj), policy=(obj["metadata"]["namespace"], obj["metadata"]["name"]))


async def converged(engine: Engine, agents: dict[str, Agent], port: int, what: str) -> None:
    await eventually(
        lambda: all(
            a.dataplane.model == engine.model(n) and port in ports_held(a.dataplane.model) for n, a in agents.items()
        ),
        timeout=60,
        what=what,
    )


async def stockade_policies(admin_port: int) -> dict[str, Any]:
    """The real CLI in a child process (asynchronously: the admin server runs on this loop)."""
    env = {**os.environ, "STOCKADE_INSECURE": "1"}
    argv = ["policies", "--brain", f"127.0.0.1:{admin_port}", "--token", TOKEN]
    out = {}
    for fmt in ("json", "table"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stockade.cli.main", *argv, "-o", fmt, stdout=PIPE, stderr=PIPE, env=env
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()
        out[fmt] = stdout.decode()
    return {"json": json.loads(out["json"]), "table": out["table"]}


async def test_big_policies_are_rejected_alone_and_a_full_chain_drops_only_the_overflow(  # type: ignore[no-untyped-def]
    server_tls, client_tls
) -> None:
    engine = Engine()
    engine.load(
        namespaces=[{"kind": "Namespace", "metadata": {"name": "shop"}}],
        pods=[obj_pod(f"web-{i}", f"10.9.{i}.2", n, "web") for i, n in enumerate(NODES)]
        + [obj_pod("db", "10.9.0.3", NODES[0], "db")],
        policies=[canary(7001)],
        nodes=[{"metadata": {"name": n}} for n in NODES],
    )
    brain = await start_brain(engine.model, server_tls)
    agents = {n: start_agent(n, brain.address, client_tls(n)) for n in NODES}
    admin = grpc.aio.server()
    admin_pb2_grpc.add_AdminServicer_to_server(
        AdminService(engine, Authorizer({TOKEN: Caller("t", "read")}), objects=list, status=brain.fanout), admin
    )
    admin_port = admin.add_insecure_port("127.0.0.1:0")
    await admin.start()
    try:
        await converged(engine, agents, 7001, "the first canary on every node")

        # 1. Over per-policy limits: rejected alone, with the limit named.
        upsert(engine, brain, obj_policy("many-ports", None, [{"ports": [{"port": 1 + p} for p in range(1001)]}]))
        upsert(engine, brain, obj_policy("many-rules", None, [{"ports": [{"port": 9000}]}] * 10_001))
        upsert(engine, brain, canary(7002))
        await converged(engine, agents, 7002, "the canary's update on every node, next to the big policies")
        rejected = {r.object: f"{r.field}: {r.message}" for r in engine.rejections()}
        assert rejected == {
            "NetworkPolicy shop/many-ports": "spec.ingress[0].ports: 1001 ports, over the limit of 1000 per rule",
            "NetworkPolicy shop/many-rules": "spec.ingress: 10001 rules, over the limit of 1000 per direction",
        }
        assert all(9000 not in ports_held(a.dataplane.model) for a in agents.values())

        # 2. Three accepted policies of 4,000 peers each on the db pod (node-1 only): the third
        # would push its chain over 10,000 rules, so it alone is left out, on node-1 only.
        for k in range(3):
            rules = [{"from": peers(k * 4000 + j * 1000, 1000), "ports": [{"port": 5432}]} for j in range(4)]
            upsert(engine, brain, obj_policy(f"db-{k}", "db", rules))
        upsert(engine, brain, canary(7003))
        await converged(engine, agents, 7003, "the canary's update on every node, next to a full chain")
        assert [(nr.policy, nr.node, nr.limit, nr.pods) for nr in engine.not_realized()] == [
            ("shop/db-2", NODES[0], "rules_per_chain", 1)
        ]
        model = agents[NODES[0]].dataplane.model
        assert model is not None
        db_chain = model.chains[model.ingress["10.9.0.3"]]
        assert len(db_chain.rules) == 1 + 8000  # the canary, db-0 and db-1: enforced
        db2_peer = engine.policy("shop", "db-2").ingress[0].peers[0].sid  # type: ignore[union-attr,index]
        assert db2_peer not in model.sets  # db-2's sets are nowhere on node-1
        assert brain.fanout.failed_acks == 0  # no agent ever refused what the brain sent

        # 3. The operator sees both, with the real `stockade policies`.
        shown = await stockade_policies(admin_port)
        by_name = {p["name"]: p for p in shown["json"]["items"]}
        assert by_name["many-ports"]["rejected"] == rejected["NetworkPolicy shop/many-ports"]
        [gap] = by_name["db-2"]["notRealized"]
        assert gap.startswith(f"{NODES[0]}: its ingress rules would push the pod's chain over the limit of 10000")
        assert by_name["db-1"]["notRealized"] == []
        assert "NOT REALIZED on node-1: its ingress rules would push" in shown["table"]
        assert "REJECTED: spec.ingress[0].ports: 1001 ports, over the limit of 1000 per rule" in shown["table"]

        # 4. Making room realizes it.
        brain.fanout.on_deltas(engine.delete_policy("shop", "db-0"), policy=("shop", "db-0"))
        upsert(engine, brain, canary(7004))
        await converged(engine, agents, 7004, "the canary after room was made")
        assert engine.not_realized() == []
        model = agents[NODES[0]].dataplane.model
        assert model is not None and db2_peer in model.sets
    finally:
        await admin.stop(None)
        for a in agents.values():
            await a.shutdown()
        await brain.stop()


def test_not_realized_metric_and_log(caplog) -> None:  # type: ignore[no-untyped-def]
    """The brain's metric counts (policy, node) pairs by limit (a bounded label), and it logs
    each pair once as it is left out and once as it is back."""
    from prometheus_client import generate_latest

    from stockade.brain.main import Brain, BrainConfig

    brain = Brain(BrainConfig(insecure=True))
    brain.engine.load(
        namespaces=[{"kind": "Namespace", "metadata": {"name": "shop"}}],
        pods=[obj_pod("db", "10.9.0.3", NODES[0], "db")],
        policies=[
            obj_policy(f"db-{k}", "db", [{"from": peers(k * 4000 + j * 1000, 1000)} for j in range(4)])
            for k in range(3)
        ],
    )
    with caplog.at_level("INFO", logger="stockade.brain"):
        brain._report_not_realized()
        brain._report_not_realized()  # nothing new: no second line
    metrics = generate_latest(brain.registry).decode()
    assert 'stockade_brain_policies_not_realized{limit="rules_per_chain"} 1.0' in metrics
    lines = [r.getMessage() for r in caplog.records if "not realized" in r.getMessage()]
    assert lines == [
        "NetworkPolicy shop/db-2: not realized on node node-1: its ingress rules would push the pod's chain "
        "over the limit of 10000 rules per chain (pod shop/db)"
    ]
    brain.engine.delete_policy("shop", "db-0")
    caplog.clear()
    with caplog.at_level("INFO", logger="stockade.brain"):
        brain._report_not_realized()
    assert [r.getMessage() for r in caplog.records] == ["NetworkPolicy shop/db-2: realized again on node node-1"]
    assert "stockade_brain_policies_not_realized{" not in generate_latest(brain.registry).decode()
