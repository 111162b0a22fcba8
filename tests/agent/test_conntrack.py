"""Conntrack clean-up: the pure decision, and real established connections ended in a node netns."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2 import netns as pr_netns

from stockade.agent import conntrack as ct
from stockade.agent.conntrack import EntryKey, TrackedFlow, cleanup, cleanup_async, flows_to_end, may_forbid
from stockade.model.rules import Chain, Direction, NodeModel, PortMatch, Protocol, Rule, diff

TCP = Protocol.TCP
A, B = "10.79.1.2", "10.79.2.2"  # pod A (client) and pod B (server), both on the node

INGRESS_B = Chain.of(
    Direction.INGRESS,
    [Rule("ag_a", (PortMatch(TCP, 7100),)), Rule(None, (PortMatch(TCP, 7200), PortMatch(TCP, 7300)))],
)
EGRESS_A = Chain.of(
    Direction.EGRESS,
    [Rule("ag_b", (PortMatch(TCP, 7300),)), Rule(None, (PortMatch(TCP, 7100), PortMatch(TCP, 7200)))],
)


def model(ag_a: frozenset[str], ag_b: frozenset[str]) -> NodeModel:
    return NodeModel(
        "node-1",
        sets={"ag_a": ag_a, "ag_b": ag_b},
        chains={INGRESS_B.id: INGRESS_B, EGRESS_A.id: EGRESS_A},
        ingress={B: INGRESS_B.id},
        egress={A: EGRESS_A.id},
    )


ALLOWING = model(frozenset({f"{A}/32"}), frozenset({f"{B}/32"}))
FORBIDDING = model(frozenset(), frozenset())


def flow(src: str, dst: str, dport: int, proto: int = 6, orig_dst: str | None = None) -> TrackedFlow:
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    return TrackedFlow(fam, proto, src, 40000, dst, dport, EntryKey(src, orig_dst or dst, 40000, dport))


# -- the decision (no kernel) ----------------------------------------------------------------


def test_decision_ends_only_what_the_model_forbids() -> None:
    local = {A, B}
    flows = [
        flow(A, B, 7100),  # ingress of B needs A in ag_a; egress of A allows 7100 to anyone
        flow(A, B, 7200),  # allowed both ways whatever the sets
        flow(A, B, 7300),  # egress of A needs B in ag_b; ingress of B allows 7300 from anyone
        flow("10.9.9.9", B, 7200),  # remote client, allowed port
        flow("10.9.9.9", "10.9.9.8", 7100),  # neither end is a local pod
        flow(B, A, 7100),  # to A: A is not isolated for ingress; B not isolated for egress
        flow(A, B, 0, proto=1),  # ICMP: the model has no rules for it, left alone
    ]
    assert flows_to_end(ALLOWING, local, flows) == []
    ended = flows_to_end(FORBIDDING, local, flows)
    assert [(f.src, f.dport) for f in ended] == [(A, 7100), (A, 7300)]


def test_decision_follows_dnat_and_needs_the_pod_to_be_local() -> None:
    # a connection to a Service VIP that kube-proxy sent to B: the reply comes from B
    via_service = flow("10.9.9.9", B, 7100, orig_dst="10.96.0.10")
    assert flows_to_end(FORBIDDING, {A, B}, [via_service]) == [via_service]
    assert flows_to_end(FORBIDDING, {A}, [via_service]) == []  # B is not on this node


def test_decision_with_ipv6_spellings() -> None:
    chain = Chain.of(Direction.INGRESS, [Rule(None, (PortMatch(TCP, 80),))])
    m = NodeModel("n", chains={chain.id: chain}, ingress={"fd00::5": chain.id})
    flows = [flow("fd00::9", "fd00::5", 80), flow("fd00::9", "fd00::5", 81)]
    assert flows_to_end(m, {"fd00:0:0::5/128"}, flows) == [flows[1]]


def test_only_deltas_that_take_something_away_need_a_cleanup() -> None:
    assert may_forbid(diff(ALLOWING, FORBIDDING))  # elements leave sets
    assert not may_forbid(diff(FORBIDDING, ALLOWING))  # elements join sets
    open_b = NodeModel("node-1", sets=dict(ALLOWING.sets), chains=dict(ALLOWING.chains), egress=dict(ALLOWING.egress))
    assert not may_forbid(diff(ALLOWING, open_b))  # B no longer isolated
    assert may_forbid(diff(open_b, ALLOWING))  # B isolated again


def ct_tuple(family: int, src: str, dst: str, proto: int, sport: int, dport: int) -> bytes:
    n = ct._nla
    v4 = family == socket.AF_INET
    ip = n(1 if v4 else 3, socket.inet_pton(family, src)) + n(2 if v4 else 4, socket.inet_pton(family, dst))
    ports = n(1, bytes([proto])) + n(2, struct.pack("!H", sport)) + n(3, struct.pack("!H", dport))
    return n(1 | 0x8000, ip) + n(2 | 0x8000, ports)


def test_entries_are_read_from_the_wire_with_the_reply_source_as_destination() -> None:
    n = ct._nla
    body = (
        struct.pack("!BBH", socket.AF_INET, 0, 0)
        + n(1 | 0x8000, ct_tuple(socket.AF_INET, A, "10.96.0.10", 6, 40001, 80))  # to a Service VIP
        + n(2 | 0x8000, ct_tuple(socket.AF_INET, B, A, 6, 8080, 40001))  # answered by pod B
        + n(3, struct.pack("!I", 0x18E))  # status: ignored
        + n(12, struct.pack("!I", 777))
    )
    f = ct.parse_entry(body, 0, len(body), socket.AF_INET)
    assert f is not None
    # the same tuple with a zone inside takes the general walk, to the same result
    zoned = ct_tuple(socket.AF_INET, A, "10.96.0.10", 6, 40001, 80) + n(3, struct.pack("!H", 0))
    assert ct._tuple(zoned, 0, len(zoned)) == ct._tuple(zoned, 0, len(zoned) - 8) == (A, "10.96.0.10", 6, 40001, 80)
    assert (f.src, f.sport, f.dst, f.dport, f.protocol) == (A, 40001, B, 8080, 6)
    assert f.entry == EntryKey(A, "10.96.0.10", 40001, 80, None, 777)
    # a delete names the original tuple and the id
    msg = ct.delete_message(5, f)
    assert struct.unpack_from("=IHHII", msg)[:4] == (len(msg), (1 << 8) | 2, 0x5, 5)
    assert ct_tuple(socket.AF_INET, A, "10.96.0.10", 6, 40001, 80) in msg and struct.pack("!I", 777) in msg

    v6 = (
        struct.pack("!BBH", socket.AF_INET6, 0, 0)
        + n(1 | 0x8000, ct_tuple(socket.AF_INET6, "fd00::1", "fd00::2", 17, 5000, 53))
        + n(2 | 0x8000, ct_tuple(socket.AF_INET6, "fd00::2", "fd00::1", 17, 53, 5000))
    )
    f6 = ct.parse_entry(v6, 0, len(v6), socket.AF_INET6)
    assert f6 is not None and (f6.src, f6.dst, f6.dport, f6.entry.ct_id) == ("fd00::1", "fd00::2", 53, None)


# -- real connections ------------------------------------------------------------------------

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs on one machine pick distinct slots
CLIENT, NODE, SERVER = f"st{_SLOT}-nl-c2", f"st{_SLOT}-nl-n2", f"st{_SLOT}-nl-s2"

# The backends' layout in small: dispatch maps into per-pod chains, established flows first.
# With nf_conntrack_tcp_loose (the default), a mid-stream segment of a flow whose entry was
# deleted starts a new entry; were it the server's reply, that entry (server -> client) would
# pass the pod chains and re-open the flow in both directions. So a new TCP flow must begin
# with a SYN: the rule before the dispatch.
RULESET = f"""
table inet cttest {{
  set ag_a {{ type ipv4_addr; flags interval; elements = {{ {A} }}; }}
  set ag_b {{ type ipv4_addr; flags interval; elements = {{ {B} }}; }}
  map ingress_dispatch {{ type ipv4_addr : verdict; elements = {{ {B} : jump {INGRESS_B.id} }}; }}
  map egress_dispatch {{ type ipv4_addr : verdict; elements = {{ {A} : jump {EGRESS_A.id} }}; }}
  chain {INGRESS_B.id} {{
    ip saddr @ag_a tcp dport 7100 accept
    tcp dport {{ 7200, 7300 }} accept
    drop
  }}
  chain {EGRESS_A.id} {{
    ip daddr @ag_b tcp dport 7300 return
    tcp dport {{ 7100, 7200 }} return
    drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    tcp flags & (fin | syn | rst | ack) != syn ct state new drop
    ip saddr vmap @egress_dispatch
    ip daddr vmap @ingress_dispatch
  }}
}}
"""


def sh(*cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(cmd, input=stdin, check=True, capture_output=True, text=True).stdout


def delete_namespaces() -> None:
    for ns in (CLIENT, NODE, SERVER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def topology() -> Iterator[None]:
    delete_namespaces()
    try:
        for ns in (CLIENT, NODE, SERVER):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, idx, ip in ((CLIENT, 1, A), (SERVER, 2, B)):
            pod, nod = f"st{_SLOT}-nl-q{idx}", f"st{_SLOT}-nl-g{idx}"
            sh("ip", "link", "add", pod, "netns", ns, "type", "veth", "peer", "name", nod, "netns", NODE)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", pod)
            sh("ip", "-n", NODE, "addr", "add", f"10.79.{idx}.1/24", "dev", nod)
            sh("ip", "-n", ns, "link", "set", pod, "up")
            sh("ip", "-n", NODE, "link", "set", nod, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.79.{idx}.1")
        sh("ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin=RULESET)
        yield
    finally:
        delete_namespaces()


def sock_in(ns: str) -> socket.socket:
    pr_netns.pushns(ns)
    try:
        return socket.socket()
    finally:
        pr_netns.popns()


def passes(a: socket.socket, b: socket.socket, data: bytes, wait: float = 1.0) -> bool:
    """Does ``data`` sent on ``a`` arrive on ``b`` within ``wait`` seconds?"""
    a.sendall(data)
    b.settimeout(wait)
    try:
        return b.recv(100) == data
    except TimeoutError:
        return False


@pytest.mark.root
def test_forbidden_connections_are_ended_and_allowed_ones_survive(topology: None) -> None:
    listeners = {}
    for port in (7100, 7200, 7300):
        lsn = sock_in(SERVER)
        lsn.bind((B, port))
        lsn.listen()
        listeners[port] = lsn
    conns = {}
    for port, lsn in listeners.items():
        client = sock_in(CLIENT)
        client.settimeout(2)
        client.connect((B, port))
        server, _ = lsn.accept()
        conns[port] = (client, server)
        assert passes(client, server, b"hello")

    # the policy tightens: A leaves B's allowed peers, B leaves A's allowed destinations
    sh("ip", "netns", "exec", NODE, "nft", f"delete element inet cttest ag_a {{ {A} }}")
    sh("ip", "netns", "exec", NODE, "nft", f"delete element inet cttest ag_b {{ {B} }}")
    # the rules alone leave established connections running: that is why clean-up exists
    assert passes(*conns[7100], b"still") and passes(*conns[7300], b"still")

    result = cleanup(FORBIDDING, {A, B}, netns=NODE)
    assert sorted(f.dport for f in result.deleted) == [7100, 7300]
    assert all(f.entry.ct_id is not None for f in result.deleted)
    assert result.examined >= 3

    for port in (7100, 7300):
        client, server = conns[port]
        assert not passes(client, server, b"after")
        assert not passes(server, client, b"reply")  # nor in the other direction
    assert passes(*conns[7200], b"after")  # allowed by the new model: untouched
    # and nothing is left to end (the asyncio entry point, as the agent calls it)
    assert asyncio.run(cleanup_async(FORBIDDING, {A, B}, netns=NODE)).deleted == []
    for sock in [*listeners.values(), *(s for pair in conns.values() for s in pair)]:
        sock.close()


# -- real IPv6 connections, through the iptables backend ------------------------------------------

CLIENT6, NODE6, SERVER6 = f"st{_SLOT}-nl-c3", f"st{_SLOT}-nl-n3", f"st{_SLOT}-nl-s3"
A6, B6 = "fd79:1::2", "fd79:2::2"


def model6(ag_a: frozenset[str], ag_b: frozenset[str]) -> NodeModel:
    return NodeModel(
        "node-1",
        sets={"ag_a": ag_a, "ag_b": ag_b},
        chains={INGRESS_B.id: INGRESS_B, EGRESS_A.id: EGRESS_A},
        ingress={B6: INGRESS_B.id},
        egress={A6: EGRESS_A.id},
    )


ALLOWING6 = model6(frozenset({f"{A6}/128"}), frozenset({f"{B6}/128"}))
FORBIDDING6 = model6(frozenset(), frozenset())


def sock6_in(ns: str) -> socket.socket:
    pr_netns.pushns(ns)
    try:
        return socket.socket(socket.AF_INET6)
    finally:
        pr_netns.popns()


@pytest.fixture
def topology6() -> Iterator[None]:
    names = (CLIENT6, NODE6, SERVER6)
    for ns in names:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    try:
        for ns in names:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, idx, ip in ((CLIENT6, 1, A6), (SERVER6, 2, B6)):
            pod, nod = f"st{_SLOT}-nl-r{idx}", f"st{_SLOT}-nl-k{idx}"
            sh("ip", "link", "add", pod, "netns", ns, "type", "veth", "peer", "name", nod, "netns", NODE6)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", pod, "nodad")
            sh("ip", "-n", NODE6, "addr", "add", f"fd79:{idx}::1/64", "dev", nod, "nodad")
            sh("ip", "-n", ns, "link", "set", pod, "up")
            sh("ip", "-n", NODE6, "link", "set", nod, "up")
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd79:{idx}::1")
        sh("ip", "netns", "exec", NODE6, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        yield
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.root
def test_forbidden_ipv6_connections_are_ended(topology6: None) -> None:
    from stockade.agent.backends.iptables import IptablesBackend

    backend = IptablesBackend(NODE6)
    backend.apply_snapshot(ALLOWING6)
    listeners, conns = {}, {}
    for port in (7100, 7200, 7300):
        lsn = sock6_in(SERVER6)
        lsn.bind((B6, port))
        lsn.listen()
        listeners[port] = lsn
        client = sock6_in(CLIENT6)
        client.settimeout(5)  # the first packets may wait for neighbour discovery
        client.connect((B6, port))
        conns[port] = (client, lsn.accept()[0])
        assert passes(*conns[port], b"hello", wait=5)

    backend.apply_delta(diff(ALLOWING6, FORBIDDING6), FORBIDDING6)
    assert backend.verify(FORBIDDING6) == []
    assert passes(*conns[7100], b"still") and passes(*conns[7300], b"still")  # established: untouched

    result = cleanup(FORBIDDING6, {A6, B6}, netns=NODE6)
    assert sorted(f.dport for f in result.deleted) == [7100, 7300]
    assert {(f.family, f.src, f.dst) for f in result.deleted} == {(socket.AF_INET6, A6, B6)}
    for port in (7100, 7300):
        client, server = conns[port]
        assert not passes(client, server, b"after")
        assert not passes(server, client, b"reply")
    assert passes(*conns[7200], b"after")
    assert cleanup(FORBIDDING6, {A6, B6}, netns=NODE6).deleted == []
    for sock in [*listeners.values(), *(s for pair in conns.values() for s in pair)]:
        sock.close()


def test_a_local_pod_of_neither_family_is_refused() -> None:
    with pytest.raises(ct.ConntrackError, match="'fd00::zz' is neither IPv4 nor IPv6"):
        flows_to_end(ALLOWING, {A, "fd00::zz"}, [])


def test_ipv6_tuples_take_the_fast_path_to_the_same_result() -> None:
    n = ct._nla
    t = ct_tuple(socket.AF_INET6, "fd00::1", "fd00:0:0:1::2", 6, 40001, 443)
    assert len(t) == ct._V6_TUPLE.size
    zoned = t + n(3, struct.pack("!H", 0))  # a zone inside: the general walk
    assert ct._tuple(t, 0, len(t)) == ct._tuple(zoned, 0, len(zoned)) == ("fd00::1", "fd00:0:0:1::2", 6, 40001, 443)
