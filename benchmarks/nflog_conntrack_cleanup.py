"""Conntrack clean-up speed (root): list a node's table, judge every flow, delete the forbidden.

A node namespace gets N synthetic TCP entries (raw ctnetlink creates) from 250 clients to 40
local pods; the new model isolates the pods and allows clients .0-.207, so 42 of 250 clients'
flows (17%) lose their permission.
Prints the time of one `cleanup` and its ratio to the target: 1 s for 10,000 tracked flows (a
tightened policy ends forbidden connections within a second of the apply).

``python benchmarks/nflog_conntrack_cleanup.py [N] [ipv4|ipv6|dual]``: the same table with IPv6
addresses (fd00:90::/fd00:91::, the same host numbers), or half of each family (dual).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

sys.path[:0] = ["services/common", "services/node-agent"]

from stockade.agent import conntrack as ct  # noqa: E402
from stockade.agent.conntrack import cleanup  # noqa: E402
from stockade.model.rules import Chain, Direction, NodeModel, PortMatch, Protocol, Rule  # noqa: E402

NODE = f"st{os.environ.get('STOCKADE_TEST_SLOT', '')}-nl-bct"
TARGET_SECONDS = 1.0
PER_10K = 10_000


def model(pods: list[str]) -> NodeModel:
    # clients 10.90.0.0 - 10.90.0.207 (and fd00:90::0 - fd00:90::cf) may reach port 80; the rest may not
    chain = Chain.of(Direction.INGRESS, [Rule("allowed", (PortMatch(Protocol.TCP, 80),))])
    v4 = {"10.90.0.0/25", "10.90.0.128/26", "10.90.0.192/28"}
    v6 = {"fd00:90::/121", "fd00:90::80/122", "fd00:90::c0/124"}
    return NodeModel(
        "bench",
        sets={"allowed": frozenset(v4 | v6)},
        chains={chain.id: chain},
        ingress=dict.fromkeys(pods, chain.id),
    )


def family_of(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def tcp_tuple(src: str, dst: str, sport: int, dport: int) -> bytes:
    n = ct._nla
    fam = family_of(src)
    v4 = fam == socket.AF_INET
    ip = n(1 if v4 else 3, socket.inet_pton(fam, src)) + n(2 if v4 else 4, socket.inet_pton(fam, dst))
    ports = n(1, bytes([socket.IPPROTO_TCP])) + n(2, struct.pack("!H", sport)) + n(3, struct.pack("!H", dport))
    return n(1 | 0x8000, ip) + n(2 | 0x8000, ports)


def insert(netns: str, entries: list[tuple[str, str, int]]) -> None:
    """Create conntrack entries (orig src -> dst:80) with raw IPCTNL_MSG_CT_NEW requests."""
    sock = ct.CtSocket(netns)
    try:
        msgs = []
        for seq, (src, dst, sport) in enumerate(entries, 1):
            body = (
                struct.pack("!BBH", family_of(src), 0, 0)
                + ct._nla(1 | 0x8000, tcp_tuple(src, dst, sport, 80))
                + ct._nla(2 | 0x8000, tcp_tuple(dst, src, 80, sport))
                + ct._nla(7, struct.pack("!I", 600))  # CTA_TIMEOUT
            )
            flags = 0x1 | 0x400 | 0x200  # request, create, exclusive; errors come back unasked
            msgs.append(struct.pack("=IHHII", 16 + len(body), 1 << 8, flags, seq, 0) + body)
        for i in range(0, len(msgs), 200):
            sock.sock.send(b"".join(msgs[i : i + 200]))
    finally:
        sock.close()


def addresses(family: str, k: int, pods: bool) -> str:
    v6 = family == "ipv6" or (family == "dual" and k % 2 == 1)
    host = k % 40 + 1 if pods else k % 250
    net = 91 if pods else 90
    return f"fd00:{net}::{host:x}" if v6 else f"10.{net}.0.{host}"


def main(n: int = 10_000, family: str = "ipv4") -> None:
    subprocess.run(["ip", "netns", "del", NODE], capture_output=True)
    subprocess.run(["ip", "netns", "add", NODE], check=True)
    # conntrack is only active in a namespace once something uses it
    rules = "add table inet t; add chain inet t c { type filter hook forward priority 0; ct state established accept; }"
    subprocess.run(["ip", "netns", "exec", NODE, "nft", rules], check=True)
    try:
        pods = sorted({addresses(family, k, True) for k in range(80)})
        insert(NODE, [(addresses(family, k, False), addresses(family, k, True), 1024 + k) for k in range(n)])
        start = time.perf_counter()
        result = cleanup(model(pods), pods, netns=NODE)
        elapsed = time.perf_counter() - start
        left = sum(len(ct.CtSocket(NODE).dump(f)) for f in (socket.AF_INET, socket.AF_INET6))
    finally:
        subprocess.run(["ip", "netns", "del", NODE], capture_output=True)
    scaled = elapsed * PER_10K / max(result.examined, 1)
    print(
        f"cleanup ({family}): examined {result.examined:,}, deleted {len(result.deleted):,} in {elapsed:.2f} s "
        f"({scaled:.2f} s per 10,000 flows); {left:,} entries left"
    )
    print(f"target {TARGET_SECONDS:.1f} s per 10,000 flows: ratio {TARGET_SECONDS / scaled:.2f} (>= 1 meets it)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, sys.argv[2] if len(sys.argv) > 2 else "ipv4")
