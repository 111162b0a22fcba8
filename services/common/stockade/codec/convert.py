"""Conversion between the rule model's dataclasses and their protobuf messages.

``*_to_proto`` trusts its input (the brain's own engine made it); ``*_from_proto`` trusts
nothing: it validates every name, id, address, port and count, and a model's internal
references, and raises `ValidationError` on the first problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stockade.codec.validate import (
    DEFAULT_LIMITS,
    Limits,
    ValidationError,
    check_chain_id,
    check_cidr,
    check_count,
    check_ip,
    check_node_name,
    check_set_id,
)
from stockade.model import Action, Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, Tier
from stockade.v1 import model_pb2 as pb

_PROTO_TO_PB = {Protocol.TCP: pb.PROTOCOL_TCP, Protocol.UDP: pb.PROTOCOL_UDP, Protocol.SCTP: pb.PROTOCOL_SCTP}
_PB_TO_PROTO = {v: k for k, v in _PROTO_TO_PB.items()}
_DIR_TO_PB = {Direction.INGRESS: pb.DIRECTION_INGRESS, Direction.EGRESS: pb.DIRECTION_EGRESS}
_PB_TO_DIR = {v: k for k, v in _DIR_TO_PB.items()}
_TIER_TO_PB = {Tier.NETPOL: pb.TIER_NETWORK_POLICY, Tier.ADMIN: pb.TIER_ADMIN, Tier.BASELINE: pb.TIER_BASELINE}
_PB_TO_TIER = {v: k for k, v in _TIER_TO_PB.items()}
_ACTION_TO_PB = {Action.ACCEPT: pb.ACTION_ACCEPT, Action.DENY: pb.ACTION_DENY, Action.PASS: pb.ACTION_PASS}
_PB_TO_ACTION = {v: k for k, v in _ACTION_TO_PB.items()}
# The tiers' dispatch fields, named alike in the model and its messages.
_TIER_FIELDS = {
    (Tier.ADMIN, Direction.INGRESS): "admin_ingress",
    (Tier.ADMIN, Direction.EGRESS): "admin_egress",
    (Tier.BASELINE, Direction.INGRESS): "baseline_ingress",
    (Tier.BASELINE, Direction.EGRESS): "baseline_egress",
}


# ---- to protobuf -------------------------------------------------------------------------


def _port_to_proto(p: PortMatch) -> pb.PortMatch:
    msg = pb.PortMatch(protocol=_PROTO_TO_PB[p.protocol])
    if p.port is not None:
        msg.port = p.port
    if p.end_port is not None:
        msg.end_port = p.end_port
    return msg


def _rule_to_proto(r: Rule) -> pb.Rule:
    msg = pb.Rule(all_ports=r.ports is None)
    if r.action is not Action.ACCEPT:
        msg.action = _ACTION_TO_PB[r.action]
    if r.peer is not None:
        msg.peer = r.peer
    if r.ports is not None:
        msg.ports.extend(_port_to_proto(p) for p in r.ports)
    return msg


def _chain_to_proto(cid: str, c: Chain) -> pb.Chain:
    msg = pb.Chain(id=cid, direction=_DIR_TO_PB[c.direction], rules=[_rule_to_proto(r) for r in c.rules])
    if c.tier is not Tier.NETPOL:
        msg.tier = _TIER_TO_PB[c.tier]
    return msg


def _add_sets(field: Any, sets: Mapping[str, frozenset[str]]) -> None:
    for sid in sorted(sets):
        field.add(id=sid, cidrs=sorted(sets[sid]))


def _add_chains(field: Any, chains: Mapping[str, Chain]) -> None:
    for cid in sorted(chains):
        field.append(_chain_to_proto(cid, chains[cid]))


def model_to_proto(model: NodeModel) -> pb.NodeModel:
    msg = pb.NodeModel(node=model.node, ingress=model.ingress, egress=model.egress)
    for (tier, direction), name in _TIER_FIELDS.items():
        table = model.dispatch(direction, tier)
        if table:
            getattr(msg, name).update(table)
    _add_sets(msg.sets, model.sets)
    _add_chains(msg.chains, model.chains)
    return msg


def fill_delta(msg: pb.NodeDelta, delta: NodeDelta) -> pb.NodeDelta:
    """Write ``delta`` into ``msg`` (e.g. one added in place to a repeated field, which saves
    the copy that appending a finished message costs). Empty parts are skipped: most deltas
    touch one or two of the eleven."""
    msg.node = delta.node
    if delta.new_sets:
        _add_sets(msg.new_sets, delta.new_sets)
    if delta.set_added:
        _add_sets(msg.set_added, delta.set_added)
    if delta.set_removed:
        _add_sets(msg.set_removed, delta.set_removed)
    if delta.new_chains:
        _add_chains(msg.new_chains, delta.new_chains)
    if delta.ingress_set:
        msg.ingress_set.update(delta.ingress_set)
    if delta.ingress_removed:
        msg.ingress_removed.extend(sorted(delta.ingress_removed))
    if delta.egress_set:
        msg.egress_set.update(delta.egress_set)
    if delta.egress_removed:
        msg.egress_removed.extend(sorted(delta.egress_removed))
    if delta.removed_chains:
        msg.removed_chains.extend(sorted(delta.removed_chains))
    if delta.removed_sets:
        msg.removed_sets.extend(sorted(delta.removed_sets))
    for (tier, direction), name in _TIER_FIELDS.items():
        upserts, removed = delta.dispatch_set(direction, tier), delta.dispatch_removed(direction, tier)
        if upserts:
            getattr(msg, f"{name}_set").update(upserts)
        if removed:
            getattr(msg, f"{name}_removed").extend(sorted(removed))
    return msg


def delta_to_proto(delta: NodeDelta) -> pb.NodeDelta:
    return fill_delta(pb.NodeDelta(), delta)


# ---- from protobuf (validating) ----------------------------------------------------------


def _port_from_proto(msg: pb.PortMatch, field: str) -> PortMatch:
    proto = _PB_TO_PROTO.get(msg.protocol)
    if proto is None:
        raise ValidationError(f"{field}.protocol: unknown protocol {msg.protocol}")
    port = msg.port if msg.HasField("port") else None
    end = msg.end_port if msg.HasField("end_port") else None
    if port is not None and not 1 <= port <= 65535:
        raise ValidationError(f"{field}.port: {port} is not a port (1-65535)")
    if end is not None:
        if port is None:
            raise ValidationError(f"{field}.end_port: given without a port")
        if not port <= end <= 65535:
            raise ValidationError(f"{field}.end_port: {end} is not between port {port} and 65535")
    return PortMatch(proto, port, end)


def _rule_from_proto(msg: pb.Rule, field: str, limits: Limits) -> Rule:
    peer = check_set_id(msg.peer, f"{field}.peer") if msg.HasField("peer") else None
    action = _PB_TO_ACTION.get(msg.action)
    if action is None:
        raise ValidationError(f"{field}.action: unknown action {msg.action}")
    if msg.all_ports:
        if msg.ports:
            raise ValidationError(f"{field}: all_ports together with a list of ports")
        return Rule(peer, None, action)
    check_count(len(msg.ports), limits.max_ports_per_rule, f"{field}.ports")
    return Rule(peer, tuple(_port_from_proto(p, f"{field}.ports[{i}]") for i, p in enumerate(msg.ports)), action)


def _chains_from_proto(msgs: Iterable[pb.Chain], field: str, limits: Limits) -> dict[str, Chain]:
    chains: dict[str, Chain] = {}
    for i, msg in enumerate(msgs):
        f = f"{field}[{i}]"
        cid = check_chain_id(msg.id, f"{f}.id")
        direction = _PB_TO_DIR.get(msg.direction)
        if direction is None:
            raise ValidationError(f"{f}.direction: unknown direction {msg.direction}")
        if cid.startswith("in_") != (direction is Direction.INGRESS):
            raise ValidationError(f"{f}: chain {cid} has direction {direction}, against its id")
        if cid in chains:
            raise ValidationError(f"{f}.id: chain {cid} appears twice")
        tier = _PB_TO_TIER.get(msg.tier)
        if tier is None:
            raise ValidationError(f"{f}.tier: unknown tier {msg.tier}")
        check_count(len(msg.rules), limits.max_rules_per_chain, f"{f}.rules")
        rules = tuple(_rule_from_proto(r, f"{f}.rules[{j}]", limits) for j, r in enumerate(msg.rules))
        if tier is Tier.NETPOL and any(r.action is not Action.ACCEPT for r in rules):
            raise ValidationError(f"{f}: a NetworkPolicy chain with a rule that does not accept")
        chains[cid] = Chain(direction, rules, tier)
    check_count(len(chains), limits.max_chains, field)
    return chains


def _sets_from_proto(msgs: Iterable[pb.AddressSet], field: str, limits: Limits) -> dict[str, frozenset[str]]:
    sets: dict[str, frozenset[str]] = {}
    total = 0
    for i, msg in enumerate(msgs):
        f = f"{field}[{i}]"
        sid = check_set_id(msg.id, f"{f}.id")
        if sid in sets:
            raise ValidationError(f"{f}.id: set {sid} appears twice")
        total += len(msg.cidrs)
        check_count(total, limits.max_set_elements, f"{field} (elements)")
        sets[sid] = frozenset(check_cidr(c, f"{f}.cidrs[{j}]") for j, c in enumerate(msg.cidrs))
    check_count(len(sets), limits.max_sets, field)
    return sets


def _dispatch_from_proto(entries: Mapping[str, str], field: str, limits: Limits) -> dict[str, str]:
    check_count(len(entries), limits.max_dispatch, field)
    return {check_ip(ip, f"{field} key"): check_chain_id(cid, f"{field}[{ip}]") for ip, cid in entries.items()}


def _ip_list(values: Iterable[str], field: str, limits: Limits) -> frozenset[str]:
    out = frozenset(check_ip(v, field) for v in values)
    check_count(len(out), limits.max_dispatch, field)
    return out


def model_from_proto(msg: pb.NodeModel, limits: Limits = DEFAULT_LIMITS) -> NodeModel:
    """A validated model: ids, addresses and counts checked, every reference resolves."""
    model = NodeModel(
        node=check_node_name(msg.node, "model.node"),
        sets=_sets_from_proto(msg.sets, "model.sets", limits),
        chains=_chains_from_proto(msg.chains, "model.chains", limits),
        ingress=_dispatch_from_proto(msg.ingress, "model.ingress", limits),
        egress=_dispatch_from_proto(msg.egress, "model.egress", limits),
    )
    for (tier, direction), name in _TIER_FIELDS.items():
        model.dispatch(direction, tier).update(_dispatch_from_proto(getattr(msg, name), f"model.{name}", limits))
    problems = model.check()
    if problems:
        raise ValidationError(f"model for {model.node} is inconsistent: {'; '.join(problems[:5])}")
    return model


def delta_from_proto(msg: pb.NodeDelta, limits: Limits = DEFAULT_LIMITS) -> NodeDelta:
    """A validated delta (its references are checked against a model by whoever applies it)."""
    delta = NodeDelta(
        node=check_node_name(msg.node, "delta.node"),
        new_sets=_sets_from_proto(msg.new_sets, "delta.new_sets", limits),
        set_added=_sets_from_proto(msg.set_added, "delta.set_added", limits),
        set_removed=_sets_from_proto(msg.set_removed, "delta.set_removed", limits),
        new_chains=_chains_from_proto(msg.new_chains, "delta.new_chains", limits),
        ingress_set=_dispatch_from_proto(msg.ingress_set, "delta.ingress_set", limits),
        ingress_removed=_ip_list(msg.ingress_removed, "delta.ingress_removed", limits),
        egress_set=_dispatch_from_proto(msg.egress_set, "delta.egress_set", limits),
        egress_removed=_ip_list(msg.egress_removed, "delta.egress_removed", limits),
        removed_chains=frozenset(
            check_chain_id(c, "delta.removed_chains") for c in _limit(msg.removed_chains, limits.max_chains)
        ),
        removed_sets=frozenset(
            check_set_id(s, "delta.removed_sets") for s in _limit(msg.removed_sets, limits.max_sets)
        ),
    )
    for (tier, direction), name in _TIER_FIELDS.items():
        delta.set_dispatch(
            direction,
            tier,
            _dispatch_from_proto(getattr(msg, f"{name}_set"), f"delta.{name}_set", limits),
            _ip_list(getattr(msg, f"{name}_removed"), f"delta.{name}_removed", limits),
        )
    return delta


def _limit(values: Iterable[str], limit: int) -> list[str]:
    out = list(values)
    check_count(len(out), limit, "delta removals")
    return out
