"""Probing connectivity: from every source namespace to every target pod, all at once.

One process, no helpers: each probe's socket is created inside its source's namespace (see
`nsenter`) and then driven by one asyncio loop, so hundreds of probes run concurrently and a
full probe of a lab where policy drops packets takes about one timeout, not one per probe.
TCP and SCTP count as connected when the handshake completes; UDP when the echo comes back.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import Iterable
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


def _af(ip: str) -> int:
    return socket.AF_INET6 if family_of(ip) == "ipv6" else socket.AF_INET


async def _stream(netns: str, ip: str, port: int, proto: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    s = nsenter.socket_in(netns, _af(ip), socket.SOCK_STREAM, proto)
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (ip, port)), timeout)
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        s.close()


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
    except (OSError, TimeoutError):
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
