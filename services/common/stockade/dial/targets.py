"""Brain addresses: ``HOST:PORT[,HOST:PORT...]``, where a HOST name may resolve to several brains.

Two brains act as one (issue 13): an agent is served by one of them and moves to the next the
moment its stream ends. In a cluster the brains are the addresses of a headless Service's name
(one A/AAAA record per ready brain pod); in the lab they are listed (``127.0.0.1:P1,127.0.0.1:P2``).
Each address found is a `Candidate`; a candidate reached by IP keeps the name it was found
under as the TLS server name, so the brain's certificate is checked against the Service name,
never against a pod IP.

The order is the node's own: candidates sorted, then rotated by a digest of the node name, so
a thousand agents spread over the brains without talking to each other, and an agent comes back
to the same brain after a restart (its feed is warm there).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Resolver = Callable[[str, int], list[str]]  # (host, port) -> addresses (IP literals)


class TargetError(ValueError):
    """A `--brain` value that names no usable address (the message says which part and why)."""


UNIX_SCHEMES = ("unix:", "unix-abstract:")  # gRPC's Unix socket targets (tests, a local relay)


@dataclass(frozen=True)
class Target:
    host: str  # an IP literal (no brackets), a DNS name, or a whole ``unix:PATH`` target (port 0)
    port: int

    @property
    def is_unix(self) -> bool:
        return self.host.startswith(UNIX_SCHEMES)

    @property
    def is_name(self) -> bool:
        if self.is_unix:
            return False
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    def __str__(self) -> str:
        if self.is_unix:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, order=True)
class Candidate:
    """One brain to dial: ``address`` for gRPC, ``server_name`` for its certificate (None: the
    address's own host is the name to check)."""

    address: str
    server_name: str | None = None

    @property
    def endpoint(self) -> str:
        """``HOST:PORT`` without gRPC's resolver scheme: for logs, metrics and status."""
        for scheme in ("ipv4:", "ipv6:"):
            if self.address.startswith(scheme):
                return self.address[len(scheme) :]
        return self.address

    def __str__(self) -> str:
        return self.endpoint if self.server_name is None else f"{self.endpoint} ({self.server_name})"


def parse_targets(value: str) -> list[Target]:
    """``HOST:PORT`` entries separated by commas; IPv6 literals in brackets (``[fd00::1]:7443``)."""
    targets: list[Target] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith(UNIX_SCHEMES):
            if entry.partition(":")[2] in ("", "/"):
                raise TargetError(f"brain address {entry!r}: a Unix socket is written unix:PATH")
            target = Target(entry, 0)
            if target not in targets:
                targets.append(target)
            continue
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise TargetError(f"brain address {entry!r}: an IPv6 address is written [ADDRESS]:PORT")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise TargetError(f"brain address {entry!r}: {host!r} is not an IPv6 address") from None
        else:
            host, sep, port_text = entry.rpartition(":")
            if not sep or not host:
                raise TargetError(f"brain address {entry!r}: expected HOST:PORT (e.g. stockade-brain:7443)")
            if ":" in host:
                raise TargetError(f"brain address {entry!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
        try:
            port = int(port_text)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise TargetError(f"brain address {entry!r}: the port must be a number from 1 to 65535")
        target = Target(host, port)
        if target not in targets:
            targets.append(target)
    if not targets:
        raise TargetError("no brain address given: expected HOST:PORT[,HOST:PORT...]")
    return targets


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` (A and AAAA), as the system resolver returns them (blocking)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _grpc_address(ip: str, port: int) -> str:
    return f"ipv6:[{ip}]:{port}" if ":" in ip else f"ipv4:{ip}:{port}"


def resolve(targets: Sequence[Target], resolver: Resolver = system_resolver) -> tuple[list[Candidate], list[str]]:
    """Every brain the targets name now, and a problem line for each name that resolves to
    nothing (a name may come back: the caller resolves again at its next round)."""
    found: list[Candidate] = []
    problems: list[str] = []
    for t in targets:
        if not t.is_name:
            found.append(Candidate(str(t)))
            continue
        try:
            ips = resolver(t.host, t.port)
        except OSError as e:
            problems.append(f"cannot resolve {t}: {e}")
            continue
        if not ips:
            problems.append(f"{t} resolves to no address")
        found.extend(Candidate(_grpc_address(ip, t.port), t.host) for ip in ips)
    return sorted(set(found)), problems


def order_for(node: str, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The node's own order over the (sorted) candidates: a rotation chosen by the node name."""
    ordered = sorted(set(candidates))
    if not ordered:
        return []
    # The whole digest: its first bytes alone put node-1 .. node-5 all on the first of two brains.
    start = int.from_bytes(hashlib.sha256(node.encode()).digest(), "big") % len(ordered)
    return ordered[start:] + ordered[:start]
