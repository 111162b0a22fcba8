"""Typed decoding of a kind's objects, as the real API server's JSON decoder does it before
anything else (see ``typed.py``; the Go types come from ``schema/``).

``check_types`` is what the store runs on every write: a body that does not fit the Go types is
400 BadRequest with Go's text, nothing stored; members the Go types do not have are dropped
(and returned, for the HTTP layer's ``fieldValidation``).
"""

from __future__ import annotations

from typing import Any

from .resources import STORAGE_VIEW
from .schema import for_resource
from .typed import DecodeError, decode


def check_types(storage: str, obj: Any, version: str | None = None) -> list[str]:
    """Raise DecodeError (400) when ``obj`` does not decode into the kind's Go type; drop its
    unknown fields and return them (``unknown field "spec.x"``)."""
    view = STORAGE_VIEW[storage]
    definition = for_resource(view)
    return [] if definition is None else decode(definition, obj, version or view.version)


__all__ = ["DecodeError", "check_types"]
