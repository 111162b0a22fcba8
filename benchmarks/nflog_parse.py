"""NFLOG parsing speed: netlink datagrams -> BlockedEvents, no kernel (the reader's CPU cost).

Builds datagrams as the kernel sends them (32 packet messages each, TCP SYNs with a 60-byte
header), then runs the reader's per-message path: parse, flow, dedupe window, event.
Target: 40,000 messages/s on one core: a scan of 10,000 denied attempts/s, each logged up to
four times if the kernel rule does not fold SYN retransmits, stays within one core. (Building
the frozen `BlockedEvent` alone costs ~10 us on the shared CI machines.)

``python benchmarks/nflog_parse.py [ipv4|ipv6|both]`` (default both): IPv6 SYNs carry a 40-byte
header and a destination-options header before TCP, so the next-header walk is measured too.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

sys.path[:0] = ["services/common", "services/node-agent"]

from stockade.agent.nflog import protocol as p  # noqa: E402
from stockade.agent.nflog.reader import NflogReader  # noqa: E402

TARGET = 40_000


def syn(i: int) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 60, 1, 0, 64, 6, 0,
        socket.inet_aton("10.1.0.1"), socket.inet_aton("10.2.0.1"),
    )  # fmt: skip
    return ip + struct.pack("!HH", 1024 + i % 60000, 80) + b"\0" * 36


def syn6(i: int) -> bytes:
    tcp = struct.pack("!HH", 1024 + i % 60000, 80) + b"\0" * 36
    dest_opts = bytes([6, 0]) + b"\0" * 6  # next header TCP, 8 bytes
    ip = struct.pack("!IHBB", 6 << 28, len(dest_opts) + len(tcp), 60, 64)
    addrs = socket.inet_pton(socket.AF_INET6, "fd00:10:244:1::5") + socket.inet_pton(
        socket.AF_INET6, "fd00:10:244:2::9"
    )
    return ip + addrs + dest_opts + tcp


def main(family: str = "ipv4", total: int = 200_000, per_datagram: int = 32) -> float:
    af, packet = (socket.AF_INET6, syn6) if family == "ipv6" else (socket.AF_INET, syn)
    datagrams = []
    for d in range(total // per_datagram):
        datagrams.append(
            b"".join(
                p.build_packet_message(
                    af,
                    100,
                    "in_3f2a9c1e0b7d",
                    packet(d * per_datagram + k),
                    seq=d * per_datagram + k,
                    timestamp=1.7e9,
                )
                for k in range(per_datagram)
            )
        )
    reader = NflogReader("bench", dedupe_seconds=60.0)
    start = time.perf_counter()
    events = 0
    for dg in datagrams:
        for msg in p.parse_messages(dg):
            if isinstance(msg, p.NflogPacket) and reader._event(msg, 1.7e9) is not None:
                events += 1
    elapsed = time.perf_counter() - start
    rate = len(datagrams) * per_datagram / elapsed
    print(f"nflog parse {family}: {rate:,.0f} messages/s ({events:,} events, {elapsed:.2f} s)")
    print(f"target {TARGET:,}/s: ratio {rate / TARGET:.2f}")
    return rate


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    rates = {f: main(f) for f in (["ipv4", "ipv6"] if which == "both" else [which])}
    if len(rates) == 2:
        print(f"IPv6 / IPv4 parse rate: {rates['ipv6'] / rates['ipv4']:.2f}")
