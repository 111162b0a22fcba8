"""Node identity from ServiceAccount tokens, end to end (issue 13, item 1).

The lab API server (TokenRequest, TokenReview), the real brain (`Brain`, ``--agent-auth token``)
reading it with kubernetes-asyncio and serving sync over TLS on a Unix socket (reachable from
inside network namespaces), and real `stockade agent` processes, each in a namespace of its own,
with a projected-style token file and only the CA bundle (no client certificate):

- an agent whose token is node A's pod's gets node A's rules into its kernel;
- the same token used to ask for node B is refused with PERMISSION_DENIED;
- expired, wrong-audience, garbage and missing tokens are refused with UNAUTHENTICATED (real
  gRPC calls over the same TLS port), and so is a token of another service account
  (PERMISSION_DENIED);
- a live stream ends once its token stops being valid (its pod deleted), and the reconnect is
  refused with the reason, while the node keeps its rules;
- (item 2) a node's startup taint comes off once its agent applied its first generation, its
  other taints stay, a node without an agent keeps it, and nothing puts it back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from stockade.agent import netns as ns
from stockade.agent.sync.token import TokenChannelTLS, TokenPlugin
from stockade.brain.main import Brain, BrainConfig
from stockade.lab.apiserver import ApiServer
from stockade.tls import write_bundle
from stockade.v1 import sync_pb2

pytestmark = [pytest.mark.root, pytest.mark.slow]

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")
NETNS = {"node-a": f"st{_SLOT}-tk-a", "node-b": f"st{_SLOT}-tk-b"}
STOCKADE = str(Path(sys.executable).with_name("stockade"))
SYS_NS, SA, AUD = "stockade-system", "stockade-agent", "stockade"
WEB_IP = "10.233.1.2"
SYNC = "/stockade.v1.Sync/Sync"
STARTUP_TAINT = "stockade.io/agent-not-ready"
GPU_TAINT = {"key": "example.com/gpu", "value": "true", "effect": "NoSchedule"}


def obj(kind: str, name: str, namespace: str = "", **rest: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **rest}


def cluster(api: ApiServer) -> None:
    for n in (SYS_NS, "demo"):
        api.put_object(obj("Namespace", n))
    for node in NETNS:
        # Nodes join with the startup taint (issue 13 item 2); node-a has one of its own too.
        taints = [{"key": STARTUP_TAINT, "effect": "NoSchedule"}] + ([GPU_TAINT] if node == "node-a" else [])
        api.put_object(obj("Node", node, spec={"taints": taints}))
        api.put_object(obj("Pod", f"agent-{node[-1]}", SYS_NS, spec={"nodeName": node, "containers": [{"name": "a"}]}))
    web = obj("Pod", "web", "demo", spec={"nodeName": "node-a", "containers": [{"name": "c"}]})
    web["metadata"]["labels"] = {"app": "web"}
    web["status"] = {"phase": "Running", "podIP": WEB_IP, "podIPs": [{"ip": WEB_IP}]}
    api.put_object(web)
    api.put_object(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-deny", "namespace": "demo"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
        }
    )


@dataclass
class Setup:
    api: ApiServer
    brain: Brain
    socket: str
    dir: Path

    def token(self, pod: str, audience: str = AUD, seconds: int = 3600, sa: str = SA) -> str:
        return self.api.tokens.issue(SYS_NS, sa, [audience], seconds, pod=pod)[0]

    def token_file(self, name: str, token: str) -> Path:
        path = self.dir / f"{name}.token"
        path.write_text(token)
        return path


@pytest.fixture
def namespaces() -> Iterator[None]:
    for name in NETNS.values():
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield
    finally:
        for name in NETNS.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
async def setup(namespaces: None) -> AsyncIterator[Setup]:
    work = Path(tempfile.mkdtemp(prefix=f"st{_SLOT}-tk-"))  # short: a Unix socket path is at most 107 bytes
    write_bundle(work / "certs", [], ["localhost"])
    api = ApiServer()
    await api.start("127.0.0.1", 0)
    cluster(api)
    sock = str(work / "brain.sock")
    brain = Brain(
        BrainConfig(
            kubeconfig=str(api.kubeconfig(work / "kc")),
            listen=f"unix:{sock}",
            admin_listen="127.0.0.1:0",
            admin_mtls_listen=None,
            http="127.0.0.1:0",
            tls_cert=str(work / "certs" / "brain.crt"),
            tls_key=str(work / "certs" / "brain.key"),
            tls_ca=str(work / "certs" / "ca.crt"),
            agent_auth="token",
            agent_audience=AUD,
            agent_service_accounts=(f"{SYS_NS}:{SA}",),
        )
    )
    await asyncio.wait_for(brain.start(), 60)
    try:
        yield Setup(api, brain, sock, work)
    finally:
        await brain.stop()
        await api.stop()
        shutil.rmtree(work, ignore_errors=True)


class Agent:
    """`stockade agent` in a node namespace, with a token file and the CA bundle only."""

    def __init__(self, s: Setup, node: str, token_file: Path, netns: str) -> None:
        self.log = s.dir / f"{netns}.log"
        cmd = [
            STOCKADE,
            "agent",
            "--node",
            node,
            "--brain",
            f"unix:{s.socket}",
            "--token-file",
            str(token_file),
            "--tls-ca",
            str(s.dir / "certs" / "ca.crt"),
            "--server-name",
            "localhost",
            "--backend",
            "nftables",
            "--http",
            "127.0.0.1:0",
        ]
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], stdout=subprocess.DEVNULL, stderr=err)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def eventually(check: Any, what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def nft(netns: str) -> str:
    return ns.run(["nft", "list", "ruleset"], netns=netns).stdout


async def test_an_agent_with_its_pods_token_gets_its_nodes_rules(setup: Setup) -> None:
    agent = Agent(setup, "node-a", setup.token_file("a", setup.token("agent-a")), NETNS["node-a"])
    try:
        fanout = setup.brain.fanout
        await eventually(lambda: fanout.node_status("node-a").applied_generation >= 1, "node-a to apply its rules")
        assert fanout.node_status("node-a").connected
        await eventually(lambda: WEB_IP in nft(NETNS["node-a"]), "node-a's pod in its kernel rules")
        assert "Bearer" not in agent.output()  # the token is never logged
    finally:
        agent.stop()


async def test_node_as_token_asking_for_node_b_is_permission_denied(setup: Setup) -> None:
    agent = Agent(setup, "node-b", setup.token_file("a-for-b", setup.token("agent-a")), NETNS["node-b"])
    try:
        await eventually(lambda: "PERMISSION_DENIED" in agent.output(), "the agent to be refused")
        assert "node 'node-a'" in agent.output()
        st = setup.brain.fanout.node_status("node-b")
        assert not st.connected and st.applied_generation == 0
        assert "table inet stockade" not in nft(NETNS["node-b"])
    finally:
        agent.stop()


async def refused(s: Setup, token: str | None) -> tuple[grpc.StatusCode, str]:
    """One sync call over the brain's TLS port with ``token`` (None: no token at all): its status.

    The guard judges the token before any message is read, and a client whose write is in flight
    when the server ends a bidirectional call may read grpc's "Internal error from Core" instead of
    the status: so no hello is written. An accepted call would wait for its hello (a timeout here).
    """
    ca = (s.dir / "certs" / "ca.crt").read_bytes()
    path = s.token_file("probe", token) if token else None
    creds = TokenChannelTLS(b"", b"", ca, token=TokenPlugin(path) if path else None).credentials()
    opts = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(f"unix:{s.socket}", creds, options=opts) as ch:
        call: Any = ch.stream_stream(
            "/stockade.v1.Sync/Sync", request_serializer=sync_pb2.AgentMessage.SerializeToString
        )()
        try:
            code = await asyncio.wait_for(call.code(), 30)
        except TimeoutError:
            raise AssertionError("the brain accepted the call") from None
        return code, await call.details() or ""


async def test_bad_tokens_are_unauthenticated(setup: Setup) -> None:
    cases = {
        "expired": setup.token("agent-a", seconds=-5),
        "wrong audience": setup.token("agent-a", audience="https://kubernetes.default.svc"),
        "garbage": "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjF9.c2lnbmF0dXJl",
        "missing": None,
    }
    for what, token in cases.items():
        code, details = await refused(setup, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (what, details)
    assert "expired" in (await refused(setup, setup.token("agent-a", seconds=-5)))[1]
    code, details = await refused(setup, setup.token("agent-a", sa="default"))
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert not setup.brain.fanout.node_status("node-a").connected


def taints(s: Setup, node: str) -> list[dict[str, Any]]:
    return list(s.api.get_object("Node", node).get("spec", {}).get("taints") or [])


async def test_the_startup_taint_comes_off_once_the_agent_enforces(setup: Setup) -> None:
    assert [t["key"] for t in taints(setup, "node-a")] == [STARTUP_TAINT, GPU_TAINT["key"]]
    agent = Agent(setup, "node-a", setup.token_file("a", setup.token("agent-a")), NETNS["node-a"])
    try:
        await eventually(lambda: taints(setup, "node-a") == [GPU_TAINT], "node-a's startup taint to go")
        assert setup.brain.fanout.node_status("node-a").applied_generation >= 1
        assert WEB_IP in nft(NETNS["node-a"])  # the rules were in before the taint came off
    finally:
        agent.stop()
    fanout = setup.brain.fanout
    await eventually(lambda: not fanout.node_status("node-a").connected, "the brain to see node-a's agent go")
    await asyncio.sleep(3 * setup.brain.taints.interval if setup.brain.taints else 0)  # a few rounds of the remover
    assert taints(setup, "node-a") == [GPU_TAINT]  # never put back: the node keeps its rules (fail static)
    assert [t["key"] for t in taints(setup, "node-b")] == [STARTUP_TAINT]  # no agent there yet


async def test_a_live_stream_ends_once_its_pod_is_gone(setup: Setup) -> None:
    auth = setup.brain.node_auth
    assert auth is not None and auth.tokens is not None
    auth.recheck, auth.tokens.ttl = 0.5, 0.2  # seconds: re-reviewed often, for the test
    agent = Agent(setup, "node-a", setup.token_file("a", setup.token("agent-a")), NETNS["node-a"])
    try:
        fanout = setup.brain.fanout
        await eventually(lambda: fanout.node_status("node-a").applied_generation >= 1, "node-a to apply its rules")
        setup.api.delete_object("Pod", "agent-a", SYS_NS)  # the agent's pod is gone (node drained, removed)
        await eventually(lambda: auth.revoked >= 1, "the brain to end node-a's stream")
        await eventually(lambda: "no longer exists" in agent.output(), "the reconnect to be refused with the reason")
        assert not fanout.node_status("node-a").connected
        assert WEB_IP in nft(NETNS["node-a"])  # the node keeps its last rules (fail static)
    finally:
        agent.stop()


async def test_the_brain_exports_what_identity_and_taints_did(setup: Setup) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    await refused(setup, "garbage.token.here")
    agent = Agent(setup, "node-a", setup.token_file("a", setup.token("agent-a")), NETNS["node-a"])
    try:
        await eventually(lambda: taints(setup, "node-a") == [GPU_TAINT], "node-a's startup taint to go")
    finally:
        agent.stop()
    url = f"http://127.0.0.1:{setup.brain.http_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    values = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert values["stockade_brain_agent_auth_refused_total"] >= 1
    assert values["stockade_brain_agent_token_reviews_total"] >= 2  # the garbage one and node-a's
    assert values["stockade_brain_startup_taint_removed_total"] == 1
    assert values["stockade_brain_startup_taint_errors_total"] == 0
