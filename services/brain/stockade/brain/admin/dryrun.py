"""Dry-run: the reachability difference manifests would make to the cluster as it stands."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.admin.reachability import connections, reach
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


def compile_objects(objs: Sequence[Mapping[str, Any]]) -> Engine:
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


Touched = tuple[set[str], set[str]]  # (ingress, egress): pods whose rules in that direction may change


def affected_pods(before: Engine, after: Engine, changes: Sequence[Mapping[str, Any]]) -> Touched | None:
    """The pods whose ingress (egress) verdicts ``changes`` can alter, or None for every pod. A
    NetworkPolicy changes the rules of the pods it selects, before or after, in the directions
    it isolates then, and of no other pod: only connections to (from) those can change. Any
    other kind (a Namespace's labels, a ClusterNetworkPolicy's peers) reaches further, and so
    does a change in what the node limits left out: then every pair is compared."""
    if any(o.get("kind") != "NetworkPolicy" for o in changes):
        return None
    if {str(r) for r in before.not_realized()} != {str(r) for r in after.not_realized()}:
        return None
    ingress: set[str] = set()
    egress: set[str] = set()
    for o in changes:
        meta = o.get("metadata") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        for engine in (before, after):
            pol = engine.policy(ns, name)
            if pol is not None:
                pods = engine.policy_pods(ns, name)
                ingress.update(pods if pol.ingress is not None else ())
                egress.update(pods if pol.egress is not None else ())
    return ingress, egress


def dry_run(current: Iterable[Mapping[str, Any]], changes: Sequence[Mapping[str, Any]]) -> DryRunResult:
    """Compare reachability between existing pods, on their declared ports, before and after ``changes``.

    ``current`` are the cluster's objects (Namespaces, Pods, Nodes, NetworkPolicies,
    ClusterNetworkPolicies); ``changes`` the objects to create or replace. Nothing is applied
    anywhere: two engines are compiled here.
    """
    objs = list(current)
    before, after = compile_objects(objs), compile_objects(objs)
    rejected_before = {str(r) for r in after.rejections()}
    for obj in sorted(changes, key=lambda o: KIND_ORDER.get(str(o.get("kind")), 9)):
        if obj.get("kind") in KIND_ORDER and obj.get("kind") != "Pod":
            after.upsert(obj)
    # Only connections between pods that exist now, on their declared ports; of those, only the
    # ones with an end whose rules the changes can alter.
    touching = affected_pods(before, after, changes)
    old = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(before, touching=touching)}
    new = {(p.src, p.dst, p.port, p.protocol.value, p.family): p.allowed for p in reach(after, touching=touching)}
    result = DryRunResult(checked=connections(before))
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
