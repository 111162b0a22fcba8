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
    """An allow rule: a peer address set (``None``: any address) and ports (``None``: any)."""

    peer: str | None
    ports: tuple[PortMatch, ...] | None

    def matches_port(self, protocol: Protocol, port: int) -> bool:
        return self.ports is None or any(p.matches(protocol, port) for p in self.ports)


def _rule_key(rule: Rule) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    ports = () if rule.ports is None else tuple((p.protocol.value, p.port or 0, p.end_port or 0) for p in rule.ports)
    return (rule.peer or "", ports)


@dataclass(frozen=True)
class Chain:
    """The ordered allow rules for one direction, shared by every pod that has exactly these."""

    direction: Direction
    rules: tuple[Rule, ...]
    # Derived from the content, computed once at construction (not part of equality).
    id: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", chain_id(self))

    @staticmethod
    def of(direction: Direction, rules: Iterable[Rule]) -> Chain:
        """A chain in canonical form: rules deduplicated and sorted, so equal content is equal."""
        return Chain(direction, tuple(sorted(set(rules), key=_rule_key)))

    def set_refs(self) -> set[str]:
        return {r.peer for r in self.rules if r.peer is not None}


# Full width (128 bits), so two contents never share an id by chance; the engine also refuses
# to put two different chains under one id on a node (a collision fails closed, reported).
CHAIN_ID_BYTES = 16


def chain_id(chain: Chain) -> str:
    """A digest of the chain's content: one text, hashed once."""
    parts = [chain.direction.value]
    for rule in chain.rules:
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

    def dispatch(self, direction: Direction) -> dict[str, str]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def copy(self) -> NodeModel:
        return NodeModel(self.node, dict(self.sets), dict(self.chains), dict(self.ingress), dict(self.egress))

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
        return h.hexdigest()

    def check(self) -> list[str]:
        """Internal consistency: every reference resolves. Returns the problems found."""
        problems = []
        for direction in Direction:
            for ip, cid in self.dispatch(direction).items():
                chain = self.chains.get(cid)
                if chain is None:
                    problems.append(f"{direction} dispatch {ip} -> missing chain {cid}")
                elif chain.direction is not direction:
                    problems.append(f"{direction} dispatch {ip} -> chain {cid} of other direction")
        for cid, chain in self.chains.items():
            for sid in chain.set_refs():
                if sid not in self.sets:
                    problems.append(f"chain {cid} uses missing set {sid}")
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
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass
class NodeDelta:
    """The change from one node model to the next, in the order a dataplane must apply it.

    1. ``new_sets`` (full content) and element changes of existing sets;
    2. ``new_chains``;
    3. dispatch upserts and removals;
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

    def is_empty(self) -> bool:
        return not (
            self.new_sets
            or self.set_added
            or self.set_removed
            or self.new_chains
            or self.ingress_set
            or self.ingress_removed
            or self.egress_set
            or self.egress_removed
            or self.removed_chains
            or self.removed_sets
        )

    def dispatch_set(self, direction: Direction) -> dict[str, str]:
        return self.ingress_set if direction is Direction.INGRESS else self.egress_set

    def dispatch_removed(self, direction: Direction) -> frozenset[str]:
        return self.ingress_removed if direction is Direction.INGRESS else self.egress_removed


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
    delta.ingress_set = {ip: c for ip, c in new.ingress.items() if old.ingress.get(ip) != c}
    delta.ingress_removed = frozenset(old.ingress.keys() - new.ingress.keys())
    delta.egress_set = {ip: c for ip, c in new.egress.items() if old.egress.get(ip) != c}
    delta.egress_removed = frozenset(old.egress.keys() - new.egress.keys())
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
    out.ingress.update(delta.ingress_set)
    for ip in delta.ingress_removed:
        out.ingress.pop(ip, None)
    out.egress.update(delta.egress_set)
    for ip in delta.egress_removed:
        out.egress.pop(ip, None)
    for cid in delta.removed_chains:
        out.chains.pop(cid, None)
    for sid in delta.removed_sets:
        out.sets.pop(sid, None)
    return out
