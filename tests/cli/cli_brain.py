"""A real brain for the CLI's tests: the lab's API server with a small cluster, the brain over TLS
with tokens, in an event loop of its own thread so that tests run the real `stockade` in a
subprocess synchronously; and the same cluster as manifests for the offline tools."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from stockade.brain.main import Brain, BrainConfig
from stockade.codec.version import PROTOCOL
from stockade.lab.apiserver import ApiServer
from stockade.tls import write_bundle
from stockade.v1 import sync_pb2

ROOT = Path(__file__).resolve().parents[2]
ENV_PATH = ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli"))
SOCK_SHOP = ROOT / "examples" / "sock-shop"
READ, ADMIN = "exit-reader-token-0123456789", "exit-admin-token-0123456789"

OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"zone": "a"}}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-2", "labels": {"zone": "b", "gpu": "yes"}}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "locked"}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "open"}},
    *(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": ip},
        }
        for ns, name, ip in (
            ("locked", "a", "10.241.0.2"),
            ("locked", "b", "10.241.0.3"),
            ("open", "a", "10.241.0.4"),
            ("open", "b", "10.241.0.5"),
        )
    ),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "locked", "labels": {"team": "sec", "tier": "base"}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    },
    {  # selects no pod: changes no verdict
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "none", "namespace": "open", "labels": {"team": "net"}},
        "spec": {"podSelector": {"matchLabels": {"app": "nothing"}}, "policyTypes": ["Ingress"]},
    },
]

GOOD_POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-up, namespace: locked}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{}]
"""
# The same cluster as manifests, for the offline tools (addresses assigned by them).
CLUSTER = "---\n".join(
    yaml.safe_dump({k: v for k, v in o.items() if k != "status"}) for o in OBJECTS if o["kind"] != "Node"
)
BAD_YAML = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: [unclosed\n"
NOT_AN_OBJECT = "- just\n- a list\n"
REJECTED_POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-port, namespace: open}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 70000}]}]
"""


class _Loop:
    """An event loop in a thread, so the brain serves while the tests run the CLI synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Lab:
    address: str
    mtls_address: str
    certs: Path
    files: Path
    dead: str  # bound, never listening: connections are refused
    sync_port: int
    loop: _Loop
    api: ApiServer
    http_port: int = 0  # the brain's HTTP port (/v1/realized)
    kubeconfig: Path | None = None  # the API server's, as the brain uses it

    def put(self, obj: dict[str, Any]) -> None:
        """Create or change an object in the API server (from its loop's thread)."""

        async def put() -> None:
            self.api.put_object(obj)

        self.loop.run(put())


def stockade(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env={"PYTHONPATH": ENV_PATH, "PATH": "/usr/bin:/bin", "STOCKADE_LAB_DIR": "/nonexistent"},
    )


@contextmanager
def running_lab(tmp: Path, api_token: str | None = None) -> Iterator[Lab]:
    """A brain (TLS, a reader's and an admin's token) over the lab's API server with OBJECTS
    (``api_token``: the API server's own, which the brain's kubeconfig then carries; the server
    then serves TLS, as kubectl sends a token over TLS only)."""
    certs = tmp / "certs"
    write_bundle(certs, ["node-1"])
    tokens = tmp / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "viewer", "token": READ, "role": "read"},
                    {"name": "ops", "token": ADMIN, "role": "admin"},
                ]
            }
        )
    )
    files = tmp / "files"
    files.mkdir()
    for name, text in (
        ("good.yaml", GOOD_POLICY),
        ("cluster.yaml", CLUSTER),
        ("bad.yaml", BAD_YAML),
        ("list.yaml", NOT_AN_OBJECT),
        ("rejected.yaml", REJECTED_POLICY),
    ):
        (files / name).write_text(text)
    (files / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    loop = _Loop()
    server = ApiServer(token=api_token, tls=api_token is not None)
    loop.run(server.start("127.0.0.1", 0))
    for obj in OBJECTS:
        server.put_object(obj)
    kubeconfig = server.kubeconfig(tmp / "kc")
    brain = Brain(
        BrainConfig(
            kubeconfig=str(kubeconfig),
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            admin_mtls_listen="127.0.0.1:0",
            http="127.0.0.1:0",
            tls_cert=str(certs / "brain.crt"),
            tls_key=str(certs / "brain.key"),
            tls_ca=str(certs / "ca.crt"),
            admin_tokens_file=str(tokens),
        )
    )
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        loop.run(brain.start())
        found = Lab(
            address=f"127.0.0.1:{brain.admin_port}",
            mtls_address=f"127.0.0.1:{brain.admin_mtls_port}",
            certs=certs,
            files=files,
            dead=f"127.0.0.1:{dead.getsockname()[1]}",
            sync_port=brain.grpc_port,
            loop=loop,
            api=server,
            http_port=brain.http_port,
            kubeconfig=kubeconfig,
        )
        # The brain answers once it has read the cluster: wait for the policy to be compiled.
        deadline = time.monotonic() + 60
        while True:
            out = stockade("policies", *tls(found), "--token", READ, "-o", "json")
            if out.returncode == 0 and "deny" in out.stdout:
                break
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.2)
        yield found
    finally:
        dead.close()
        loop.run(brain.stop())
        loop.run(server.stop())
        loop.close()


def tls(lab: Lab, address: str | None = None) -> list[str]:
    return ["--brain", address or lab.address, "--ca", str(lab.certs / "ca.crt"), "--server-name", "localhost"]


def node_credentials(lab: Lab) -> grpc.ChannelCredentials:
    """node-1's agent's TLS credentials (its client certificate), for the brain's sync port."""
    return grpc.ssl_channel_credentials(
        root_certificates=(lab.certs / "ca.crt").read_bytes(),
        private_key=(lab.certs / "nodes/node-1.key").read_bytes(),
        certificate_chain=(lab.certs / "nodes/node-1.crt").read_bytes(),
    )


@contextmanager
def agent_of_node_1(lab: Lab, agent_version: str) -> Iterator[None]:
    """node-1's agent, as far as the brain can tell: a Sync stream with its certificate and hello,
    held until the block ends (the brain has sent it a snapshot when the block starts)."""
    done = asyncio.Event()
    accepted: asyncio.Future[bool] = lab.loop.loop.create_future()

    async def hold() -> None:
        async with grpc.aio.secure_channel(f"localhost:{lab.sync_port}", node_credentials(lab)) as ch:
            call: Any = ch.stream_stream(
                "/stockade.v1.Sync/Sync", request_serializer=None, response_deserializer=None
            )()
            hello = sync_pb2.Hello(node="node-1", protocol=PROTOCOL, agent_version=agent_version)
            await call.write(sync_pb2.AgentMessage(hello=hello).SerializeToString())
            async for _ in call:
                accepted.set_result(True)  # a snapshot came: the brain took the agent
                break
            await done.wait()
            call.cancel()

    task = asyncio.run_coroutine_threadsafe(hold(), lab.loop.loop)
    asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(accepted), 30), lab.loop.loop).result(40)
    try:
        yield
    finally:
        lab.loop.loop.call_soon_threadsafe(done.set)
        task.result(30)
