"""The brain's RBAC grants exactly what its code calls: no more (least privilege), no less (or the
brain fails in a real cluster with 403s that no test here would see).

The code declares its calls as module-level constants of (apiGroup, resource, verbs) in the
brain's packages (the sources declare what they list and watch; leader election and events
declare theirs). Every such constant is found by its shape, so a new one is picked up without
touching this test."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import pytest

from .render import DEPLOY, Obj, find, render

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

BRAIN_SA = ("stockade-brain", "stockade-system")
VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})


def is_permission_table(value: Any) -> bool:
    if not isinstance(value, (list, tuple, set, frozenset)) or not value:
        return False
    for row in value:
        if not (isinstance(row, tuple) and len(row) == 3):
            return False
        group, resource, verbs = row
        if not (isinstance(group, str) and isinstance(resource, str) and resource):
            return False
        if isinstance(verbs, str) or not isinstance(verbs, Iterable):
            return False
        if not all(isinstance(v, str) and v in VERBS for v in verbs):
            return False
    return True


def permission_tables(package: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every UPPER_CASE module constant shaped like a permission table under `package`."""
    root = importlib.import_module(package)
    modules: list[ModuleType] = [root]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if not info.name.startswith(skip):
            modules.append(importlib.import_module(info.name))
    found: dict[str, Any] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.isupper() and is_permission_table(value):
                # A table re-exported by a package __init__ counts once.
                found.setdefault(f"{module.__name__}.{name}", value)
    unique: dict[str, Any] = {}
    for name, value in found.items():
        if all(value is not other for other in unique.values()):
            unique[name] = value
    return unique


def flatten(tables: Iterable[Any]) -> set[Grant]:
    return {(g, r, v) for table in tables for g, r, verbs in table for v in verbs}


def granted(objects: list[Obj], sa: tuple[str, str]) -> set[Grant]:
    """Everything the roles bound to the ServiceAccount allow."""
    out: set[Grant] = set()
    for binding in objects:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        subjects = {(s["name"], s.get("namespace")) for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
        if sa not in subjects:
            continue
        role = find(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])
        for rule in role["rules"]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        assert "*" not in (g, r, v), f"wildcard in {role['metadata']['name']}"
                        out.add((g, r, v))
    return out


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render(DEPLOY).objects


@pytest.fixture(scope="module")
def code_needs() -> set[Grant]:
    # The whole brain but its pure engine (which does no I/O): sources declare their list/watch
    # needs; leader election, events or status writers declare theirs wherever they live.
    tables = permission_tables("stockade.brain", skip=("stockade.brain.engine",))
    assert any(name.startswith("stockade.brain.sources.") for name in tables), (
        "no permission table in stockade.brain.sources: the sources should declare a module constant "
        "of (apiGroup, resource, verbs) rows"
    )
    return flatten(tables.values())


def test_brain_role_grants_exactly_what_the_code_calls(objects: list[Obj], code_needs: set[Grant]) -> None:
    grants = granted(objects, BRAIN_SA)
    assert sorted(code_needs - grants) == [], "the code calls these but the RBAC does not grant them"
    assert sorted(grants - code_needs) == [], "granted but never called: remove from deploy/rbac.yaml"


def test_watched_resources_are_read_only(objects: list[Obj]) -> None:
    grants = granted(objects, BRAIN_SA)
    for group, resource in (("", "pods"), ("", "namespaces"), ("", "nodes"), ("networking.k8s.io", "networkpolicies")):
        # nodes: patch too, for the startup taint only (stockade.brain.taints)
        extra = {"patch"} if resource == "nodes" else set()
        assert {v for g, r, v in grants if (g, r) == (group, resource)} == {"get", "list", "watch"} | extra


def test_leases_are_granted_only_in_the_brains_namespace(objects: list[Obj]) -> None:
    cluster = find(objects, "ClusterRole", "stockade-brain")
    assert all("coordination.k8s.io" not in rule["apiGroups"] for rule in cluster["rules"])


def test_comparison_catches_an_extra_grant(objects: list[Obj], code_needs: set[Grant]) -> None:
    extra = [dict(o) for o in objects]
    role = find(extra, "ClusterRole", "stockade-brain")
    role = {**role, "rules": [*role["rules"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}
    extra = [role if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "stockade-brain" else o for o in extra]
    assert ("", "secrets", "get") in granted(extra, BRAIN_SA) - code_needs


def test_shape_detection() -> None:
    assert is_permission_table([("", "pods", ("get", "list", "watch"))])
    assert is_permission_table(frozenset({("networking.k8s.io", "networkpolicies", frozenset({"watch"}))}))
    assert not is_permission_table([("", "pods", "get")])  # verbs must be a collection
    assert not is_permission_table([])
    assert not is_permission_table({"pods": ["get"]})
    assert not is_permission_table([("a", "b", ("c",))])  # not Kubernetes verbs
