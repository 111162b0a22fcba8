"""The policy engine: cluster objects in, per-node rule models and per-change deltas out.

Pure: no I/O, no asyncio. The design follows the controller model of Antrea:

* **address groups**: the pods (IPs) a peer definition selects, keyed by that definition, so
  two policies naming the same peer share one set and a pod joining it is one element change;
* **applied-to**: per namespace, the policies grouped by identical podSelector, so a pod finds
  the policies that isolate it with one selector test per distinct selector;
* **span**: a node model holds only the chains its own pods dispatch to and the sets those
  chains use; a set's element change goes only to the nodes that hold it.

Every mutation of a node model goes through `_Journal`, which remembers the first value it
overwrote; a change's delta is the difference between those values and the final ones, so
deltas are exact by construction and cost only what the change touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine import validate
from stockade.brain.engine.api import Deltas, LintWarning, NotRealized, Rejection
from stockade.brain.engine.errors import PolicyError
from stockade.brain.engine.objects import (
    NamespaceInfo,
    PodInfo,
    canonical_ip,
    implicit_namespace,
    parse_namespace,
    parse_pod,
    refused_pod,
)
from stockade.brain.engine.policy import IPBlockPeer, Peer, Policy, PolicyRule, parse_policy, set_id
from stockade.brain.engine.selectors import LabelIndex, Selector, SelectorIndex
from stockade.brain.engine.services import ServiceInfo, parse_service
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule
from stockade.model.evaluate import ip_in
from stockade.model.limits import NODE_LIMITS, NodeLimits

_MISSING: Any = object()
# How a refused pod's rejection ends when nothing can be dispatched for it (a gap said loudly).
UNFILTERED = "not enforced: its traffic cannot be filtered because "


def _members_sid(block: IPBlockPeer) -> str:
    """The pods inside an ipBlock (to resolve named ports against them)."""
    return set_id("ipmembers", block.cidr, *block.excepts)


ALL_SID = set_id("all")


def _peer_sid(peer: Peer | None) -> str:
    """The address set id of a peer definition (None: every pod, for egress named ports)."""
    return ALL_SID if peer is None else peer.sid


def _peer_definition(peer: Peer | None) -> tuple[Any, ...]:
    """What a peer's address set holds, to tell two definitions apart under one id."""
    if peer is None:
        return ("all",)
    if isinstance(peer, IPBlockPeer):
        return ("ipblock", peer.cidr, peer.excepts)
    scope = peer.namespace if peer.ns_selector is None else None
    return ("pods", scope, _canon_of(peer.pod_selector), _canon_of(peer.ns_selector))


def _group_definition(g: _Group) -> tuple[Any, ...]:
    if g.kind == "all":
        return ("all",)
    if g.kind == "ipblock" and g.block is not None:
        return ("ipblock", g.block.cidr, g.block.excepts)
    if g.kind == "pods":
        scope = g.namespace if g.ns_selector is None else None
        return ("pods", scope, _canon_of(g.pod_selector), _canon_of(g.ns_selector))
    return (g.kind, g.sid)  # named slices and ipmembers: never a policy peer's set


def _canon_of(sel: Selector | None) -> str | None:
    return None if sel is None else sel.canon


def _port_key(p: PortMatch) -> tuple[str, int, int]:
    return (p.protocol.value, p.port or 0, p.end_port or 0)


# --------------------------------------------------------------------------------------------
# Address groups


@dataclass
class _Group:
    """A peer's address set. ``kind``: pods (selectors), all (every pod), ipblock, ipmembers
    (pods inside an ipBlock, for named-port resolution) or named (a named-port slice)."""

    sid: str
    kind: str
    namespace: str | None = None
    pod_selector: Selector | None = None
    ns_selector: Selector | None = None
    block: IPBlockPeer | None = None
    members: set[str] = field(default_factory=set)  # pod keys
    elements: frozenset[str] = frozenset()
    refs: int = 0  # policies referencing it (directly or via a named slice)
    matched_ns: set[str] = field(default_factory=set)  # for ns-selector groups
    named: dict[tuple[str, Protocol], _Named] = field(default_factory=dict)


@dataclass
class _Named:
    """Members of a base group, split by what one named port resolves to on each of them."""

    base: _Group
    port_name: str
    protocol: Protocol
    by_number: dict[int, set[str]] = field(default_factory=dict)
    policies: dict[str, int] = field(default_factory=dict)  # policy key -> references

    def sid(self, number: int) -> str:
        return set_id("named", self.base.sid, self.port_name, self.protocol.value, str(number))


# --------------------------------------------------------------------------------------------
# Journal of node-model mutations, from which deltas are derived


class _Journal:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.ingress: dict[str, dict[str, Any]] = {}
        self.egress: dict[str, dict[str, Any]] = {}

    def deltas(self, models: Mapping[str, NodeModel]) -> Deltas:
        out: Deltas = {}
        nodes = set(self.sets) | set(self.chains) | set(self.ingress) | set(self.egress)
        for node in nodes:
            model = models.get(node) or NodeModel(node)
            d = NodeDelta(node=node)
            for sid, old in self.sets.get(node, {}).items():
                new = model.sets.get(sid, _MISSING)
                if old is _MISSING and new is not _MISSING:
                    d.new_sets[sid] = new
                elif old is not _MISSING and new is _MISSING:
                    d.removed_sets |= {sid}
                elif old is not _MISSING and old != new:
                    if new - old:
                        d.set_added[sid] = new - old
                    if old - new:
                        d.set_removed[sid] = old - new
            for cid, old in self.chains.get(node, {}).items():
                present = cid in model.chains
                if old is _MISSING and present:
                    d.new_chains[cid] = model.chains[cid]
                elif old is not _MISSING and not present:
                    d.removed_chains |= {cid}
            for ip, old in self.ingress.get(node, {}).items():
                new = model.ingress.get(ip, _MISSING)
                if new is _MISSING and old is not _MISSING:
                    d.ingress_removed |= {ip}
                elif new is not _MISSING and new != old:
                    d.ingress_set[ip] = new
            for ip, old in self.egress.get(node, {}).items():
                new = model.egress.get(ip, _MISSING)
                if new is _MISSING and old is not _MISSING:
                    d.egress_removed |= {ip}
                elif new is not _MISSING and new != old:
                    d.egress_set[ip] = new
            if not d.is_empty():
                out[node] = d
        return out


# --------------------------------------------------------------------------------------------


class Engine:
    """Compiles cluster objects into per-node rule models, incrementally. See `engine/api.py`."""

    def __init__(self, *, beta_default_deny: bool = True, limits: NodeLimits = NODE_LIMITS) -> None:
        self.beta_default_deny = beta_default_deny
        self.limits = limits  # what every agent's codec accepts: the compiler stays within it
        # Store
        self._ns: dict[str, NamespaceInfo] = {}
        self._ns_errors: dict[str, Rejection] = {}
        self._pods: dict[str, PodInfo] = {}
        self._pods_by_ns: dict[str, set[str]] = {}
        self._claims: dict[str, set[str]] = {}  # ip -> candidate pod keys
        # Endpoint pods (candidates owning at least one of their IPs) -> the pod restricted to the
        # addresses it owns: what its dispatch entries and set elements are made of.
        self._endpoint: dict[str, PodInfo] = {}
        self._ip_owner: dict[str, str] = {}  # per address: a dual-stack pod owns each of its IPs
        # Refused pods (deny_all) owning at least one of their IPs -> the pod restricted to those:
        # dispatched to deny-all chains, in no address group (fail closed, never a peer).
        self._isolated: dict[str, PodInfo] = {}
        self._policies: dict[str, Policy] = {}
        self._rejected: dict[str, Rejection] = {}
        # Objects refused by the shape checks (engine/validate.py), by "Kind namespace/name".
        self._refused: dict[str, Rejection] = {}
        self._node_objects: set[str] = set()
        self._services: dict[str, ServiceInfo] = {}  # for lint only: they change no rule
        # Applied-to index: ns -> selector -> policy keys
        self._applied: dict[str, dict[Selector, set[str]]] = {}
        # The same, per direction: only the policies that isolate in that direction.
        self._applied_dir: dict[Direction, dict[str, dict[Selector, set[str]]]] = {d: {} for d in Direction}
        # Address groups
        self._groups: dict[str, _Group] = {}
        self._groups_in_ns: dict[str, set[str]] = {}  # single-namespace pod groups
        self._ns_group_index = SelectorIndex()  # groups with a namespaceSelector
        self._ns_groups_matching: dict[str, set[str]] = {}  # ns -> ns-selector groups matching it
        self._global_groups: set[str] = set()  # "all" and "ipmembers" groups
        self._ns_labels = LabelIndex()
        self._set_elems: dict[str, frozenset[str]] = {}  # every live set id -> elements
        self._set_nodes: dict[str, set[str]] = {}
        self._dirty_sets: set[str] = set()
        # Compiled output
        self._chain_cache: dict[tuple[Any, ...], Chain] = {}
        self._group_cache: dict[tuple[Any, ...], tuple[list[Policy], bool]] = {}
        self._placement: dict[str, tuple[str, tuple[str, ...], str | None, str | None]] = {}
        self._dispatch_owner: dict[tuple[str, str, Direction], str] = {}
        self._models: dict[str, NodeModel] = {}
        self._chain_refs: dict[str, dict[str, int]] = {}
        self._set_refs: dict[str, dict[str, int]] = {}
        self._journal: _Journal | None = None
        # Accepted policies left out of a pod's chains: pod key -> policy key -> (limit, why).
        self._left_out: dict[str, dict[str, tuple[str, str]]] = {}
        self._chain_left_out: dict[tuple[Any, ...], tuple[str, ...]] = {}  # chain-cache key -> policies
        self._leaving: list[tuple[Direction, str]] = []  # filled by _chain while one pod compiles

    # ---------------------------------------------------------------- public: queries

    def model(self, node: str) -> NodeModel:
        m = self._models.get(node)
        return m.copy() if m is not None else NodeModel(node)

    def models(self) -> dict[str, NodeModel]:
        return {n: self.model(n) for n in self.nodes()}

    def nodes(self) -> list[str]:
        hosting = {place[0] for place in self._placement.values()}
        return sorted(self._node_objects | hosting | {n for n, m in self._models.items() if m.ingress or m.egress})

    def rejections(self) -> list[Rejection]:
        return (
            [self._rejected[k] for k in sorted(self._rejected)]
            + [self._ns_errors[k] for k in sorted(self._ns_errors)]
            + [self._refused[k] for k in sorted(self._refused)]
        )

    def not_realized(self) -> list[NotRealized]:
        """Accepted policies left out of some node's model, one record per (policy, node)."""
        agg: dict[tuple[str, str], NotRealized] = {}
        for pod_key, policies in self._left_out.items():
            place = self._placement.get(pod_key)
            if place is None:
                continue
            for pkey, (limit, why) in policies.items():
                k = (pkey, place[0])
                prev = agg.get(k)
                agg[k] = (
                    NotRealized(pkey, place[0], limit, f"{why} (pod {pod_key})")
                    if prev is None
                    else NotRealized(pkey, place[0], prev.limit, prev.message, prev.pods + 1)
                )
        return [agg[k] for k in sorted(agg)]

    def policy(self, namespace: str, name: str) -> Policy | None:
        return self._policies.get(f"{namespace}/{name}")

    def policy_keys(self) -> list[str]:
        return sorted(self._policies)

    def policy_pods(self, namespace: str, name: str) -> list[str]:
        pol = self._policies.get(f"{namespace}/{name}")
        if pol is None:
            return []
        return sorted(k for k in self._pods_by_ns.get(namespace, ()) if pol.pod_selector.matches(self._pods[k].labels))

    def policy_nodes(self, namespace: str, name: str) -> set[str]:
        out = set()
        for k in self.policy_pods(namespace, name):
            pod = self._pods[k]
            if k in self._endpoint and pod.node:
                out.add(pod.node)
        return out

    def pod_by_ip(self, ip: str) -> str | None:
        """The endpoint pod owning an address of either family (any spelling: ``FD00:0::5``)."""
        owner = self._ip_owner.get(ip)
        if owner is None:
            try:
                owner = self._ip_owner.get(canonical_ip(ip, "ip"))
            except ValueError:
                return None
        return owner

    def endpoint(self, namespace: str, name: str) -> PodInfo | None:
        """The endpoint pod with only the addresses it owns (None: not an endpoint)."""
        return self._endpoint.get(f"{namespace}/{name}")

    def pod_info(self, namespace: str, name: str) -> PodInfo | None:
        return self._pods.get(f"{namespace}/{name}")

    def pods(self) -> list[PodInfo]:
        return [self._pods[k] for k in sorted(self._pods)]

    def is_endpoint(self, namespace: str, name: str) -> bool:
        return f"{namespace}/{name}" in self._endpoint

    def isolated(self, namespace: str, name: str) -> PodInfo | None:
        """The refused pod whose traffic is all denied, with the addresses it owns (None: not one)."""
        return self._isolated.get(f"{namespace}/{name}")

    def namespaces(self) -> list[NamespaceInfo]:
        return [self._ns[k] for k in sorted(self._ns)]

    def namespace_info(self, name: str) -> NamespaceInfo:
        return self._ns.get(name) or implicit_namespace(name)

    def policies_for_pod(self, namespace: str, name: str) -> dict[Direction, list[str]]:
        pod = self._pods.get(f"{namespace}/{name}")
        if pod is None or pod.deny_all:  # refused: no policy applies (its labels are unknown)
            return {Direction.INGRESS: [], Direction.EGRESS: []}
        ing, eg = self._applying(pod)
        return {Direction.INGRESS: sorted(ing), Direction.EGRESS: sorted(eg)}

    def beta_isolated(self, namespace: str) -> bool:
        return self.beta_default_deny and self.namespace_info(namespace).beta_default_deny

    def rules_allowing(
        self, policy_key: str, direction: Direction, pod: PodInfo, peer_ip: str, protocol: Protocol, port: int
    ) -> list[int]:
        """Indexes of the policy's rules (in ``direction``, applied to ``pod``) that allow the peer."""
        pol = self._policies.get(policy_key)
        if pol is None:
            return []
        out = []
        for i, rule in enumerate((pol.ingress if direction is Direction.INGRESS else pol.egress) or ()):
            for r in self._compile_rule(rule, direction, pod):
                if r.matches_port(protocol, port) and (r.peer is None or self.set_contains(r.peer, peer_ip)):
                    out.append(i)
                    break
        return out

    def set_contains(self, sid: str, ip: str) -> bool:
        return ip_in(ip, self._set_elems.get(sid, ()))

    def services(self) -> list[ServiceInfo]:
        return [self._services[k] for k in sorted(self._services)]

    def lint(self) -> list[LintWarning]:
        from stockade.brain.engine.lint import lint

        return lint(self)

    # ---------------------------------------------------------------- public: changes

    def load(
        self,
        namespaces: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        policies: Iterable[Mapping[str, Any]] = (),
        nodes: Iterable[Mapping[str, Any]] = (),
        services: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Bulk load and compute every model at once (the cold start). Records no deltas."""
        self._journal = None
        for svc in services:
            self.upsert_service(svc)
        for n in nodes:
            self.upsert_node(n)
        for obj in namespaces:
            if self._admit(obj, "Namespace"):
                self._set_namespace(obj)
        if self._pods or self._groups:
            for obj in pods:  # not a cold start: take the incremental path
                pod = self._pod_of(obj)
                self._store_pod(pod.key, pod)
        else:
            self._load_pods(pods)
        for obj in policies:
            if self._admit(obj, "NetworkPolicy"):
                self._set_policy(obj, loading=True)
        self._invalidate_chains()
        for key in sorted(self._pods):
            self._refresh_pod(key)
        self._flush_sets()

    def _load_pods(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Store pods into an engine with no groups yet: no memberships to update, ownership once."""
        pods, by_ns, claims = self._pods, self._pods_by_ns, self._claims
        for obj in objs:
            pod = self._pod_of(obj)
            key = pod.key
            if pod.namespace not in self._ns:
                self._ensure_namespace(pod.namespace)
            old = pods.get(key)
            if old is not None and (old.candidate or old.deny_all):
                for ip in old.ips:
                    claims[ip].discard(key)
            pods[key] = pod
            by_ns.setdefault(pod.namespace, set()).add(key)
            if pod.candidate or pod.deny_all:
                for ip in pod.ips:
                    claims.setdefault(ip, set()).add(key)
        owners = self._ip_owner
        for ip, keys in list(claims.items()):
            if not keys:
                del claims[ip]
                continue
            owners[ip] = next(iter(keys)) if len(keys) == 1 else max(keys, key=lambda k: (pods[k].created, k))
        for key, pod in pods.items():
            if pod.candidate or pod.deny_all:
                owned = tuple(ip for ip in pod.ips if owners.get(ip) == key)
                if owned:
                    (self._endpoint if pod.candidate else self._isolated)[key] = pod.owning(owned)

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
        raise ValueError(f"the engine does not handle kind {kind!r}")

    def upsert_pod(self, obj: Mapping[str, Any]) -> Deltas:
        pod = self._pod_of(obj)
        return self._change(lambda: self._store_pod(pod.key, pod))

    def _admit(self, obj: Mapping[str, Any], kind: str, addresses: bool = True) -> bool:
        """Whether ``obj`` passes the shape checks; records (or clears) its refusal."""
        found = validate.problem(obj, kind, addresses=addresses)
        if found is None:
            if self._refused:  # naming the object costs; most clusters refuse nothing
                self._refused.pop(validate.describe(obj, kind), None)
            return True
        what = validate.describe(obj, kind)
        self._refused[what] = Rejection(what, found[0], found[1])
        return False

    def _pod_of(self, obj: Mapping[str, Any]) -> PodInfo:
        """The pod as the engine stores it; a refused pod is kept as a non-endpoint that says why."""
        if self._admit(obj, "Pod", addresses=False):  # parse_pod reads (and judges) the addresses
            pod = parse_pod(obj)
            if pod.problem:
                what = validate.describe(obj, "Pod")
                field, _, message = pod.problem.partition(": ")
                self._refused[what] = Rejection(what, field, f"{message}; {UNFILTERED}its addresses cannot be read")
            return pod
        # Refused: fail closed where its traffic can still be told apart (its addresses and node
        # read safely): deny all of it, and never let a policy allow it as a peer.
        what = validate.describe(obj, "Pod")
        rej = self._refused[what]
        pod, why = refused_pod(obj, f"{rej.field}: {rej.message}")
        tail = "isolated: all its traffic is denied until it is fixed" if pod.deny_all else UNFILTERED + why
        self._refused[what] = Rejection(what, rej.field, f"{rej.message}; {tail}")
        return pod

    def delete_pod(self, namespace: str, name: str) -> Deltas:
        self._refused.pop(f"Pod {namespace}/{name}", None)
        return self._change(lambda: self._store_pod(f"{namespace}/{name}", None))

    def upsert_namespace(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._admit(obj, "Namespace"):
            name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), Mapping) else None
            if not isinstance(name, str) or not name:
                return {}
            # Refused: the namespace counts as absent (only its name label), never half-read.
            return self._change(lambda: self._namespace_change({"metadata": {"name": name}}, deleted=True))
        return self._change(lambda: self._namespace_change(obj))

    def delete_namespace(self, name: str) -> Deltas:
        self._refused.pop(f"Namespace {name}", None)
        return self._change(lambda: self._namespace_change({"metadata": {"name": name}}, deleted=True))

    def upsert_policy(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._admit(obj, "NetworkPolicy"):
            key = validate.describe(obj, "NetworkPolicy").split(" ", 1)[1]
            return self._change(lambda: self._remove_policy(key, invalidate=True))
        return self._change(lambda: self._set_policy(obj, invalidate=True))

    def delete_policy(self, namespace: str, name: str) -> Deltas:
        self._refused.pop(f"NetworkPolicy {namespace}/{name}", None)
        return self._change(lambda: self._remove_policy(f"{namespace}/{name}", invalidate=True))

    def upsert_node(self, obj: Mapping[str, Any]) -> Deltas:
        if self._admit(obj, "Node"):
            self._node_objects.add(str(obj["metadata"]["name"]))
        else:
            name = validate.describe(obj, "Node").split(" ", 1)[1]
            self._node_objects.discard(name)
        return {}

    def delete_node(self, name: str) -> Deltas:
        self._refused.pop(f"Node {name}", None)
        # Pods on a deleted node are deleted by Kubernetes in turn; their events empty the model.
        self._node_objects.discard(name)
        return {}

    def upsert_service(self, obj: Mapping[str, Any]) -> Deltas:
        if not self._admit(obj, "Service"):
            self._services.pop(validate.describe(obj, "Service").split(" ", 1)[1], None)
            return {}
        svc = parse_service(obj)
        self._services[svc.key] = svc
        return {}

    def delete_service(self, namespace: str, name: str) -> Deltas:
        self._refused.pop(f"Service {namespace}/{name}", None)
        self._services.pop(f"{namespace}/{name}", None)
        return {}

    # ---------------------------------------------------------------- change plumbing

    def _change(self, fn: Any) -> Deltas:
        journal = _Journal()
        self._journal = journal
        try:
            touched: set[str] = fn()
            for key in sorted(touched):
                self._refresh_pod(key)
            self._flush_sets()
        finally:
            self._journal = None
        return journal.deltas(self._models)

    # ---------------------------------------------------------------- namespaces

    def _set_namespace(self, obj: Mapping[str, Any]) -> set[str]:
        info, error = parse_namespace(obj)
        if not info.name:
            return set()
        if error is not None:
            self._ns_errors[info.name] = Rejection(f"Namespace {info.name}", error.field, error.message)
        else:
            self._ns_errors.pop(info.name, None)
        return self._put_namespace(info)

    def _namespace_change(self, obj: Mapping[str, Any], deleted: bool = False) -> set[str]:
        if deleted:
            name = str(obj["metadata"]["name"])
            self._ns_errors.pop(name, None)
            return self._put_namespace(implicit_namespace(name))
        return self._set_namespace(obj)

    def _put_namespace(self, info: NamespaceInfo) -> set[str]:
        """Store a namespace; update ns-selector group membership; return pods to refresh."""
        old = self._ns.get(info.name)
        if old is not None:
            self._ns_labels.remove(old.name, old.labels)
        self._ns[info.name] = info
        self._ns_labels.add(info.name, info.labels)
        touched: set[str] = set()
        old_matching = self._ns_groups_matching.get(info.name, set())
        new_matching = {
            gid
            for gid in self._ns_group_index.candidates(info.labels)
            if self._groups[gid].ns_selector.matches(info.labels)  # type: ignore[union-attr]
        }
        self._ns_groups_matching[info.name] = new_matching
        if old_matching != new_matching:
            pods = [k for k in self._pods_by_ns.get(info.name, ()) if k in self._endpoint]
            for gid in old_matching - new_matching:
                g = self._groups[gid]
                g.matched_ns.discard(info.name)
                for k in pods:
                    touched |= self._group_remove(g, k)
            for gid in new_matching - old_matching:
                g = self._groups[gid]
                g.matched_ns.add(info.name)
                for k in pods:
                    if self._pod_in_group(g, self._endpoint[k]):
                        touched |= self._group_add(g, k)
        if old is None or old.beta_default_deny != info.beta_default_deny:
            touched |= self._pods_by_ns.get(info.name, set())
        return touched

    def _ensure_namespace(self, name: str) -> None:
        if name not in self._ns:
            self._put_namespace(implicit_namespace(name))

    # ---------------------------------------------------------------- pods

    def _store_pod(self, key: str, pod: PodInfo | None) -> set[str]:
        """Store (or remove) a pod and update everything that depends on it. Returns pods to refresh."""
        old = self._pods.get(key)
        touched = {key}
        if old is not None:
            self._pods_by_ns[old.namespace].discard(key)
            if old.candidate or old.deny_all:
                for ip in old.ips:
                    self._claims[ip].discard(key)
        if pod is None:
            self._pods.pop(key, None)
        else:
            self._ensure_namespace(pod.namespace)
            self._pods[key] = pod
            self._pods_by_ns.setdefault(pod.namespace, set()).add(key)
            # A refused pod claims its addresses too: whichever pod holds an address, its
            # traffic is filtered as that pod's (a refused one's: denied).
            if pod.candidate or pod.deny_all:
                for ip in pod.ips:
                    self._claims.setdefault(ip, set()).add(key)
        # Ownership of the IPs involved may move between pods (weave#2632: an IP reused by a new
        # pod before the finished one is gone belongs to the new one), address by address.
        ips = {ip for p in (old, pod) if p is not None for ip in p.ips}
        affected = {key}
        for ip in ips:
            prev = self._ip_owner.get(ip)
            if prev is not None:
                affected.add(prev)
            claims = self._claims.get(ip)
            if claims:
                owner = max(claims, key=lambda k: (self._pods[k].created, k))
                self._ip_owner[ip] = owner
                affected.add(owner)
            else:
                self._ip_owner.pop(ip, None)
                self._claims.pop(ip, None)
        changes: list[tuple[str, PodInfo | None, PodInfo | None]] = []
        owners = self._ip_owner
        for k in sorted(affected):
            before = self._endpoint.get(k)  # as it was: the addresses it owned
            cur = self._pods.get(k)
            now: PodInfo | None = None
            iso: PodInfo | None = None
            if cur is not None and (cur.candidate or cur.deny_all):
                owned = tuple(ip for ip in cur.ips if owners.get(ip) == k)
                if owned and cur.candidate:
                    now = cur.owning(owned)
                elif owned:
                    iso = cur.owning(owned)
            was_iso = self._isolated.pop(k, None)
            if iso is not None:
                self._isolated[k] = iso
            if (was_iso.ips if was_iso else None) != (iso.ips if iso else None):
                touched.add(k)  # its deny-all dispatch entries change; it is in no group
            if k != key and (before.ips if before else None) == (now.ips if now else None):
                continue
            if now is not None:
                self._endpoint[k] = now
            else:
                self._endpoint.pop(k, None)
            changes.append((k, before, now))
            touched.add(k)
        # Every removal before any addition: pods may hand addresses over, and a set element
        # must not be removed after its new owner added it.
        plans = [(k, b, c, self._membership_plan(k, b, c)) for k, b, c in changes]
        for k, before, _, plan in plans:
            for g, was, _ in plan:
                if was:
                    touched |= self._group_remove(g, k, before)
        for k, _, after, plan in plans:
            for g, _, joins in plan:
                if joins:
                    touched |= self._group_add(g, k, after)
        return touched

    def _pod_in_group(self, g: _Group, pod: PodInfo) -> bool:
        if g.kind == "all":
            return True
        if g.kind == "ipmembers":
            assert g.block is not None
            return any(g.block.contains(ip) for ip in pod.ips)
        if g.kind != "pods":
            return False
        if g.ns_selector is None:
            if pod.namespace != g.namespace:
                return False
        elif g.sid not in self._ns_groups_matching.get(pod.namespace, ()):
            return False
        return g.pod_selector is None or g.pod_selector.matches(pod.labels)

    def _candidate_groups(self, ns: str) -> set[str]:
        return self._groups_in_ns.get(ns, set()) | self._ns_groups_matching.get(ns, set()) | self._global_groups

    def _membership_plan(self, key: str, old: PodInfo | None, new: PodInfo | None) -> list[tuple[_Group, bool, bool]]:
        """The groups pod ``key`` leaves (was) and joins (now) moving between endpoint states."""
        gids: set[str] = set()
        if old is not None:
            gids |= self._candidate_groups(old.namespace)
        if new is not None:
            gids |= self._candidate_groups(new.namespace)
        same_addr = old is not None and new is not None and old.ips == new.ips and old.named_ports == new.named_ports
        plan = []
        for gid in gids:
            g = self._groups[gid]
            was = old is not None and key in g.members
            now = new is not None and self._pod_in_group(g, new)
            if (was or now) and not (was and now and same_addr):
                plan.append((g, was, now))
        return plan

    @staticmethod
    def _elems_in(g: _Group, pod: PodInfo) -> tuple[str, ...]:
        """The pod's set elements in group ``g``: all of them, or those inside the group's ipBlock."""
        if g.kind == "ipmembers":
            block = g.block
            assert block is not None
            return tuple(e for ip, e in zip(pod.ips, pod.elems, strict=True) if block.contains(ip))
        return pod.elems

    def _group_add(self, g: _Group, key: str, pod: PodInfo | None = None) -> set[str]:
        pod = pod or self._endpoint[key]
        elems = self._elems_in(g, pod)
        g.members.add(key)
        self._set_elements(g.sid, g.elements.union(elems))
        g.elements = self._set_elems[g.sid]
        touched: set[str] = set()
        for named in g.named.values():
            num = pod.named_ports.get((named.port_name, named.protocol))
            if num is None:
                continue
            bucket = named.by_number.get(num)
            if bucket is None:
                named.by_number[num] = {key}
                self._set_elements(named.sid(num), frozenset(elems))
                touched |= self._invalidate_named(named)
            else:
                bucket.add(key)
                sid = named.sid(num)
                self._set_elements(sid, self._set_elems[sid].union(elems))
        return touched

    def _group_remove(self, g: _Group, key: str, pod: PodInfo | None = None) -> set[str]:
        pod = pod or self._endpoint[key]
        if key not in g.members:
            return set()
        elems = self._elems_in(g, pod)
        g.members.discard(key)
        self._set_elements(g.sid, g.elements.difference(elems))
        g.elements = self._set_elems[g.sid]
        touched: set[str] = set()
        for named in g.named.values():
            num = pod.named_ports.get((named.port_name, named.protocol))
            bucket = named.by_number.get(num) if num is not None else None
            if bucket is None or key not in bucket:
                continue
            bucket.discard(key)
            sid = named.sid(num)  # type: ignore[arg-type]
            if bucket:
                self._set_elements(sid, self._set_elems[sid].difference(elems))
            else:
                del named.by_number[num]  # type: ignore[arg-type]
                self._set_elements(sid, frozenset())
                touched |= self._invalidate_named(named)
        return touched

    def _invalidate_named(self, named: _Named) -> set[str]:
        """A named port's set of resolved numbers changed: egress rules of its policies change."""
        self._invalidate_chains()
        touched: set[str] = set()
        for pkey in named.policies:
            pol = self._policies.get(pkey)
            if pol is not None:
                touched |= self._selected(pol)
        return touched

    # ---------------------------------------------------------------- policies

    def _set_policy(self, obj: Mapping[str, Any], invalidate: bool = False, loading: bool = False) -> set[str]:
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        try:
            pol = parse_policy(obj)
        except PolicyError as e:
            touched = self._remove_policy(key, invalidate)
            self._rejected[key] = Rejection(f"NetworkPolicy {key}", e.field, e.message)
            return touched
        clash = self._set_id_clash(pol)
        if clash is not None:
            touched = self._remove_policy(key, invalidate)
            self._rejected[key] = Rejection(f"NetworkPolicy {key}", *clash)
            return touched
        self._ensure_namespace(pol.namespace)
        # Reference the new version's groups before releasing the old version's, so groups
        # both use survive the update instead of being rebuilt.
        self._ref_policy_groups(pol)
        touched = self._remove_policy(key, invalidate)
        self._policies[key] = pol
        self._applied.setdefault(pol.namespace, {}).setdefault(pol.pod_selector, set()).add(key)
        for d, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            if rules is not None:
                self._applied_dir[d].setdefault(pol.namespace, {}).setdefault(pol.pod_selector, set()).add(key)
        if invalidate:
            self._invalidate_chains()
        if loading:
            return touched  # every pod is compiled once after loading
        return touched | self._selected(pol)

    def _set_id_clash(self, pol: Policy) -> tuple[str, str] | None:
        """(field, message) when a peer's set id already names a different peer's set: two
        definitions are never merged under one id (one tenant's peer would open another's)."""
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            section = "spec.ingress" if direction is Direction.INGRESS else "spec.egress"
            for i, rule in enumerate(rules or ()):
                for j, base in enumerate(self._rule_bases(rule, direction)):
                    g = self._groups.get(self._peer_sid(base))
                    if g is not None and _group_definition(g) != _peer_definition(base):
                        return (
                            f"{section}[{i}] peer {j}",
                            f"its address set id {g.sid} already names a different peer's set; refused, "
                            "not merged (an id collision: report it as a bug)",
                        )
        return None

    def _ref_policy_groups(self, pol: Policy) -> None:
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            for rule in rules or ():
                for base in self._rule_bases(rule, direction):
                    g = self._ref_group(base)
                    if direction is Direction.EGRESS and rule.has_named_ports:
                        for p in rule.ports or ():
                            if isinstance(p.port, str):
                                self._ref_named(g, p.port, p.protocol, pol.key)

    def _remove_policy(self, key: str, invalidate: bool) -> set[str]:
        self._rejected.pop(key, None)
        pol = self._policies.pop(key, None)
        if pol is None:
            return set()
        for d in Direction:
            by_sel = self._applied_dir[d].get(pol.namespace, {})
            keys = by_sel.get(pol.pod_selector)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del by_sel[pol.pod_selector]
        sel = self._applied[pol.namespace][pol.pod_selector]
        sel.discard(key)
        if not sel:
            del self._applied[pol.namespace][pol.pod_selector]
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            for rule in rules or ():
                for base in self._rule_bases(rule, direction):
                    gid = self._peer_sid(base)
                    g = self._groups[gid]
                    if direction is Direction.EGRESS and rule.has_named_ports:
                        for p in rule.ports or ():
                            if isinstance(p.port, str):
                                self._unref_named(g, p.port, p.protocol, key)
                    self._unref_group(gid)
        if invalidate:
            self._invalidate_chains()
        return self._selected(pol)

    def _selected(self, pol: Policy) -> set[str]:
        return {k for k in self._pods_by_ns.get(pol.namespace, ()) if pol.pod_selector.matches(self._pods[k].labels)}

    @staticmethod
    def _rule_bases(rule: PolicyRule, direction: Direction) -> list[Peer | None]:
        """The groups a rule needs: one per peer; for egress named ports with any peer, 'all'."""
        if rule.peers is not None:
            return list(rule.peers)
        if direction is Direction.EGRESS and rule.has_named_ports:
            return [None]
        return []

    def _peer_sid(self, peer: Peer | None) -> str:
        return _peer_sid(peer)

    def _ref_group(self, peer: Peer | None) -> _Group:
        gid = self._peer_sid(peer)
        g = self._groups.get(gid)
        if g is None:
            g = self._new_group(gid, peer)
        g.refs += 1
        return g

    def _new_group(self, gid: str, peer: Peer | None) -> _Group:
        if peer is None:
            g = _Group(gid, "all")
            self._global_groups.add(gid)
            self._groups[gid] = g
            self._fill(g, self._endpoint)
            return g
        if isinstance(peer, IPBlockPeer):
            g = _Group(gid, "ipblock", block=peer)
            g.elements = frozenset(peer.networks())
            self._groups[gid] = g
            self._set_elements(gid, g.elements)
            return g
        g = _Group(
            gid,
            "pods",
            namespace=peer.namespace,
            pod_selector=peer.pod_selector,
            ns_selector=peer.ns_selector,
        )
        self._groups[gid] = g
        self._set_elements(gid, frozenset())
        if peer.ns_selector is None:
            self._groups_in_ns.setdefault(peer.namespace, set()).add(gid)
            namespaces: Iterable[str] = [peer.namespace]
        else:
            self._ns_group_index.add(gid, peer.ns_selector)
            namespaces = []
            for ns in self._ns_labels.candidates(peer.ns_selector):
                if peer.ns_selector.matches(self._ns[ns].labels):
                    g.matched_ns.add(ns)
                    self._ns_groups_matching.setdefault(ns, set()).add(gid)
                    namespaces.append(ns)
        sel = peer.pod_selector
        self._fill(
            g,
            (
                k
                for ns in namespaces
                for k in self._pods_by_ns.get(ns, ())
                if k in self._endpoint and (sel is None or sel.matches(self._pods[k].labels))
            ),
        )
        return g

    def _fill(self, g: _Group, keys: Iterable[str]) -> None:
        """Set a new group's members in one go (adding one by one would copy the set each time)."""
        g.members = set(keys)
        eps = self._endpoint
        if g.kind == "ipmembers":
            g.elements = frozenset(e for k in g.members for e in self._elems_in(g, eps[k]))
        else:
            g.elements = frozenset(e for k in g.members for e in eps[k].elems)
        self._set_elements(g.sid, g.elements)

    def _unref_group(self, gid: str) -> None:
        g = self._groups[gid]
        g.refs -= 1
        if g.refs > 0:
            return
        del self._groups[gid]
        self._set_elems.pop(gid, None)
        self._dirty_sets.discard(gid)
        if g.kind == "all" or g.kind == "ipmembers":
            self._global_groups.discard(gid)
        elif g.kind == "pods":
            if g.ns_selector is None:
                self._groups_in_ns.get(g.namespace or "", set()).discard(gid)
            else:
                self._ns_group_index.remove(gid, g.ns_selector)
                for ns in g.matched_ns:
                    self._ns_groups_matching.get(ns, set()).discard(gid)

    def _ref_named(self, base: _Group, name: str, protocol: Protocol, policy: str) -> None:
        if base.kind == "ipblock":
            # Named ports resolve against pods: use the pods inside the block.
            assert base.block is not None
            mid = _members_sid(base.block)
            mg = self._groups.get(mid)
            if mg is None:
                mg = _Group(mid, "ipmembers", block=base.block)
                self._groups[mid] = mg
                self._global_groups.add(mid)
                self._fill(mg, (k for k, ep in self._endpoint.items() if self._pod_in_group(mg, ep)))
            mg.refs += 1
            base = mg
        named = base.named.get((name, protocol))
        if named is None:
            named = _Named(base, name, protocol)
            base.named[(name, protocol)] = named
            for k in base.members:
                num = self._endpoint[k].named_ports.get((name, protocol))
                if num is not None:
                    named.by_number.setdefault(num, set()).add(k)
            eps = self._endpoint
            for num, keys in named.by_number.items():
                self._set_elements(named.sid(num), frozenset(e for k in keys for e in self._elems_in(base, eps[k])))
        named.policies[policy] = named.policies.get(policy, 0) + 1

    def _unref_named(self, base: _Group, name: str, protocol: Protocol, policy: str) -> None:
        if base.kind == "ipblock":
            assert base.block is not None
            mid = _members_sid(base.block)
            mg = self._groups[mid]
            self._drop_named(mg, name, protocol, policy)
            self._unref_group(mid)
            return
        self._drop_named(base, name, protocol, policy)

    def _drop_named(self, base: _Group, name: str, protocol: Protocol, policy: str) -> None:
        named = base.named.get((name, protocol))
        if named is None:
            return
        n = named.policies.get(policy, 0) - 1
        if n > 0:
            named.policies[policy] = n
        else:
            named.policies.pop(policy, None)
        if not named.policies:
            del base.named[(name, protocol)]
            for num in named.by_number:
                self._set_elems.pop(named.sid(num), None)

    def _named_for(self, peer: Peer | None, name: str, protocol: Protocol) -> _Named | None:
        gid = self._peer_sid(peer)
        g = self._groups.get(gid)
        if g is None:
            return None
        if g.kind == "ipblock":
            assert g.block is not None
            g = self._groups.get(_members_sid(g.block))
            if g is None:
                return None
        return g.named.get((name, protocol))

    # ---------------------------------------------------------------- sets

    def _set_elements(self, sid: str, elems: frozenset[str]) -> None:
        self._set_elems[sid] = elems
        if self._set_nodes.get(sid):
            self._dirty_sets.add(sid)

    def _flush_sets(self) -> None:
        for sid in self._dirty_sets:
            elems = self._set_elems.get(sid)
            if elems is None:
                continue
            for node in self._set_nodes.get(sid, ()):
                model = self._models[node]
                if model.sets.get(sid) != elems:
                    self._record("sets", node, sid, model.sets)
                    model.sets[sid] = elems
        self._dirty_sets.clear()

    # ---------------------------------------------------------------- compiling one pod

    def _applying(self, pod: PodInfo) -> tuple[list[str], list[str]]:
        """Keys of the policies isolating the pod for ingress, and for egress."""
        ing, eg = (
            [
                k
                for sel, ks in self._applied_dir[d].get(pod.namespace, {}).items()
                if sel.matches(pod.labels)
                for k in ks
            ]
            for d in (Direction.INGRESS, Direction.EGRESS)
        )
        return ing, eg

    def _pod_chains(self, pod: PodInfo) -> tuple[Chain | None, Chain | None]:
        """The pod's ingress and egress chains (None: not isolated in that direction).

        Cached by the set of applied-to selectors the pod matches, not by policy keys: pods that
        match the same selectors share chains, and the cost per pod does not grow with the number
        of policies behind those selectors (10,000 policies on one selector cost one lookup).
        """
        labels = pod.labels
        ns = pod.namespace
        chains: list[Chain | None] = []
        for direction in (Direction.INGRESS, Direction.EGRESS):
            matched = [(sel, ks) for sel, ks in self._applied_dir[direction].get(ns, {}).items() if sel.matches(labels)]
            if not matched and not (direction is Direction.INGRESS and self.beta_isolated(ns)):
                chains.append(None)
                continue
            gk = (direction, ns, tuple(sel.canon for sel, _ in matched))
            group = self._group_cache.get(gk)
            if group is None:
                keys = sorted(k for _, ks in matched for k in ks)
                pols = [self._policies[k] for k in keys]
                named = direction is Direction.INGRESS and any(r.has_named_ports for p in pols for r in p.ingress or ())
                group = (pols, named)
                if len(keys) > 16:  # worth keeping only where many policies share selectors
                    self._group_cache[gk] = group
            pols, named = group
            chains.append(self._chain(direction, gk, pols, pod, pod.port_signature() if named else None))
        return chains[0], chains[1]

    def _chain(self, direction: Direction, gk: tuple[Any, ...], pols: list[Policy], pod: PodInfo, ports: Any) -> Chain:
        ck = (direction, gk, ports)
        chain = self._chain_cache.get(ck)
        if chain is None:
            ingress = direction is Direction.INGRESS
            rules: set[Rule] = set()
            cap = self.limits.max_rules_per_chain
            left_out: list[str] = []
            for p in pols:  # in key order: the policy that would push the chain over is left out
                mine: set[Rule] = set()
                for rule in (p.ingress if ingress else p.egress) or ():
                    mine.update(self._compile_rule(rule, direction, pod))
                if len(rules) + len(mine - rules) > cap:
                    left_out.append(p.key)
                    continue
                rules |= mine
            chain = Chain.of(direction, rules)
            self._chain_cache[ck] = chain
            if left_out:
                self._chain_left_out[ck] = tuple(left_out)
        for key in self._chain_left_out.get(ck, ()):
            self._leaving.append((direction, key))
        return chain

    def _invalidate_chains(self) -> None:
        self._chain_cache.clear()
        self._chain_left_out.clear()
        self._group_cache.clear()

    def _compile_rule(self, rule: PolicyRule, direction: Direction, pod: PodInfo) -> list[Rule]:
        out: list[Rule] = []
        ports: tuple[PortMatch, ...] | None
        named: list[tuple[str, Protocol]] = []
        if rule.ports is None:
            ports = None
        else:
            matches: list[PortMatch] = []
            for p in rule.ports:
                if p.port is None:
                    matches.append(PortMatch(p.protocol))
                elif isinstance(p.port, int):
                    matches.append(PortMatch(p.protocol, p.port, p.end_port if p.end_port != p.port else None))
                elif direction is Direction.INGRESS:
                    num = pod.named_ports.get((p.port, p.protocol))
                    if num is not None:
                        matches.append(PortMatch(p.protocol, num))
                else:
                    named.append((p.port, p.protocol))
            ports = tuple(sorted(set(matches), key=_port_key))
            if not ports and not named:
                return []  # only named ports, none of which resolve: the rule allows nothing
        if ports is None or ports:
            if rule.peers is None:
                out.append(Rule(None, ports))
            else:
                out.extend(Rule(self._peer_sid(peer), ports) for peer in rule.peers)
        for name, proto in named:
            for peer in rule.peers if rule.peers is not None else [None]:
                nm = self._named_for(peer, name, proto)
                if nm is None:
                    continue
                for num in nm.by_number:
                    out.append(Rule(nm.sid(num), (PortMatch(proto, num),)))
        return out

    def _refresh_pod(self, key: str) -> None:
        pod = self._endpoint.get(key)
        desired: tuple[str, tuple[str, ...], str | None, str | None] | None = None
        left_out: dict[str, tuple[str, str]] = {}
        refused = self._isolated.get(key) if pod is None else None
        if refused is not None and refused.node:
            desired = (
                refused.node,
                refused.ips,
                self._intern(refused.node, self._deny_all(refused.node, Direction.INGRESS)),
                self._intern(refused.node, self._deny_all(refused.node, Direction.EGRESS)),
            )
        elif pod is not None and pod.node:
            self._leaving = []
            in_chain, eg_chain = self._pod_chains(pod)
            cap = self.limits.max_rules_per_chain
            for direction, pkey in self._leaving:
                left_out[pkey] = (
                    "rules_per_chain",
                    f"its {direction} rules would push the pod's chain over the limit of {cap} rules per chain",
                )
            in_chain = self._collision_free(pod, Direction.INGRESS, in_chain, left_out)
            eg_chain = self._collision_free(pod, Direction.EGRESS, eg_chain, left_out)
            desired = (
                pod.node,
                pod.ips,
                self._intern(pod.node, in_chain),
                self._intern(pod.node, eg_chain),
            )
        if left_out:
            self._left_out[key] = left_out
        else:
            self._left_out.pop(key, None)
        current = self._placement.get(key)
        if current == desired:
            if desired is not None:
                # _intern took references for the chains; give back the extra ones.
                self._release(desired[0], desired[2])
                self._release(desired[0], desired[3])
            return
        if current is not None:
            node, ips, ic, ec = current
            for ip in ips:
                self._set_dispatch(node, Direction.INGRESS, ip, None, key)
                self._set_dispatch(node, Direction.EGRESS, ip, None, key)
            self._release(node, ic)
            self._release(node, ec)
            del self._placement[key]
        if desired is not None:
            node, ips, ic, ec = desired
            for ip in ips:  # every address of the pod dispatches to the same chains
                self._set_dispatch(node, Direction.INGRESS, ip, ic, key)
                self._set_dispatch(node, Direction.EGRESS, ip, ec, key)
            self._placement[key] = desired

    def _collision_free(
        self, pod: PodInfo, direction: Direction, chain: Chain | None, left_out: dict[str, tuple[str, str]]
    ) -> Chain | None:
        """``chain``, or a chain allowing nothing when its id already names other content on the
        pod's node: two contents are never merged under one id, and the gap fails closed."""
        if chain is None:
            return None
        model = self._models.get(pod.node or "")
        held = model.chains.get(chain.id) if model is not None else None
        if held is None or held == chain:
            return chain
        ing, eg = self._applying(pod)
        for pkey in ing if direction is Direction.INGRESS else eg:
            left_out[pkey] = ("id_collision", f"its {direction} chain's id {chain.id} names another chain on the node")
        return self._deny_all(pod.node or "", direction)

    def _deny_all(self, node: str, direction: Direction) -> Chain:
        """The chain allowing nothing (the agent's deny tail logs and counts every drop)."""
        deny = Chain.of(direction, ())
        model = self._models.get(node)
        held = model.chains.get(deny.id) if model is not None else None
        if held is not None and held != deny:
            raise RuntimeError(f"chain id {deny.id} collides with the deny-all chain's; refusing to compile")
        return deny

    # ---------------------------------------------------------------- node model mutation

    def _node(self, node: str) -> NodeModel:
        m = self._models.get(node)
        if m is None:
            m = self._models[node] = NodeModel(node)
            self._chain_refs[node] = {}
            self._set_refs[node] = {}
        return m

    def _record(self, kind: str, node: str, key: str, current: Mapping[str, Any]) -> None:
        j = self._journal
        if j is None:
            return
        book: dict[str, dict[str, Any]] = getattr(j, kind)
        entries = book.setdefault(node, {})
        if key not in entries:
            entries[key] = current.get(key, _MISSING)

    def _intern(self, node: str, chain: Chain | None) -> str | None:
        """Take a reference on ``chain`` in ``node``'s model, adding it (and its sets) if new."""
        if chain is None:
            return None
        model = self._node(node)
        cid = chain.id
        refs = self._chain_refs[node]
        n = refs.get(cid, 0)
        refs[cid] = n + 1
        if n == 0:
            self._record("chains", node, cid, model.chains)
            model.chains[cid] = chain
            srefs = self._set_refs[node]
            for sid in chain.set_refs():
                c = srefs.get(sid, 0)
                srefs[sid] = c + 1
                if c == 0:
                    self._record("sets", node, sid, model.sets)
                    model.sets[sid] = self._set_elems.get(sid, frozenset())
                    self._set_nodes.setdefault(sid, set()).add(node)
        return cid

    def _release(self, node: str, cid: str | None) -> None:
        if cid is None:
            return
        model = self._models[node]
        refs = self._chain_refs[node]
        n = refs[cid] - 1
        if n > 0:
            refs[cid] = n
            return
        del refs[cid]
        chain = model.chains[cid]
        self._record("chains", node, cid, model.chains)
        del model.chains[cid]
        srefs = self._set_refs[node]
        for sid in chain.set_refs():
            c = srefs[sid] - 1
            if c > 0:
                srefs[sid] = c
                continue
            del srefs[sid]
            self._record("sets", node, sid, model.sets)
            del model.sets[sid]
            nodes = self._set_nodes.get(sid)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del self._set_nodes[sid]

    def _set_dispatch(self, node: str, direction: Direction, ip: str, cid: str | None, owner: str) -> None:
        model = self._node(node)
        table = model.dispatch(direction)
        okey = (node, ip, direction)
        kind = "ingress" if direction is Direction.INGRESS else "egress"
        if cid is None:
            if self._dispatch_owner.get(okey) == owner:
                self._record(kind, node, ip, table)
                table.pop(ip, None)
                del self._dispatch_owner[okey]
            return
        if table.get(ip) != cid:
            self._record(kind, node, ip, table)
            table[ip] = cid
        self._dispatch_owner[okey] = owner
