"""The policy engine: pure functions of cluster objects, producing per-node rule models and deltas."""

from stockade.brain.engine.api import Deltas, LintWarning, NotRealized, Rejection
from stockade.brain.engine.compiler import Engine
from stockade.brain.engine.errors import PolicyError

__all__ = ["Deltas", "Engine", "LintWarning", "NotRealized", "PolicyError", "Rejection"]
