"""Label selectors: parsing (with errors that name the field), matching, and index anchors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from stockade.brain.engine.errors import PolicyError
from stockade.model.limits import POLICY_LIMITS, over

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
K = TypeVar("K")


@dataclass(frozen=True, order=True, repr=False)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def __repr__(self) -> str:  # plain and fast: set ids are hashes of reprs
        return f"Requirement({self.key!r}, {self.op!r}, {self.values!r})"

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "In":
            return labels.get(self.key) in self.values
        if self.op == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.op == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, repr=False)
class Selector:
    """A label selector in canonical form: equal selectors compare (and hash) equal."""

    requirements: tuple[Requirement, ...] = ()
    # A canonical text form, computed once: peers' set ids are derived from it.
    canon: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        text = ";".join(f"{r.key}\x1f{r.op}\x1f{','.join(r.values)}" for r in self.requirements)
        object.__setattr__(self, "canon", text)

    def __repr__(self) -> str:
        return f"Selector({self.requirements!r})"

    def __hash__(self) -> int:  # equal requirements have equal canonical text; str hashes are cached
        return hash(self.canon)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for r in self.requirements:  # a plain loop: this is the engine's hottest function
            op = r.op
            if op == "In":
                if labels.get(r.key) not in r.values:
                    return False
            elif not r.matches(labels):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements

    def anchors(self) -> tuple[list[tuple[str, str]], str | None] | None:
        """Index entries that every matching object must hit, or None when it must be scanned.

        Returns ``(pairs, None)`` when any matching object carries one of the (key, value)
        pairs, or ``([], key)`` when every match has the label ``key``.
        """
        for r in self.requirements:
            if r.op == "In":
                return [(r.key, v) for v in r.values], None
        for r in self.requirements:
            if r.op == "Exists":
                return [], r.key
        return None

    def __str__(self) -> str:
        if not self.requirements:
            return "{} (everything)"
        parts = []
        for r in self.requirements:
            if r.op == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={r.values[0]}")
            elif r.op in ("In", "NotIn"):
                parts.append(f"{r.key} {r.op.lower().replace('notin', 'notin')} ({','.join(r.values)})")
            elif r.op == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts)


EVERYTHING = Selector()


def parse_selector(obj: Any, field: str) -> Selector:
    """Parse a LabelSelector dict; raise PolicyError naming ``field`` when malformed."""
    if obj is None:
        return EVERYTHING
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get("matchLabels"), Mapping):
        # The common case, cached: clusters repeat the same few label selectors many times.
        items = obj["matchLabels"].items()
        if len(items) <= CACHED_TERMS and all(isinstance(k, str) and k and isinstance(v, str) for k, v in items):
            return _match_labels(tuple(sorted(items)))
    return _parse_selector(obj, field)


# Only small selectors are cached, so the cache's bytes are bounded as well as its entries
# (a selector may have 256 terms; what deleted policies used stays until pushed out).
CACHED_TERMS = 4


@lru_cache(maxsize=65536)
def _match_labels(pairs: tuple[tuple[str, str], ...]) -> Selector:
    return Selector(tuple(Requirement(k, "In", (v,)) for k, v in pairs))


def _parse_selector(obj: Any, field: str) -> Selector:
    if obj is None:
        return EVERYTHING
    if not isinstance(obj, dict):
        raise PolicyError(field, f"must be a label selector object, got {type(obj).__name__}")
    unknown = set(obj) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise PolicyError(field, f"unknown field(s) {', '.join(sorted(unknown))}")
    reqs: set[Requirement] = set()
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise PolicyError(f"{field}.matchLabels", "must be a map of label keys to values")
    for k, v in labels.items():
        if not isinstance(k, str) or not k:
            raise PolicyError(f"{field}.matchLabels", f"label key {k!r} must be a non-empty string")
        if v is None:
            v = ""
        if not isinstance(v, str | int | float | bool):
            raise PolicyError(f"{field}.matchLabels.{k}", f"label value must be a string, got {v!r}")
        reqs.add(Requirement(k, "In", (_label_value(v),)))
    exprs = obj.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise PolicyError(f"{field}.matchExpressions", "must be a list")
    for i, e in enumerate(exprs):
        f = f"{field}.matchExpressions[{i}]"
        if not isinstance(e, dict):
            raise PolicyError(f, "must be an object with key, operator and values")
        key, op, values = e.get("key"), e.get("operator"), e.get("values")
        if not isinstance(key, str) or not key:
            raise PolicyError(f"{f}.key", "is required")
        if op not in OPERATORS:
            raise PolicyError(f"{f}.operator", f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
        if op in ("In", "NotIn"):
            if not isinstance(values, list) or not values:
                raise PolicyError(f"{f}.values", f"operator {op} needs a non-empty list of values")
            reqs.add(Requirement(key, op, tuple(sorted({_label_value(v) for v in values}))))
        else:
            if values:
                raise PolicyError(f"{f}.values", f"operator {op} takes no values")
            reqs.add(Requirement(key, op))
    return Selector(tuple(sorted(reqs)))


def _label_value(v: object) -> str:
    # YAML turns `version: 1` or `enabled: true` into numbers and booleans; labels are strings.
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class LabelIndex:
    """(key, value) → names and key → names, to find the objects a selector may match."""

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], set[str]] = {}
        self.by_key: dict[str, set[str]] = {}
        self.all: set[str] = set()

    def add(self, name: str, labels: Mapping[str, str]) -> None:
        self.all.add(name)
        for k, v in labels.items():
            self.by_pair.setdefault((k, v), set()).add(name)
            self.by_key.setdefault(k, set()).add(name)

    def remove(self, name: str, labels: Mapping[str, str]) -> None:
        self.all.discard(name)
        for k, v in labels.items():
            s = self.by_pair.get((k, v))
            if s is not None:
                s.discard(name)
                if not s:
                    del self.by_pair[(k, v)]
            s = self.by_key.get(k)
            if s is not None:
                s.discard(name)
                if not s:
                    del self.by_key[k]

    def candidates(self, selector: Selector) -> Iterable[str]:
        anchors = selector.anchors()
        if anchors is None:
            return self.all
        pairs, key = anchors
        if key is not None:
            return self.by_key.get(key, ())
        if len(pairs) == 1:
            return self.by_pair.get(pairs[0], ())
        out: set[str] = set()
        for p in pairs:
            out |= self.by_pair.get(p, set())
        return out


class SelectorIndex:
    """Selectors indexed by their anchors, to find the selectors an object's labels may match."""

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], set[str]] = {}
        self.by_key: dict[str, set[str]] = {}
        self.scan: set[str] = set()

    def add(self, ident: str, selector: Selector) -> None:
        anchors = selector.anchors()
        if anchors is None:
            self.scan.add(ident)
            return
        pairs, key = anchors
        if key is not None:
            self.by_key.setdefault(key, set()).add(ident)
        for p in pairs:
            self.by_pair.setdefault(p, set()).add(ident)

    def remove(self, ident: str, selector: Selector) -> None:
        anchors = selector.anchors()
        if anchors is None:
            self.scan.discard(ident)
            return
        pairs, key = anchors
        if key is not None:
            _discard(self.by_key, key, ident)
        for p in pairs:
            _discard(self.by_pair, p, ident)

    def candidates(self, labels: Mapping[str, str]) -> set[str]:
        out = set(self.scan)
        for k, v in labels.items():
            s = self.by_pair.get((k, v))
            if s:
                out |= s
            s = self.by_key.get(k)
            if s:
                out |= s
        return out


def _discard(index: dict[K, set[str]], key: K, ident: str) -> None:
    """Take ``ident`` out of ``index[key]``, and the key with its last one: selectors come and
    go with policies, and an anchor no selector uses any more must not stay behind."""
    idents = index.get(key)
    if idents is not None:
        idents.discard(ident)
        if not idents:
            del index[key]


def sized_selector(sel: Selector, field: str) -> Selector:
    """A parsed selector within the limits of terms and of values per term."""
    lim = POLICY_LIMITS
    if len(sel.requirements) > lim.selector_terms:
        raise PolicyError(field, over("selector terms", len(sel.requirements), lim.selector_terms, "per selector"))
    for req in sel.requirements:
        if len(req.values) > lim.selector_values:
            raise PolicyError(
                field, over(f"values for key {req.key[:63]!r}", len(req.values), lim.selector_values, "per term")
            )
    return sel
