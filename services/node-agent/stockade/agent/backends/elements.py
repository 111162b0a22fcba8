"""Address-set elements as the kernel holds them: IPv4 only, no element covered by another.

nftables interval sets (and ipset ``hash:net``) refuse an element that overlaps one already
present, so a set's kernel form drops every CIDR nested inside a wider one. CIDRs never
partially overlap, so that is all the normalisation needed. IPv6 elements are skipped: the
dispatch maps and the peer matches are IPv4 (``ip saddr``), so an IPv6 element could never
match; a dual-stack dataplane would add ``ip6`` twins of every set and map.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPv4Net = ipaddress.IPv4Network


def is_v4(elem: str) -> bool:
    return ":" not in elem


def is_host(elem: str) -> bool:
    return "/" not in elem or elem.endswith("/32")


def host_only(elems: Iterable[str]) -> bool:
    return all(is_host(e) for e in elems)


def kernel_form(elems: Iterable[str]) -> frozenset[str]:
    """The elements to load: IPv4, as ``a.b.c.d/len``, with nested CIDRs dropped."""
    v4 = [e for e in elems if is_v4(e)]
    if host_only(v4):
        return frozenset(e if "/" in e else f"{e}/32" for e in v4)
    nets = sorted({ipaddress.IPv4Network(e, strict=False) for e in v4}, key=lambda n: (n.network_address, n.prefixlen))
    out: list[IPv4Net] = []
    for net in nets:
        # Sorted by start then length: a nested CIDR always follows the one that covers it.
        if out and net.subnet_of(out[-1]):
            continue
        out.append(net)
    return frozenset(str(n) for n in out)


def coverage(elems: Iterable[str]) -> list[IPv4Net]:
    """The addresses covered, in a canonical form: to compare what the kernel holds with the model."""
    nets = (ipaddress.IPv4Network(e, strict=False) for e in elems if is_v4(e))
    return list(ipaddress.collapse_addresses(nets))


def change(
    old: frozenset[str], new: frozenset[str], added: frozenset[str], removed: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """(elements to add, elements to delete) in the kernel for one set's element change."""
    if host_only(added) and host_only(removed) and host_only(old) and host_only(new):
        # The common case (pods joining or leaving a selector): nothing nests, no recomputation.
        return kernel_form(added), kernel_form(removed)
    before, after = kernel_form(old), kernel_form(new)
    return after - before, before - after
