"""The flow a logged packet belongs to: addresses, protocol and ports from its IP and L4 headers.

NFLOG copies the packet from the network header on (copy range 128 bytes is plenty: 60 bytes of
IPv4 options or a few IPv6 extension headers, then the 4 port bytes we need).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

_PORTS = struct.Struct("!HH")
_PROTO_NAMES = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 132: "SCTP"}
_PORTED = frozenset(_PROTO_NAMES)
# IPv6 extension headers we step over to reach the transport header, all with the RFC 8200
# layout (next header, length in 8-octet units beyond the first): hop-by-hop, routing,
# destination options, mobility, HIP, shim6. The fragment header (fixed 8 bytes) and AH
# (length in 4-octet units, minus 2) are handled apart. ESP (50) hides the ports: they stay 0.
_IPV6_EXT = frozenset({0, 43, 60, 135, 139, 140})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51


@dataclass(slots=True)
class Flow:
    src: str
    dst: str
    protocol: str  # "TCP", "UDP", "SCTP", or the IP protocol number as text
    sport: int
    dport: int

    def key(self) -> tuple[str, str, str, int, int]:
        return (self.src, self.dst, self.protocol, self.sport, self.dport)


def protocol_name(number: int) -> str:
    return _PROTO_NAMES.get(number, str(number))


FlowKey = tuple[str, str, str, int, int]  # src, dst, protocol, sport, dport


def parse_flow(payload: bytes) -> Flow | None:
    """The flow of an IPv4 or IPv6 packet, or ``None`` when the headers are not there.

    Ports are 0 for protocols without ports and for non-first fragments.
    """
    key = flow_key(payload)
    return None if key is None else Flow(*key)


def flow_key(payload: bytes) -> FlowKey | None:
    """`parse_flow` as a plain tuple: the reader's hot path."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4:
        return _ipv4(payload)
    if version == 6:
        return _ipv6(payload)
    return None


def _ports(data: bytes, off: int, proto: int) -> tuple[int, int]:
    if proto in _PORTED and off + 4 <= len(data):
        sport, dport = _PORTS.unpack_from(data, off)
        return sport, dport
    return 0, 0


def _ipv4(p: bytes) -> FlowKey | None:
    ihl = (p[0] & 0x0F) * 4
    if ihl < 20 or len(p) < ihl:
        return None
    proto = p[9]
    frag_offset = struct.unpack_from("!H", p, 6)[0] & 0x1FFF
    sport, dport = (0, 0) if frag_offset else _ports(p, ihl, proto)
    return (
        socket.inet_ntop(socket.AF_INET, p[12:16]),
        socket.inet_ntop(socket.AF_INET, p[16:20]),
        _PROTO_NAMES.get(proto) or str(proto),
        sport,
        dport,
    )


def _ipv6(p: bytes) -> FlowKey | None:
    if len(p) < 40:
        return None
    proto, off = p[6], 40
    first_fragment = True
    for _ in range(8):  # a bounded walk: a handful of extension headers at most (RFC 8200 order)
        if proto in _IPV6_EXT and off + 2 <= len(p):
            proto, off = p[off], off + (p[off + 1] + 1) * 8
        elif proto == _IPV6_AH and off + 2 <= len(p):
            proto, off = p[off], off + (p[off + 1] + 2) * 4
        elif proto == _IPV6_FRAGMENT and off + 8 <= len(p):
            first_fragment = (struct.unpack_from("!H", p, off + 2)[0] & 0xFFF8) == 0
            proto, off = p[off], off + 8
        else:
            break
    sport, dport = _ports(p, off, proto) if first_fragment else (0, 0)
    src = socket.inet_ntop(socket.AF_INET6, p[8:24])  # compressed form, as the model's CIDRs
    dst = socket.inet_ntop(socket.AF_INET6, p[24:40])
    return (src, dst, protocol_name(proto), sport, dport)
