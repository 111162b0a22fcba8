"""Cluster IP and node port allocators, as the real API server keeps them (pkg/registry/core/service).

Each range has a small *static band* at its bottom that dynamic allocation uses only when the
rest is full (KEP-3070 for IPs, KEP-3668 for node ports), so a manifest asking for a low address
or port (``10.96.0.10`` for DNS, ``nodePort: 30001``) does not collide with an earlier automatic
choice. The real allocator picks at random inside the band; this one picks the lowest free value,
so a lab run is reproducible. Error texts are the real ones (clients match on them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_RANGE = 1 << 20  # like kube-apiserver: an IPv6 service range may be at most a /108


class AllocationError(Exception):
    pass


def _band(size: int, divisor: int, cap: int) -> int:
    """The static band's size: none in a range smaller than 16 (as calculateRangeOffset)."""
    return 0 if size < 16 else min(max(16, size // divisor), cap)


class IPAllocator:
    """The cluster IPs of one family: every address of the CIDR but the network (and the IPv4 broadcast)."""

    def __init__(self, cidr: str):
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise ValueError(f"service CIDR {cidr!r}: {e}") from None
        if net.num_addresses > MAX_RANGE:
            raise ValueError(
                f"service CIDR {cidr}: at most {MAX_RANGE} addresses (a /{net.max_prefixlen - 20} or smaller)"
            )
        if net.num_addresses < 4:
            raise ValueError(f"service CIDR {cidr}: too small")
        self.network: IPNetwork = net
        self.family = "IPv4" if net.version == 4 else "IPv6"
        self._first = 1
        self._last = net.num_addresses - (2 if net.version == 4 else 1)
        self._static = _band(self._last - self._first + 1, 16, 256)
        self._used: set[int] = set()

    def _offset(self, ip: str) -> int:
        addr = ipaddress.ip_address(ip)
        off = int(addr) - int(self.network.network_address)
        if addr.version != self.network.version or not self._first <= off <= self._last:
            raise AllocationError(
                f"the provided IP ({addr}) is not in the valid range. The range of valid IPs is {self.network}"
            )
        return off

    def allocate(self, ip: str) -> str:
        off = self._offset(ip)
        if off in self._used:
            raise AllocationError("provided IP is already allocated")
        self._used.add(off)
        return str(self.network.network_address + off)

    def allocate_next(self) -> str:
        for lo, hi in ((self._first + self._static, self._last), (self._first, self._first + self._static - 1)):
            hi = min(hi, self._last)
            for off in range(lo, hi + 1):
                if off not in self._used:
                    self._used.add(off)
                    return str(self.network.network_address + off)
        raise AllocationError("range is full")

    def release(self, ip: str) -> None:
        try:
            self._used.discard(self._offset(ip))
        except (AllocationError, ValueError):
            pass

    def contains(self, ip: str) -> bool:
        try:
            self._offset(ip)
        except (AllocationError, ValueError):
            return False
        return True

    @property
    def used(self) -> int:
        return len(self._used)

    def snapshot(self) -> frozenset[int]:
        return frozenset(self._used)

    def restore(self, state: frozenset[int]) -> None:
        self._used = set(state)


class PortAllocator:
    """Node ports from a range (default 30000-32767)."""

    def __init__(self, first: int = 30000, last: int = 32767):
        if not 1 <= first <= last <= 65535:
            raise ValueError(f"node port range {first}-{last}: must be within 1-65535, first ≤ last")
        self.first, self.last = first, last
        self._static = _band(last - first + 1, 32, 128)
        self._used: set[int] = set()

    @property
    def range_text(self) -> str:
        return f"{self.first}-{self.last}"

    def allocate(self, port: int) -> int:
        if not self.first <= port <= self.last:
            raise AllocationError(
                f"provided port is not in the valid range. The range of valid ports is {self.range_text}"
            )
        if port in self._used:
            raise AllocationError("provided port is already allocated")
        self._used.add(port)
        return port

    def allocate_next(self) -> int:
        for lo, hi in ((self.first + self._static, self.last), (self.first, self.first + self._static - 1)):
            hi = min(hi, self.last)
            for port in range(lo, hi + 1):
                if port not in self._used:
                    self._used.add(port)
                    return port
        raise AllocationError("range is full")

    def release(self, port: int) -> None:
        self._used.discard(port)

    def is_used(self, port: int) -> bool:
        return port in self._used

    def snapshot(self) -> frozenset[int]:
        return frozenset(self._used)

    def restore(self, state: frozenset[int]) -> None:
        self._used = set(state)


def parse_port_range(text: str) -> tuple[int, int]:
    """``30000-32767`` (kube-apiserver's --service-node-port-range)."""
    lo, sep, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi if sep else lo)
    except ValueError:
        raise ValueError(f"node port range {text!r}: expected FIRST-LAST, e.g. 30000-32767") from None
    PortAllocator(first, last)  # validates
    return first, last


def parse_cidrs(cidrs: Sequence[str]) -> list[IPAllocator]:
    """One allocator per family (at most one of each), in the given order: the first is the default family."""
    out = [IPAllocator(c.strip()) for c in cidrs if c.strip()]
    if not out:
        raise ValueError("at least one service CIDR is needed")
    if len(out) > 2 or len({a.family for a in out}) != len(out):
        raise ValueError("service CIDRs: at most one IPv4 and one IPv6 range")
    return out
