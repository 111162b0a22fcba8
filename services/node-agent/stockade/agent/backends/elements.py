"""Address-set elements as the kernel holds them: one family per kernel set, none covered by another.

nftables interval sets (and ipset ``hash:net``) refuse an element that overlaps one already
present, so a set's kernel form drops every CIDR nested inside a wider one. CIDRs never
partially overlap, so that is all the normalisation needed. A kernel set holds one family, so
a model set becomes an IPv4 and an IPv6 twin: `kernel_forms`, `coverages` and `changes` split
by family (and refuse an element of neither); `kernel_form`, `coverage` and `change` are their
IPv4-only forms, which skip IPv6 elements.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
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


# -- both families ---------------------------------------------------------------------------
# The functions above are IPv4-only (they skip IPv6 elements). Those below split by family and
# refuse what belongs to neither, so a dual-stack dataplane can never drop an element silently.

_BITS = {4: 32, 6: 128}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


class ElementError(ValueError):
    """An element no kernel set can hold (neither an IPv4 nor an IPv6 address or CIDR)."""


@functools.lru_cache(maxsize=1 << 16)  # a pod's address is in many sets; snapshots ask again
def family(elem: str) -> int:
    """4 or 6: the family of a CIDR or bare address; `ElementError` when it is neither."""
    addr, slash, plen = elem.partition("/")
    version = 6 if ":" in addr else 4
    try:
        socket.inet_pton(_AF[version], addr)
    except (OSError, ValueError):
        raise ElementError(f"{elem[:80]!r} is neither an IPv4 nor an IPv6 address or CIDR") from None
    if slash and not (plen.isascii() and plen.isdigit() and int(plen) <= _BITS[version]):
        raise ElementError(f"{elem[:80]!r}: prefix length {plen[:8]!r} is not 0-{_BITS[version]}")
    return version


def ip_family(ip: str) -> int:
    """4 or 6 for a bare address (a dispatch key); `ElementError` otherwise."""
    if "/" in ip:
        raise ElementError(f"{ip[:80]!r} is a CIDR, not a pod IP address")
    return family(ip)


def by_family(elems: Iterable[str]) -> dict[int, list[str]]:
    """``{4: [...], 6: [...]}``: every element placed in its family, or `ElementError`."""
    out: dict[int, list[str]] = {4: [], 6: []}
    for e in elems:
        out[family(e)].append(e)
    return out


def _is_host(elem: str, version: int) -> bool:
    return "/" not in elem or elem.endswith(f"/{_BITS[version]}")


def _kernel_form(elems: list[str], version: int) -> frozenset[str]:
    host = f"/{_BITS[version]}"
    if all(_is_host(e, version) for e in elems):
        return frozenset(e if "/" in e else e + host for e in elems)
    parsed = {ipaddress.ip_network(e, strict=False) for e in elems}
    nets = sorted(parsed, key=lambda n: (n.network_address, n.prefixlen))
    out: list[IPv4Net | ipaddress.IPv6Network] = []
    for net in nets:
        if out and net.subnet_of(out[-1]):  # type: ignore[arg-type]  # one family per list
            continue
        out.append(net)
    return frozenset(str(n) for n in out)


def kernel_forms(elems: Iterable[str]) -> dict[int, frozenset[str]]:
    """`kernel_form` for both families: ``{4: ..., 6: ...}``, nested CIDRs dropped per family."""
    return {v: _kernel_form(es, v) for v, es in by_family(elems).items()}


def coverages(elems: Iterable[str]) -> dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """`coverage` for both families."""
    return {
        v: list(ipaddress.collapse_addresses(ipaddress.ip_network(e, strict=False) for e in es))  # type: ignore[type-var]
        for v, es in by_family(elems).items()
    }


def _hosts(elems: Iterable[str]) -> bool:
    # Text only (no parsing): the elements were placed in a family when they were added.
    return all("/" not in e or e.endswith("/128") or (e.endswith("/32") and ":" not in e) for e in elems)


def changes(
    old: frozenset[str], new: frozenset[str], added: frozenset[str], removed: frozenset[str]
) -> dict[int, tuple[frozenset[str], frozenset[str]]]:
    """`change` for both families: ``{4: (to add, to delete), 6: (...)}``."""
    if _hosts(added) and _hosts(removed) and _hosts(old) and _hosts(new):
        plus, minus = kernel_forms(added), kernel_forms(removed)
        return {v: (plus[v], minus[v]) for v in (4, 6)}
    before, after = kernel_forms(old), kernel_forms(new)
    return {v: (after[v] - before[v], before[v] - after[v]) for v in (4, 6)}
