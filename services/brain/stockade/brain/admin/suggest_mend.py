"""Mends: a NetworkPolicy whose selector names a label value no pod (or namespace) in its reach
has, when a close value exists (``name: cart`` where the pods say ``carts``).

Only ``matchLabels`` are read: a typo in ``matchExpressions`` is left to a rule added instead.
Each candidate changes one value in a copy of the manifest; whether it admits the blocked flows
(and closes nothing) is for the caller to judge by compiling it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import NAME_LABEL

MAX_DISTANCE = 2  # edits between the written value and a close one (cart -> carts is 1)


@dataclass(frozen=True)
class Mend:
    manifest: dict[str, Any]  # the policy with one value changed
    field: str  # where, as a path: spec.ingress[0].from[0].podSelector.matchLabels.name
    old: str
    new: str
    # The policy's own podSelector: the mend selects pods it did not, which may isolate them
    # (close connections). A peer's value matched nothing, so mending it only opens.
    subject: bool = False

    def why(self) -> str:
        return f"{self.field}: no pod has {self.old!r}; {self.new!r} is the close value that exists"


def distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _close(value: str, present: set[str]) -> str | None:
    """The value of ``present`` nearest to ``value`` within MAX_DISTANCE (ties: alphabetical)."""
    scored = sorted((distance(value, v), v) for v in present if v != value)
    if not scored or scored[0][0] > min(MAX_DISTANCE, max(1, len(value) // 2)):
        return None
    return scored[0][1]


def _matches(labels: Mapping[str, str], match: Mapping[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


class Scope:
    """The labels a selector of one policy can see: its namespace's pods, all pods, namespaces."""

    def __init__(self, engine: Engine) -> None:
        self.pods = [p for p in engine.pods() if not p.host_network]
        self.namespaces = {n.name: dict(n.labels) | {NAME_LABEL: n.name} for n in engine.namespaces()}

    def pod_labels(self, namespaces: set[str] | None) -> list[Mapping[str, str]]:
        return [p.labels for p in self.pods if namespaces is None or p.namespace in namespaces]

    def namespaces_selected(self, match: Mapping[str, Any] | None) -> set[str] | None:
        if match is None:
            return None
        return {n for n, labels in self.namespaces.items() if _matches(labels, match)}


def _candidates(
    field: str, match: Mapping[str, Any], seen: list[Mapping[str, str]]
) -> Iterator[tuple[str, str, str, str]]:
    """(field, key, old, new) for each value of ``match`` no labels in ``seen`` have."""
    for key, value in sorted(match.items()):
        if not isinstance(value, str) or any(labels.get(key) == value for labels in seen):
            continue
        new = _close(value, {labels[key] for labels in seen if key in labels})
        if new is not None:
            yield f"{field}.matchLabels.{key}", key, value, new


def _selectors(policy: Mapping[str, Any]) -> Iterator[tuple[list[str | int], str, str]]:
    """(path to a selector, its kind: pod or namespace, and whether a namespaceSelector is beside it)."""
    spec = policy.get("spec") or {}
    yield ["spec", "podSelector"], "pod", "own"
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, peer in enumerate((rule or {}).get(peers_key) or []):
                base: list[str | int] = ["spec", direction, i, peers_key, j]
                if "namespaceSelector" in (peer or {}):
                    yield [*base, "namespaceSelector"], "namespace", ""
                    if "podSelector" in peer:
                        yield [*base, "podSelector"], "pod", "beside"
                elif "podSelector" in (peer or {}):
                    yield [*base, "podSelector"], "pod", "own"


def _get(obj: Any, path: list[str | int]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _text(path: list[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def mends(scope: Scope, policy: Mapping[str, Any]) -> list[Mend]:
    """Every one-value mend of ``policy``'s selectors, in field order (``scope``: the cluster's labels)."""
    ns = str((policy.get("metadata") or {}).get("namespace") or "default")
    out = []
    for path, kind, where in _selectors(policy):
        sel = _get(policy, path) or {}
        match = sel.get("matchLabels") if isinstance(sel, dict) else None
        if not isinstance(match, dict) or not match:
            continue
        if kind == "namespace":
            seen: list[Mapping[str, str]] = list(scope.namespaces.values())
        elif where == "beside":
            peer = _get(policy, path[:-1])
            ns_match = (peer.get("namespaceSelector") or {}).get("matchLabels")
            seen = scope.pod_labels(scope.namespaces_selected(ns_match if isinstance(ns_match, dict) else None))
        else:
            seen = scope.pod_labels({ns})
        for field, key, old, new in _candidates(_text(path), match, seen):
            fixed = copy.deepcopy(dict(policy))
            _get(fixed, path)["matchLabels"][key] = new
            out.append(Mend(fixed, field, old, new, subject=path == ["spec", "podSelector"]))
    return out
