"""A small real brain for the agent tests: the real Engine, FanOut and SyncService on gRPC with
mTLS, plus a DropService that records what agents report.

Imported by the tests for the cluster objects; run as a script (inside the node's network
namespace, so the agent reaches it on loopback) it serves and takes commands on stdin, one JSON
object per line, answering one JSON line each:

    {"op": "upsert", "obj": {...}}              apply a Kubernetes object; {"ok": true}
    {"op": "delete", "kind": K, "namespace": N, "name": X}
    {"op": "drops"}                             {"events": [[src, dst, dport, direction, chain], ...],
                                                 "shed": {...}}

With ``--admin-port`` it also serves the real admin API (plain text on the namespace's loopback,
``--admin-token`` with the read role), so the tests can ask with the real `stockade nodes`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from stockade.brain.admin.auth import Authorizer, Caller
from stockade.brain.admin.service import AdminService
from stockade.brain.engine import Engine
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import serve_sync
from stockade.tls import ServerTLS
from stockade.v1 import admin_pb2_grpc, drops_pb2, drops_pb2_grpc

NODE = "node-a"
NS = "demo"
PODS = {"web": "10.231.1.2", "client": "10.231.2.2", "other": "10.231.3.2"}
WEB_PORT, OTHER_PORT = 26080, 26081


def pod(name: str, app: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": PODS[name]},
    }


def web_policy(port: int) -> dict[str, Any]:
    """Pods labelled app=web accept TCP ``port`` from app=client only."""
    return {
        "kind": "NetworkPolicy",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": "web-allow", "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def cluster() -> dict[str, list[dict[str, Any]]]:
    return {
        "nodes": [{"kind": "Node", "metadata": {"name": NODE}}],
        "namespaces": [{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": NS, "labels": {"team": "a"}}}],
        "pods": [pod("web", "web"), pod("client", "client"), pod("other", "other")],
        "policies": [web_policy(WEB_PORT)],
    }


def engine(changes: Sequence[dict[str, Any]] = ()) -> Engine:
    eng = Engine()
    eng.load(**cluster())
    for obj in changes:
        eng.upsert(obj)
    return eng


class RecordingDrops(drops_pb2_grpc.DropServiceServicer):
    def __init__(self) -> None:
        self.events: list[list[Any]] = []
        self.shed: dict[str, int] = {}
        self.last_seq: dict[tuple[str, str], int] = {}

    async def ReportDrops(
        self, request_iterator: AsyncIterator[drops_pb2.DropBatch], context: grpc.aio.ServicerContext
    ) -> drops_pb2.DropAck:
        last = 0
        async for batch in request_iterator:
            key = (batch.node, batch.instance)
            self.shed.update(batch.shed)
            if batch.seq > self.last_seq.get(key, 0):
                self.last_seq[key] = batch.seq
                for e in batch.events:
                    self.events.append([e.src, e.dst, e.dport, e.direction, e.chain, batch.node])
            last = self.last_seq.get(key, 0)
        return drops_pb2.DropAck(last_seq=last)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--certs", type=Path)
    ap.add_argument("--admin-port", type=int, default=0)
    ap.add_argument("--admin-token", default="")
    args = ap.parse_args()
    eng = engine()
    fanout = FanOut(eng.model)
    drops = RecordingDrops()
    server, port, _ = await serve_sync(
        fanout,
        ServerTLS.from_dir(args.certs) if args.certs else None,
        f"127.0.0.1:{args.port}",
        allow_insecure=args.certs is None,
        keepalive_time_ms=1_000,
        keepalive_timeout_ms=1_000,
        extra_handlers=[drops_handler(drops)],
    )
    admin = None
    if args.admin_port:
        admin = grpc.aio.server()
        auth = Authorizer({args.admin_token: Caller("tests", "read")})
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(eng, auth, objects=list, status=fanout), admin)
        admin.add_insecure_port(f"127.0.0.1:{args.admin_port}")
        await admin.start()
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "upsert":
            fanout.on_deltas(eng.upsert(cmd["obj"]))
            answer: dict[str, Any] = {"ok": True}
        elif cmd["op"] == "delete":
            fanout.on_deltas(eng.delete(cmd["kind"], cmd.get("namespace"), cmd["name"]))
            answer = {"ok": True}
        else:
            answer = {"events": drops.events, "shed": drops.shed}
        print(json.dumps(answer), flush=True)
    await server.stop(None)
    if admin is not None:
        await admin.stop(None)


def drops_handler(servicer: RecordingDrops) -> grpc.GenericRpcHandler:
    # the generated helper registers on a server; build the same handler for extra_handlers
    handler = grpc.method_handlers_generic_handler(
        "stockade.v1.DropService",
        {
            "ReportDrops": grpc.stream_unary_rpc_method_handler(
                servicer.ReportDrops,
                request_deserializer=drops_pb2.DropBatch.FromString,
                response_serializer=drops_pb2.DropAck.SerializeToString,
            )
        },
    )
    return handler


if __name__ == "__main__":
    asyncio.run(main())
