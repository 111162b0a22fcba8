"""Evaluate a compiled node model for one connection attempt: the model's own semantics.

`stockade reach`, the admin API's explain and the tests use this to read what a dataplane
would do with the model, without a kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from stockade.model.rules import Action, Chain, Direction, NodeModel, Protocol, Rule, Tier


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
    """What a node's model decides for one direction, and what decided it.

    ``tier``: the tier whose chain decided (None: no chain did, the default allow). For the
    NetworkPolicy tier ``chain`` is the pod's chain and ``matched`` every rule of it that
    allows; for a tier chain ``chain`` is that chain, ``rule`` the index of the rule that
    decided and ``matched`` that rule. ``passed``: (chain id, rule index) of each Pass that
    handed on. ``isolated``: whether a NetworkPolicy chain isolates the pod in this direction.
    ``own_node``: the peer is an address of the pod's own node and that decided: the NetworkPolicy
    tier allowed it without reading its rules (``tier`` NETPOL, ``matched`` empty: v1 exempts a
    pod's traffic to its node), or the direction is ingress from the node, never filtered
    (``tier`` None)."""

    isolated: bool
    allowed: bool
    chain: str | None = None
    matched: tuple[Rule, ...] = ()
    tier: Tier | None = None
    rule: int = -1
    passed: tuple[tuple[str, int], ...] = ()
    own_node: bool = False


def rule_matches(model: NodeModel, rule: Rule, peer_ip: str, protocol: Protocol, port: int) -> bool:
    return rule.matches_port(protocol, port) and (rule.peer is None or in_set(model, rule.peer, peer_ip))


def first_match(model: NodeModel, chain: Chain, peer_ip: str, protocol: Protocol, port: int) -> int:
    """The index of the first rule of a tier chain that matches, or -1."""
    for i, rule in enumerate(chain.rules):
        if rule_matches(model, rule, peer_ip, protocol, port):
            return i
    return -1


def decide(
    model: NodeModel,
    direction: Direction,
    pod_ip: str,
    peer_ip: str,
    protocol: Protocol,
    port: int,
    own_node: bool = False,
) -> Verdict:
    """The verdict for ``pod_ip`` talking to (egress) or from (ingress) ``peer_ip``, both of one
    family (the model's dispatch and sets hold both families; a rule without peer matches both),
    through the tiers in order (see `stockade.model.rules`).

    ``own_node``: ``peer_ip`` is an address of the pod's own node (the host, a host-network pod).
    Egress there goes through the Admin tier as any egress; then a NetworkPolicy that isolates
    the pod allows it (v1 exempts a pod's traffic to its node, and that tier is final), else
    the Baseline tier decides. Ingress from the node is never filtered (it leaves by the node's
    output path): allowed, nothing evaluated."""
    passed: list[tuple[str, int]] = []
    np_cid = model.dispatch(direction).get(pod_ip)
    if own_node and direction is Direction.INGRESS:
        return Verdict(np_cid is not None, True, own_node=True)
    for tier in (Tier.ADMIN, Tier.NETPOL, Tier.BASELINE):
        if tier is Tier.NETPOL:
            if np_cid is None:
                continue
            if own_node:
                return Verdict(True, True, np_cid, (), Tier.NETPOL, passed=tuple(passed), own_node=True)
            chain = model.chains[np_cid]
            matched = tuple(r for r in chain.rules if rule_matches(model, r, peer_ip, protocol, port))
            return Verdict(True, bool(matched), np_cid, matched, Tier.NETPOL, passed=tuple(passed))
        cid = model.dispatch(direction, tier).get(pod_ip)
        if cid is None:
            continue
        chain = model.chains[cid]
        i = first_match(model, chain, peer_ip, protocol, port)
        if i < 0:
            continue
        rule = chain.rules[i]
        if rule.action is Action.PASS:
            passed.append((cid, i))
            continue
        return Verdict(np_cid is not None, rule.action is Action.ACCEPT, cid, (rule,), tier, i, tuple(passed))
    return Verdict(isolated=False, allowed=True, passed=tuple(passed))
