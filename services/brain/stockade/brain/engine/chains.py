"""The chain compiler: the policies isolating a pod, compiled into its ingress and egress chains.

Chains are cached by the applied-to selectors a pod matches (and, where named ports resolve per
pod, by its ports), so pods selected alike share one chain and a chain costs one compile. Any
policy change clears the caches: a chain's content depends on every policy behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from stockade.brain.engine.applied import AppliedTo
from stockade.brain.engine.groups import AddressGroups, peer_sid
from stockade.brain.engine.objects import PodInfo
from stockade.brain.engine.policy import Policy, PolicyRule
from stockade.brain.engine.store import Store
from stockade.model import Chain, Direction, PortMatch, Protocol, Rule
from stockade.model.limits import NodeLimits

# A policy the chain cap left out of a pod's chain in one direction: (direction, policy key).
LeftOut = tuple[Direction, str]


def _port_key(p: PortMatch) -> tuple[str, int, int]:
    return (p.protocol.value, p.port or 0, p.end_port or 0)


class ChainCompiler:
    """``beta_isolated`` says whether a namespace's pods are isolated for ingress with no policy."""

    def __init__(
        self,
        store: Store,
        groups: AddressGroups,
        applied: AppliedTo,
        limits: NodeLimits,
        beta_isolated: Callable[[str], bool],
    ) -> None:
        self._store = store
        self._groups = groups
        self._applied = applied
        self._limits = limits
        self._beta_isolated = beta_isolated
        self._chain_cache: dict[tuple[Any, ...], Chain] = {}
        self._group_cache: dict[tuple[Any, ...], tuple[list[Policy], bool]] = {}
        self._chain_left_out: dict[tuple[Any, ...], tuple[str, ...]] = {}  # chain-cache key -> policies
        # (policy key, direction) -> (that policy, its rules compiled): for policies behind a
        # selector many share whose rules in that direction name no port, which makes them the
        # same for every pod and every group state. Kept across `invalidate`, so one policy
        # change among 10,000 recompiles only it.
        self._policy_rules: dict[tuple[str, Direction], tuple[Policy, AbstractSet[Rule]]] = {}

    def invalidate(self) -> None:
        self._chain_cache.clear()
        self._chain_left_out.clear()
        self._group_cache.clear()

    def forget(self, pol: Policy) -> None:
        """A policy is gone (or replaced): drop its compiled rules."""
        for d in Direction:
            entry = self._policy_rules.get((pol.key, d))
            if entry is not None and entry[0] is pol:
                del self._policy_rules[(pol.key, d)]

    def pod_chains(self, pod: PodInfo) -> tuple[Chain | None, Chain | None, list[LeftOut]]:
        """The pod's ingress and egress chains (None: not isolated in that direction), and the
        policies the rule cap left out of them.

        Cached by the set of applied-to selectors the pod matches, not by policy keys: pods that
        match the same selectors share chains, and the cost per pod does not grow with the number
        of policies behind those selectors (10,000 policies on one selector cost one lookup).
        """
        ns = pod.namespace
        chains: list[Chain | None] = []
        leaving: list[LeftOut] = []
        for direction in (Direction.INGRESS, Direction.EGRESS):
            matched = self._applied.matched(direction, pod)
            if not matched and not (direction is Direction.INGRESS and self._beta_isolated(ns)):
                chains.append(None)
                continue
            gk = (direction, ns, tuple(sel.canon for sel, _ in matched))
            group = self._group_cache.get(gk)
            if group is None:
                keys = sorted(k for _, ks in matched for k in ks)
                pols = [self._store.policies[k] for k in keys]
                named = direction is Direction.INGRESS and any(r.has_named_ports for p in pols for r in p.ingress or ())
                group = (pols, named)
                if len(keys) > 16:  # worth keeping only where many policies share selectors
                    self._group_cache[gk] = group
            pols, named = group
            chains.append(self._chain(direction, gk, pols, pod, pod.port_signature() if named else None, leaving))
        return chains[0], chains[1], leaving

    def _chain(
        self,
        direction: Direction,
        gk: tuple[Any, ...],
        pols: list[Policy],
        pod: PodInfo,
        ports: Any,
        leaving: list[LeftOut],
    ) -> Chain:
        ck = (direction, gk, ports)
        chain = self._chain_cache.get(ck)
        if chain is None:
            rules: set[Rule] = set()
            cap = self._limits.max_rules_per_chain
            left_out: list[str] = []
            remember = len(pols) > 16  # as the group cache: where many policies share selectors
            for p in pols:  # in key order: the policy that would push the chain over is left out
                mine = self._policy_compiled(p, direction, pod, remember)
                if len(rules) + len(mine - rules) > cap:
                    left_out.append(p.key)
                    continue
                rules |= mine
            chain = Chain.of(direction, rules)
            self._chain_cache[ck] = chain
            if left_out:
                self._chain_left_out[ck] = tuple(left_out)
        for key in self._chain_left_out.get(ck, ()):
            leaving.append((direction, key))
        return chain

    def _policy_compiled(self, pol: Policy, direction: Direction, pod: PodInfo, remember: bool) -> AbstractSet[Rule]:
        """The policy's rules in ``direction`` compiled for ``pod`` (``remember``: keep them if
        they are the same for every pod)."""
        rules = (pol.ingress if direction is Direction.INGRESS else pol.egress) or ()
        if remember:
            pkey = (pol.key, direction)
            entry = self._policy_rules.get(pkey)
            if entry is not None and entry[0] is pol:
                return entry[1]
        mine: set[Rule] = set()
        for rule in rules:
            mine.update(self.compile_rule(rule, direction, pod))
        if remember and not any(r.has_named_ports for r in rules):  # named ports resolve per pod or group state
            self._policy_rules[pkey] = (pol, mine)  # never changed after: callers only read it
        return mine

    def compile_rule(self, rule: PolicyRule, direction: Direction, pod: PodInfo) -> list[Rule]:
        """One policy rule, applied to ``pod``, as model rules (named ports resolved)."""
        out: list[Rule] = []
        ports: tuple[PortMatch, ...] | None
        named: list[tuple[str, Protocol]] = []
        if rule.ports is None:
            ports = None
        else:
            matches: list[PortMatch] = []
            for p in rule.ports:
                if p.port is None:
                    matches.append(PortMatch(p.protocol))
                elif isinstance(p.port, int):
                    matches.append(PortMatch(p.protocol, p.port, p.end_port if p.end_port != p.port else None))
                elif direction is Direction.INGRESS:
                    num = pod.named_ports.get((p.port, p.protocol))
                    if num is not None:
                        matches.append(PortMatch(p.protocol, num))
                else:
                    named.append((p.port, p.protocol))
            ports = tuple(sorted(set(matches), key=_port_key))
            if not ports and not named:
                return []  # only named ports, none of which resolve: the rule allows nothing
        if ports is None or ports:
            if rule.peers is None:
                out.append(Rule(None, ports))
            else:
                out.extend(Rule(peer_sid(peer), ports) for peer in rule.peers)
        for name, proto in named:
            for peer in rule.peers if rule.peers is not None else [None]:
                nm = self._groups.named_for(peer, name, proto)
                if nm is None:
                    continue
                for num in nm.by_number:
                    out.append(Rule(nm.sid(num), (PortMatch(proto, num),)))
        return out
