"""The policy engine: cluster objects in, per-node rule models and per-change deltas out.

Pure: no I/O, no asyncio. The design follows the controller model of Antrea, one part per job:

* `store.Store`: the objects as admitted (and the refused ones), and who owns each address;
* `groups.AddressGroups`: the pods (IPs) a peer definition selects, keyed by that definition,
  so two policies naming the same peer share one set and a pod joining it is one element change;
* `applied.AppliedTo`: per namespace, the policies grouped by identical podSelector, so a pod
  finds the policies that isolate it with one selector test per distinct selector;
* `chains.ChainCompiler`: the policies isolating a pod compiled into its chains (cached);
* `span.Span`: a node model holds only the chains its own pods dispatch to and the sets those
  chains use; a set's element change goes only to the nodes that hold it. Every mutation is
  recorded in a `journal.Journal`, so a change's deltas are exact and cost what it touched;
* `view.EngineView`: the read-only queries. `Engine` is that view plus the changes, composing
  the parts in the order each change needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stockade.brain.engine import validate
from stockade.brain.engine.api import Deltas, LintWarning, Rejection
from stockade.brain.engine.applied import AppliedTo
from stockade.brain.engine.chains import ChainCompiler
from stockade.brain.engine.cnp_parse import parse_cnp
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.groups import AddressGroups, Named
from stockade.brain.engine.journal import Journal
from stockade.brain.engine.lint import lint
from stockade.brain.engine.objects import NamespaceInfo, PodInfo, implicit_namespace, parse_namespace, parse_node
from stockade.brain.engine.policy import Policy, parse_policy
from stockade.brain.engine.services import parse_service
from stockade.brain.engine.sets import SetTable
from stockade.brain.engine.span import NO_TIERS, TIER_SLOTS, LeftOut, Placement, Span, TierIds
from stockade.brain.engine.store import Store
from stockade.brain.engine.tiers import DENY_ALL, TierCompiler, named_key
from stockade.brain.engine.view import EngineView
from stockade.model import Chain, Direction
from stockade.model.limits import NODE_LIMITS, NodeLimits

__all__ = ["Engine"]

KIND_CNP = "ClusterNetworkPolicy"


class Engine(EngineView):
    """Compiles cluster objects into per-node rule models, incrementally. See `engine/api.py`."""

    def __init__(self, *, beta_default_deny: bool = True, limits: NodeLimits = NODE_LIMITS) -> None:
        self.limits = limits  # what every agent's codec accepts: the compiler stays within it
        store, sets = Store(), SetTable()
        self._groups = AddressGroups(store, sets, self._named_changed)
        applied = AppliedTo()
        chains = ChainCompiler(store, self._groups, applied, limits, self.beta_isolated)
        tiers = TierCompiler(store, self._groups, limits)
        super().__init__(store, applied, chains, sets, Span(sets), beta_default_deny, tiers)

    def lint(self) -> list[LintWarning]:
        return lint(self)

    # ---------------------------------------------------------------- public: changes

    def load(
        self,
        namespaces: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        policies: Iterable[Mapping[str, Any]] = (),
        nodes: Iterable[Mapping[str, Any]] = (),
        services: Iterable[Mapping[str, Any]] = (),
        cluster_policies: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Bulk load and compute every model at once (the cold start). Records no deltas."""
        store = self._store
        self._span.journal = None
        for svc in services:
            self.upsert_service(svc)
        for n in nodes:
            self.upsert_node(n)
        for obj in namespaces:
            if store.admit(obj, "Namespace"):
                self._set_namespace(obj)
        if store.pods or self._groups.groups:
            for obj in pods:  # not a cold start: take the incremental path
                pod = store.pod_of(obj)
                self._store_pod(pod.key, pod)
        else:
            # No groups yet: no memberships to update, ownership settled once.
            for obj in pods:
                pod = store.pod_of(obj)
                self._ensure_namespace(pod.namespace)
                store.load_pod(pod)
            store.own_loaded()
        for obj in policies:
            if store.admit(obj, "NetworkPolicy"):
                self._set_policy(obj, loading=True)
        for obj in cluster_policies:
            self._set_cnp(obj, loading=True)
        self._chains.invalidate()
        for key in sorted(store.pods):
            self._refresh_pod(key)
        self._span.flush_sets()

    def upsert(self, obj: Mapping[str, Any]) -> Deltas:
        """Add or replace one object. An object that fails the shape checks is refused alone
        (see `rejections`) and counts as absent: it never reaches the compiler."""
        kind = obj.get("kind") if isinstance(obj, Mapping) else None
        if kind == "Pod":
            return self.upsert_pod(obj)
        if kind == "Namespace":
            return self.upsert_namespace(obj)
        if kind == "NetworkPolicy":
            return self.upsert_policy(obj)
        if kind == "Node":
            return self.upsert_node(obj)
        if kind == "Service":
            return self.upsert_service(obj)
        if kind == KIND_CNP:
            return self.upsert_cnp(obj)
        raise ValueError(f"the engine does not handle kind {kind!r}")

    def delete(self, kind: str, namespace: str | None, name: str) -> Deltas:
        if kind == "Pod":
            return self.delete_pod(namespace or "default", name)
        if kind == "Namespace":
            return self.delete_namespace(name)
        if kind == "NetworkPolicy":
            return self.delete_policy(namespace or "default", name)
        if kind == "Node":
            return self.delete_node(name)
        if kind == "Service":
            return self.delete_service(namespace or "default", name)
        if kind == KIND_CNP:
            return self.delete_cnp(name)
        raise ValueError(f"the engine does not handle kind {kind!r}")

    def upsert_pod(self, obj: Mapping[str, Any]) -> Deltas:
        pod = self._store.pod_of(obj)
        return self._change(lambda: self._store_pod(pod.key, pod))

    def delete_pod(self, namespace: str, name: str) -> Deltas:
        self._store.refused.pop(f"Pod {namespace}/{name}", None)
        return self._change(lambda: self._store_pod(f"{namespace}/{name}", None))

    def upsert_namespace(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._store.admit(obj, "Namespace"):
            name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), Mapping) else None
            if not isinstance(name, str) or not name:
                return {}
            # Refused: the namespace counts as absent (only its name label), never half-read.
            return self._change(lambda: self._delete_namespace(name))
        return self._change(lambda: self._set_namespace(obj))

    def delete_namespace(self, name: str) -> Deltas:
        self._store.refused.pop(f"Namespace {name}", None)
        return self._change(lambda: self._delete_namespace(name))

    def upsert_policy(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._store.admit(obj, "NetworkPolicy"):
            key = validate.describe(obj, "NetworkPolicy").split(" ", 1)[1]
            return self._change(lambda: self._remove_policy(key, invalidate=True))
        return self._change(lambda: self._set_policy(obj, invalidate=True))

    def delete_policy(self, namespace: str, name: str) -> Deltas:
        self._store.refused.pop(f"NetworkPolicy {namespace}/{name}", None)
        return self._change(lambda: self._remove_policy(f"{namespace}/{name}", invalidate=True))

    def upsert_node(self, obj: Mapping[str, Any]) -> Deltas:
        store = self._store
        if store.admit(obj, "Node"):
            info = parse_node(obj)
            store.node_objects.add(info.name)
            if store.node_info.get(info.name) == info:
                return {}
            store.node_info[info.name] = info
        else:
            name = validate.describe(obj, "Node").split(" ", 1)[1]
            store.node_objects.discard(name)
            if store.node_info.pop(name, None) is None:
                return {}
        return self._change(self._nodes_changed)

    def delete_node(self, name: str) -> Deltas:
        self._store.refused.pop(f"Node {name}", None)
        # Pods on a deleted node are deleted by Kubernetes in turn; their events empty the model.
        self._store.node_objects.discard(name)
        if self._store.node_info.pop(name, None) is None:
            return {}
        return self._change(self._nodes_changed)

    def _nodes_changed(self) -> set[str]:
        self._groups.nodes_changed()  # nodes peers' sets; no chain changes
        return set()

    def upsert_cnp(self, obj: Mapping[str, Any]) -> Deltas:
        """Add or replace a ClusterNetworkPolicy; a bad one is refused alone (`rejections`)."""
        return self._change(lambda: self._set_cnp(obj))

    def delete_cnp(self, name: str) -> Deltas:
        return self._change(lambda: self._remove_cnp(name))

    def upsert_service(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._store.admit(obj, "Service"):
            self._store.services.pop(validate.describe(obj, "Service").split(" ", 1)[1], None)
            return {}
        svc = parse_service(obj)
        self._store.services[svc.key] = svc
        return {}

    def delete_service(self, namespace: str, name: str) -> Deltas:
        self._store.refused.pop(f"Service {namespace}/{name}", None)
        self._store.services.pop(f"{namespace}/{name}", None)
        return {}

    # ---------------------------------------------------------------- change plumbing

    def _change(self, fn: Callable[[], set[str]]) -> Deltas:
        """Run one change, refresh the pods it touched, and return its deltas."""
        span = self._span
        journal = Journal()
        span.journal = journal
        try:
            touched = fn()
            for key in sorted(touched):
                self._refresh_pod(key)
            span.flush_sets()
        finally:
            span.journal = None
        deltas = journal.deltas(span.models)
        span.forget_empty(journal.nodes())
        return deltas

    # ---------------------------------------------------------------- namespaces

    def _set_namespace(self, obj: Mapping[str, Any]) -> set[str]:
        info, error = parse_namespace(obj)
        if not info.name:
            return set()
        if error is not None:
            self._store.ns_errors[info.name] = Rejection(f"Namespace {info.name}", error.field, error.message)
        else:
            self._store.ns_errors.pop(info.name, None)
        return self._put_namespace(info)

    def _delete_namespace(self, name: str) -> set[str]:
        self._store.ns_errors.pop(name, None)
        # Its pods (if any are left) stay in an implicit namespace: only its name label.
        touched = self._put_namespace(implicit_namespace(name))
        if not self._applied.holds(name) and not self._store.pods_by_ns.get(name) and self._groups.namespace_gone(name):
            self._store.forget_namespace(name)  # nothing in it any more: nothing of it is kept
        return touched

    def _put_namespace(self, info: NamespaceInfo) -> set[str]:
        """Store a namespace and follow it in the groups; return pods to refresh."""
        old = self._store.put_namespace(info)
        touched = self._groups.namespace_put(info)
        if old is None or old.beta_default_deny != info.beta_default_deny:
            touched |= self._store.pods_by_ns.get(info.name, set())
        if self._store.cnps and (old is None or old.labels != info.labels):
            self._tiers.namespace_changed(info.name)  # subjects select by namespace labels
            touched |= self._store.pods_by_ns.get(info.name, set())
        return touched

    def _ensure_namespace(self, name: str) -> None:
        if name not in self._store.ns:
            self._put_namespace(implicit_namespace(name))

    # ---------------------------------------------------------------- pods

    def _store_pod(self, key: str, pod: PodInfo | None) -> set[str]:
        """Store (or remove) a pod and update everything that depends on it. Returns pods to refresh."""
        if pod is not None:
            self._ensure_namespace(pod.namespace)
        touched, changes = self._store.store_pod(key, pod)
        return touched | self._groups.follow(changes)

    def _named_changed(self, named: Named) -> set[str]:
        """A named port's set of resolved numbers changed: egress rules of its policies change."""
        self._chains.invalidate()
        touched: set[str] = set()
        for pkey in named.policies:
            pol = self._store.policies.get(pkey)
            if pol is not None:
                touched |= self._selected(pol)
        cnps = [c for c in self._store.cnps.values() if named_key(c) in named.policies]
        if cnps:
            self._tiers.invalidate()
            for cnp in cnps:
                touched |= self._tiers.selected(cnp)
        return touched

    # ---------------------------------------------------------------- policies

    def _set_policy(self, obj: Mapping[str, Any], invalidate: bool = False, loading: bool = False) -> set[str]:
        store = self._store
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        try:
            pol = parse_policy(obj)
        except PolicyError as e:
            touched = self._remove_policy(key, invalidate)
            store.rejected[key] = Rejection(f"NetworkPolicy {key}", e.field, e.message)
            return touched
        clash = self._groups.clash(pol)
        if clash is not None:
            touched = self._remove_policy(key, invalidate)
            store.rejected[key] = Rejection(f"NetworkPolicy {key}", *clash)
            return touched
        self._ensure_namespace(pol.namespace)
        # Reference the new version's groups before releasing the old version's, so groups
        # both use survive the update instead of being rebuilt.
        self._groups.ref_policy(pol)
        touched = self._remove_policy(key, invalidate)
        store.policies[key] = pol
        self._applied.add(pol)
        if invalidate:
            self._chains.invalidate()
        if loading:
            return touched  # every pod is compiled once after loading
        return touched | self._selected(pol)

    def _remove_policy(self, key: str, invalidate: bool) -> set[str]:
        self._store.rejected.pop(key, None)
        pol = self._store.policies.pop(key, None)
        if pol is None:
            return set()
        self._applied.remove(pol)
        self._groups.unref_policy(pol)
        self._chains.forget(pol)
        if invalidate:
            self._chains.invalidate()
        return self._selected(pol)

    def _selected(self, pol: Policy) -> set[str]:
        return self._store.pods_matching(pol.namespace, pol.pod_selector)

    # ---------------------------------------------------------------- ClusterNetworkPolicies

    def _set_cnp(self, obj: Mapping[str, Any], loading: bool = False) -> set[str]:
        store = self._store
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or not name:
            name = ""  # refused under no name: nothing else can be keyed by it
        try:
            cnp = parse_cnp(obj)
            clash = self._tiers.clash(cnp)
            if clash is not None:
                raise PolicyError(*clash)
        except PolicyError as e:
            touched = self._remove_cnp(name, loading)
            store.cnp_rejected[name] = Rejection(f"{KIND_CNP} {name or '(no name)'}", e.field, e.message)
            return touched
        self._tiers.add(cnp)  # the new version's groups before the old one's are released
        before = store.cnps.get(name)
        touched = self._remove_cnp(name, loading, reindex=False)
        store.cnps[name] = cnp
        self._tiers.replaced(name, before, cnp)
        return touched if loading else touched | self._tiers.selected(cnp)  # loading: every pod after

    def _remove_cnp(self, name: str, loading: bool = False, reindex: bool = True) -> set[str]:
        self._store.cnp_rejected.pop(name, None)
        cnp = self._store.cnps.pop(name, None)
        if cnp is None:
            return set()
        self._tiers.remove(cnp)
        if reindex:
            self._tiers.replaced(name, cnp, None)
        return set() if loading else self._tiers.selected(cnp)

    # ---------------------------------------------------------------- compiling and placing one pod

    def _refresh_pod(self, key: str) -> None:
        span = self._span
        pod = self._store.endpoint.get(key)
        desired: Placement | None = None
        left_out: LeftOut = {}
        refused = self._store.isolated.get(key) if pod is None else None
        if refused is not None and refused.node:
            node = refused.node
            desired = (
                node,
                refused.ips,
                span.intern(node, span.deny_all(node, Direction.INGRESS)),
                span.intern(node, span.deny_all(node, Direction.EGRESS)),
                NO_TIERS,
            )
        elif pod is not None and pod.node:
            in_chain, eg_chain, leaving = self._chains.pod_chains(pod)
            cap = self.limits.max_rules_per_chain
            for direction, pkey in leaving:
                left_out[pkey] = (
                    "rules_per_chain",
                    f"its {direction} rules would push the pod's chain over the limit of {cap} rules per chain",
                )
            in_chain = self._collision_free(pod, Direction.INGRESS, in_chain, left_out)
            eg_chain = self._collision_free(pod, Direction.EGRESS, eg_chain, left_out)
            tiers = self._tier_ids(pod, in_chain is not None, eg_chain is not None)
            desired = (pod.node, pod.ips, span.intern(pod.node, in_chain), span.intern(pod.node, eg_chain), tiers)
        span.place(key, desired, left_out)

    def _tier_ids(self, pod: PodInfo, np_ingress: bool, np_egress: bool) -> TierIds:
        """The pod's tier chains interned on its node, in `TIER_SLOTS` order."""
        if not self._store.cnps:
            return NO_TIERS
        found = self._tiers.pod_chains(pod, np_ingress, np_egress)
        if not found:
            return NO_TIERS
        node = pod.node or ""
        span = self._span
        ids: list[str | None] = []
        for slot in TIER_SLOTS:
            chain = found.get(slot)
            if chain is not None:
                held = span.held(node, chain.id)
                if held is not None and held is not chain and held != chain:  # another content: fail closed
                    chain = Chain.ordered(slot[1], slot[0], (DENY_ALL,))
                ids.append(span.intern(node, chain))
            else:
                ids.append(None)
        return (ids[0], ids[1], ids[2], ids[3])

    def _collision_free(
        self, pod: PodInfo, direction: Direction, chain: Chain | None, left_out: LeftOut
    ) -> Chain | None:
        """``chain``, or a chain allowing nothing when its id already names other content on the
        pod's node: two contents are never merged under one id, and the gap fails closed."""
        if chain is None:
            return None
        held = self._span.held(pod.node or "", chain.id)
        if held is None or held == chain:
            return chain
        ing, eg = self._applied.applying(pod)
        for pkey in ing if direction is Direction.INGRESS else eg:
            left_out[pkey] = ("id_collision", f"its {direction} chain's id {chain.id} names another chain on the node")
        return self._span.deny_all(pod.node or "", direction)
