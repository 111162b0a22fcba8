"""The vocabulary of the typed description: a field's type, a field, a definition (one Go type).

Every kind the lab serves is written once in these terms (the sibling modules); the OpenAPI
documents (``openapi/``), the typed decoding with unknown-field checks and pruning
(``decoding.py``) and strategic-merge keys are all read from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Obj = dict[str, Any]
TypeKind = Literal["string", "integer", "number", "boolean", "array", "map", "ref"]
# How a named non-object definition decodes (see decoding.py): an int or a string, a quantity,
# a timestamp, or anything at all (free-form JSON such as managedFields' fieldsV1).
Decode = Literal["struct", "intstr", "quantity", "time", "any"]

DEFINITIONS: dict[str, Definition] = {}


@dataclass(frozen=True)
class Type:
    """A field's type. ``go`` is how Go's decoder names it in its errors (``int32``,
    ``v1.Protocol``, ``[]v1.Container``, ``map[string]string``)."""

    kind: TypeKind
    go: str
    format: str = ""  # OpenAPI format: int32, int64, double
    of: Type | None = None  # array and map elements
    ref: str = ""  # the definition's name, for kind "ref"

    @property
    def definition(self) -> Definition:
        return DEFINITIONS[self.ref]


STRING = Type("string", "string")
INT32 = Type("integer", "int32", "int32")
INT64 = Type("integer", "int64", "int64")
BOOL = Type("boolean", "bool")
DOUBLE = Type("number", "float64", "double")


def alias(go: str) -> Type:
    """A named string type (``type Protocol string``): a string, named so in decode errors."""
    return Type("string", go)


def list_of(t: Type) -> Type:
    return Type("array", f"[]{t.go}", of=t)


def map_of(t: Type) -> Type:
    return Type("map", f"map[string]{t.go}", of=t)


STRINGS = list_of(STRING)
STRING_MAP = map_of(STRING)


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    doc: str
    required: bool = False
    enum: tuple[str, ...] = ()
    patch: str = ""  # x-kubernetes-patch-strategy: merge, retainKeys, "merge,retainKeys"
    key: str = ""  # x-kubernetes-patch-merge-key
    list_type: str = ""  # x-kubernetes-list-type: atomic, map, set
    map_keys: tuple[str, ...] = ()  # x-kubernetes-list-map-keys
    map_type: str = ""  # x-kubernetes-map-type (of a map field)


def F(name: str, type_: Type | Definition, doc: str, **kw: Any) -> Field:
    """A field; a definition given as the type means a reference to it."""
    return Field(name, type_.ref() if isinstance(type_, Definition) else type_, doc, **kw)


def merged(name: str, elem: Definition, doc: str, key: str, *map_keys: str, **kw: Any) -> Field:
    """A list strategic-merge patches merge element by element on ``key`` (a list-map)."""
    return Field(
        name, list_of(elem.ref()), doc, patch="merge", key=key, list_type="map", map_keys=map_keys or (key,), **kw
    )


def atomic(name: str, elem: Type | Definition, doc: str, **kw: Any) -> Field:
    """A list replaced as a whole by every patch."""
    t = elem.ref() if isinstance(elem, Definition) else elem
    return Field(name, list_of(t), doc, list_type="atomic", **kw)


@dataclass(frozen=True)
class Definition:
    """One Go type: a struct with fields, or a named scalar (``decode`` says which)."""

    name: str  # io.k8s.api.core.v1.Pod
    doc: str
    fields: tuple[Field, ...] = ()
    gvk: tuple[tuple[str, str, str], ...] = ()  # (group, version, kind) a root is served as
    # A part the lab does not model field by field: any member is kept, none is reported.
    open: bool = False
    decode: Decode = "struct"
    scalar: Obj | None = None  # a named scalar's schema: {"type": "string", "format": "date-time"}
    map_type: str = ""  # x-kubernetes-map-type: atomic
    by_name: dict[str, Field] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name.update((f.name, f) for f in self.fields)

    @property
    def go(self) -> str:
        """Go's name for the type (``v1.ObjectMeta``)."""
        return ".".join(self.name.split(".")[-2:])

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def ref(self) -> Type:
        return Type("ref", self.go, ref=self.name)


def define(name: str, doc: str, *fields: Field, **kw: Any) -> Definition:
    """A definition, registered under its name (names are unique: they are package-qualified)."""
    d = Definition(name, doc, tuple(fields), **kw)
    if name in DEFINITIONS and DEFINITIONS[name] != d:
        raise ValueError(f"two definitions named {name}")
    DEFINITIONS[name] = d
    return d


def scalar(name: str, doc: str, schema: Obj, decode: Decode) -> Definition:
    return define(name, doc, scalar=schema, decode=decode)


def clone_package(root: Definition, old: str, new: str, gvk: tuple[str, str, str]) -> Definition:
    """``root`` and every definition it reaches under the package ``old`` (``io.k8s.api.networking.v1.``)
    again under ``new``, for a kind served the same in two group-versions."""

    def retype(t: Type) -> Type:
        if t.kind == "ref" and t.ref.startswith(old):
            return copy(t.definition).ref()
        if t.of is not None:
            inner = retype(t.of)
            return replace(t, of=inner, go=t.go.replace(t.of.go, inner.go))
        return t

    def copy(d: Definition) -> Definition:
        name = new + d.name[len(old) :]
        if name in DEFINITIONS:
            return DEFINITIONS[name]
        fields = tuple(replace(f, type=retype(f.type)) for f in d.fields)
        kw = {"gvk": (gvk,)} if d is root else {}
        return define(name, d.doc, *fields, open=d.open, map_type=d.map_type, **kw)

    return copy(root)
