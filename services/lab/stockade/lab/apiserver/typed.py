"""Typed decoding against the schema (``schema/``), as the real API server's JSON decoder does it.

The real server decodes a body into its Go types before anything else:

- a value of the wrong JSON type is 400 BadRequest and nothing is stored: ``Pod in version "v1"
  cannot be handled as a Pod: json: cannot unmarshal array into Go struct field
  ObjectMeta.metadata.labels of type map[string]string``. The field is the dotted path of JSON
  names (no list indexes, no map keys), the struct the Go type holding the last one; the first
  mismatch in document order is the one reported, as Go's decoder reports its first;
- a member no field of the Go type has is an unknown field: dropped from what is stored, and
  reported (``unknown field "spec.podSelectr"``, with list indexes) for the request's
  ``fieldValidation`` to decide on (Strict: 400; Warn: a warning; Ignore: nothing), as are the
  members a JSON object repeats (``duplicate field "metadata.name"``).

``null`` is always accepted (Go leaves the zero value). Open definitions (the parts the lab does
not model field by field) keep and check nothing below their declared fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError
from .schema.model import DEFINITIONS, Definition, Type

QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
# Go's int32/int64 ranges by OpenAPI format.
_BITS = {"int32": 32, "int64": 64}


class DecodeError(ApiError):
    """400 BadRequest: the body does not fit the kind's Go type. ``detail`` is Go's own text."""

    def __init__(self, kind: str, version: str, detail: str):
        super().__init__(400, "BadRequest", f'{kind} in version "{version}" cannot be handled as a {kind}: {detail}')
        self.detail = detail


class _Mismatch(Exception):
    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def json_type(value: Any, numeric: bool) -> str:
    """How Go's decoder names the JSON value it could not store (numbers: with their text for ints)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return f"number {value!r}" if numeric else "number"  # ParseInt failed on the literal


def _fits_int(value: Any, bits: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


class _Walk:
    """One decoding pass: the first type mismatch raises; unknown and duplicate members are collected."""

    def __init__(self, dups: Mapping[int, list[str]]):
        self.dups = dups
        self.problems: list[str] = []

    def mismatch(self, value: Any, go: str, path: str, holder: str, numeric: bool = False) -> _Mismatch:
        where = f"Go struct field {holder}.{path}" if path else "Go value"
        return _Mismatch(f"json: cannot unmarshal {json_type(value, numeric)} into {where} of type {go}")

    def value(self, value: Any, t: Type, path: str, holder: str, at: str) -> None:
        if value is None:
            return
        kind = t.kind
        if kind == "string":
            if not isinstance(value, str):
                raise self.mismatch(value, t.go, path, holder)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise self.mismatch(value, t.go, path, holder)
        elif kind == "integer":
            if not _fits_int(value, _BITS.get(t.format, 64)):
                raise self.mismatch(value, t.go, path, holder, numeric=True)
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.mismatch(value, t.go, path, holder)
        elif kind == "array":
            if not isinstance(value, list):
                raise self.mismatch(value, t.go, path, holder)
            assert t.of is not None
            for i, item in enumerate(value):
                self.value(item, t.of, path, holder, f"{at}[{i}]")
        elif kind == "map":
            if not isinstance(value, dict):
                raise self.mismatch(value, t.go, path, holder)
            assert t.of is not None
            for key, item in value.items():
                self.value(item, t.of, path, holder, f"{at}[{key}]")
        else:
            self.definition(value, t.definition, path, holder, at)

    def definition(self, value: Any, d: Definition, path: str, holder: str, at: str) -> None:
        if d.decode == "any":
            return
        if d.decode == "intstr":  # its own UnmarshalJSON: a string, else its int32
            if not (isinstance(value, str) or _fits_int(value, 32)):
                raise self.mismatch(value, "int32", path, holder, numeric=True)
            return
        if d.decode == "quantity":
            text = value if isinstance(value, str) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                text = repr(value)
            if text is None or not _QUANTITY.match(text.strip()):
                raise _Mismatch(QUANTITY_MSG)
            return
        if d.decode == "time":
            if not isinstance(value, str):
                raise _Mismatch(f"json: cannot unmarshal {json_type(value, False)} into Go value of type string")
            return
        if not isinstance(value, dict):
            raise self.mismatch(value, d.go, path, holder)
        for key in self.dups.get(id(value), ()):
            self.problems.append(f'duplicate field "{at}.{key}"' if at else f'duplicate field "{key}"')
        unknown: list[str] = []
        for key, item in value.items():
            f = d.by_name.get(key)
            sub_at = f"{at}.{key}" if at else key
            if f is None:
                if not d.open:
                    unknown.append(key)
                    self.problems.append(f'unknown field "{sub_at}"')
                continue
            self.value(item, f.type, f"{path}.{key}" if path else key, d.short, sub_at)
        for key in unknown:  # dropped, as the Go type has nowhere to keep them
            del value[key]


Check = Callable[[Any], bool]
_CHECKS: dict[str, Check] = {}
_SCALAR_CHECKS: dict[str, Check] = {
    "any": lambda v: True,
    "time": lambda v: v is None or type(v) is str,
    "intstr": lambda v: v is None or type(v) is str or (type(v) is int and -(2**31) <= v < 2**31),
    "quantity": lambda v: (
        v is None
        or (type(v) is str and _QUANTITY.match(v.strip()) is not None)
        or (type(v) in (int, float) and _QUANTITY.match(repr(v)) is not None)
    ),
}


def _check_of(t: Type) -> Check:
    """A fast yes/no check of a value against ``t``: no paths, no pruning (the common, clean case)."""
    kind = t.kind
    if kind == "string":
        return lambda v: v is None or type(v) is str
    if kind == "boolean":
        return lambda v: v is None or type(v) is bool
    if kind == "integer":
        low, high = -(2 ** (_BITS.get(t.format, 64) - 1)), 2 ** (_BITS.get(t.format, 64) - 1)
        return lambda v: v is None or (type(v) is int and low <= v < high)
    if kind == "number":
        return lambda v: v is None or type(v) in (int, float)
    if kind in ("array", "map"):
        assert t.of is not None
        inner = _check_of(t.of)
        if kind == "array":
            return lambda v: v is None or (type(v) is list and all(inner(x) for x in v))
        return lambda v: v is None or (type(v) is dict and all(inner(x) for x in v.values()))
    name = t.ref
    return lambda v: _definition_check(name)(v)


def _definition_check(name: str) -> Check:
    check = _CHECKS.get(name)
    if check is not None:
        return check
    d = DEFINITIONS[name]
    if d.decode != "struct":  # each scalar's own rule, as the slow walk's (True must mean it passes there)
        check = _SCALAR_CHECKS[d.decode]
    else:
        fields: dict[str, Check] = {}
        is_open = d.open

        def check(v: Any) -> bool:
            if v is None:
                return True
            if type(v) is not dict:
                return False
            for key, item in v.items():
                sub = fields.get(key)
                if sub is None:
                    if not is_open:
                        return False
                elif item is not None and not sub(item):
                    return False
            return True

        _CHECKS[name] = check  # before the fields, so a definition may refer to itself
        fields.update((f.name, _check_of(f.type)) for f in d.fields)
    _CHECKS[name] = check
    return check


def decode(d: Definition, obj: Any, version: str, dups: Mapping[int, list[str]] | None = None) -> list[str]:
    """Check ``obj`` against the kind ``d`` (raising DecodeError at the first type mismatch), drop
    its unknown members, and return the strict-decoding problems (unknown and duplicate fields)."""
    if not dups and _definition_check(d.name)(obj):
        return []  # it fits as it is: nothing to report, nothing to drop
    walk = _Walk(dups or {})
    try:
        walk.definition(obj, d, "", "", "")
    except _Mismatch as e:
        raise DecodeError(d.short, version, e.detail) from None
    return walk.problems


class StrictDecodingError(ApiError):
    """400 BadRequest for fieldValidation=Strict: every unknown and duplicate field, joined."""

    def __init__(self, problems: list[str], kind: str = "", version: str = ""):
        text = "strict decoding error: " + ", ".join(problems)
        if kind:
            text = f'{kind} in version "{version}" cannot be handled as a {kind}: {text}'
        super().__init__(400, "BadRequest", text)
        self.problems = problems
