"""Evaluate a compiled node model for one connection attempt: the model's own semantics.

`stockade reach`, the admin API's explain and the tests use this to read what a dataplane
would do with the model, without a kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from stockade.model.rules import Direction, NodeModel, Protocol, Rule


@lru_cache(maxsize=65536)
def _net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def ip_in(ip: str, cidrs: Iterable[str]) -> bool:
    """Whether ``ip`` (either family, any spelling) falls in any of the CIDR strings (a set's
    elements). An element of the other family never holds it, as in the dataplane."""
    addr = ipaddress.ip_address(ip)
    return any(addr.version == (n := _net(c)).version and addr in n for c in cidrs)


def ip_version(ip: str) -> int:
    """4 or 6; ValueError for text that is not an address."""
    return ipaddress.ip_address(ip).version


FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


def in_set(model: NodeModel, set_id: str, ip: str) -> bool:
    return ip_in(ip, model.sets.get(set_id, ()))


@dataclass(frozen=True)
class Verdict:
    """What a node's model decides for one direction: not isolated, allowed by rules, or denied."""

    isolated: bool
    allowed: bool
    chain: str | None = None
    matched: tuple[Rule, ...] = ()


def decide(model: NodeModel, direction: Direction, pod_ip: str, peer_ip: str, protocol: Protocol, port: int) -> Verdict:
    """The verdict for ``pod_ip`` talking to (egress) or from (ingress) ``peer_ip``, both of one
    family (the model's dispatch and sets hold both families; a rule without peer matches both)."""
    cid = model.dispatch(direction).get(pod_ip)
    if cid is None:
        return Verdict(isolated=False, allowed=True)
    chain = model.chains[cid]
    matched = tuple(
        r for r in chain.rules if r.matches_port(protocol, port) and (r.peer is None or in_set(model, r.peer, peer_ip))
    )
    return Verdict(isolated=True, allowed=bool(matched), chain=cid, matched=matched)
