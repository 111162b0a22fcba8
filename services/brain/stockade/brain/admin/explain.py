"""Explain a verdict: why a connection is allowed or blocked, in words a person can act on.

The verdict itself comes from the compiled node models (what the agents enforce); the reasons
name the policies that isolate each end and the rules that allow the connection, or say that
none does, with lint hints for selectors that match nothing nearby.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import BETA_ANNOTATION, PodInfo
from stockade.model import Direction, Protocol
from stockade.model.evaluate import decide


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

    def as_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction.value,
            "pod": self.pod,
            "isolated": self.isolated,
            "allowed": self.allowed,
            "isolatingPolicies": self.isolating_policies,
            "namespaceDefaultDeny": self.beta_isolated,
            "allowingRules": [{"policy": p, "rule": i} for p, i in self.allowing_rules],
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

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol.value,
            "allowed": self.allowed,
            "verdict": "allowed" if self.allowed else "blocked",
            "sides": [s.as_json() for s in self.sides],
            "reasons": self.reasons,
            "hints": self.hints,
        }

    def text(self) -> str:
        head = f"{'ALLOWED' if self.allowed else 'BLOCKED'}: {self.src} -> {self.dst} {self.protocol.value}/{self.port}"
        lines = [head, *(f"  - {r}" for r in self.reasons)]
        if self.hints:
            lines.append("  hints:")
            lines.extend(f"    * {h}" for h in self.hints)
        return "\n".join(lines)


def _find_pod(engine: Engine, ref: str) -> PodInfo:
    if "/" not in ref:
        raise ExplainError(f"{ref!r}: name a pod as namespace/name, or give an IP address")
    ns, name = ref.split("/", 1)
    pod = engine.pod_info(ns, name)
    if pod is None:
        raise ExplainError(f"pod {ref} not found")
    if not engine.is_endpoint(ns, name) or not pod.node or not pod.ip:
        raise ExplainError(f"pod {ref} is not a network endpoint (no IP yet, host network, or finished)")
    return pod


def explain(engine: Engine, src: str, dst: str, port: int, protocol: Protocol = Protocol.TCP) -> Explanation:
    """Explain a new connection from ``src`` (pod "ns/name" or an IP) to pod ``dst`` ("ns/name")."""
    dpod = _find_pod(engine, dst)
    spod: PodInfo | None = None
    try:
        ipaddress.ip_address(src)
        src_ip = src
        owner = engine.pod_by_ip(src)
        if owner is not None:
            spod = _find_pod(engine, owner)
    except ValueError:
        spod = _find_pod(engine, src)
        src_ip = spod.ip or ""
    assert dpod.ip is not None
    src_name = spod.key if spod is not None else src_ip
    reasons: list[str] = []
    sides: list[Side] = []
    if spod is not None and spod.key == dpod.key:
        reasons.append("a pod talking to itself is never filtered")
        return Explanation(src_name, dpod.key, port, protocol, True, sides, reasons, [])
    if spod is not None:
        sides.append(_side(engine, Direction.EGRESS, spod, dpod.ip, protocol, port))
    else:
        reasons.append(f"{src_ip} is not a pod in the cluster: only the destination's ingress rules apply")
    sides.append(_side(engine, Direction.INGRESS, dpod, src_ip, protocol, port))
    for side in sides:
        reasons.append(_side_text(side, src_name, dpod.key, protocol, port))
    allowed = all(s.allowed for s in sides)
    hints = _hints(engine, sides) if not allowed else []
    return Explanation(src_name, dpod.key, port, protocol, allowed, sides, reasons, hints)


def _side(engine: Engine, direction: Direction, pod: PodInfo, peer_ip: str, protocol: Protocol, port: int) -> Side:
    assert pod.node and pod.ip
    verdict = decide(engine.model(pod.node), direction, pod.ip, peer_ip, protocol, port)
    policies = engine.policies_for_pod(pod.namespace, pod.name)[direction]
    beta = direction is Direction.INGRESS and engine.beta_isolated(pod.namespace)
    allowing = [(p, i) for p in policies for i in engine.rules_allowing(p, direction, pod, peer_ip, protocol, port)]
    return Side(direction, pod.key, verdict.isolated, verdict.allowed, policies, beta, allowing)


def _side_text(side: Side, src: str, dst: str, protocol: Protocol, port: int) -> str:
    what = f"egress from {side.pod}" if side.direction is Direction.EGRESS else f"ingress to {side.pod}"
    if not side.isolated:
        return f"{what}: not isolated (no policy selects it for {side.direction.value}), so it is allowed"
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
    return (
        f"{what}: {isolated}; no {side.direction.value} rule of those allows {peer} on "
        f"{protocol.value}/{port}, so it is blocked"
    )


def _hints(engine: Engine, sides: list[Side]) -> list[str]:
    """Lint warnings about policies in the namespaces involved: the usual cause of a surprise."""
    namespaces = {s.pod.split("/", 1)[0] for s in sides if not s.allowed}
    hints = [str(w) for w in engine.lint() if w.policy.split("/", 1)[0] in namespaces]
    for s in sides:
        if not s.allowed:
            label = "to" if s.direction is Direction.EGRESS else "from"
            hints.append(
                f"to allow it, add a policy selecting {s.pod} with an {s.direction.value} rule "
                f"whose '{label}' matches the peer and whose ports include the port above"
            )
    return hints
