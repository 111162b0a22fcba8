"""A real topology for the dataplane backends: two node namespaces, pods behind them, servers.

    st-dp-p1 10.201.1.2 ┐                                   ┌ st-dp-q1 10.202.1.2
    st-dp-p2 10.201.2.2 ┼─ st-dp-n1 ══ 10.201.100.0/24 ══ st-dp-n2 ┘
    st-dp-p3 10.201.3.2 ┘   (policy is enforced here)      (a second node, routed)

Every pod runs TCP servers on `TCP_PORTS` and UDP echo servers on `UDP_PORTS`. Namespaces are
created with the ``st-dp`` prefix and removed at the end of the module.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from stockade.agent import netns as ns
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Rule, diff
from stockade.model import Protocol as L4

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs on one machine pick distinct slots
P = f"st{_SLOT}-dp-"
NODE, NODE2 = f"{P}n1", f"{P}n2"
PODS = {"p1": "10.201.1.2", "p2": "10.201.2.2", "p3": "10.201.3.2", "q1": "10.202.1.2"}
NODE2_IP = "10.201.100.2"
# Every pod and the node link are dual-stack: the same host numbers in fd00:201::/32 (node 1's
# pods, the link) and fd00:202::/32 (node 2's pod).
PODS6 = {"p1": "fd00:201:1::2", "p2": "fd00:201:2::2", "p3": "fd00:201:3::2", "q1": "fd00:202:1::2"}
NODE2_IP6 = "fd00:201:100::2"
TCP_PORTS = (20080, 20443, 20505, 20511)
UDP_PORTS = (20053, 20054)

SERVER = r"""
import selectors, socket, sys
tcp, udp = [int(p) for p in sys.argv[1].split(",")], [int(p) for p in sys.argv[2].split(",")]
sel = selectors.DefaultSelector()
def dual(kind):  # one socket for both families
    s = socket.socket(socket.AF_INET6, kind); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); return s
for port in tcp:
    s = dual(socket.SOCK_STREAM)
    s.bind(("::", port)); s.listen(1024); s.setblocking(False); sel.register(s, selectors.EVENT_READ, "tcp")
for port in udp:
    s = dual(socket.SOCK_DGRAM); s.bind(("::", port))
    s.setblocking(False); sel.register(s, selectors.EVENT_READ, "udp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "tcp":
                c, _ = s.accept(); c.sendall(b"ok"); c.close()
            else:
                data, addr = s.recvfrom(2048); s.sendto(b"ok", addr)
        except (BlockingIOError, ConnectionError):
            pass
"""


def ip(*args: str, netns: str | None = None) -> None:
    proc = ns.run(["ip", *args], netns)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} in {netns}: {proc.stderr.strip()}")


def sysctl(netns: str, key: str, value: str) -> None:
    ns.run(["sysctl", "-qw", f"{key}={value}"], netns, check=True)


def _delete_all() -> None:
    for name in [NODE, NODE2, *(f"{P}{p}" for p in PODS)]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Topology:
    node: str = NODE
    node2: str = NODE2
    pods: dict[str, str] = field(default_factory=lambda: dict(PODS))
    pods6: dict[str, str] = field(default_factory=lambda: dict(PODS6))
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def netns(self, pod: str) -> str:
        return f"{P}{pod}"


def build() -> Topology:
    _delete_all()
    topo = Topology()
    for name in [NODE, NODE2, *(topo.netns(p) for p in PODS)]:
        subprocess.run(["ip", "netns", "add", name], check=True)
        ip("link", "set", "lo", "up", netns=name)
    for node in (NODE, NODE2):
        sysctl(node, "net.ipv4.ip_forward", "1")
        sysctl(node, "net.ipv6.conf.all.forwarding", "1")
    # node <-> node2
    ip("link", "add", "n1-n2", "netns", NODE, "type", "veth", "peer", "name", "n2-n1", "netns", NODE2)
    ip("addr", "add", "10.201.100.1/24", "dev", "n1-n2", netns=NODE)
    ip("addr", "add", f"{NODE2_IP}/24", "dev", "n2-n1", netns=NODE2)
    ip("link", "set", "n1-n2", "up", netns=NODE)
    ip("link", "set", "n2-n1", "up", netns=NODE2)
    ip("route", "add", "10.202.0.0/16", "via", NODE2_IP, netns=NODE)
    ip("route", "add", "10.201.0.0/16", "via", "10.201.100.1", netns=NODE2)
    ip("addr", "add", "fd00:201:100::1/64", "dev", "n1-n2", "nodad", netns=NODE)
    ip("addr", "add", f"{NODE2_IP6}/64", "dev", "n2-n1", "nodad", netns=NODE2)
    ip("-6", "route", "add", "fd00:202::/32", "via", NODE2_IP6, netns=NODE)
    ip("-6", "route", "add", "fd00:201::/32", "via", "fd00:201:100::1", netns=NODE2)
    for pod, addr in PODS.items():
        node = NODE2 if pod.startswith("q") else NODE
        gw = addr.rsplit(".", 1)[0] + ".1"
        host_if = f"v-{pod}"
        ip("link", "add", host_if, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", topo.netns(pod))
        ip("addr", "add", f"{gw}/24", "dev", host_if, netns=node)
        ip("link", "set", host_if, "up", netns=node)
        ip("addr", "add", f"{addr}/24", "dev", "eth0", netns=topo.netns(pod))
        ip("link", "set", "eth0", "up", netns=topo.netns(pod))
        ip("route", "add", "default", "via", gw, netns=topo.netns(pod))
        gw6 = PODS6[pod].rsplit(":", 1)[0] + ":1"
        ip("addr", "add", f"{gw6}/64", "dev", host_if, "nodad", netns=node)
        ip("addr", "add", f"{PODS6[pod]}/64", "dev", "eth0", "nodad", netns=topo.netns(pod))
        ip("-6", "route", "add", "default", "via", gw6, netns=topo.netns(pod))
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                topo.netns(pod),
                sys.executable,
                "-c",
                SERVER,
                ",".join(map(str, TCP_PORTS)),
                ",".join(map(str, UDP_PORTS)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        topo.servers.append(proc)
    _settle(topo)
    return topo


def _settle(topo: Topology, attempts: int = 20) -> None:
    """Wait until every pod reaches every other over both families (no rules are loaded yet):
    the first packets after the links come up can be lost while IPv6 neighbour discovery
    settles, and a test must not take that for a verdict."""
    for src in PODS:
        for dst in PODS:
            for addr in (PODS[dst], PODS6[dst]):
                if src != dst and not any(tcp_ok(topo.netns(src), addr, TCP_PORTS[0], 1.0) for _ in range(attempts)):
                    raise RuntimeError(f"pod {src} cannot reach {dst} at {addr} in the test topology")


def teardown(topo: Topology) -> None:
    for proc in topo.servers:
        proc.kill()
        proc.wait()
    _delete_all()


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = build()
    try:
        yield topo
    finally:
        teardown(topo)


# -- clients --------------------------------------------------------------------------------


def _socket(netns: str, kind: int, dst: str = "") -> socket.socket:
    """A socket in ``netns`` of the family of ``dst`` (IPv4 when none is given)."""
    with ns.entered(netns):
        return socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, kind)


# An allowed attempt gets a generous timeout (the machine may be busy); a denied one a short one:
# were it wrongly allowed, the answer would come at once.
ALLOWED_WAIT, DENIED_WAIT = 2.0, 0.5


def tcp_ok(netns: str, dst: str, port: int, timeout: float = ALLOWED_WAIT) -> bool:
    """A TCP connection from a socket in ``netns`` to ``dst:port`` completes."""
    s = _socket(netns, socket.SOCK_STREAM, dst)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        # Connected: the rules let it through. The server's answer only needs that process
        # scheduled, which a busy machine may delay past a short (denied-attempt) timeout.
        s.settimeout(max(timeout, ALLOWED_WAIT))
        return s.recv(2) == b"ok"
    except OSError:
        return False
    finally:
        s.close()


def udp_ok(netns: str, dst: str, port: int, timeout: float = ALLOWED_WAIT) -> bool:
    """A UDP datagram from ``netns`` to ``dst:port`` gets the echo back."""
    s = _socket(netns, socket.SOCK_DGRAM, dst)
    s.settimeout(timeout)
    try:
        s.sendto(b"hi", (dst, port))
        return s.recv(16) == b"ok"
    except OSError:
        return False
    finally:
        s.close()


# Source ports for attempts whose denials are counted. The dataplane counts a denied 5-tuple
# once (its seen sets and hashlimit tables remember it for 30 to 130 s), so a flow from the port
# of an earlier denied one to the same destination is rightly not counted again. The kernel picks
# UDP source ports (and ports bound to 0) at random in 32768-60999: left to it, one of a burst's
# 300 flows would match an earlier test's denied attempt about once in a hundred runs. These are
# below that range, never the same twice in a test process.
_FRESH_PORTS = itertools.count(21000)


def fresh_ports(count: int) -> list[int]:
    ports = [next(_FRESH_PORTS) for _ in range(count)]
    assert ports[-1] < 32768, "out of source ports below the kernel's ephemeral range"
    return ports


def _bound(netns: str, kind: int, dst: str, port: int) -> socket.socket:
    s = _socket(netns, kind, dst)
    s.bind(("::" if ":" in dst else "0.0.0.0", port))
    return s


def settled_count(read: Callable[[], int], want: int, timeout: float = 15.0) -> int:
    """``read()`` once it reaches ``want``, or as it is at the deadline: a packet handed to a veth
    meets the rules a moment later (later still on a busy machine), so one read right after the
    send can come too early."""
    deadline = time.monotonic() + timeout
    while (value := read()) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def syn_burst(netns: str, dst: str, port: int, count: int, linger: float = 1.5) -> None:
    """Start ``count`` TCP connections at once (non-blocking, from `fresh_ports`), keep them
    ``linger`` seconds so the kernel retransmits their SYNs, then drop them."""
    socks = []
    for sport in fresh_ports(count):
        s = _bound(netns, socket.SOCK_STREAM, dst, sport)
        s.setblocking(False)
        try:
            s.connect((dst, port))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(linger)
    for s in socks:
        s.close()


def udp_burst(netns: str, dst: str, port: int, flows: int, per_flow: int = 1) -> None:
    """``flows`` UDP flows (distinct source ports, from `fresh_ports`), ``per_flow`` datagrams each."""
    socks = [_bound(netns, socket.SOCK_DGRAM, dst, sport) for sport in fresh_ports(flows)]
    for i in range(per_flow):
        if i:
            # A veth hands each datagram to the peer's backlog (net.core.netdev_max_backlog,
            # 1,000): rounds sent back to back on a busy machine can overflow it, and a flow all
            # of whose datagrams were lost there never reached the rules to be counted.
            time.sleep(0.05)
        for s in socks:
            s.sendto(b"x", (dst, port))
    for s in socks:
        s.close()


# -- the model under test -------------------------------------------------------------------


TCP, UDP, SCTP = L4.TCP, L4.UDP, L4.SCTP
P2_INGRESS = Chain.of(
    Direction.INGRESS,
    [
        Rule("web", (PortMatch(TCP, 20080),)),  # set peer + port
        Rule("blk", (PortMatch(TCP, 20500, 20510),)),  # ipBlock-like CIDR + port range
        Rule(None, (PortMatch(UDP, 20053), PortMatch(SCTP, 20099))),  # any peer, UDP and SCTP ports
        Rule("web", (PortMatch(UDP),)),  # any-port protocol
    ],
)
P3_INGRESS = Chain.of(Direction.INGRESS, [Rule(None, None)])  # isolated, allow everything
P1_EGRESS = Chain.of(
    Direction.EGRESS,
    [
        Rule("blk", None),  # CIDR peer, every port
        Rule(None, (PortMatch(TCP, 20080),)),
        Rule("p2", (PortMatch(UDP), PortMatch(TCP, 20443))),
    ],
)


def dual_policy_model() -> NodeModel:
    """`policy_model` for dual-stack pods: every pod's IPv6 address beside its IPv4 one, in the
    sets and the dispatch maps, and the CIDR set's IPv6 twin (fd00:202::/32 except
    fd00:202:1:0:8000::/65, as the IPv4 side excepts 10.202.1.128/25), so `MATRIX` holds over
    both families."""
    m = policy_model()
    m.sets = {
        "web": frozenset({"10.201.1.2/32", f"{PODS6['p1']}/128"}),
        "p2": frozenset({"10.201.2.2/32", f"{PODS6['p2']}/128"}),
        "blk": frozenset(
            {"10.202.0.0/24", "10.202.1.0/25", "10.202.2.0/23", "fd00:202::/48", "fd00:202:1::/65", "fd00:202:2::/47"}
        ),
    }
    for table in (m.ingress, m.egress):
        for pod, addr in PODS.items():
            if addr in table:
                table[PODS6[pod]] = table[addr]
    return m


def policy_model() -> NodeModel:
    m = NodeModel("n1")
    m.sets = {
        "web": frozenset({"10.201.1.2/32"}),
        "p2": frozenset({"10.201.2.2/32"}),
        # 10.202.0.0/16 except 10.202.1.128/25, already normalised, plus an IPv6 part (skipped)
        "blk": frozenset({"10.202.0.0/24", "10.202.1.0/25", "10.202.2.0/23", "fd00::/64"}),
    }
    m.chains = {c.id: c for c in (P2_INGRESS, P3_INGRESS, P1_EGRESS)}
    m.ingress = {PODS["p2"]: P2_INGRESS.id, PODS["p3"]: P3_INGRESS.id}
    m.egress = {PODS["p1"]: P1_EGRESS.id}
    return m


# (source namespace, destination pod, protocol, port, allowed?)
MATRIX: list[tuple[str, str, str, int, bool]] = [
    ("p1", "p2", "tcp", 20080, True),  # ingress: set peer + port; egress: any peer + port
    ("p3", "p2", "tcp", 20080, False),  # peer not in the set
    ("q1", "p2", "tcp", 20080, False),  # other node's pod, not in the set
    ("q1", "p2", "tcp", 20505, True),  # CIDR peer, inside the port range
    ("q1", "p2", "tcp", 20511, False),  # just outside the range
    ("p3", "p2", "udp", 20053, True),  # any peer, UDP port
    ("p3", "p2", "udp", 20054, False),  # UDP port not allowed
    ("p3", "p2", "tcp", 20053, False),  # TCP is not UDP
    ("p1", "p2", "udp", 20054, True),  # any-port UDP from the set (and egress to set p2)
    ("p1", "p2", "tcp", 20443, False),  # egress allows, p2's ingress denies: egress must not accept
    ("p1", "p3", "tcp", 20443, False),  # p1's egress forbids it (p3's ingress allows all)
    ("p1", "q1", "tcp", 20443, True),  # p1's egress: CIDR peer, every port
    ("p1", "q1", "udp", 20053, True),
    ("p3", "p1", "tcp", 20443, True),  # p1 is not isolated for ingress
    ("q1", "p3", "udp", 20054, True),  # isolated but allow-all
    ("node2", "p2", "tcp", 20080, False),  # a host on the other node
]


def check(topo: Topology, src: str, dst: str, proto: str, port: int, expect: bool, family: str = "ipv4") -> bool:
    netns = NODE2 if src == "node2" else topo.netns(src)
    fn = tcp_ok if proto == "tcp" else udp_ok
    addr = topo.pods6[dst] if family == "ipv6" else topo.pods[dst]
    return fn(netns, addr, port, ALLOWED_WAIT if expect else DENIED_WAIT)


def run_matrix(topo: Topology, family: str = "ipv4") -> list[str]:
    """The matrix rows whose real connection (over ``family``) disagrees with the expectation."""
    wrong = []
    for src, dst, proto, port, allowed in MATRIX:
        got = check(topo, src, dst, proto, port, allowed, family)
        if got != allowed:
            wrong.append(
                f"{family} {src}->{dst} {proto}/{port}: {'allowed' if got else 'denied'}, expected the opposite"
            )
    return wrong


def sctp_packet(src: str, dst: str, sport: int, dport: int) -> bytes:
    """An SCTP INIT chunk header (the checksum is not checked on the forward path we test)."""
    common = struct.pack("!HHII", sport, dport, 0, 0)
    init = struct.pack("!BBHIIHHI", 1, 0, 20, 1, 65535, 1, 1, 1)
    return common + init


def sctp_delivered(topo: Topology, src: str, dst: str, dport: int, wait: float = 0.3) -> bool:
    """Send one raw SCTP packet from pod ``src`` to pod ``dst``; did it arrive there?"""
    recv = _raw(topo.netns(dst))
    send = _raw(topo.netns(src))
    try:
        send.sendto(sctp_packet(topo.pods[src], topo.pods[dst], 40000, dport), (topo.pods[dst], 0))
        recv.settimeout(wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = recv.recv(4096)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            if int.from_bytes(data[ihl + 2 : ihl + 4], "big") == dport:
                return True
        return False
    finally:
        recv.close()
        send.close()


def _raw(netns: str) -> socket.socket:
    with ns.entered(netns):
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP)


# -- scenarios shared by both backends ------------------------------------------------------


def raise_fd_limit(n: int = 4096) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def churn_models(base: NodeModel, count: int, chain_every: int = 1) -> Iterator[NodeModel]:
    """``count`` successive models that differ from ``base`` only in what no test client uses:
    a set, a chain and dispatch entries for pods that do not exist, and one CIDR of ``blk``.
    A new chain (and a removed one) comes every ``chain_every`` models, set changes every time."""
    for i in range(count):
        m = base.copy()
        sid = f"churn{i % 3}"
        m.sets[sid] = frozenset(f"10.209.{i % 7}.{j}/32" for j in range(1 + i % 5))
        k = i // chain_every
        chain = Chain.of(Direction.INGRESS, [Rule(f"churn{k % 3}", (PortMatch(TCP, 1000 + k % 4),))])
        m.sets.setdefault(f"churn{k % 3}", frozenset())
        m.chains[chain.id] = chain
        m.ingress[f"10.208.0.{k % 11 + 1}"] = chain.id
        if i % 2:
            m.sets["blk"] = base.sets["blk"] | {"10.203.0.0/16"}
        yield m


def run_while(fn: Callable[[], bool], stop: threading.Event, results: list[bool]) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            results.append(fn())

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


class Backend(Protocol):
    """What the shared cases need from a backend (both real backends have it)."""

    name: str
    transactions: int
    repairs: int

    def apply_snapshot(self, model: NodeModel) -> None: ...
    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None: ...
    def verify(self, model: NodeModel) -> list[str]: ...
    def repair(self, model: NodeModel) -> None: ...
    def denied_counts(self) -> dict[str, int]: ...


def case_matrix(topo: Topology, backend: Backend) -> None:
    assert backend.verify(policy_model()) == []
    assert run_matrix(topo) == []


def case_sctp(topo: Topology, backend: Backend) -> None:
    before = backend.denied_counts()[P2_INGRESS.id]
    assert sctp_delivered(topo, "p3", "p2", 20099, wait=ALLOWED_WAIT)
    assert not sctp_delivered(topo, "p3", "p2", 20098, wait=DENIED_WAIT)
    assert settled_count(lambda: backend.denied_counts()[P2_INGRESS.id], before + 1) == before + 1


def case_delta_changes_what_passes(topo: Topology, backend: Backend) -> None:
    model = policy_model()
    wider = model.copy()
    wider.sets["web"] = model.sets["web"] | {"10.201.3.2/32"}
    backend.apply_delta(diff(model, wider), wider)
    assert tcp_ok(topo.netns("p3"), PODS["p2"], 20080)
    # p3 moves to a new chain that allows nothing, p2 leaves ingress isolation
    closed = wider.copy()
    deny_all = Chain.of(Direction.INGRESS, [])
    closed.chains[deny_all.id] = deny_all
    closed.ingress[PODS["p3"]] = deny_all.id
    del closed.ingress[PODS["p2"]]
    backend.apply_delta(diff(wider, closed), closed)
    assert backend.verify(closed) == []
    assert not udp_ok(topo.netns("q1"), PODS["p3"], 20054, timeout=DENIED_WAIT)
    assert tcp_ok(topo.netns("q1"), PODS["p2"], 20080)
    backend.apply_delta(diff(closed, model), model)
    assert not tcp_ok(topo.netns("p3"), PODS["p2"], 20080, timeout=DENIED_WAIT)
    assert udp_ok(topo.netns("q1"), PODS["p3"], 20054)
    assert backend.verify(model) == []


def case_blocked_counts(topo: Topology, backend: Backend) -> None:
    raise_fd_limit()

    def denied() -> int:
        return backend.denied_counts()[P2_INGRESS.id]

    before = denied()
    syn_burst(topo.netns("p3"), PODS["p2"], 20443, 1000, linger=1.5)  # SYNs retransmit after 1 s
    after_tcp = settled_count(denied, before + 1000)
    assert after_tcp - before == 1000
    udp_burst(topo.netns("p3"), PODS["p2"], 20054, flows=300, per_flow=3)
    assert settled_count(denied, after_tcp + 300) - after_tcp == 300


def case_atomic(
    topo: Topology,
    backend: Backend,
    deltas: int = 1000,
    chain_every: int = 1,
    every: int = 50,
    *,
    model: NodeModel | None = None,
    churn: Iterable[NodeModel] | None = None,
    dst: str = PODS["p2"],
) -> None:
    """Connections made while ``deltas`` deltas are applied all get the right verdict.

    Clients in threads race the deltas (how many of their attempts land during them depends on
    the machine's speed, so their count is not asserted); between every ``every`` deltas the
    loop itself makes one allowed and one denied attempt, so at least ``deltas // every`` of
    each are made whatever the speed. ``model`` (default `policy_model`), ``churn`` (default
    `churn_models` of it) and ``dst`` (p2's address of the family under test) select the case."""
    model = model if model is not None else policy_model()
    churn = churn if churn is not None else churn_models(model, deltas, chain_every)
    stop, allowed, denied = threading.Event(), list[bool](), list[bool]()
    p1, p3 = topo.netns("p1"), topo.netns("p3")

    # < 1 s: a dropped SYN would be retransmitted after 1 s and hide the failure
    def allowed_try() -> bool:
        return tcp_ok(p1, dst, 20080, timeout=0.9)

    def denied_try() -> bool:
        return tcp_ok(p3, dst, 20080, timeout=0.2)

    threads = [run_while(allowed_try, stop, allowed), run_while(denied_try, stop, denied)]
    sync_allowed, sync_denied = list[bool](), list[bool]()
    prev = model
    try:
        for i, nxt in enumerate(churn, 1):
            backend.apply_delta(diff(prev, nxt), nxt)
            prev = nxt
            if i % every == 0:
                sync_allowed.append(allowed_try())
                sync_denied.append(denied_try())
    finally:
        backend.apply_delta(diff(prev, model), model)
        stop.set()
        for t in threads:
            t.join()
    assert backend.verify(model) == []
    assert len(sync_allowed) == len(sync_denied) == deltas // every
    allowed += sync_allowed
    denied += sync_denied
    assert all(allowed), f"{allowed.count(False)} of {len(allowed)} allowed connections to {dst} failed"
    assert not any(denied), f"{denied.count(True)} of {len(denied)} denied connections to {dst} passed"


def case_drift(topo: Topology, backend: Backend, damage: list[str]) -> None:
    model = policy_model()
    ns.run(damage, topo.node, check=True)
    assert backend.verify(model) != []
    repairs = backend.repairs
    backend.repair(model)
    assert backend.repairs == repairs + 1
    assert backend.verify(model) == []
    assert tcp_ok(topo.netns("p1"), PODS["p2"], 20080)
    assert not tcp_ok(topo.netns("p3"), PODS["p2"], 20080, timeout=DENIED_WAIT)
