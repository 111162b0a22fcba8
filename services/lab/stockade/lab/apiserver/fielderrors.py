"""Field errors as the real API server reports them (apimachinery's ``field.Error`` and
``errors.NewInvalid``): a 422 ``Status`` with ``reason: Invalid``, a message such as
``Service "web" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535,
inclusive`` and one ``details.causes[]`` entry per error, with its ``field``.

Values are printed as Go prints them there (numbers bare, strings quoted, string lists as
``[]string{"a", "b"}``), so clients that match on messages see the same text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ApiError

# field.ErrorType → its text, and the cause type (metav1.CauseType) it becomes in a Status.
_TYPES = {
    "invalid": ("Invalid value", "FieldValueInvalid"),
    "required": ("Required value", "FieldValueRequired"),
    "duplicate": ("Duplicate value", "FieldValueDuplicate"),
    "not_supported": ("Unsupported value", "FieldValueNotSupported"),
    "forbidden": ("Forbidden", "FieldValueForbidden"),
    "too_long": ("Too long", "FieldValueTooLong"),
}
_NO_VALUE = {"required", "forbidden", "too_long"}


class GoRepr(str):
    """A value whose Go rendering is given verbatim (e.g. a struct literal)."""


def go_value(value: Any) -> str:
    """A value as ``fmt`` prints it in a field error."""
    if value is None:
        return "null"
    if isinstance(value, GoRepr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(json.dumps(v) for v in value) + "}"
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class FieldError:
    type: str  # a key of _TYPES
    field: str  # "spec.ports[0].nodePort"
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        """What follows the field name (``ErrorBody`` in apimachinery)."""
        text = _TYPES[self.type][0]
        if self.type not in _NO_VALUE:
            text += f": {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("invalid", field, value, detail)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("required", field, None, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError("duplicate", field, value)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("forbidden", field, None, detail)


def too_long(field: str, limit: int) -> FieldError:
    return FieldError("too_long", field, None, f"must have at most {limit} bytes")


def not_supported(field: str, value: Any, supported: Sequence[str]) -> FieldError:
    return FieldError("not_supported", field, value, "supported values: " + ", ".join(json.dumps(s) for s in supported))


class InvalidError(ApiError):
    """422 Invalid, carrying the field errors (``errors.NewInvalid``)."""

    def __init__(self, kind: str, name: str, errors: Sequence[FieldError], group: str = ""):
        unique: list[str] = []
        for e in errors:  # the aggregate drops repeated messages
            if str(e) not in unique:
                unique.append(str(e))
        text = unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
        qualified = f"{kind}.{group}" if group else kind
        details: dict[str, Any] = {"name": name, "kind": kind}
        if group:
            details["group"] = group
        details["causes"] = [{"reason": _TYPES[e.type][1], "message": e.body(), "field": e.field} for e in errors]
        super().__init__(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)
        self.errors = list(errors)
