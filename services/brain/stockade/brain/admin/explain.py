"""Explain a verdict: why a connection is allowed or blocked, in words a person can act on.

The verdict itself comes from the compiled node models (what the agents enforce); the reasons
name the policies that isolate each end and the rules that allow the connection, or say that
none does, with lint hints for selectors that match nothing nearby.

Either end may be named as a pod (``ns/name``) or by an address of either family. A connection
is one family: given an address, its family; given two dual-stack pods, both families are
explained (they differ when an ipBlock of one family is involved), and the connection counts as
allowed only when it is allowed over each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from stockade.brain.admin.endpoints import address, find_endpoint
from stockade.brain.engine import Engine
from stockade.brain.engine.api import RuleOrigin
from stockade.brain.engine.objects import BETA_ANNOTATION, PodInfo
from stockade.model import Action, Direction, Protocol, Tier
from stockade.model.evaluate import FAMILY_NAMES, Verdict, decide, ip_version

TIER_NAMES = {Tier.ADMIN: "Admin", Tier.NETPOL: "NetworkPolicy", Tier.BASELINE: "Baseline"}
OWN_NODE_WORDS = (
    "NetworkPolicy does not filter a pod's traffic to its own node (the Kubernetes exemption); "
    "only the ClusterNetworkPolicy tiers do"
)


class ExplainError(ValueError):
    """The question cannot be answered as asked (unknown pod, bad address)."""


@dataclass
class Side:
    """One end's half of the verdict: egress of the source, or ingress of the destination."""

    direction: Direction
    pod: str
    isolated: bool
    allowed: bool
    isolating_policies: list[str] = field(default_factory=list)
    beta_isolated: bool = False
    allowing_rules: list[tuple[str, int]] = field(default_factory=list)  # (policy, rule index)
    # Policies whose rules would allow it but that the engine left out on the pod's node (a
    # limit): the node denies, and saying "no rule allows it" would send the operator astray.
    not_realized: list[str] = field(default_factory=list)
    refused: str = ""  # "field: message" when the brain refused the pod (all its traffic is denied)
    # ClusterNetworkPolicy tiers: the tier that decided ("" none: the default), the rule that did
    # (a tier's), what it did (a rule that fails closed denies whatever it says), the Passes before.
    tier: str = ""
    decided_by: RuleOrigin | None = None
    decided_action: str = ""
    passed: list[RuleOrigin] = field(default_factory=list)
    # The peer is an address of the pod's own node: no NetworkPolicy filters that (egress: only
    # the ClusterNetworkPolicy tiers do; ingress from the node: nothing does).
    own_node: bool = False

    def tiered(self) -> bool:
        return self.decided_by is not None or bool(self.passed) or self.tier in ("Admin", "Baseline")

    def as_json(self) -> dict[str, Any]:
        out = self._np_json()
        if self.tiered():
            out["tier"] = self.tier or "default"
            if self.decided_by is not None:
                out["decidedBy"] = {**_origin_json(self.decided_by), "effect": self.decided_action}
            out["passedBy"] = [_origin_json(o) for o in self.passed]
        return out

    def _np_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction.value,
            "pod": self.pod,
            "isolated": self.isolated,
            "allowed": self.allowed,
            "isolatingPolicies": self.isolating_policies,
            "namespaceDefaultDeny": self.beta_isolated,
            "allowingRules": [{"policy": p, "rule": i} for p, i in self.allowing_rules],
            "notRealized": self.not_realized,
            **({"refused": self.refused} if self.refused else {}),
            **({"ownNode": True} if self.own_node else {}),
        }


@dataclass
class Explanation:
    src: str
    dst: str
    port: int
    protocol: Protocol
    allowed: bool
    sides: list[Side]
    reasons: list[str]
    hints: list[str]
    family: str = "ipv4"  # of this explanation's address pair
    src_ip: str = ""
    dst_ip: str = ""
    # Dual-stack pods named by name: the connection over each family they share, on its own
    # (this explanation is then allowed only when every one of them is).
    per_family: list[Explanation] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol.value,
            "allowed": self.allowed,
            "verdict": "allowed" if self.allowed else "blocked",
            "family": self.family,
            "fromIP": self.src_ip,
            "toIP": self.dst_ip,
            "sides": [s.as_json() for s in self.sides],
            "reasons": self.reasons,
            "hints": self.hints,
        }
        if self.per_family:
            out["families"] = [
                {"family": e.family, "fromIP": e.src_ip, "toIP": e.dst_ip, "allowed": e.allowed}
                for e in self.per_family
            ]
        return out

    def text(self) -> str:
        verdict = "ALLOWED" if self.allowed else "BLOCKED"
        if self.per_family:
            verdict = ", ".join(
                f"{'ALLOWED' if e.allowed else 'BLOCKED'} over {e.family.replace('ip', 'IP')}" for e in self.per_family
            )
        head = f"{verdict}: {self.src} -> {self.dst} {self.protocol.value}/{self.port}"
        lines = [head, *(f"  - {r}" for r in self.reasons)]
        if self.hints:
            lines.append("  hints:")
            lines.extend(f"    * {h}" for h in self.hints)
        return "\n".join(lines)


def _origin_json(o: RuleOrigin) -> dict[str, Any]:
    return {
        "policy": o.policy,
        "tier": o.tier,
        "priority": o.priority,
        "rule": o.rule,
        "name": o.name,
        "action": o.action,
    }


def _rule_words(o: RuleOrigin) -> str:
    label = f"rule {o.name!r}" if o.name else f"rule {o.direction}[{o.rule}]"
    return f"ClusterNetworkPolicy {o.policy} (priority {o.priority}) {label}"


def _find_pod(engine: Engine, ref: str) -> PodInfo:
    return find_endpoint(engine, ref, ExplainError)


def _pod_address(pod: PodInfo, version: int) -> str:
    ip = pod.address(version)
    if ip is None:
        have = ", ".join(pod.ips)
        raise ExplainError(f"pod {pod.key} has no IPv{version} address (it has {have}): no such connection")
    return ip


def explain(
    engine: Engine, src: str, dst: str, port: int, protocol: Protocol = Protocol.TCP, family: int | None = None
) -> Explanation:
    """Explain a new connection from ``src`` to ``dst``: each a pod ("ns/name") or an address of
    either family (the destination's must be a pod's). ``family`` (4 or 6) picks the family when
    both are named as pods; without it, every family the two pods share is explained."""
    src_addr, dst_addr = address(src), address(dst)
    if dst_addr is not None:
        owner = engine.pod_by_ip(dst_addr)
        if owner is None:
            raise ExplainError(f"{dst} is not the address of a pod in the cluster")
        dpod = _find_pod(engine, owner)
    else:
        dpod = _find_pod(engine, dst)
    spod: PodInfo | None = None
    if src_addr is not None:
        owner = engine.pod_by_ip(src_addr)
        if owner is not None:
            spod = _find_pod(engine, owner)
    else:
        spod = _find_pod(engine, src)
    pinned = {ip_version(a) for a in (src_addr, dst_addr) if a is not None}
    if family is not None:
        pinned.add(family)
    if len(pinned) > 1:
        raise ExplainError(f"{src} and {dst} are of different IP families: no such connection")
    if pinned:
        versions = list(pinned)
    else:
        assert spod is not None
        mine = {ip_version(ip) for ip in spod.ips}
        versions = [v for v in (ip_version(ip) for ip in dpod.ips) if v in mine]
        if not versions:
            raise ExplainError(
                f"{spod.key} ({', '.join(spod.ips)}) and {dpod.key} ({', '.join(dpod.ips)}) share no IP family"
            )
    found = []
    for v in versions:
        dst_ip = dst_addr if dst_addr is not None else _pod_address(dpod, v)
        src_ip = src_addr if src_addr is not None else _pod_address(spod, v)  # type: ignore[arg-type]
        found.append(_explain_pair(engine, spod, src_ip, dpod, dst_ip, port, protocol))
    first = found[0]
    if len(found) == 1:
        return first
    reasons, hints = list(first.reasons), list(first.hints)
    for e in found[1:]:
        label = e.family.replace("ip", "IP")
        reasons.extend(f"{label} ({e.src_ip} -> {e.dst_ip}): {r}" for r in e.reasons)
        hints.extend(h for h in e.hints if h not in hints)
    allowed = all(e.allowed for e in found)
    return replace(first, allowed=allowed, reasons=reasons, hints=hints, per_family=found)


def _explain_pair(
    engine: Engine, spod: PodInfo | None, src_ip: str, dpod: PodInfo, dst_ip: str, port: int, protocol: Protocol
) -> Explanation:
    fam = FAMILY_NAMES[ip_version(dst_ip)]
    src_name = spod.key if spod is not None else src_ip
    reasons: list[str] = []
    sides: list[Side] = []
    if spod is not None and spod.key == dpod.key:
        reasons.append("a pod talking to itself is never filtered")
        return Explanation(src_name, dpod.key, port, protocol, True, sides, reasons, [], fam, src_ip, dst_ip)
    if spod is not None:
        sides.append(_side(engine, Direction.EGRESS, spod, src_ip, dst_ip, protocol, port))
    else:
        reasons.append(f"{src_ip} is not a pod in the cluster: only the destination's ingress rules apply")
    sides.append(_side(engine, Direction.INGRESS, dpod, dst_ip, src_ip, protocol, port))
    for side in sides:
        reasons.append(_side_text(side, src_name, dpod.key, protocol, port))
    allowed = all(s.allowed for s in sides)
    hints = _hints(engine, sides) if not allowed else []
    return Explanation(src_name, dpod.key, port, protocol, allowed, sides, reasons, hints, fam, src_ip, dst_ip)


def _side(
    engine: Engine, direction: Direction, pod: PodInfo, pod_ip: str, peer_ip: str, protocol: Protocol, port: int
) -> Side:
    assert pod.node
    own = _own_node(engine, pod.node, peer_ip)
    verdict = decide(engine.model(pod.node), direction, pod_ip, peer_ip, protocol, port, own)
    policies = engine.policies_for_pod(pod.namespace, pod.name)[direction]
    beta = direction is Direction.INGRESS and engine.beta_isolated(pod.namespace)
    allowing = [(p, i) for p in policies for i in engine.rules_allowing(p, direction, pod, peer_ip, protocol, port)]
    left_out: list[str] = []
    if not verdict.allowed and allowing:
        by = {p for p, _ in allowing}
        left_out = [str(r) for r in engine.not_realized() if r.node == pod.node and r.policy in by]
    refused = pod.problem if pod.deny_all else ""
    side = Side(direction, pod.key, verdict.isolated, verdict.allowed, policies, beta, allowing, left_out, refused)
    side.own_node = own
    _tiers(engine, pod.node, verdict, side)
    return side


def _own_node(engine: Engine, node: str, ip: str) -> bool:
    """Whether ``ip`` is an address of ``node``: its Node's status.addresses, or a host-network
    pod's on it (the pod reports its node's addresses)."""
    info = engine.node_info(node)
    if info is not None and ip in info.addresses:
        return True
    return any(p.node == node and ip in p.ips for p in engine.host_network_pods())


def _tiers(engine: Engine, node: str, verdict: Verdict, side: Side) -> None:
    """The tier part of a side: who decided, and the Passes that handed it on."""
    for cid, i in verdict.passed:
        origin = engine.rule_origin(node, cid, i)
        if origin is not None:
            side.passed.append(origin)
    if verdict.tier is None:
        return
    side.tier = TIER_NAMES[verdict.tier]
    if verdict.tier is not Tier.NETPOL and verdict.chain is not None:
        side.decided_by = engine.rule_origin(node, verdict.chain, verdict.rule)
        side.decided_action = "Accept" if verdict.matched and verdict.matched[0].action is Action.ACCEPT else "Deny"


def _side_text(side: Side, src: str, dst: str, protocol: Protocol, port: int) -> str:
    what = f"egress from {side.pod}" if side.direction is Direction.EGRESS else f"ingress to {side.pod}"
    if side.refused:
        return f"{what}: isolated: the brain refused the pod ({side.refused}), so all its traffic is denied"
    passed = "".join(f"{_rule_words(o)} passed it on from the {o.tier} tier; " for o in side.passed)
    if side.own_node and side.direction is Direction.INGRESS:
        return f"{what}: from its own node, which is never filtered (the node's traffic to its pods is not)"
    if side.own_node and side.tier == "NetworkPolicy":
        return f"{what}: {passed}allowed: {OWN_NODE_WORDS}"
    if side.tier in ("Admin", "Baseline"):
        verb = "allowed" if side.allowed else "blocked"
        by = _rule_words(side.decided_by) if side.decided_by is not None else "a ClusterNetworkPolicy rule"
        written = side.decided_by.action if side.decided_by is not None else side.decided_action
        effect = side.decided_action if written == side.decided_action else f"{written}, failing closed as Deny"
        final = "final: no NetworkPolicy can change it" if side.tier == "Admin" else "no NetworkPolicy selects the pod"
        return f"{what}: {passed}{verb} at the {side.tier} tier by {by} ({effect}; {final})"
    if not side.isolated:
        return f"{what}: {passed}not isolated (no policy selects it for {side.direction.value}), so it is allowed"
    return f"{what}: {passed}" + _np_text(side, src, dst, protocol, port)[len(what) + 2 :]


def _np_text(side: Side, src: str, dst: str, protocol: Protocol, port: int) -> str:
    what = f"egress from {side.pod}" if side.direction is Direction.EGRESS else f"ingress to {side.pod}"
    why = []
    if side.isolating_policies:
        why.append("policies " + ", ".join(side.isolating_policies))
    if side.beta_isolated:
        ns = side.pod.split("/", 1)[0]
        why.append(f"namespace {ns}'s DefaultDeny annotation ({BETA_ANNOTATION})")
    isolated = f"isolated by {' and '.join(why)}"
    peer = dst if side.direction is Direction.EGRESS else src
    if side.allowed:
        rules = ", ".join(f"{p} rule {side.direction.value}[{i}]" for p, i in side.allowing_rules)
        return f"{what}: {isolated}; allowed by {rules or 'a rule'}"
    if side.not_realized:
        return (
            f"{what}: {isolated}; a rule would allow {peer}, but " + "; ".join(side.not_realized) + ", so it is blocked"
        )
    return (
        f"{what}: {isolated}; no {side.direction.value} rule of those allows {peer} on "
        f"{protocol.value}/{port}, so it is blocked"
    )


def _hints(engine: Engine, sides: list[Side]) -> list[str]:
    """Lint warnings about policies in the namespaces involved: the usual cause of a surprise."""
    namespaces = {s.pod.split("/", 1)[0] for s in sides if not s.allowed}
    hints = [str(w) for w in engine.lint() if w.policy.split("/", 1)[0] in namespaces]
    for s in sides:
        if s.refused:
            hints.append(f"fix {s.pod}'s {s.refused.split(': ', 1)[0]}: its policies apply once the brain can read it")
        elif not s.allowed and s.own_node:
            hints.append(
                f"a NetworkPolicy cannot allow {s.pod}'s traffic to its own node: only the tier that blocks it can"
            )
        elif not s.allowed:
            label = "to" if s.direction is Direction.EGRESS else "from"
            hints.append(
                f"to allow it, add a policy selecting {s.pod} with an {s.direction.value} rule "
                f"whose '{label}' matches the peer and whose ports include the port above"
            )
    return hints
