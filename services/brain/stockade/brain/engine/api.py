"""The engine's public surface (implemented in `compiler.py`).

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
    """A policy (or namespace annotation) the engine could not accept, and why."""

    object: str  # "NetworkPolicy namespace/name" or "Namespace name"
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.object}: {self.field}: {self.message}"
