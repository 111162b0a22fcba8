"""nfnetlink_log on the wire: build the config requests, split received buffers into packets.

Pure functions of bytes, so the parser is tested and benchmarked without a kernel. Layouts from
the kernel's uapi headers (linux/netfilter/nfnetlink_log.h, linux/netlink.h): every message is
``nlmsghdr`` (16 bytes, host order) + ``nfgenmsg`` (family, version, big-endian res_id = group)
+ netlink attributes; the nfnetlink_log attribute payloads are big-endian.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# config attributes and commands
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_CFG_CMD_PF_BIND = 3
NFULNL_CFG_CMD_PF_UNBIND = 4
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001

# packet attributes
NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_SEQ = 12

_NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_NLA = struct.Struct("=HH")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_TIMESTAMP = struct.Struct("!QQ")
_ERRNO = struct.Struct("=i")

MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLA.size + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def config_message(seq: int, family: int, group: int, attrs: bytes) -> bytes:
    """One NFULNL_MSG_CONFIG request (with an ack asked for) carrying ``attrs``."""
    body = _NFGEN.pack(family, 0, group) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def cmd_attr(command: int) -> bytes:
    return _attr(NFULA_CFG_CMD, bytes([command]))


def mode_attr(copy_range: int, copy_mode: int = NFULNL_COPY_PACKET) -> bytes:
    return _attr(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, copy_mode))


def u32_attr(kind: int, value: int) -> bytes:
    return _attr(kind, _BE32.pack(value))


def flags_attr(flags: int) -> bytes:
    return _attr(NFULA_CFG_FLAGS, _BE16.pack(flags))


@dataclass(slots=True)  # not frozen: built once per message, the hot path
class NflogPacket:
    """One logged packet as nfnetlink_log delivered it (the fields we use)."""

    family: int  # nfgen_family: AF_INET / AF_INET6 for an inet table
    group: int
    prefix: str
    payload: bytes
    timestamp: float | None
    seq: int | None
    hw_protocol: int


@dataclass(frozen=True, slots=True)
class NetlinkError:
    """An NLMSG_ERROR: ``errno`` 0 is an ack; ``seq`` matches the request it answers."""

    seq: int
    errno: int


def parse_messages(buf: bytes | bytearray | memoryview) -> list[NflogPacket | NetlinkError]:
    """Every message in one datagram: packets in order, plus acks/errors. Other types are skipped.

    A truncated or malformed message ends the parse of this buffer (the kernel never sends one;
    stopping is safer than guessing at offsets).
    """
    data = bytes(buf)  # one copy; then plain offsets (slicing views per attribute costs more)
    out: list[NflogPacket | NetlinkError] = []
    off, end = 0, len(data)
    unpack_hdr = _NLMSG.unpack_from
    while off + 16 <= end:
        length, kind, _flags, seq, _pid = unpack_hdr(data, off)
        if length < 16 or off + length > end:
            break
        if kind == MSG_PACKET:
            pkt = _parse_packet(data, off + 16, off + length)
            if pkt is not None:
                out.append(pkt)
        elif kind == NLMSG_ERROR and length >= 20:
            (err,) = _ERRNO.unpack_from(data, off + 16)
            # the error payload repeats the request's header: its seq says which request failed
            req_seq = unpack_hdr(data, off + 20)[3] if length >= 36 else seq
            out.append(NetlinkError(req_seq, -err))
        off += (length + 3) & ~3
    return out


def _parse_packet(data: bytes, off: int, end: int) -> NflogPacket | None:
    if off + 4 > end:
        return None
    family, _version, group = _NFGEN.unpack_from(data, off)
    prefix = ""
    payload = b""
    timestamp: float | None = None
    seq: int | None = None
    hw_protocol = 0
    off += 4
    unpack_nla = _NLA.unpack_from
    while off + 4 <= end:
        length, kind = unpack_nla(data, off)
        if length < 4 or off + length > end:
            break
        kind &= _NLA_TYPE_MASK
        start, stop = off + 4, off + length
        if kind == NFULA_PAYLOAD:
            payload = data[start:stop]
        elif kind == NFULA_PREFIX:
            prefix = data[start:stop].split(b"\0", 1)[0].decode("ascii", "replace")
        elif kind == NFULA_SEQ and length >= 8:
            (seq,) = _BE32.unpack_from(data, start)
        elif kind == NFULA_TIMESTAMP and length >= 20:
            sec, usec = _TIMESTAMP.unpack_from(data, start)
            timestamp = sec + usec / 1e6
        elif kind == NFULA_PACKET_HDR and length >= 6:
            (hw_protocol,) = _BE16.unpack_from(data, start)
        off += (length + 3) & ~3
    return NflogPacket(family, group, prefix, payload, timestamp, seq, hw_protocol)


def build_packet_message(
    family: int,
    group: int,
    prefix: str,
    payload: bytes,
    seq: int | None = None,
    timestamp: float | None = None,
) -> bytes:
    """A packet message as the kernel would send it: for parser tests and benchmarks."""
    ethertype = 0x86DD if family == socket.AF_INET6 else 0x0800
    attrs = _attr(NFULA_PACKET_HDR, struct.pack("!HBx", ethertype, 2))
    if timestamp is not None:
        sec = int(timestamp)
        attrs += _attr(NFULA_TIMESTAMP, _TIMESTAMP.pack(sec, round((timestamp - sec) * 1e6)))
    attrs += _attr(NFULA_PREFIX, prefix.encode() + b"\0")
    if seq is not None:
        attrs += _attr(NFULA_SEQ, _BE32.pack(seq))
    attrs += _attr(NFULA_PAYLOAD, payload)
    body = _NFGEN.pack(family, 0, group) + attrs
    return _NLMSG.pack(_NLMSG.size + len(body), MSG_PACKET, 0, 0, 0) + body
