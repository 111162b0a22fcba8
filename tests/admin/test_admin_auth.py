"""Authentication without gaps, against a whole brain over real TLS on loopback (issue 11, item 5):
node and operator certificates are not interchangeable on either port, operator certificates
work on the admin mTLS port, admin calls are authenticated before their message is parsed and
their size is limited per method, dry-runs and explains are bounded per caller, and the CLI does
not send a token in plain text."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from stockade.brain.admin import service as admin_service
from stockade.brain.admin.limits import Busy, RateLimits, WorkLimits
from stockade.brain.main import Brain, BrainConfig
from stockade.codec.version import PROTOCOL
from stockade.lab.apiserver import ApiServer
from stockade.tls import make_ca, write_bundle
from stockade.tls.certs import issue_node_cert, issue_operator_cert, write_operator
from stockade.v1 import admin_pb2, admin_pb2_grpc, sync_pb2

ROOT = Path(__file__).resolve().parents[2]
ENV_PATH = ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli"))
READ, ADMIN = "reader-token-0123456789", "admin-token-0123456789"
SYNC = "/stockade.v1.Sync/Sync"

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: demo}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


@dataclass
class Running:
    brain: Brain
    certs: Path

    @property
    def ca(self) -> bytes:
        return (self.certs / "ca.crt").read_bytes()

    def creds(self, who: str | None) -> grpc.ChannelCredentials:
        """TLS to the brain; ``who`` is ``nodes/<n>`` or ``operators/<n>`` (a client certificate) or None."""
        if who is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca)
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=(self.certs / f"{who}.key").read_bytes(),
            certificate_chain=(self.certs / f"{who}.crt").read_bytes(),
        )

    def admin(self, who: str | None = None, mtls: bool = False) -> grpc.aio.Channel:
        port = self.brain.admin_mtls_port if mtls else self.brain.admin_port
        return grpc.aio.secure_channel(f"localhost:{port}", self.creds(who))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    server = ApiServer()
    await server.start("127.0.0.1", 0)
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    server.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}})
    certs = tmp_path / "certs"
    # A node whose name is an operator's: the name must not make it one.
    write_bundle(certs, ["node-1", "stockade-admin"])
    write_operator(certs, "alice", "read")
    write_operator(certs, "bob", "admin")
    tokens = tmp_path / "tokens.json"
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
    brain = Brain(
        BrainConfig(
            kubeconfig=str(server.kubeconfig(tmp_path / "kc")),
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
    await asyncio.wait_for(brain.start(), 30)
    try:
        yield Running(brain, certs)
    finally:
        await brain.stop()
        await server.stop()


def md(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def _sync_hello(r: Running, who: str, node: str) -> tuple[grpc.StatusCode, str, int]:
    """Open a Sync stream with ``who``'s certificate and a hello for ``node``: (code, details, messages)."""
    async with grpc.aio.secure_channel(f"localhost:{r.brain.grpc_port}", r.creds(who)) as ch:
        call: Any = ch.stream_stream(SYNC, request_serializer=None, response_deserializer=None)()
        hello = sync_pb2.AgentMessage(hello=sync_pb2.Hello(node=node, protocol=PROTOCOL)).SerializeToString()
        got = 0
        try:
            await call.write(hello)
            async for _ in call:
                got += 1
                break  # a snapshot came: the stream was accepted
            call.cancel()
            return grpc.StatusCode.OK, "", got
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or "", got


# ------------------------------------------------------------------ 1. identities cannot be confused


async def _sync_refusal(r: Running, who: str) -> tuple[grpc.StatusCode, str]:
    """Open a Sync stream with ``who``'s certificate and wait for its status without writing.

    The guard refuses a certificate before any message is read, and a client whose write is in
    flight when the server ends a bidirectional call may read grpc's "Internal error from Core"
    instead of the status: so no hello is sent. An accepted call would wait for its hello and
    time out here instead (a failure as well).
    """
    async with grpc.aio.secure_channel(f"localhost:{r.brain.grpc_port}", r.creds(who)) as ch:
        call: Any = ch.stream_stream(SYNC, request_serializer=None, response_deserializer=None)()
        code = await asyncio.wait_for(call.code(), 30)
        return code, await call.details() or ""


async def test_the_sync_port_serves_node_certificates_only(running: Running) -> None:
    assert (await _sync_hello(running, "nodes/node-1", "node-1"))[2] == 1  # a node gets its snapshot
    for operator in ("operators/alice", "operators/bob"):
        code, details = await _sync_refusal(running, operator)
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert "operator certificate" in details and "stockade://node/" in details


async def test_the_admin_port_refuses_node_certificates_even_with_a_token(running: Running) -> None:
    for who in ("nodes/stockade-admin", "nodes/node-1"):
        async with running.admin(who, mtls=True) as ch:
            stub = admin_pb2_grpc.AdminStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListPolicies(admin_pb2.ListPoliciesRequest())
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "node certificates are not accepted on the admin API" in (e.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Resync(admin_pb2.ResyncRequest(node="node-1"), metadata=md(ADMIN))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_certificates_say_which_kind_they_are(tmp_path: Path) -> None:
    from stockade.tls.identity import IdentityError, _identity_of_pem

    ca = make_ca()
    assert _identity_of_pem(issue_node_cert(ca, "stockade-admin").cert).kind == "node"
    op = _identity_of_pem(issue_operator_cert(ca, "carol", "admin").cert)
    assert (op.kind, op.name, op.role) == ("operator", "carol", "admin")
    with pytest.raises(ValueError, match="operator role"):
        issue_operator_cert(ca, "carol", "root")
    # A certificate with neither URI (say, an older one made from a CN only) is nobody.
    from cryptography import x509

    from stockade.tls import certs as certmod

    bare = certmod._issue(
        ca, "stockade-admin", "node", [x509.DNSName("stockade-admin")], certmod.ExtendedKeyUsageOID.CLIENT_AUTH, 1
    )
    with pytest.raises(IdentityError, match="no stockade://node/"):
        _identity_of_pem(bare.cert)


# ------------------------------------------------------------------ 2. operator client certificates work


async def test_operator_certificates_work_on_the_admin_mtls_port(running: Running) -> None:
    async with running.admin("operators/alice", mtls=True) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        assert (await stub.ListNodes(admin_pb2.ListNodesRequest())).nodes[0].name == "node-1"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Resync(admin_pb2.ResyncRequest(node="node-1"))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "alice has the read role" in str(
            e.value.details()
        )
    async with running.admin("operators/bob", mtls=True) as ch:
        resp = await admin_pb2_grpc.AdminStub(ch).Resync(admin_pb2.ResyncRequest(node="node-1"))
        assert not resp.ok and "not connected" in resp.message  # authorized; no agent is connected
    # Tokens work on both admin ports; no credentials on neither.
    async with running.admin() as ch:
        await admin_pb2_grpc.AdminStub(ch).ListNodes(admin_pb2.ListNodesRequest(), metadata=md(READ))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin_pb2_grpc.AdminStub(ch).ListNodes(admin_pb2.ListNodesRequest())
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with running.admin("operators/alice", mtls=True) as ch:
        await admin_pb2_grpc.AdminStub(ch).Resync(admin_pb2.ResyncRequest(node="x"), metadata=md(ADMIN))


async def test_a_certificate_from_another_ca_fails_the_handshake(running: Running, tmp_path: Path) -> None:
    rogue = issue_operator_cert(make_ca(), "mallory", "admin")
    creds = grpc.ssl_channel_credentials(running.ca, private_key=rogue.key, certificate_chain=rogue.cert)
    async with grpc.aio.secure_channel(f"localhost:{running.brain.admin_mtls_port}", creds) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin_pb2_grpc.AdminStub(ch).ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # Without any certificate the mTLS port refuses the handshake too.
    async with running.admin(None, mtls=True) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin_pb2_grpc.AdminStub(ch).ListNodes(admin_pb2.ListNodesRequest(), metadata=md(READ), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------ 4. authenticate before parsing; sizes


async def test_admin_calls_are_authenticated_before_their_message_is_parsed(running: Running) -> None:
    garbage = b"\xff" * (1 << 20)  # not a protobuf message at all
    async with running.admin() as ch:
        raw = ch.unary_unary("/stockade.v1.Admin/ListPolicies", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw(garbage)
        # Refused for its credentials: the message was never read, so it never failed to parse.
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw(garbage, metadata=md("not-a-token-0123456789"))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Authenticated, a query over its method's size limit is refused before it is parsed.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw(garbage, metadata=md(READ))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ListPolicies" in str(e.value.details()) and "limit of 65536 bytes" in str(e.value.details())
        # ... and a well-formed small one is answered.
        ok = await raw(admin_pb2.ListPoliciesRequest().SerializeToString(), metadata=md(READ))
        assert admin_pb2.ListPoliciesResponse.FromString(ok) is not None
        # DryRun carries manifests: 1 MiB of them is within its limit.
        stub = admin_pb2_grpc.AdminStub(ch)
        big = POLICY + "#" * (1 << 20) + "\n"
        resp = await stub.DryRun(
            admin_pb2.DryRunRequest(manifests=[admin_pb2.Manifest(name="p.yaml", content=big)]), metadata=md(READ)
        )
        assert resp.checked == 0


# ------------------------------------------------------------------ 5. dry-run and explain bounded per caller


async def test_dry_runs_are_bounded_per_caller_and_in_time(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = admin_service.dry_run

    def slow_dry_run(*args: Any) -> Any:
        release.wait(60)  # a dry-run that takes as long as the test says
        return real(*args)

    monkeypatch.setattr(admin_service, "dry_run", slow_dry_run)
    limits = WorkLimits("dry-run", per_caller=1, total=2, timeout=0.5)
    running.brain.admin_service.dry_runs = limits
    request = admin_pb2.DryRunRequest(manifests=[admin_pb2.Manifest(name="p.yaml", content=POLICY)])
    async with running.admin() as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.DryRun(request, metadata=md(READ))  # gives up at the timeout, still computing
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "took longer than 0.5 s" in str(
            e.value.details()
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.DryRun(request, metadata=md(READ))  # the same caller: its slot is still taken
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "viewer already has 1 dry-run running" in str(e.value.details())
        release.set()
        await asyncio.to_thread(lambda: None)
        deadline = asyncio.get_running_loop().time() + 30  # the computation ends, and the slot with it
        while limits.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert (await stub.DryRun(request, metadata=md(READ))).checked == 0


async def test_explains_are_rate_limited_per_caller(running: Running) -> None:
    running.brain.admin_service.explains = RateLimits("explain", rate=0.001, burst=2)
    req = admin_pb2.ExplainRequest(**{"from": "demo/a"}, to="demo/b", port=80, protocol="TCP")
    async with running.admin() as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Explain(req, metadata=md(READ))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND  # answered (there are no such pods)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Explain(req, metadata=md(READ))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "viewer is over the explain limit" in str(
            e.value.details()
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.Explain(req, metadata=md(ADMIN))  # another caller has its own budget
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_work_limits_count_running_work_per_caller() -> None:
    gate = threading.Event()
    limits = WorkLimits("dry-run", per_caller=1, total=2, timeout=30)
    first = asyncio.ensure_future(limits.run("a", gate.wait, 30))
    second = asyncio.ensure_future(limits.run("b", gate.wait, 30))
    await asyncio.sleep(0)
    with pytest.raises(Busy, match="a already has 1"):
        await limits.run("a", lambda: None)
    with pytest.raises(Busy, match="running 2 dry-runs already"):
        await limits.run("c", lambda: None)
    gate.set()
    assert await first and await second
    assert await limits.run("c", lambda: 7) == 7 and not limits.running


def test_rate_limits_refill() -> None:
    r = RateLimits("explain", rate=1.0, burst=2)
    r.take("a", now=0.0)
    r.take("a", now=0.0)
    with pytest.raises(Busy, match=r"try again in 1\.0 s"):
        r.take("a", now=0.0)
    r.take("b", now=0.0)
    r.take("a", now=1.0)


# ------------------------------------------------------------------ 3. the CLI and plain text


def _stockade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": ENV_PATH, "PATH": "/usr/bin:/bin", "STOCKADE_LAB_DIR": "/nonexistent", **(env or {})},
    )


def test_the_cli_does_not_send_a_token_in_plain_text() -> None:
    # A listener that records what reaches it: without --ca, not one byte may.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    received.append(chunk)
            except OSError:
                pass
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        out = _stockade("policies", "--brain", address, "--token", ADMIN, "--timeout", "2")
        assert out.returncode == 2, out.stderr  # bad usage (README's exit codes)
        assert "refusing to send the token" in out.stderr and "--ca" in out.stderr and "--insecure" in out.stderr
        assert received == []
        out = _stockade("policies", "--brain", address, "--timeout", "2", env={"STOCKADE_TOKEN": ADMIN})
        assert out.returncode == 2 and received == []
        # Told --insecure, it does (a test brain without TLS).
        _stockade("policies", "--brain", address, "--token", ADMIN, "--insecure", "--timeout", "2")
        assert received
    finally:
        stop.set()
        t.join(5)
        listener.close()


async def test_the_cli_with_an_operator_certificate_over_mtls(running: Running) -> None:
    base = ["--ca", str(running.certs / "ca.crt"), "--server-name", "localhost", "-o", "json"]
    cert = ["--cert", str(running.certs / "operators/alice.crt"), "--key", str(running.certs / "operators/alice.key")]
    out = await asyncio.to_thread(
        _stockade, "nodes", "--brain", f"127.0.0.1:{running.brain.admin_mtls_port}", *cert, *base
    )
    assert out.returncode == 0, out.stderr
    assert [n["name"] for n in json.loads(out.stdout)["items"]] == ["node-1"]
    node = ["--cert", str(running.certs / "nodes/node-1.crt"), "--key", str(running.certs / "nodes/node-1.key")]
    out = await asyncio.to_thread(
        _stockade, "nodes", "--brain", f"127.0.0.1:{running.brain.admin_mtls_port}", *node, *base
    )
    assert out.returncode == 4 and "node certificates are not accepted" in out.stderr


def test_certs_operator_command(tmp_path: Path) -> None:
    assert _stockade("certs", "init", "--out", str(tmp_path), "--nodes", "n1").returncode == 0
    out = _stockade("certs", "operator", "--out", str(tmp_path), "--name", "dana", "--role", "admin")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "operators/dana.key").stat().st_mode & 0o077 == 0
    from stockade.tls.identity import _identity_of_pem

    ident = _identity_of_pem((tmp_path / "operators/dana.crt").read_bytes())
    assert (ident.kind, ident.name, ident.role) == ("operator", "dana", "admin")
    out = _stockade("certs", "operator", "--out", str(tmp_path / "none"), "--name", "dana")
    assert out.returncode == 2 and "no CA in" in out.stderr
    assert os.path.exists(tmp_path / "nodes/n1.crt")
