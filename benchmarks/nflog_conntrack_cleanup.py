"""Conntrack clean-up speed (root): list a node's table, judge every flow, delete the forbidden.

A node namespace gets N synthetic TCP entries (raw ctnetlink creates) from 250 clients to 40
local pods; the new model isolates the pods and allows clients .0-.207, so 42 of 250 clients'
flows (17%) lose their permission.
Prints the time of one `cleanup` and its ratio to the target: 1 s for 10,000 tracked flows (a
tightened policy ends forbidden connections within a second of the apply).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

sys.path[:0] = ["services/common", "services/node-agent"]

from stockade.agent import conntrack as ct  # noqa: E402
from stockade.agent.conntrack import cleanup  # noqa: E402
from stockade.model.rules import Chain, Direction, NodeModel, PortMatch, Protocol, Rule  # noqa: E402

NODE = "st-nl-bct"
TARGET_SECONDS = 1.0
PER_10K = 10_000


def model(pods: list[str]) -> NodeModel:
    # clients 10.90.0.0 - 10.90.0.207 may reach port 80; the rest may not
    chain = Chain.of(Direction.INGRESS, [Rule("allowed", (PortMatch(Protocol.TCP, 80),))])
    return NodeModel(
        "bench",
        sets={"allowed": frozenset({"10.90.0.0/25", "10.90.0.128/26", "10.90.0.192/28"})},
        chains={chain.id: chain},
        ingress=dict.fromkeys(pods, chain.id),
    )


def tcp_tuple(src: str, dst: str, sport: int, dport: int) -> bytes:
    n = ct._nla
    ip = n(1, socket.inet_aton(src)) + n(2, socket.inet_aton(dst))
    ports = n(1, bytes([socket.IPPROTO_TCP])) + n(2, struct.pack("!H", sport)) + n(3, struct.pack("!H", dport))
    return n(1 | 0x8000, ip) + n(2 | 0x8000, ports)


def insert(netns: str, entries: list[tuple[str, str, int]]) -> None:
    """Create conntrack entries (orig src -> dst:80) with raw IPCTNL_MSG_CT_NEW requests."""
    sock = ct.CtSocket(netns)
    try:
        msgs = []
        for seq, (src, dst, sport) in enumerate(entries, 1):
            body = (
                struct.pack("!BBH", socket.AF_INET, 0, 0)
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


def main(n: int = 10_000) -> None:
    subprocess.run(["ip", "netns", "del", NODE], capture_output=True)
    subprocess.run(["ip", "netns", "add", NODE], check=True)
    # conntrack is only active in a namespace once something uses it
    rules = "add table ip t; add chain ip t c { type filter hook forward priority 0; ct state established accept; }"
    subprocess.run(["ip", "netns", "exec", NODE, "nft", rules], check=True)
    try:
        pods = [f"10.91.0.{i}" for i in range(1, 41)]
        clients = [f"10.90.0.{i}" for i in range(250)]
        insert(NODE, [(clients[k % 250], pods[k % 40], 1024 + k) for k in range(n)])
        start = time.perf_counter()
        result = cleanup(model(pods), pods, netns=NODE)
        elapsed = time.perf_counter() - start
        left = len(ct.CtSocket(NODE).dump(socket.AF_INET))
    finally:
        subprocess.run(["ip", "netns", "del", NODE], capture_output=True)
    scaled = elapsed * PER_10K / max(result.examined, 1)
    print(
        f"cleanup: examined {result.examined:,}, deleted {len(result.deleted):,} in {elapsed:.2f} s "
        f"({scaled:.2f} s per 10,000 flows); {left:,} entries left"
    )
    print(f"target {TARGET_SECONDS:.1f} s per 10,000 flows: ratio {TARGET_SECONDS / scaled:.2f} (>= 1 meets it)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
