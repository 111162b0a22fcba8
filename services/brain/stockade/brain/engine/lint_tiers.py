"""Lint for ClusterNetworkPolicies: rules that can never match, and orders upstream leaves open.

- **Shadowed rules**: within a tier, rules run in order (policies by priority, then name); a
  rule whose every connection an earlier rule of the same tier already decides can never match.
  Read from the compiled tier chains, with the sets' current elements: rule B is shadowed in a
  pod's chain when an earlier rule A's peers hold every address of B's and A's ports every port
  of B's. A policy rule is reported when it is shadowed in every chain it is part of (a
  policy rule shadowed for some pods only is not: it still decides for the others).
- **Same-priority overlaps**: two policies of one tier with one priority whose subjects share a
  pod. Upstream leaves their order undefined; Stockade runs them by name, and says so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from stockade.brain.engine.api import LintWarning, RuleOrigin
from stockade.brain.engine.view import EngineView
from stockade.model import CNP_TIERS, PortMatch, Rule

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(elems: Iterable[str]) -> list[Net]:
    return [ipaddress.ip_network(e, strict=False) for e in elems]


def _peer_covers(a: str | None, b: str | None, sets: Mapping[str, frozenset[str]]) -> bool:
    """Whether every address peer ``a`` matches is matched by ``b``'s reverse: ``a`` ⊇ ``b``."""
    if a is None:
        return True
    if b is None:
        return False
    outer = _nets(sets.get(a, ()))
    inner = _nets(sets.get(b, ()))
    return bool(inner) and all(any(n.version == o.version and n.subnet_of(o) for o in outer) for n in inner)  # type: ignore[arg-type]


def _port_covers(a: tuple[PortMatch, ...] | None, b: tuple[PortMatch, ...] | None) -> bool:
    if a is None:
        return True
    if b is None:
        return False

    def within(p: PortMatch, q: PortMatch) -> bool:
        if p.protocol != q.protocol:
            return False
        if q.port is None:
            return True
        if p.port is None:
            return False
        return q.port <= p.port and (p.end_port or p.port) <= (q.end_port or q.port)

    return all(any(within(p, q) for q in a) for p in b)


def _covered(rule: Rule, earlier: Iterable[Rule], sets: Mapping[str, frozenset[str]]) -> Rule | None:
    for e in earlier:
        if _peer_covers(e.peer, rule.peer, sets) and _port_covers(e.ports, rule.ports):
            return e
    return None


def _label(o: RuleOrigin) -> str:
    return f"rule {o.name!r}" if o.name else f"spec.{o.direction}[{o.rule}]"


def lint_tiers(view: EngineView) -> list[LintWarning]:
    # (policy, direction, rule index) -> shadowed in every chain so far? and by what
    verdicts: dict[tuple[str, str, int], tuple[bool, RuleOrigin | None]] = {}
    for node in view.nodes():
        model = view.model(node)
        for cid, chain in model.chains.items():
            if chain.tier not in CNP_TIERS:
                continue
            origins = [view.rule_origin(node, cid, i) for i in range(len(chain.rules))]
            # A policy rule compiles to several chain rules (one per peer): shadowed when all are.
            by_rule: dict[tuple[str, str, int], list[tuple[bool, RuleOrigin | None]]] = {}
            for i, (rule, origin) in enumerate(zip(chain.rules, origins, strict=True)):
                if origin is None:
                    continue
                mine = (origin.policy, origin.direction, origin.rule)
                earlier = [
                    (r, o)
                    for r, o in zip(chain.rules[:i], origins[:i], strict=True)
                    if o is not None and (o.policy, o.direction, o.rule) != mine
                ]
                hit = _covered(rule, [r for r, _ in earlier], model.sets)
                by = next((o for r, o in earlier if r is hit), None) if hit is not None else None
                by_rule.setdefault(mine, []).append((hit is not None, by))
            for key, results in by_rule.items():
                shadowed = all(s for s, _ in results)
                prev = verdicts.get(key)
                by = next((b for _, b in results if b is not None), None)
                verdicts[key] = (shadowed and (prev is None or prev[0]), by if prev is None else prev[1])
    out: list[LintWarning] = []
    for (policy, direction, index), (shadowed, by) in sorted(verdicts.items()):
        if shadowed and by is not None:
            where = "" if by.policy == policy else f"ClusterNetworkPolicy {by.policy} (priority {by.priority}) "
            out.append(
                LintWarning(
                    f"ClusterNetworkPolicy {policy}",
                    f"spec.{direction}[{index}]",
                    f"can never match: {where}{_label(by)} ({by.action}) comes first in the {by.tier} tier "
                    "and decides all of its traffic",
                )
            )
    out += _same_priority(view)
    return out


def _same_priority(view: EngineView) -> list[LintWarning]:
    cnps = [c for n in view.cluster_policy_names() if (c := view.cluster_policy(n)) is not None]
    pods = {c.name: set(view.cluster_policy_pods(c.name)) for c in cnps}
    out = []
    for i, a in enumerate(cnps):
        for b in cnps[i + 1 :]:
            if a.tier != b.tier or a.priority != b.priority:
                continue
            shared = pods[a.name] & pods[b.name]
            if not shared:
                continue
            first, second = sorted((a.name, b.name))
            out.append(
                LintWarning(
                    f"ClusterNetworkPolicy {second}",
                    "spec.priority",
                    f"same {a.tier} priority {a.priority} as ClusterNetworkPolicy {first}, and both select "
                    f"{len(shared)} pod(s) (e.g. {min(shared)}): upstream leaves their order undefined; Stockade "
                    f"runs {first} first (by name). Give them different priorities to say which wins",
                )
            )
    return out
