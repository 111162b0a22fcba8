"""The typed description of every kind the lab serves, written once (see model.py).

``ROOTS`` maps (group, version, kind) to the kind's definition; ``for_resource`` finds the one a
REST view serves; ``merge_keys`` lists the lists a strategic-merge patch merges, as ``patch.py``
takes them.
"""

from __future__ import annotations

from functools import cache

from ..resources import RESOURCES, Resource
from . import authentication, coordination, core, discovery, meta, networking, pods, policy, rbac
from .model import DEFINITIONS, Definition, Type

# Every group-version with a document of its own: the served resources', and TokenReview's.
meta.delete_options(list(dict.fromkeys([(r.group, r.version) for r in RESOURCES] + [("authentication.k8s.io", "v1")])))
ROOTS: dict[tuple[str, str, str], Definition] = {gvk: d for d in DEFINITIONS.values() for gvk in d.gvk}
DOCUMENTED: tuple[Resource, ...] = tuple(r for r in RESOURCES if (r.group, r.version, r.kind) in ROOTS)
GROUP_VERSIONS: tuple[tuple[str, str], ...] = tuple(
    dict.fromkeys([(r.group, r.version) for r in DOCUMENTED] + [("authentication.k8s.io", "v1")])
)


def for_resource(res: Resource) -> Definition | None:
    """The kind's definition; None for a resource added without one (served untyped, undocumented)."""
    return ROOTS.get((res.group, res.version, res.kind))


@cache
def merge_keys(name: str) -> dict[str, str]:
    """Dotted path from the root of definition ``name`` → the merge key of each list a
    strategic-merge patch merges ("" for a list of scalars, merged as a set)."""
    out: dict[str, str] = {}

    def walk(d: Definition, path: str, depth: int) -> None:
        if depth > 12:  # no kind nests deeper; a guard against a cycle written by mistake
            return
        for f in d.fields:
            sub = f"{path}.{f.name}" if path else f.name
            t: Type = f.type
            if t.kind == "array" and "merge" in f.patch.split(","):
                out[sub] = f.key
            while t.of is not None:
                t = t.of
            if t.kind == "ref" and t.definition.fields:
                walk(t.definition, sub, depth + 1)

    walk(DEFINITIONS[name], "", 0)
    return out


__all__ = [
    "DEFINITIONS",
    "DOCUMENTED",
    "GROUP_VERSIONS",
    "ROOTS",
    "Definition",
    "authentication",
    "coordination",
    "core",
    "discovery",
    "for_resource",
    "merge_keys",
    "meta",
    "networking",
    "pods",
    "policy",
    "rbac",
]
