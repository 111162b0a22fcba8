"""The engine's public surface (implemented by `compiler.Engine` and its parts).

Input objects are Kubernetes objects as JSON dicts (camelCase, as the API serves them: what
``ApiClient.sanitize_for_serialization`` returns, or ``yaml.safe_load`` of a manifest). Every
change returns ``Deltas``: for each node whose model changed, the `NodeDelta` from its previous
model to its new one. Applying every delta in order yields `Engine.model(node)` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from stockade.model import NodeDelta

Deltas = dict[str, NodeDelta]


@dataclass(frozen=True)
class LintWarning:
    """A policy that is valid but probably not what its author meant."""

    policy: str  # "namespace/name"
    field: str  # e.g. "spec.ingress[0].from[1].podSelector"
    message: str

    def __str__(self) -> str:
        return f"{self.policy}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Rejection:
    """An object the engine could not accept (a policy, a namespace's beta annotation, or any
    object whose shape fails `validate`), and why. It is not enforced; the rest is."""

    object: str  # "NetworkPolicy namespace/name", "Pod namespace/name", "Namespace name", "Node name"...
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.message}"


@dataclass(frozen=True)
class NotRealized:
    """An accepted policy the engine left out of one node's model, and why (e.g. a limit).

    The rest of the node's model is enforced; the pods the policy selects there stay isolated
    by it (its allow rules are missing, so the gap fails closed)."""

    policy: str  # "namespace/name"
    node: str
    limit: str  # which limit or check: a fixed, small set of names (a metric label)
    message: str
    pods: int = 1  # pods of the node for which it was left out

    def __str__(self) -> str:
        return f"NetworkPolicy {self.policy}: not realized on node {self.node}: {self.message}"


@dataclass(frozen=True)
class RuleOrigin:
    """The ClusterNetworkPolicy rule behind one rule of a tier chain (for drop attribution and
    explain): `EngineView.rule_origin`."""

    policy: str  # the ClusterNetworkPolicy's name
    tier: str  # "Admin" | "Baseline"
    priority: int
    direction: str  # "ingress" | "egress"
    rule: int  # index in spec.ingress / spec.egress
    name: str  # the rule's name ("" when unnamed)
    action: str  # "Accept" | "Deny" | "Pass"

    def __str__(self) -> str:
        label = f"{self.name!r}" if self.name else f"spec.{self.direction}[{self.rule}]"
        return f"ClusterNetworkPolicy {self.policy} ({self.tier} tier, priority {self.priority}) rule {label}"
