"""The rule model shared by the brain (which computes it) and the node agent (which enforces it)."""

from stockade.model.rules import (
    CNP_TIERS,
    TIERS,
    Action,
    Chain,
    Direction,
    NodeDelta,
    NodeModel,
    PortMatch,
    Protocol,
    Rule,
    Tier,
    apply,
    chain_id,
    diff,
)

__all__ = [
    "CNP_TIERS",
    "TIERS",
    "Action",
    "Chain",
    "Direction",
    "NodeDelta",
    "NodeModel",
    "PortMatch",
    "Protocol",
    "Rule",
    "Tier",
    "apply",
    "chain_id",
    "diff",
]
