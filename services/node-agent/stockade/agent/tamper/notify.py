"""nf_tables change notifications: the NFNLGRP_NFTABLES multicast group, read and grouped into
committed transactions.

Every committed nf_tables transaction (``nft``, libnftables, iptables-nft, our own netlink
batches) is announced to the group as one message per object it touched, then one
NFT_MSG_NEWGEN carrying the new generation, the committing process's pid and name. The netlink
header's pid of each message is the sending socket's port id. Only what deciding "may this touch
what we own?" needs is parsed: the message type, family, table, chain (and a base chain's hook
and priority). Notifications are queued on our socket while the sender's commit runs, so when a
transaction's ``sendmsg`` returns its notifications are already waiting here.

ipset changes are not nf_tables objects and are never announced (the periodic check covers them).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from stockade.agent import netns as ns

NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
_SO_RCVBUFFORCE = 33
NLMSG_ERROR, NLMSG_DONE = 2, 3

# linux/netfilter/nf_tables.h: enum nf_tables_msg_types
NEWTABLE, DELTABLE, NEWCHAIN, DELCHAIN, NEWRULE, DELRULE = 0, 2, 3, 5, 6, 8
NEWGEN = 15
# Attribute 1 names the table in every object message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE,
# NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, ...).
ATTR_TABLE = 1
CHAIN_NAME, CHAIN_HOOK = 3, 4  # chain messages
RULE_CHAIN = 2  # rule messages
HOOK_NUM, HOOK_PRIORITY = 1, 2
GEN_ID, GEN_PROC_PID, GEN_PROC_NAME = 1, 2, 3
# Tables and chains are named per family (nfgenmsg.nfgen_family)
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
FAMILY_NAMES = {NFPROTO_INET: "inet", NFPROTO_IPV4: "ip", NFPROTO_IPV6: "ip6", 3: "arp", 5: "netdev", 7: "bridge"}
NF_INET_FORWARD = 2


@dataclass(frozen=True)
class Change:
    """One object a transaction added, changed or removed."""

    kind: int  # the NFT_MSG_* type
    family: int
    table: str
    chain: str = ""  # for chain and rule messages
    hook: int | None = None  # a base chain's hook (chain messages)
    priority: int | None = None


@dataclass
class Transaction:
    """What one committed transaction changed, and who committed it."""

    changes: list[Change] = field(default_factory=list)
    portid: int = 0  # the committing socket's netlink port id
    pid: int = 0  # the committing process (as the kernel's initial pid namespace numbers it)
    process: str = ""  # its name (comm, at most 15 characters)
    generation: int = 0


def _attrs(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", buf, start)
        if length < 4:
            break
        out[kind & 0x3FFF] = buf[start + 4 : start + length]
        start += (length + 3) & ~3
    return out


def _text(value: bytes | None) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace") if value else ""


def _u32(value: bytes | None, fmt: str = "!I") -> int:
    return struct.unpack(fmt, value[:4])[0] if value and len(value) >= 4 else 0


def parse(buf: bytes) -> Iterator[Change | Transaction]:
    """The nf_tables messages of one datagram: a `Change` per object message, and for NEWGEN
    (a transaction's end) a `Transaction` with no changes. Other messages are skipped."""
    off = 0
    while off + 16 <= len(buf):
        length, kind, _flags, _seq, portid = struct.unpack_from("=IHHII", buf, off)
        if length < 16:
            break
        end = min(off + length, len(buf))
        if kind >> 8 == NFNL_SUBSYS_NFTABLES and off + 20 <= end:
            msg, family = kind & 0xFF, buf[off + 16]
            a = _attrs(buf, off + 20, end)
            if msg == NEWGEN:
                yield Transaction(
                    portid=portid,
                    pid=_u32(a.get(GEN_PROC_PID)),
                    process=_text(a.get(GEN_PROC_NAME)),
                    generation=_u32(a.get(GEN_ID)),
                )
            else:
                chain, hook, prio = "", None, None
                if msg in (NEWCHAIN, DELCHAIN):
                    chain = _text(a.get(CHAIN_NAME))
                    if CHAIN_HOOK in a:
                        h = _attrs(a[CHAIN_HOOK], 0, len(a[CHAIN_HOOK]))
                        hook = _u32(h.get(HOOK_NUM)) if HOOK_NUM in h else None
                        prio = _u32(h.get(HOOK_PRIORITY), "!i") if HOOK_PRIORITY in h else None
                elif msg in (NEWRULE, DELRULE):
                    chain = _text(a.get(RULE_CHAIN))
                yield Change(msg, family, _text(a.get(ATTR_TABLE)), chain, hook, prio)
        off += (length + 3) & ~3


class Overrun(Exception):
    """The socket's receive queue overflowed: notifications were lost (anything may have changed)."""


class NftNotifications:
    """A socket on NFNLGRP_NFTABLES in one network namespace (opened there, read anywhere);
    non-blocking: `read` returns what is queued."""

    def __init__(self, netns: str | None = None, rcvbuf: int = 8 << 20) -> None:
        if netns:
            with ns.entered(netns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        else:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            try:  # a `flush ruleset` of a large table announces every rule and set: room for them
                self.sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.portid: int = self.sock.getsockname()[0]

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> Iterator[bytes]:
        """The datagrams queued now; raises `Overrun` (once per overflow) when some were lost."""
        while True:
            try:
                yield self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    raise Overrun() from None
                raise

    def close(self) -> None:
        self.sock.close()


def own_portids(netns: str | None = None) -> set[int]:
    """The port ids of this process's NETLINK_NETFILTER sockets in ``netns`` (libnftables keeps
    one per context, `nft_netlink` one per backend): their transactions are ours.

    A socket's port id is found by its inode in the namespace's /proc/net/netlink."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])

    def table() -> str:
        with open("/proc/thread-self/net/netlink") as f:
            return f.read()

    if netns:
        with ns.entered(netns):
            text = table()
    else:
        text = table()
    out = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        # sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
        if len(cols) >= 10 and cols[1] == str(NETLINK_NETFILTER) and cols[9] in inodes:
            out.add(int(cols[2]))
    return out
