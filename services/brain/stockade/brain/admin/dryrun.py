"""Dry-run: the reachability difference manifests would make to the cluster as it stands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.admin.reachability import reach
from stockade.brain.engine import Engine

Connection = tuple[str, str, int, str, str]  # from, to, port, protocol, family (ipv4/ipv6)


@dataclass
class DryRunResult:
    opened: list[Connection] = field(default_factory=list)
    closed: list[Connection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    checked: int = 0


CNP = "ClusterNetworkPolicy"
KIND_ORDER = {"Namespace": 0, "Pod": 1, "NetworkPolicy": 2, CNP: 2}


def _compiled(objs: Sequence[Mapping[str, Any]]) -> Engine:
    """The cluster as the brain compiles it: the ClusterNetworkPolicies (and the Nodes their
    `nodes` peers name) too, or a change would be judged without the tiers that decide first."""
    engine = Engine()

    def of(kind: str) -> list[Mapping[str, Any]]:
        return [o for o in objs if o.get("kind") == kind]

    engine.load(
        of("Namespace"), of("Pod"), of("NetworkPolicy"), of("Node"), services=of("Service"), cluster_policies=of(CNP)
    )
    return engine


def _described(obj: Mapping[str, Any]) -> str:
    """How lint names the policy ``obj``: ``ns/name``, or ``ClusterNetworkPolicy name``."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") == CNP:
        return f"{CNP} {meta.get('name')}"
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def dry_run(current: Iterable[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]) -> DryRunResult:
    """Compare reachability between existing pods, on their declared ports, before and after ``changes``.

    ``current`` are the cluster's objects (Namespaces, Pods, Nodes, NetworkPolicies,
    ClusterNetworkPolicies); ``changes`` the objects to create or replace. Nothing is applied
    anywhere: two engines are compiled here.
    """
    objs = list(current)
    before, after = _compiled(objs), _compiled(objs)
    rejected_before = {str(r) for r in after.rejections()}
    for obj in sorted(changes, key=lambda o: KIND_ORDER.get(str(o.get("kind")), 9)):
        if obj.get("kind") in KIND_ORDER and obj.get("kind") != "Pod":
            after.upsert(obj)
    # Only connections between pods that exist now, on their declared ports.
    old = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(before)}
    new = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(after)}
    result = DryRunResult(checked=len(old))
    for key, was in sorted(old.items()):
        now = new.get(key, was)
        if now and not was:
            result.opened.append(key)
        elif was and not now:
            result.closed.append(key)
    result.rejected = sorted({str(r) for r in after.rejections()} - rejected_before)
    changed = {_described(o) for o in changes if o.get("kind") in ("NetworkPolicy", CNP)}
    result.warnings = [str(w) for w in after.lint() if w.policy in changed]
    return result
