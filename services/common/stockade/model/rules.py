"""The dataplane-neutral rule model: what one node must enforce.

The brain's engine produces one `NodeModel` per node and, for every change, one `NodeDelta`
per affected node. The node agent's backends render a model (or a delta) into nftables or
iptables + ipset. Everything here is plain, immutable data so both halves can test it alone.

Shape of a node model:

* ``sets``: address sets, keyed by a stable id derived from the peer definition (so a pod
  joining a selector is an element change, not a new set). Elements are CIDR strings
  (``10.0.0.5/32``, ``10.40.0.0/16``), already normalised: ``ipBlock.except`` is subtracted.
* ``chains``: rule lists keyed by an id derived from their content, so pods whose rules are
  identical share one chain.
* ``ingress`` / ``egress``: dispatch from a local pod's IP to its chain. A pod appears here only
  when it is isolated in that direction; a pod that is not isolated is not filtered at all.

A packet for an isolated pod is allowed when any rule of its chain matches (peer address in the
rule's set, or any peer; protocol and port in the rule's ports, or any port); otherwise it is
denied. Ingress rules match the packet's source, egress rules its destination.

Tiers (ClusterNetworkPolicy). Beside the NetworkPolicy dispatch (``ingress`` / ``egress``, tier
``NETPOL``), a pod may be dispatched in each direction to an ``ADMIN`` chain and a ``BASELINE``
chain (``admin_ingress`` ... ``baseline_egress``). Each direction is decided on its own, in order:

1. the pod's Admin chain, if any: its rules in order, the first that matches decides: ``ACCEPT``
   allows, ``DENY`` drops (final for the direction), ``PASS`` leaves the tier; no match also
   leaves it;
2. the pod's NetworkPolicy chain, if any: allowed when a rule matches, else denied (final);
3. the pod's Baseline chain, if any, as the Admin one (``PASS`` or no match: allowed);
4. allowed.

NetworkPolicy chains hold only ``ACCEPT`` rules and are canonical (sorted: order is no part of
their meaning); tier chains keep their rules' order. A pod is never in a Baseline dispatch and
in the NetworkPolicy dispatch of the same direction (`NodeModel.check`): the NetworkPolicy
verdict is final, and the renderers rely on it (an allowed egress goes on to the next dispatch).
An egress ``ACCEPT`` decides the egress direction only: the destination's ingress still decides.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Direction(enum.StrEnum):
    INGRESS = "ingress"
    EGRESS = "egress"


class Tier(enum.StrEnum):
    """Where a chain sits in a direction's evaluation (see the module docstring)."""

    ADMIN = "admin"
    NETPOL = "netpol"
    BASELINE = "baseline"


TIERS = (Tier.ADMIN, Tier.NETPOL, Tier.BASELINE)  # evaluation order
CNP_TIERS = (Tier.ADMIN, Tier.BASELINE)  # the tiers of ClusterNetworkPolicy chains


class Action(enum.StrEnum):
    """A rule's verdict when it matches: ``PASS`` leaves the chain's tier (tier chains only)."""

    ACCEPT = "accept"
    DENY = "deny"
    PASS = "pass"


@dataclass(frozen=True, order=True)
class PortMatch:
    """One protocol, and a port or an inclusive port range (``port=None``: every port)."""

    protocol: Protocol
    port: int | None = None
    end_port: int | None = None

    def matches(self, protocol: Protocol, port: int) -> bool:
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        hi = self.end_port if self.end_port is not None else self.port
        return self.port <= port <= hi

    def __str__(self) -> str:
        if self.port is None:
            return f"{self.protocol}/*"
        if self.end_port is not None and self.end_port != self.port:
            return f"{self.protocol}/{self.port}-{self.end_port}"
        return f"{self.protocol}/{self.port}"


@dataclass(frozen=True, order=True)
class Rule:
    """A peer address set (``None``: any address), ports (``None``: any) and what a match does
    (NetworkPolicy chains: always ``ACCEPT``)."""

    peer: str | None
    ports: tuple[PortMatch, ...] | None
    action: Action = Action.ACCEPT

    def matches_all(self) -> bool:
        return self.peer is None and self.ports is None

    def matches_port(self, protocol: Protocol, port: int) -> bool:
        return self.ports is None or any(p.matches(protocol, port) for p in self.ports)


def _rule_key(rule: Rule) -> tuple[str, tuple[tuple[str, int, int], ...], str]:
    ports = () if rule.ports is None else tuple((p.protocol.value, p.port or 0, p.end_port or 0) for p in rule.ports)
    return (rule.peer or "", ports, rule.action.value)


@dataclass(frozen=True)
class Chain:
    """The rules of one direction and tier, shared by every pod that has exactly these."""

    direction: Direction
    rules: tuple[Rule, ...]
    tier: Tier = Tier.NETPOL
    # Derived from the content, computed once at construction (not part of equality).
    id: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", chain_id(self))

    @staticmethod
    def of(direction: Direction, rules: Iterable[Rule]) -> Chain:
        """A NetworkPolicy chain in canonical form: rules deduplicated and sorted, so equal
        content is equal."""
        return Chain(direction, tuple(sorted(set(rules), key=_rule_key)))

    @staticmethod
    def ordered(direction: Direction, tier: Tier, rules: Iterable[Rule]) -> Chain:
        """A tier chain: rules in evaluation order, none after one that matches everything (it
        decides all that reaches it, so what follows could never match; the indexes of the rules
        kept are unchanged)."""
        kept: list[Rule] = []
        for rule in rules:
            kept.append(rule)
            if rule.matches_all():
                break
        return Chain(direction, tuple(kept), tier)

    def set_refs(self) -> set[str]:
        return {r.peer for r in self.rules if r.peer is not None}


# Full width (128 bits), so two contents never share an id by chance; the engine also refuses
# to put two different chains under one id on a node (a collision fails closed, reported).
CHAIN_ID_BYTES = 16


def chain_id(chain: Chain) -> str:
    """A digest of the chain's content: one text, hashed once."""
    parts = [chain.direction.value]
    tiered = chain.tier is not Tier.NETPOL  # a NetworkPolicy chain's id is as before tiers existed
    if tiered:
        parts.append(f"tier={chain.tier.value}")
    for rule in chain.rules:
        if tiered:
            parts.append(rule.action.value)
        parts.append(rule.peer or "*")
        if rule.ports is None:
            parts.append("*")
        else:
            parts.append(",".join(f"{p.protocol.value}/{p.port or 0}-{p.end_port or 0}" for p in rule.ports))
    digest = hashlib.blake2b("\x1e".join(parts).encode(), digest_size=CHAIN_ID_BYTES).hexdigest()
    return f"{'in' if chain.direction is Direction.INGRESS else 'out'}_{digest}"


@dataclass
class NodeModel:
    """Everything one node enforces. Mutable only while the engine builds it."""

    node: str
    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    ingress: dict[str, str] = field(default_factory=dict)
    egress: dict[str, str] = field(default_factory=dict)
    admin_ingress: dict[str, str] = field(default_factory=dict)
    admin_egress: dict[str, str] = field(default_factory=dict)
    baseline_ingress: dict[str, str] = field(default_factory=dict)
    baseline_egress: dict[str, str] = field(default_factory=dict)

    def dispatch(self, direction: Direction, tier: Tier = Tier.NETPOL) -> dict[str, str]:
        """Pod IP -> chain id for one direction and tier (the live table)."""
        return getattr(self, _DISPATCH_FIELD[tier, direction])

    def tier_tables(self) -> list[tuple[Tier, Direction, dict[str, str]]]:
        """Every dispatch table: (tier, direction, table), the NetworkPolicy ones first."""
        return [(t, d, self.dispatch(d, t)) for t in (Tier.NETPOL, *CNP_TIERS) for d in Direction]

    def has_tiers(self) -> bool:
        return any(self.dispatch(d, t) for t in CNP_TIERS for d in Direction)

    def copy(self) -> NodeModel:
        out = NodeModel(self.node, dict(self.sets), dict(self.chains))
        for tier, direction, table in self.tier_tables():
            setattr(out, _DISPATCH_FIELD[tier, direction], dict(table))
        return out

    def digest(self) -> str:
        """A stable digest of the content, for agents to tell the brain what they hold."""
        h = hashlib.blake2b(digest_size=16)
        for sid in sorted(self.sets):
            h.update(f"S{sid}={','.join(sorted(self.sets[sid]))};".encode())
        for cid in sorted(self.chains):
            h.update(f"C{cid};".encode())
        for ip in sorted(self.ingress):
            h.update(f"I{ip}>{self.ingress[ip]};".encode())
        for ip in sorted(self.egress):
            h.update(f"E{ip}>{self.egress[ip]};".encode())
        for tier in CNP_TIERS:  # absent for a model without tiers: its digest is as before
            for direction in Direction:
                table = self.dispatch(direction, tier)
                tag = f"{tier.value[0].upper()}{direction.value[0].upper()}"
                for ip in sorted(table):
                    h.update(f"{tag}{ip}>{table[ip]};".encode())
        return h.hexdigest()

    def check(self) -> list[str]:
        """Internal consistency: every reference resolves. Returns the problems found."""
        problems = []
        for tier, direction, table in self.tier_tables():
            where = f"{direction} dispatch" if tier is Tier.NETPOL else f"{tier} {direction} dispatch"
            for ip, cid in table.items():
                chain = self.chains.get(cid)
                if chain is None:
                    problems.append(f"{where} {ip} -> missing chain {cid}")
                elif chain.direction is not direction:
                    problems.append(f"{where} {ip} -> chain {cid} of other direction")
                elif chain.tier is not tier:
                    problems.append(f"{where} {ip} -> chain {cid} of tier {chain.tier}")
            if tier is Tier.BASELINE:
                both = table.keys() & self.dispatch(direction).keys()
                for ip in sorted(both)[:5]:
                    problems.append(f"{where} {ip}: also in the {direction} NetworkPolicy dispatch, which is final")
        for cid, chain in self.chains.items():
            for sid in chain.set_refs():
                if sid not in self.sets:
                    problems.append(f"chain {cid} uses missing set {sid}")
            if chain.tier is Tier.NETPOL and any(r.action is not Action.ACCEPT for r in chain.rules):
                problems.append(f"chain {cid}: a NetworkPolicy chain with a rule that does not accept")
        return problems

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodeModel):
            return NotImplemented
        return (
            self.node == other.node
            and self.sets == other.sets
            and self.chains == other.chains
            and self.ingress == other.ingress
            and self.egress == other.egress
            and self.admin_ingress == other.admin_ingress
            and self.admin_egress == other.admin_egress
            and self.baseline_ingress == other.baseline_ingress
            and self.baseline_egress == other.baseline_egress
        )

    __hash__ = None  # type: ignore[assignment]


_DISPATCH_FIELD = {
    (Tier.NETPOL, Direction.INGRESS): "ingress",
    (Tier.NETPOL, Direction.EGRESS): "egress",
    (Tier.ADMIN, Direction.INGRESS): "admin_ingress",
    (Tier.ADMIN, Direction.EGRESS): "admin_egress",
    (Tier.BASELINE, Direction.INGRESS): "baseline_ingress",
    (Tier.BASELINE, Direction.EGRESS): "baseline_egress",
}


@dataclass
class NodeDelta:
    """The change from one node model to the next, in the order a dataplane must apply it.

    1. ``new_sets`` (full content) and element changes of existing sets;
    2. ``new_chains``;
    3. dispatch upserts and removals (every tier's);
    4. ``removed_chains``, then ``removed_sets``: rules go before the sets they used.
    """

    node: str
    new_sets: dict[str, frozenset[str]] = field(default_factory=dict)
    set_added: dict[str, frozenset[str]] = field(default_factory=dict)
    set_removed: dict[str, frozenset[str]] = field(default_factory=dict)
    new_chains: dict[str, Chain] = field(default_factory=dict)
    ingress_set: dict[str, str] = field(default_factory=dict)
    ingress_removed: frozenset[str] = frozenset()
    egress_set: dict[str, str] = field(default_factory=dict)
    egress_removed: frozenset[str] = frozenset()
    removed_chains: frozenset[str] = frozenset()
    removed_sets: frozenset[str] = frozenset()
    admin_ingress_set: dict[str, str] = field(default_factory=dict)
    admin_ingress_removed: frozenset[str] = frozenset()
    admin_egress_set: dict[str, str] = field(default_factory=dict)
    admin_egress_removed: frozenset[str] = frozenset()
    baseline_ingress_set: dict[str, str] = field(default_factory=dict)
    baseline_ingress_removed: frozenset[str] = frozenset()
    baseline_egress_set: dict[str, str] = field(default_factory=dict)
    baseline_egress_removed: frozenset[str] = frozenset()

    def is_empty(self) -> bool:
        return not (
            self.new_sets
            or self.set_added
            or self.set_removed
            or self.new_chains
            or self.removed_chains
            or self.removed_sets
            or any(self.dispatch_set(d, t) or self.dispatch_removed(d, t) for t in TIERS for d in Direction)
        )

    def dispatch_set(self, direction: Direction, tier: Tier = Tier.NETPOL) -> dict[str, str]:
        return getattr(self, f"{_DISPATCH_FIELD[tier, direction]}_set")

    def dispatch_removed(self, direction: Direction, tier: Tier = Tier.NETPOL) -> frozenset[str]:
        return getattr(self, f"{_DISPATCH_FIELD[tier, direction]}_removed")

    def set_dispatch(self, direction: Direction, tier: Tier, upserts: dict[str, str], removed: frozenset[str]) -> None:
        name = _DISPATCH_FIELD[tier, direction]
        setattr(self, f"{name}_set", upserts)
        setattr(self, f"{name}_removed", removed)

    def has_tiers(self) -> bool:
        """Whether the delta touches a tier (Admin or Baseline) dispatch."""
        return any(self.dispatch_set(d, t) or self.dispatch_removed(d, t) for t in CNP_TIERS for d in Direction)


def diff(old: NodeModel, new: NodeModel) -> NodeDelta:
    """The delta that turns ``old`` into ``new``."""
    delta = NodeDelta(node=new.node)
    for sid, elems in new.sets.items():
        before = old.sets.get(sid)
        if before is None:
            delta.new_sets[sid] = elems
        elif before != elems:
            if elems - before:
                delta.set_added[sid] = elems - before
            if before - elems:
                delta.set_removed[sid] = before - elems
    delta.removed_sets = frozenset(old.sets.keys() - new.sets.keys())
    delta.new_chains = {cid: c for cid, c in new.chains.items() if cid not in old.chains}
    delta.removed_chains = frozenset(old.chains.keys() - new.chains.keys())
    for tier, direction, table in new.tier_tables():
        before_table = old.dispatch(direction, tier)
        upserts = {ip: c for ip, c in table.items() if before_table.get(ip) != c}
        delta.set_dispatch(direction, tier, upserts, frozenset(before_table.keys() - table.keys()))
    return delta


def apply(model: NodeModel, delta: NodeDelta) -> NodeModel:
    """A new model: ``model`` with ``delta`` applied (the input is left unchanged)."""
    out = model.copy()
    out.sets.update(delta.new_sets)
    for sid, elems in delta.set_added.items():
        out.sets[sid] = out.sets.get(sid, frozenset()) | elems
    for sid, elems in delta.set_removed.items():
        out.sets[sid] = out.sets.get(sid, frozenset()) - elems
    out.chains.update(delta.new_chains)
    for tier, direction, table in out.tier_tables():
        table.update(delta.dispatch_set(direction, tier))
        for ip in delta.dispatch_removed(direction, tier):
            table.pop(ip, None)
    for cid in delta.removed_chains:
        out.chains.pop(cid, None)
    for sid in delta.removed_sets:
        out.sets.pop(sid, None)
    return out
