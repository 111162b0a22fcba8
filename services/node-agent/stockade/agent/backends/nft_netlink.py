"""Set-element changes sent straight to nf_tables over netlink, as one batch (one transaction).

``nft`` (binary or library) fills its cache before every command; for an element command that
means listing every chain and the elements of every interval set in the table, which on a node
with a thousand sets costs tens of milliseconds. A delta that only adds and removes elements
(the common case: pods come and go) needs none of that, so it is encoded here directly:
NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM between NFNL_MSG_BATCH_BEGIN and _END. The kernel
applies the batch all-or-nothing, exactly as for ``nft -f``.

Interval sets hold each range as two elements: its start, and the address after its end
flagged NFT_SET_ELEM_INTERVAL_END (omitted when the range ends at the family's last address).
Keys are the address in network order: 4 bytes for IPv4, 16 for IPv6; an element's family
comes from its text, and the kernel refuses a key whose length is not the set's. A hosts set's
key (``addr . hi . lo``, `nft_render.tagged`) is the concatenation of its fields, each padded to
4 bytes: the address, then the two tag words as ``numgen`` leaves them in a register, in host
byte order (``nft --debug=netlink`` shows ``element 0100000a 0000002a ...`` for ``10.0.0.1 . 42``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from stockade.agent import netns as ns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFPROTO_INET = 1
NFT_JUMP, NFT_GOTO = -3, -4
NFT_SET_ELEM_INTERVAL_END = 1
# attribute numbers (linux/netfilter/nf_tables.h)
LIST_TABLE, LIST_SET, LIST_ELEMENTS = 1, 2, 3
LIST_ELEM = 1
ELEM_KEY, ELEM_DATA, ELEM_FLAGS = 1, 2, 3
DATA_VALUE, DATA_VERDICT = 1, 2
VERDICT_CODE, VERDICT_CHAIN = 1, 2


def _attr(kind: int, payload: bytes, nested: bool = False) -> bytes:
    hdr = struct.pack("=HH", 4 + len(payload), kind | (NLA_F_NESTED if nested else 0))
    return hdr + payload + b"\0" * (-len(payload) % 4)


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _element(key: bytes, flags: int = 0, jump: str | None = None, code: int = NFT_JUMP) -> bytes:
    body = _attr(ELEM_KEY, _attr(DATA_VALUE, key), nested=True)
    if jump is not None:
        verdict = _attr(VERDICT_CODE, struct.pack("!i", code)) + _str(VERDICT_CHAIN, jump)
        body += _attr(ELEM_DATA, _attr(DATA_VERDICT, verdict, nested=True), nested=True)
    if flags:
        body += _attr(ELEM_FLAGS, struct.pack("!I", flags))
    return _attr(LIST_ELEM, body, nested=True)


def _packed(ip: str) -> bytes:
    """An address of either family in network order (4 or 16 bytes); ValueError otherwise."""
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    except OSError:
        raise ValueError(f"{ip[:80]!r} is neither an IPv4 nor an IPv6 address") from None


def interval_elements(cidrs: Iterable[str]) -> list[bytes]:
    out = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        out.append(_element(net.network_address.packed))
        end = int(net.broadcast_address) + 1
        size = net.max_prefixlen // 8
        if end < 1 << net.max_prefixlen:
            out.append(_element(end.to_bytes(size, "big"), NFT_SET_ELEM_INTERVAL_END))
    return out


def host_elements(ips: Iterable[str]) -> list[bytes]:
    return [_element(_packed(ip.split("/")[0])) for ip in ips]


def tagged_elements(items: Iterable[str]) -> list[bytes]:
    """Hosts-set elements from their text, ``"addr . hi . lo"``."""
    out = []
    for item in items:
        addr, hi, lo = item.split(" . ")
        out.append(_element(_packed(addr) + struct.pack("=II", int(hi), int(lo))))
    return out


def verdict_elements(entries: Iterable[tuple[str, str]], goto: bool = False) -> list[bytes]:
    """Verdict map elements ``ip -> jump chain`` (``goto``: ``ip -> goto chain``)."""
    code = NFT_GOTO if goto else NFT_JUMP
    return [_element(_packed(ip), jump=chain, code=code) for ip, chain in entries]


@dataclass
class ElementBatch:
    """Ordered element operations on sets of one table, sent as one transaction."""

    table: str
    ops: list[tuple[int, str, list[bytes]]] = field(default_factory=list)

    def add(self, set_name: str, elems: list[bytes]) -> None:
        if elems:
            self.ops.append((NFT_MSG_NEWSETELEM, set_name, elems))

    def delete(self, set_name: str, elems: list[bytes]) -> None:
        if elems:
            self.ops.append((NFT_MSG_DELSETELEM, set_name, elems))

    def messages(self, seq: int) -> tuple[bytes, int]:
        """The datagram, and the sequence number of the last message."""
        out = [_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, b"")]
        for op, set_name, elems in self.ops:
            # Keep each message well under the 64 KiB netlink attribute limit.
            for i in range(0, len(elems), 1000):
                seq += 1
                body = _str(LIST_TABLE, self.table) + _str(LIST_SET, set_name)
                body += _attr(LIST_ELEMENTS, b"".join(elems[i : i + 1000]), nested=True)
                flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if op == NFT_MSG_NEWSETELEM else 0)
                out.append(_msg((NFNL_SUBSYS_NFTABLES << 8) | op, flags, seq, NFPROTO_INET, 0, body))
        last = seq
        seq += 1
        out.append(_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, b""))
        return b"".join(out), last


def _msg(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


class NetlinkError(Exception):
    pass


class NftNetlink:
    """A netlink socket to nf_tables in one network namespace (opened there, usable anywhere)."""

    def __init__(self, netns: str | None = None) -> None:
        if netns:
            with ns.entered(netns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        else:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.seq = int.from_bytes(os.urandom(2), "big") << 8
        self._lock = threading.Lock()

    def send(self, batch: ElementBatch) -> None:
        """Send ``batch`` and wait for the kernel's verdict; raises `NetlinkError` if it refused."""
        if not batch.ops:
            return
        with self._lock:
            self._send(batch)

    def _send(self, batch: ElementBatch) -> None:
        data, last = batch.messages(self.seq)
        first = self.seq + 1
        self.seq = last + 2
        self.sock.send(data)
        errors: list[str] = []
        pending = set(range(first, last + 1))
        while pending:
            buf = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(buf):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, off)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buf, off + 16)
                    pending.discard(seq)
                    if code:
                        errors.append(f"{os.strerror(-code)} ({errno.errorcode.get(-code, code)})")
                off += max(length, 16) + (-length % 4)
            if errors and not pending:
                break
        if errors:
            raise NetlinkError("; ".join(errors))

    def close(self) -> None:
        self.sock.close()
