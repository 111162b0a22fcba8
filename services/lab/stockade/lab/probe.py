"""Probing connectivity: from every source namespace to every target pod, all at once.

One process, no helpers: each probe's socket is created inside its source's namespace (see
`nsenter`) and then driven by one asyncio loop, so hundreds of probes run concurrently and a
full probe of a lab where policy drops packets takes about one timeout, not one per probe.
TCP and SCTP count as connected when the handshake completes; UDP when the echo comes back.

Every TCP and SCTP probe is a new flow: its source port is one no recent probe to that
destination had (see `SourcePorts`). Left to the kernel, a later probe can get the port of an
earlier one (its choice for a destination jumps to a new place about every 10 s here). The
client's node then takes the SYN for a retransmit of the earlier attempt, and if that attempt was
dropped further on, its SYN_SENT conntrack entry (120 s) still holds the Service's DNAT to the
endpoint picked then, even once that endpoint is gone (kube-proxy clears UDP entries only, as
here): the probe would reach a pod that no longer backs the Service.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from stockade.lab import nsenter
from stockade.lab.podserver import sctp_supported
from stockade.lab.topology import family_of

TIMEOUT = 1.0
MAX_INFLIGHT = 512  # sockets open at once; stays far below the fd limit


@dataclass(frozen=True)
class Source:
    label: str  # "ns/pod" or "external"
    netns: str


@dataclass(frozen=True)
class Target:
    label: str  # "ns/pod"
    ip: str  # of either family: the probe's socket is of the same
    ports: tuple[tuple[str, int], ...]  # (protocol, port)

    @property
    def family(self) -> str:
        return family_of(self.ip)


@dataclass(frozen=True)
class Result:
    src: str
    dst: str
    port: int
    protocol: str
    connected: bool
    family: str = "ipv4"  # of the addresses probed

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        return {"from": d.pop("src"), "to": d.pop("dst"), **d}


_STREAM = {"TCP": 0, "SCTP": socket.IPPROTO_SCTP}
EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range
_TAKEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)  # that port is busy here: take the next one
_TRIES = 8


class SourcePorts:
    """Source ports for probes, per (netns, protocol, destination address, port): each one after
    the previous one to that destination, and never behind a clock that moves `rate` ports a
    second (the system's monotonic clock, shared by every process), from an offset of its own
    (so probes to different destinations at one moment do not all share one port). A later probe
    to a destination, from this process or another one, thus gets a port no probe to it had in
    the last (range / rate) seconds (282 s by default, past the 120 s a SYN_SENT conntrack entry
    lives), as long as no destination is probed faster than `rate` a second."""

    def __init__(
        self,
        low: int = EPHEMERAL[0],
        high: int = EPHEMERAL[1],
        rate: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.low, self.size, self.rate, self.clock = low, high - low + 1, rate, clock
        self._last: dict[tuple[str, int, str, int], int] = {}  # unwrapped: clock ticks + probes
        self._lock = threading.Lock()  # probes run in several threads, each with its own loop

    def take(self, netns: str, proto: int, ip: str, port: int) -> int:
        key = (netns, proto, ip, port)
        with self._lock:
            last = self._last.get(key)
            n = int(self.clock() * self.rate)
            if last is not None:
                n = max(n, last + 1)
            self._last[key] = n
        return self.low + (n + zlib.crc32(repr(key).encode())) % self.size  # crc32: the same in every process


SOURCE_PORTS = SourcePorts()


def _af(ip: str) -> int:
    return socket.AF_INET6 if family_of(ip) == "ipv6" else socket.AF_INET


async def _stream(netns: str, ip: str, port: int, proto: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    for _ in range(_TRIES):
        s = nsenter.socket_in(netns, _af(ip), socket.SOCK_STREAM, proto)
        try:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past our own TIME_WAITs
            s.bind(("::" if s.family == socket.AF_INET6 else "0.0.0.0", SOURCE_PORTS.take(netns, proto, ip, port)))
            await asyncio.wait_for(loop.sock_connect(s, (ip, port)), timeout)
            return True
        except TimeoutError:
            # A loop running late handles the timer and the socket's readiness in one pass: the
            # handshake may have completed all the same, and then it is not blocked.
            return _connected(s)
        except OSError as e:  # refused or unreachable
            if e.errno not in _TAKEN:
                return False
        finally:
            s.close()
    return False


def _connected(s: socket.socket) -> bool:
    """Whether a non-blocking connect finished after all: no pending error, and a peer (a
    socket still in SYN_SENT has none). Not select(): a probe's descriptors pass 1024."""
    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
        return False
    try:
        s.getpeername()
    except OSError:
        return False
    return True


def _late_token(s: socket.socket, token: bytes) -> bool:
    """Whether our token is already waiting in the socket (the loop ran late, not the network)."""
    while True:
        try:
            if s.recv(1500) == token:
                return True
        except OSError:  # nothing (more) waiting, or an ICMP error
            return False


async def _udp(netns: str, ip: str, port: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    s = nsenter.socket_in(netns, _af(ip), socket.SOCK_DGRAM)
    s.setblocking(False)
    token = os.urandom(12)
    try:
        s.connect((ip, port))
        await loop.sock_sendall(s, token)
        deadline = loop.time() + timeout
        while True:  # anything but our own token (a stray datagram) does not count
            data = await asyncio.wait_for(loop.sock_recv(s, 1500), max(0.0, deadline - loop.time()))
            if data == token:
                return True
    except TimeoutError:
        return _late_token(s, token)
    except OSError:
        return False
    finally:
        s.close()


async def probe_one(netns: str, ip: str, protocol: str, port: int, timeout: float = TIMEOUT) -> bool:
    if protocol == "UDP":
        return await _udp(netns, ip, port, timeout)
    return await _stream(netns, ip, port, _STREAM[protocol], timeout)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))


def cells(sources: Iterable[Source], targets: Iterable[Target]) -> list[tuple[Source, Target, str, int]]:
    return [(s, t, proto, port) for s in sources for t in targets for proto, port in t.ports]


async def probe_cells(todo: list[tuple[Source, Target, str, int]], timeout: float = TIMEOUT) -> list[Result]:
    """Probe each (source, target, protocol, port), all concurrently; results in the same order."""
    _raise_fd_limit()
    gate = asyncio.Semaphore(MAX_INFLIGHT)

    async def one(s: Source, t: Target, proto: str, port: int) -> Result:
        async with gate:
            ok = await probe_one(s.netns, t.ip, proto, port, timeout)
        return Result(s.label, t.label, port, proto, ok, t.family)

    return list(await asyncio.gather(*(one(*c) for c in todo)))


async def probe(sources: list[Source], targets: list[Target], timeout: float = TIMEOUT) -> list[Result]:
    return await probe_cells(cells(sources, targets), timeout)


def select_ports(
    declared: list[tuple[str, int]], ports: list[int] | None, protocols: list[str] | None
) -> tuple[tuple[str, int], ...]:
    """The (protocol, port) pairs to probe on one destination.

    Default: its declared ports (only the given protocols, if any). With explicit ports: each of
    them over each given protocol (TCP if none is given)."""
    if ports:
        return tuple((proto, port) for proto in (protocols or ["TCP"]) for port in ports)
    return tuple(p for p in declared if protocols is None or p[0] in protocols)


def unsupported_protocols(protocols: Iterable[str]) -> list[str]:
    return [p for p in protocols if p == "SCTP" and not sctp_supported()]
