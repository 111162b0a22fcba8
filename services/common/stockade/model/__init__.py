"""The rule model shared by the brain (which computes it) and the node agent (which enforces it)."""

from stockade.model.rules import (
    Chain,
    Direction,
    NodeDelta,
    NodeModel,
    PortMatch,
    Protocol,
    Rule,
    apply,
    chain_id,
    diff,
)

__all__ = [
    "Chain",
    "Direction",
    "NodeDelta",
    "NodeModel",
    "PortMatch",
    "Protocol",
    "Rule",
    "apply",
    "chain_id",
    "diff",
]
