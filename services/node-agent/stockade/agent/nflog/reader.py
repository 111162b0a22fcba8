"""Read blocked connections from an NFLOG group over netlink, as `BlockedEvent`s.

The backends log a denied new connection to group G with the denying chain's id as prefix
(``in_<hex>`` / ``out_<hex>``: a NetworkPolicy chain's deny tail), or with ``<chain id>/<rule
index>`` when a DENY rule of a ClusterNetworkPolicy tier chain dropped it (`parse_prefix`).
We bind that group in the node's network namespace, ask for the first ``copy_range`` bytes of
each packet and for per-instance sequence numbers, so every message the kernel built but could
not deliver (socket overrun) shows up as a gap: ``lost``.

Usable synchronously (`read_batch`) and from asyncio (`attach`: ``loop.add_reader``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from pyroute2 import netns as pr_netns

from stockade.agent.nflog import protocol as p
from stockade.agent.nflog.packet import flow_key
from stockade.model.events import BlockedEvent
from stockade.model.rules import Direction

_SO_RCVBUFFORCE = 33
_SEQ_MOD = 1 << 32
# A tier rule's prefix: a chain id as the codec allows them, "/", a rule index in decimal
# without leading zeros. Bounded: NFLOG prefixes are short (the kernel caps them at 127 bytes),
# and an index past MAX_RULE_INDEX is no rule a chain can have (the codec caps rules per chain).
_TIER_PREFIX = re.compile(r"((?:in|out)_[0-9a-f]{1,64})/(0|[1-9][0-9]{0,5})")
MAX_RULE_INDEX = 65535


class NflogError(Exception):
    """The NFLOG group could not be bound or configured."""


@dataclass
class NflogStats:
    """Cumulative counts since `open`. ``lost`` is what the kernel logged but we never received."""

    messages: int = 0  # packet messages received
    events: int = 0  # events returned (after folding duplicates)
    duplicates: int = 0  # messages folded into an event already returned (same flow, in the window)
    ignored: int = 0  # messages without one of our (well-formed) prefixes or without readable headers
    lost: int = 0  # sequence-number gaps (exact count of undelivered messages)
    overruns: int = 0  # ENOBUFS reports: the socket's receive queue overflowed


def direction_of(prefix: str) -> Direction | None:
    if prefix[:3] == "in_":
        return Direction.INGRESS
    if prefix[:4] == "out_":
        return Direction.EGRESS
    return None


def parse_prefix(prefix: str) -> tuple[Direction, str, int | None] | None:
    """(direction, chain id, rule index) of one of our prefixes, or None for a foreign or
    malformed one. ``<chain id>`` alone (rule None) is a NetworkPolicy deny tail, checked no
    further than before tiers (the brain validates the id); ``<chain id>/<index>`` is a tier
    DENY rule and must be well formed throughout."""
    direction = direction_of(prefix)
    if direction is None:
        return None
    if "/" not in prefix:
        return direction, prefix, None
    m = _TIER_PREFIX.fullmatch(prefix)
    if m is None:
        return None
    index = int(m.group(2))
    if index > MAX_RULE_INDEX:
        return None
    return direction, m.group(1), index


_prefixes: dict[str, tuple[Direction, str, int | None] | None] = {}


def _prefix(prefix: str) -> tuple[Direction, str, int | None] | None:
    """`parse_prefix`, remembered: a node has a bounded number of chains and rules, so the same
    prefixes come again and again (the cache starts over should a flood of distinct ones come)."""
    try:
        return _prefixes[prefix]
    except KeyError:
        pass
    if len(_prefixes) >= 4096:
        _prefixes.clear()
    parsed = _prefixes[prefix] = parse_prefix(prefix)
    return parsed


class _Window:
    """Flows seen in the last ``seconds``, sliding (each hit renews), at most ``size`` of them.

    Folds repeats of one attempt (TCP SYN retransmits: 1, 2, 4 ... 32 s apart; repeated UDP
    datagrams of an unanswered flow) into one event, should the kernel rule not already do so.
    """

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self.size = size
        self._seen: dict[tuple[object, ...], float] = {}

    def seen(self, key: tuple[object, ...], now: float) -> bool:
        if self.seconds <= 0:
            return False
        seen = self._seen
        last = seen.pop(key, None)
        seen[key] = now  # re-inserted last: the dict's order is the age order
        if len(seen) > self.size:
            del seen[next(iter(seen))]
        return last is not None and now - last <= self.seconds


class NflogReader:
    """One bound NFLOG group. Open it in the node's network namespace (``netns``: a name under
    /var/run/netns or a path; ``None``: the current one).

    The kernel batches up to ``batch`` messages (or ``nlbufsiz`` bytes) per datagram and flushes
    a partial batch after ``flush_ms``: fewer wake-ups under a flood, little delay otherwise.
    ``rcvbuf`` is the socket's receive queue: what it cannot hold is lost (and counted).
    ``dedupe_seconds``: repeats of one flow through one chain within this sliding window count
    once (0 turns it off); the default covers Linux's whole SYN retry schedule (gaps <= 32 s).
    """

    def __init__(
        self,
        node: str,
        group: int = 100,
        *,
        netns: str | None = None,
        copy_range: int = 128,
        rcvbuf: int = 8 << 20,
        batch: int = 32,
        flush_ms: int = 20,
        nlbufsiz: int = 16384,
        dedupe_seconds: float = 60.0,
        dedupe_size: int = 65536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group must be 0..65535, got {group}")
        self.node = node
        self.group = group
        self.netns = netns
        self.copy_range = copy_range
        self.rcvbuf = rcvbuf
        self.batch = batch
        self.flush_ms = flush_ms
        self.nlbufsiz = nlbufsiz
        self.stats = NflogStats()
        self._window = _Window(dedupe_seconds, dedupe_size)
        self._clock = clock
        self._sock: socket.socket | None = None
        self._buf = bytearray(1 << 18)
        self._next_seq = 0
        self._req_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> NflogReader:
        sock = self._socket()
        try:
            self._sock = sock
            for family in (socket.AF_INET, socket.AF_INET6):
                # no-ops since Linux 3.17; older kernels need the family bound to nfnetlink_log
                self._request(family, p.cmd_attr(p.NFULNL_CFG_CMD_PF_BIND), tolerate=True)
            self._request(
                socket.AF_UNSPEC,
                p.cmd_attr(p.NFULNL_CFG_CMD_BIND)
                + p.mode_attr(self.copy_range)
                + p.u32_attr(p.NFULA_CFG_NLBUFSIZ, self.nlbufsiz)
                + p.u32_attr(p.NFULA_CFG_QTHRESH, max(1, self.batch))
                + p.u32_attr(p.NFULA_CFG_TIMEOUT, max(1, self.flush_ms // 10))
                + p.flags_attr(p.NFULNL_CFG_F_SEQ),
            )
            sock.setblocking(False)
        except BaseException:
            self._sock = None
            sock.close()
            raise
        self.stats = NflogStats()
        self._next_seq = 0  # a fresh instance numbers its messages from 0
        return self

    def close(self) -> None:
        self.detach()
        if self._sock is not None:
            # closing the socket destroys the instance too; unbinding first is just tidy
            try:
                self._sock.settimeout(1.0)
                self._request(socket.AF_UNSPEC, p.cmd_attr(p.NFULNL_CFG_CMD_UNBIND), tolerate=True)
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NflogReader:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def fileno(self) -> int:
        if self._sock is None:
            raise NflogError("the NFLOG reader is not open")
        return self._sock.fileno()

    # -- reading -----------------------------------------------------------------------------

    def read_batch(self, max_datagrams: int = 1024) -> list[BlockedEvent]:
        """Everything queued now (up to ``max_datagrams`` netlink datagrams), without blocking."""
        sock = self._sock
        if sock is None:
            raise NflogError("the NFLOG reader is not open")
        events: list[BlockedEvent] = []
        for _ in range(max_datagrams):
            try:
                n = sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # the kernel dropped messages; the sequence gap counts them exactly
                    self.stats.overruns += 1
                    continue
                raise
            now = self._clock()
            for msg in p.parse_messages(memoryview(self._buf)[:n]):
                if isinstance(msg, p.NflogPacket):
                    event = self._event(msg, now)
                    if event is not None:
                        events.append(event)
        self.stats.events += len(events)
        return events

    def _event(self, msg: p.NflogPacket, now: float) -> BlockedEvent | None:
        self.stats.messages += 1
        if msg.seq is not None:
            gap = (msg.seq - self._next_seq) % _SEQ_MOD
            if gap < _SEQ_MOD // 2:
                self.stats.lost += gap
                self._next_seq = (msg.seq + 1) % _SEQ_MOD
        parsed = _prefix(msg.prefix)
        flow = flow_key(msg.payload)
        if parsed is None or flow is None:
            self.stats.ignored += 1
            return None
        if self._window.seen((msg.prefix, *flow), now):
            self.stats.duplicates += 1
            return None
        direction, chain, rule = parsed
        src, dst, protocol, sport, dport = flow
        return BlockedEvent(
            time=msg.timestamp if msg.timestamp is not None else now,
            node=self.node,
            direction=direction,
            src=src,
            dst=dst,
            protocol=protocol,
            sport=sport,
            dport=dport,
            chain=chain,
            rule=rule,
        )

    # -- asyncio -----------------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, callback: Callable[[list[BlockedEvent]], None]) -> None:
        """Call ``callback`` with each non-empty batch whenever the socket becomes readable."""

        def ready() -> None:
            events = self.read_batch()
            if events:
                callback(events)

        self.detach()
        loop.add_reader(self.fileno(), ready)
        self._loop = loop

    def detach(self) -> None:
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._loop = None

    # -- netlink plumbing --------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        def make() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, p.NETLINK_NETFILTER)

        if self.netns is None:
            sock = make()
        else:
            pr_netns.pushns(self.netns)  # a socket keeps the namespace it was created in
            try:
                sock = make()
            finally:
                pr_netns.popns()
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind((0, 0))
        sock.settimeout(2.0)
        return sock

    def _request(self, family: int, attrs: bytes, tolerate: bool = False) -> None:
        assert self._sock is not None
        self._req_seq += 1
        seq = self._req_seq
        self._sock.send(p.config_message(seq, family, self.group, attrs))
        while True:
            n = self._sock.recv_into(self._buf)
            for msg in p.parse_messages(memoryview(self._buf)[:n]):
                if isinstance(msg, p.NetlinkError) and msg.seq == seq:
                    if msg.errno and not tolerate:
                        raise NflogError(self._explain(msg.errno))
                    return

    def _explain(self, code: int) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        if code in (errno.EBUSY, errno.EPERM):
            # the kernel answers EPERM when another socket owns the group's instance
            return (
                f"NFLOG group {self.group}{where} is already bound by another process (another "
                "agent, ulogd?) or we lack CAP_NET_ADMIN: stop it, or configure another group"
            )
        return f"configuring NFLOG group {self.group}{where} failed: {os.strerror(code)}"
