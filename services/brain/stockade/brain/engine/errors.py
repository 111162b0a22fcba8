"""Errors the engine reports about its input."""

from __future__ import annotations


class PolicyError(ValueError):
    """A malformed object: ``field`` is the path of the offending field, e.g. ``spec.ingress[0].ports[1].port``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
