"""Certificates renewed on disk while the brain and its agents run, over real mTLS on loopback.

The brain's ports are built by the brain's own code (`stockade.brain.servers`: dynamic server
credentials, the node guard); the agents are the real sync client with `ClientTLSFiles`. Files
are replaced the way cert-manager's Secret volume does (atomic renames), also half way (a new
certificate next to the old key), while policies keep changing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from sync_helpers import SyntheticCluster, eventually

from stockade.agent.backends.base import MemoryDataplane
from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter
from stockade.agent.reporter.client import RenewingChannel
from stockade.agent.sync import AgentClient, Applier, Backoff, channel_options
from stockade.agent.sync.certexpiry import CertificateExpiry as AgentExpiry
from stockade.brain import servers
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import SyncService, server_options
from stockade.model import Direction
from stockade.model.events import BlockedEvent
from stockade.tls import CertPair, issue_brain_cert, issue_node_cert, make_ca
from stockade.tls.reload import ClientTLSFiles
from stockade.v1 import drops_pb2, drops_pb2_grpc

NODES = ["n1", "n2"]


@dataclass
class Config:  # what `servers` reads of the brain's configuration
    tls_cert: str
    tls_key: str
    tls_ca: str
    insecure: bool = False


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def replace(path: Path, data: bytes) -> None:
    """An atomic replacement, as a Secret volume's symlink swap (a new inode, a new mtime)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install(pair: CertPair, stem: Path) -> None:
    replace(stem.with_name(stem.name + ".crt"), pair.cert)
    replace(stem.with_name(stem.name + ".key"), pair.key)


def served_serial(port: int, d: Path, node: str = "n1") -> int:
    """The serial of the certificate the brain presents to a new handshake (verified against ca.crt)."""
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(str(d / f"{node}.crt"), str(d / f"{node}.key"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def refused(port: int, d: Path, node: str) -> bool:
    """Whether the brain refuses ``node``'s client certificate. With TLS 1.3 the server checks
    it after the client finished its side: the refusal arrives as an alert on the first read."""
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.load_cert_chain(str(d / f"{node}.crt"), str(d / f"{node}.key"))
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            # HTTP/2's preface and an empty SETTINGS frame: a server that accepted us answers
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            return not tls.recv(1)
    except (ssl.SSLError, ConnectionError):
        return True


class Drops(drops_pb2_grpc.DropServiceServicer):
    """Acknowledges every batch and keeps the events' destinations."""

    def __init__(self) -> None:
        self.dsts: list[str] = []

    async def ReportDrops(self, request_iterator, context):  # type: ignore[no-untyped-def]
        last = 0
        async for batch in request_iterator:
            self.dsts.extend(e.dst for e in batch.events)
            last = batch.seq
        return drops_pb2.DropAck(last_seq=last)


def event(dst: str) -> BlockedEvent:
    return BlockedEvent(0.0, "n1", Direction.INGRESS, "10.0.0.1", dst, "TCP", 40000, 80, "c")


class Rig:
    """A brain on loopback with the brain's TLS code, and agents reading their files."""

    def __init__(self, d: Path, cluster: SyntheticCluster) -> None:
        self.d, self.cluster = d, cluster
        self.config = Config(str(d / "brain.crt"), str(d / "brain.key"), str(d / "ca.crt"))
        self.peer_serials: list[tuple[str, int]] = []  # (node, client certificate serial) per sync call
        self.agents: dict[str, tuple[AgentClient, MemoryDataplane, asyncio.Event, asyncio.Task[None]]] = {}

    async def start(self) -> None:
        guard = servers.node_guard(False)
        check = guard.check

        async def recording(context: grpc.aio.ServicerContext, method: str) -> None:
            pems = context.auth_context().get("x509_pem_cert", [])
            if pems:
                self.peer_serials.append((servers.node_of_peer(context) or "?", serial(bytes(pems[0]))))
            await check(context, method)

        guard.check = recording
        self.fanout = FanOut(self.cluster.model_of)
        self.server = grpc.aio.server(options=server_options(1_000, 1_000), interceptors=[guard])
        self.server.add_generic_rpc_handlers((SyncService(self.fanout).handler(),))
        self.drops = Drops()
        drops_pb2_grpc.add_DropServiceServicer_to_server(self.drops, self.server)
        creds = servers.server_credentials(self.config, require_client_auth=True)
        assert creds is not None
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        await self.server.start()

    def agent(self, node: str) -> AgentClient:
        dp = MemoryDataplane()
        tls = ClientTLSFiles.from_files(
            self.d / f"{node}.crt", self.d / f"{node}.key", self.d / "ca.crt", server_name=None, node=node
        )
        client = AgentClient(
            Applier(node, dp, offload=False),
            f"127.0.0.1:{self.port}",
            tls,
            backoff=Backoff(0.05, 0.5),
            # A generous keepalive timeout: the tests count connects, and a ping answered late on a
            # busy machine must not end a stream.
            options=channel_options(keepalive_time_ms=1_000, keepalive_timeout_ms=20_000),
            answer_timeout=5.0,
            tls_check_interval=0.1,
        )
        stop = asyncio.Event()
        self.agents[node] = (client, dp, stop, asyncio.create_task(client.run(stop)))
        return client

    def synced(self) -> bool:
        return all(dp.model == self.cluster.models[n] for n, (_, dp, _, _) in self.agents.items())

    async def churn(self, times: int = 3) -> None:
        for _ in range(times):
            self.fanout.on_deltas(self.cluster.churn())
            await asyncio.sleep(0.05)
        await eventually(self.synced, 20, "agents applying the new policies")

    async def stop(self) -> None:
        for _, _, stop, _ in self.agents.values():
            stop.set()
        await asyncio.gather(*(asyncio.wait_for(t, 10) for *_, t in self.agents.values()))
        await self.server.stop(None)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, CertPair]:
    ca = make_ca(days=30)
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    issue_brain_cert(ca, days=1).write(tmp_path / "brain.crt", tmp_path / "brain.key")  # short-lived
    for n in [*NODES, "n3"]:
        issue_node_cert(ca, n, days=1).write(tmp_path / f"{n}.crt", tmp_path / f"{n}.key")
    return tmp_path, ca


async def test_brain_serves_a_renewed_certificate_to_new_handshakes_only(pki: tuple[Path, CertPair]) -> None:
    d, ca = pki
    rig = Rig(d, SyntheticCluster([*NODES, "n3"], seed=3))
    await rig.start()
    try:
        old = serial((d / "brain.crt").read_bytes())
        clients = [rig.agent(n) for n in NODES]
        await eventually(rig.synced, 20, "initial snapshots")
        assert await asyncio.to_thread(served_serial, rig.port, d) == old

        renewed = issue_brain_cert(ca, days=2)  # a new key, the same CA
        # Half written first: the new certificate next to the old key is not adopted.
        replace(d / "brain.crt", renewed.cert)
        assert await asyncio.to_thread(served_serial, rig.port, d) == old
        tls = servers.server_tls(rig.config)
        assert tls is not None and tls.files.problem is not None and "is not the key of" in tls.files.problem
        await rig.churn()  # policies keep reaching the nodes meanwhile
        replace(d / "brain.key", renewed.key)
        assert await asyncio.to_thread(served_serial, rig.port, d) == serial(renewed.cert)
        assert tls.files.problem is None and tls.files.renewals == 1

        # The agents connected before keep their streams and keep receiving deltas.
        await rig.churn()
        assert [c.status.connects for c in clients] == [1, 1]
        # A new agent handshakes with the renewed certificate.
        late = rig.agent("n3")
        await eventually(rig.synced, 20, "the late agent's snapshot")
        assert late.status.connects == 1
        # The metric says how long the certificate in use is valid: the renewed one's two days.
        (family, renewals, unusable) = list(servers.CertificateExpiry(rig.config).collect())
        assert family.name == "stockade_brain_certificate_expiry_seconds"
        (sample,) = family.samples
        assert sample.labels == {"serial": f"{serial(renewed.cert):x}"}
        assert 86400 < sample.value <= 2 * 86400
        assert renewals.samples[0].value == 1 and unusable.samples[0].value == 0
    finally:
        await rig.stop()


async def test_agent_reconnects_with_its_renewed_certificate(pki: tuple[Path, CertPair]) -> None:
    d, ca = pki
    rig = Rig(d, SyntheticCluster(NODES, seed=5))
    await rig.start()
    try:
        first = serial((d / "n1.crt").read_bytes())
        n1, n2 = rig.agent("n1"), rig.agent("n2")
        await eventually(rig.synced, 20, "initial snapshots")
        assert ("n1", first) in rig.peer_serials
        renewed = issue_node_cert(ca, "n1", days=2)
        install(renewed, d / "n1")
        await rig.churn()
        await eventually(lambda: n1.status.connects == 2, 20, "n1 reconnecting with its renewed certificate")
        await rig.churn()
        # The brain saw the renewed certificate; the other agent was left alone.
        assert ("n1", serial(renewed.cert)) in rig.peer_serials
        assert n1.renewals == 1 and n2.renewals == 0 and n2.status.connects == 1
        assert "reconnecting: certificate renewed" in n1.status.history
        assert n1.status.fail_static is False
        (expiry, renewals) = list(AgentExpiry(n1).collect())
        assert expiry.name == "stockade_agent_certificate_expiry_seconds"
        assert 86400 < expiry.samples[0].value <= 2 * 86400
        assert renewals.samples[0].value == 1
        # A broken renewal (a key that is not the certificate's) is not used: no reconnect.
        replace(d / "n2.crt", issue_node_cert(ca, "n2").cert)
        await rig.churn()
        assert n2.renewals == 0 and n2.status.connects == 1
    finally:
        await rig.stop()


async def test_ca_rotation_without_restarts(pki: tuple[Path, CertPair]) -> None:
    d, old_ca = pki
    rig = Rig(d, SyntheticCluster([*NODES, "n3"], seed=9))
    await rig.start()
    try:
        n1, n2 = rig.agent("n1"), rig.agent("n2")
        await eventually(rig.synced, 20, "initial snapshots")
        new_ca = make_ca("stockade-ca-2", days=30)
        # 1. Both sides trust old and new CA (one bundle): agents reconnect to pick it up.
        replace(d / "ca.crt", old_ca.cert + new_ca.cert)
        await eventually(lambda: n1.renewals == 1 and n2.renewals == 1, 20, "agents picking up the CA bundle")
        await rig.churn()
        # 2. The brain's certificate from the new CA: new handshakes verify it with the bundle.
        brain = issue_brain_cert(new_ca, days=2)
        install(brain, d / "brain")
        assert await asyncio.to_thread(served_serial, rig.port, d) == serial(brain.cert)
        # 3. An agent renewed by the new CA: the brain accepts it through the bundle.
        n2_new = issue_node_cert(new_ca, "n2", days=2)
        install(n2_new, d / "n2")
        await eventually(lambda: n2.renewals == 2 and n2.status.connects >= 3, 20, "n2 with the new CA's cert")
        await rig.churn()
        assert ("n2", serial(n2_new.cert)) in rig.peer_serials
        # A new agent still on the old CA's certificate connects too (the brain trusts both).
        n3 = rig.agent("n3")
        await eventually(rig.synced, 20, "n3 with the old CA's certificate")
        assert n3.status.connects == 1
        # 4. Old CA retired: a certificate it signed is refused, the new ones keep working.
        assert not await asyncio.to_thread(refused, rig.port, d, "n1")
        replace(d / "ca.crt", new_ca.cert)
        assert await asyncio.to_thread(refused, rig.port, d, "n1")
        assert not await asyncio.to_thread(refused, rig.port, d, "n2")
        # Agents still on old-CA certificates (n1, n3) cannot reconnect until theirs are renewed
        # too; their rules stay in force meanwhile (fail static), then they catch up.
        for node in ("n1", "n3"):
            install(issue_node_cert(new_ca, node, days=2), d / node)
        await rig.churn()
        assert all(not c.status.fail_static and c.status.connected for c in (n1, n2, n3))
    finally:
        await rig.stop()


async def test_drop_reports_move_to_a_renewed_certificate(pki: tuple[Path, CertPair]) -> None:
    d, ca = pki
    rig = Rig(d, SyntheticCluster(NODES, seed=11))
    await rig.start()
    tls = ClientTLSFiles.from_files(d / "n1.crt", d / "n1.key", d / "ca.crt", node="n1")
    channel = RenewingChannel(f"127.0.0.1:{rig.port}", tls, CHANNEL_OPTIONS)
    reporter = Reporter("n1", channel, idle_close=0.05)
    try:
        reporter.offer([event("10.0.0.2")])
        assert await reporter.flush(10)
        assert rig.peer_serials[-1] == ("n1", serial((d / "n1.crt").read_bytes()))
        renewed = issue_node_cert(ca, "n1", days=2)
        install(renewed, d / "n1")
        reporter.offer([event("10.0.0.3")])
        assert await reporter.flush(10)
        # The next stream ran on a new channel with the renewed certificate; nothing was lost.
        assert rig.peer_serials[-1] == ("n1", serial(renewed.cert))
        assert rig.drops.dsts == ["10.0.0.2", "10.0.0.3"]
    finally:
        reporter.close()
        await channel.close(None)
        await rig.stop()
