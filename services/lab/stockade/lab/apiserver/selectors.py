"""Label and field selectors as the API server parses them from a query string.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``,
joined by commas (all must hold). Field selectors: ``path=value``, ``path==value``, ``path!=value``
on dotted paths such as ``metadata.name`` or ``spec.nodeName``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

_SET_EXPR = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_EXPR = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


class SelectorError(ValueError):
    pass


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    m = _EQ_EXPR.match(term)
    if m:
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    m = _SET_EXPR.match(term)
    if not m:
        raise SelectorError(f"unable to parse requirement: {term!r}")
    bang, key, op, values_text = m.groups()
    if op:
        if bang:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        values = {v.strip() for v in values_text.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if bang:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def label_matcher(text: str | None) -> Matcher | None:
    """A predicate on objects for ``labelSelector``; None when there is nothing to select on."""
    if not text or not text.strip():
        return None
    terms = [_label_term(t) for t in _split_terms(text)]

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels")
        if not isinstance(labels, dict):  # only fault injection stores such labels: they select nothing
            labels = {}
        return all(t(labels) for t in terms)

    return match


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


def field_matcher(text: str | None) -> Matcher | None:
    """A predicate on objects for ``fieldSelector``; None when there is nothing to select on."""
    if not text or not text.strip():
        return None
    terms: list[tuple[str, bool, str]] = []
    for term in _split_terms(text):
        m = _EQ_EXPR.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        terms.append((path, op != "!=", value))

    def match(obj: dict[str, Any]) -> bool:
        return all((_field(obj, path) == value) == equal for path, equal, value in terms)

    return match


def both(a: Matcher | None, b: Matcher | None) -> Matcher | None:
    if a is None or b is None:
        return a or b
    return lambda obj: a(obj) and b(obj)
