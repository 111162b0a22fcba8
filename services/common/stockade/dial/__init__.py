"""Where the brains are: `--brain` lists, names that resolve to several brains, and the order
a client tries them in."""

from stockade.dial.targets import (
    Candidate,
    Resolver,
    Target,
    TargetError,
    order_for,
    parse_targets,
    resolve,
    system_resolver,
)

__all__ = [
    "Candidate",
    "Resolver",
    "Target",
    "TargetError",
    "order_for",
    "parse_targets",
    "resolve",
    "system_resolver",
]
