"""The NFLOG reader: its parser on built messages, and the reader on real dropped packets.

Root tests build client -- node -- server network namespaces; a hand-written nft ruleset in the
node logs denied flows to an NFLOG group with a chain id as prefix (the backends' contract).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from pyroute2 import netns as pr_netns

from stockade.agent.metrics import AgentMetrics
from stockade.agent.nflog import NflogReader, parse_flow, parse_messages
from stockade.agent.nflog import protocol as p
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

# -- parser (no kernel) ----------------------------------------------------------------------


def ipv4(src: str, dst: str, proto: int, l4: bytes, frag: int = 0) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return hdr + l4


def ipv6(src: str, dst: str, nxt: int, rest: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(rest), nxt, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + rest
    )


def test_parses_a_batch_of_packet_messages_and_acks() -> None:
    syn = ipv4("10.0.0.1", "10.0.0.2", 6, struct.pack("!HH", 40000, 443) + b"\0" * 16)
    udp = ipv4("10.0.0.3", "10.0.0.4", 17, struct.pack("!HHHH", 5353, 53, 8, 0))
    buf = (
        p.build_packet_message(socket.AF_INET, 100, "in_abc", syn, seq=7, timestamp=1700000000.25)
        + p.build_packet_message(socket.AF_INET, 100, "out_def", udp, seq=8)
        + struct.pack("=IHHII", 16, p.NLMSG_DONE, 0, 0, 0)
    )
    msgs = parse_messages(buf)
    assert [type(m).__name__ for m in msgs] == ["NflogPacket", "NflogPacket"]
    a, b = msgs
    assert isinstance(a, p.NflogPacket) and isinstance(b, p.NflogPacket)
    assert (a.prefix, a.seq, a.timestamp, a.group) == ("in_abc", 7, 1700000000.25, 100)
    assert (b.prefix, b.seq, b.timestamp) == ("out_def", 8, None)
    fa, fb = parse_flow(a.payload), parse_flow(b.payload)
    assert fa is not None and fb is not None
    assert (fa.src, fa.dst, fa.protocol, fa.sport, fa.dport) == ("10.0.0.1", "10.0.0.2", "TCP", 40000, 443)
    assert (fb.protocol, fb.sport, fb.dport) == ("UDP", 5353, 53)

    ack = struct.pack("=IHHII", 36, p.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -16)
    ack += struct.pack("=IHHII", 40, p.MSG_CONFIG, 5, 3, 0)
    (err,) = parse_messages(ack)
    assert isinstance(err, p.NetlinkError) and (err.seq, err.errno) == (3, 16)


def test_truncated_buffer_stops_cleanly() -> None:
    msg = p.build_packet_message(socket.AF_INET, 1, "in_x", ipv4("1.1.1.1", "2.2.2.2", 6, b"\0" * 20))
    assert len(parse_messages(msg + msg[:30])) == 1


def test_flow_of_ipv6_sctp_icmp_and_fragments() -> None:
    hop_by_hop = bytes([132, 0]) + b"\0" * 6  # next header SCTP, 8 bytes long
    f6 = parse_flow(ipv6("fd00::1", "fd00:0:0:0::2", 0, hop_by_hop + struct.pack("!HH", 7, 9)))
    assert f6 is not None and (f6.src, f6.dst, f6.protocol, f6.sport, f6.dport) == (
        "fd00::1", "fd00::2", "SCTP", 7, 9,
    )  # fmt: skip
    icmp = parse_flow(ipv4("10.0.0.1", "10.0.0.2", 1, b"\x08\0\0\0\0\0\0\0"))
    assert icmp is not None and (icmp.protocol, icmp.sport, icmp.dport) == ("1", 0, 0)
    later_fragment = parse_flow(ipv4("10.0.0.1", "10.0.0.2", 17, b"\x11\x11\x22\x22", frag=100))
    assert later_fragment is not None and (later_fragment.sport, later_fragment.dport) == (0, 0)
    assert parse_flow(b"") is None and parse_flow(b"\x45\0") is None


def test_flow_of_ipv6_through_the_extension_header_chain() -> None:
    def ext(nxt: int, units: int) -> bytes:  # RFC 8200 layout: (units + 1) * 8 bytes
        return bytes([nxt, units]) + b"\0" * (6 + units * 8)

    def ah(nxt: int) -> bytes:  # 24 bytes: length field (24 / 4) - 2 = 4
        return bytes([nxt, 4]) + b"\0" * 22

    def frag(nxt: int, offset: int) -> bytes:
        return struct.pack("!BBHI", nxt, 0, offset << 3, 7)

    udp = struct.pack("!HHHH", 5353, 53, 8, 0)
    chain = ext(43, 0) + ext(60, 1) + ext(51, 0) + ah(44) + frag(17, 0) + udp  # hop-by-hop, routing, dest, AH, frag
    f = parse_flow(ipv6("fd00:10:244:1::5", "fd00:10:244:2::7", 0, chain))
    assert f is not None and (f.src, f.dst, f.protocol, f.sport, f.dport) == (
        "fd00:10:244:1::5", "fd00:10:244:2::7", "UDP", 5353, 53,
    )  # fmt: skip
    later = parse_flow(ipv6("fd00::1", "fd00::2", 44, frag(17, 100) + udp))
    assert later is not None and (later.protocol, later.sport, later.dport) == ("UDP", 0, 0)
    icmp6 = parse_flow(ipv6("fd00::1", "fd00::2", 58, b"\x80\0\0\0\0\1\0\1"))  # echo request
    assert icmp6 is not None and (icmp6.protocol, icmp6.sport, icmp6.dport) == ("58", 0, 0)
    tcp = parse_flow(ipv6("fd00:0000::0001", "::ffff:10.0.0.2", 6, struct.pack("!HH", 40000, 443) + b"\0" * 16))
    assert tcp is not None and (tcp.src, tcp.dst, tcp.protocol, tcp.dport) == ("fd00::1", "::ffff:10.0.0.2", "TCP", 443)
    # a chain cut short by the copy range: addresses still known, ports not
    cut = parse_flow(ipv6("fd00::1", "fd00::2", 0, ext(6, 4)[:10]))
    assert cut is not None and (cut.src, cut.sport, cut.dport) == ("fd00::1", 0, 0)
    assert parse_flow(ipv6("fd00::1", "fd00::2", 6, b"")[:39]) is None


def test_ipv6_packet_message_round_trip() -> None:
    payload = ipv6("fd00::1", "fd00::2", 132, struct.pack("!HH", 7, 9) + b"\0" * 8)
    (msg,) = parse_messages(p.build_packet_message(socket.AF_INET6, 100, "out_ab12", payload, seq=3))
    assert isinstance(msg, p.NflogPacket)
    assert (msg.family, msg.hw_protocol, msg.prefix, msg.payload) == (socket.AF_INET6, 0x86DD, "out_ab12", payload)


# -- real packets ----------------------------------------------------------------------------

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs on one machine pick distinct slots
CLIENT, NODE, SERVER = f"st{_SLOT}-nl-c1", f"st{_SLOT}-nl-n1", f"st{_SLOT}-nl-s1"
CLIENT_IP, SERVER_IP = "10.78.1.2", "10.78.2.2"
CLIENT_IP6, SERVER_IP6 = "fd78:1::2", "fd78:2::2"
GROUP = 100

# in_dd: kernel-side dedupe as the backends do it (a dynamic set keyed by the flow); in_nodd:
# none, so SYN retransmits reach the reader, which must fold them itself.
FLOW = "ip saddr . ip daddr . meta l4proto . th sport . th dport"
RULESET = f"""
table inet nltest {{
  set seen4 {{
    type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service
    flags dynamic,timeout; timeout 60s; size 65536;
  }}
  chain in_dd1234 {{
    {FLOW} @seen4 drop
    add @seen4 {{ {FLOW} }} counter log group {GROUP} prefix "in_dd1234" drop
  }}
  chain out_ee5678 {{
    {FLOW} @seen4 drop
    add @seen4 {{ {FLOW} }} counter log group {GROUP} prefix "out_ee5678" drop
  }}
  chain in_nodd99 {{
    counter log group {GROUP} prefix "in_nodd99" drop
  }}
  chain in_v6aa11 {{
    counter log group {GROUP} prefix "in_v6aa11" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    ip daddr {SERVER_IP} tcp dport 9000 jump in_dd1234
    ip daddr {SERVER_IP} udp dport 9001 jump out_ee5678
    ip daddr {SERVER_IP} tcp dport 9002 jump in_nodd99
    ip6 daddr {SERVER_IP6} tcp dport 9000 jump in_v6aa11
  }}
}}
"""


def sh(*cmd: str, stdin: str | None = None) -> str:
    return subprocess.run(cmd, input=stdin, check=True, capture_output=True, text=True).stdout


def delete_namespaces() -> None:
    for ns in (CLIENT, NODE, SERVER):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def topology() -> Iterator[None]:
    delete_namespaces()
    try:
        for ns in (CLIENT, NODE, SERVER):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, idx, ip, ip6 in ((CLIENT, 1, CLIENT_IP, CLIENT_IP6), (SERVER, 2, SERVER_IP, SERVER_IP6)):
            pod, nod = f"st{_SLOT}-nl-p{idx}", f"st{_SLOT}-nl-h{idx}"
            sh("ip", "link", "add", pod, "netns", ns, "type", "veth", "peer", "name", nod, "netns", NODE)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", pod)
            sh("ip", "-n", ns, "addr", "add", f"{ip6}/64", "dev", pod, "nodad")
            sh("ip", "-n", NODE, "addr", "add", f"10.78.{idx}.1/24", "dev", nod)
            sh("ip", "-n", NODE, "addr", "add", f"fd78:{idx}::1/64", "dev", nod, "nodad")
            sh("ip", "-n", ns, "link", "set", pod, "up")
            sh("ip", "-n", NODE, "link", "set", nod, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"10.78.{idx}.1")
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", f"fd78:{idx}::1")
        sh("ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin=RULESET)
        yield
    finally:
        delete_namespaces()


@pytest.fixture
def fresh_rules(topology: None) -> None:
    """Empty the dedupe set, so each test's flows are new (counters: compare before/after)."""
    sh("ip", "netns", "exec", NODE, "nft", "flush", "set", "inet", "nltest", "seen4")


def client_socket(kind: int = socket.SOCK_STREAM, family: int = socket.AF_INET) -> socket.socket:
    pr_netns.pushns(CLIENT)
    try:
        s = socket.socket(family, kind)
    finally:
        pr_netns.popns()
    s.setblocking(False)
    return s


def syn(
    port: int, keep: bool = False, family: int = socket.AF_INET, sport: int = 0
) -> tuple[int, socket.socket | None]:
    """Send one TCP SYN from the client (a connection attempt); returns its source port."""
    s = client_socket(family=family)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
    sport = s.getsockname()[1]
    s.connect_ex((SERVER_IP6 if family == socket.AF_INET6 else SERVER_IP, port))
    if keep:
        return sport, s  # left open: the kernel retransmits the SYN after 1 s
    s.close()  # closing in SYN_SENT sends nothing more
    return sport, None


def syn_burst(port: int, n: int) -> list[int]:
    """``n`` attempts from ``n`` distinct source ports (held open until all are sent: a port
    freed at once could be reused, and a repeated 5-tuple is rightly the same flow)."""
    held = [syn(port, keep=True) for _ in range(n)]
    for _, s in held:
        assert s is not None
        s.close()
    return [sport for sport, _ in held]


def collect(reader: NflogReader, want: int, timeout: float = 3.0) -> list[BlockedEvent]:
    events: list[BlockedEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(events) + reader.stats.lost < want:
        events += reader.read_batch()
        time.sleep(0.02)
    time.sleep(0.1)  # anything beyond what we expect would show up now
    return events + reader.read_batch()


def kernel_count(chain: str) -> int:
    out = json.loads(sh("ip", "netns", "exec", NODE, "nft", "-j", "list", "chain", "inet", "nltest", chain))
    return sum(
        expr["counter"]["packets"]
        for item in out["nftables"]
        if "rule" in item
        for expr in item["rule"]["expr"]
        if "counter" in expr
    )


@pytest.mark.root
def test_tcp_and_udp_attempts_become_events_with_their_fields(fresh_rules: None) -> None:
    counted = kernel_count("in_dd1234"), kernel_count("out_ee5678")
    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        before = time.time()
        tcp_ports = set(syn_burst(9000, 5))
        udp_ports = set()
        udp = [client_socket(socket.SOCK_DGRAM) for _ in range(3)]  # open together: 3 distinct ports
        for u in udp:
            u.sendto(b"ping", (SERVER_IP, 9001))
            u.sendto(b"again", (SERVER_IP, 9001))  # same flow: still one blocked connection
            udp_ports.add(u.getsockname()[1])
        for u in udp:
            u.close()
        syn(9999)  # no rule: passes the node, so no event
        events = collect(reader, 8)
        after = time.time()

    tcp = [e for e in events if e.protocol == "TCP"]
    udp = [e for e in events if e.protocol == "UDP"]
    assert len(events) == 8 and len(tcp) == 5 and len(udp) == 3
    assert {e.sport for e in tcp} == tcp_ports and {e.sport for e in udp} == udp_ports
    for e in tcp:
        assert (e.node, e.direction, e.chain, e.src, e.dst, e.dport) == (
            "node-1", Direction.INGRESS, "in_dd1234", CLIENT_IP, SERVER_IP, 9000,
        )  # fmt: skip
        assert before - 1 <= e.time <= after + 1
    for e in udp:
        assert (e.direction, e.chain, e.dport) == (Direction.EGRESS, "out_ee5678", 9001)
    assert reader.stats.lost == 0
    assert (kernel_count("in_dd1234") - counted[0], kernel_count("out_ee5678") - counted[1]) == (5, 3)

    metrics = AgentMetrics()
    metrics.blocked_events(events)
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }
    key = (
        "stockade_agent_blocked_connections_total",
        (("direction", "ingress"), ("dport", "other"), ("protocol", "TCP")),
    )
    assert samples[key] == 5  # 9000 is above 1024 and named by no rule of this (empty) model


@pytest.mark.root
def test_syn_retransmits_count_once(fresh_rules: None) -> None:
    counted = kernel_count("in_nodd99")
    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        held = [syn(9002, keep=True) for _ in range(3)]
        events = collect(reader, 3)
        # each SYN is retransmitted after 1 s (its timer may run late on a busy machine): read
        # until the kernel has logged every one at least twice
        deadline = time.monotonic() + 20
        while reader.stats.messages < 6 and time.monotonic() < deadline:
            events += reader.read_batch()
            time.sleep(0.05)
        for _, s in held:
            assert s is not None
            s.close()
        # nothing is sent after the close: read what the kernel logged up to it
        deadline = time.monotonic() + 20
        while reader.stats.messages < kernel_count("in_nodd99") - counted and time.monotonic() < deadline:
            events += reader.read_batch()
            time.sleep(0.05)
    assert sorted(e.sport for e in events) == sorted(port for port, _ in held)
    assert reader.stats.messages >= 6  # the kernel logged every SYN: the reader folded them
    assert reader.stats.duplicates == reader.stats.messages - 3
    assert kernel_count("in_nodd99") - counted == reader.stats.messages


@pytest.mark.root
def test_ipv6_attempts(fresh_rules: None) -> None:
    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        ports = {syn(9000, family=socket.AF_INET6)[0] for _ in range(2)}
        events = collect(reader, 2)
    assert {e.sport for e in events} == ports
    assert {(e.src, e.dst, e.chain, e.protocol) for e in events} == {(CLIENT_IP6, SERVER_IP6, "in_v6aa11", "TCP")}


@pytest.mark.root
def test_a_thousand_rapid_attempts_are_counted_exactly(fresh_rules: None) -> None:
    n = 1000
    counted = kernel_count("in_dd1234")
    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        ports = syn_burst(9000, n)
        events = collect(reader, n, timeout=10)
    assert reader.stats.lost == 0 and reader.stats.overruns == 0
    assert len(events) == n and sorted(e.sport for e in events) == sorted(ports)
    assert kernel_count("in_dd1234") - counted == n


@pytest.mark.root
def test_overrun_losses_are_counted_exactly(fresh_rules: None) -> None:
    """A receive queue too small for the flood: what is missing is exactly what `lost` says."""
    n = 1000
    counted = kernel_count("in_dd1234")
    with NflogReader("node-1", GROUP, netns=NODE, rcvbuf=1, batch=1) as reader:
        burst = syn_burst(9000, n)  # nobody reads meanwhile: the queue overflows
        drained = collect(reader, 0, timeout=0.5)
        # a gap shows once a later message arrives: one more attempt, into an empty queue, from a
        # port the burst did not use (a reused port is the same flow, rightly deduped unlogged)
        spare = next(p for p in range(40000, 65536) if p not in burst)
        last = syn(9000, sport=spare)[0]
        events = drained + collect(reader, 1)
    assert reader.stats.overruns >= 1 and reader.stats.lost > 0
    assert events[-1].sport == last
    assert len(events) + reader.stats.lost == n + 1 == kernel_count("in_dd1234") - counted


@pytest.mark.root
async def test_asyncio_reader_delivers_batches(fresh_rules: None) -> None:
    loop = asyncio.get_running_loop()
    got: list[BlockedEvent] = []
    done = asyncio.Event()

    def on_events(batch: list[BlockedEvent]) -> None:
        got.extend(batch)
        if len(got) >= 4:
            done.set()

    with NflogReader("node-1", GROUP, netns=NODE) as reader:
        reader.attach(loop, on_events)
        ports = set(syn_burst(9000, 4))
        await asyncio.wait_for(done.wait(), 20)  # a deadline for a busy machine: it takes milliseconds
        reader.detach()
    assert {e.sport for e in got} == ports


@pytest.mark.root
def test_a_second_reader_on_the_same_group_gets_a_clear_error(topology: None) -> None:
    from stockade.agent.nflog.reader import NflogError

    with NflogReader("node-1", GROUP, netns=NODE), pytest.raises(NflogError, match="already bound"):
        NflogReader("node-1", GROUP, netns=NODE).open()
