"""Address groups: the pods (IPs) each peer definition selects, kept current as pods and namespaces change.

A group is keyed by its peer definition, so two policies naming the same peer share one set and a
pod joining it is one element change. Named-port slices split a group's members by the number a
named port resolves to on each. Groups write their elements to the `SetTable`; they never touch
a node's model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.engine.objects import NamespaceInfo, PodInfo
from stockade.brain.engine.policy import IPBlockPeer, NodePeer, Peer, Policy, PolicyRule, set_id
from stockade.brain.engine.selectors import Selector, SelectorIndex
from stockade.brain.engine.sets import SetTable
from stockade.brain.engine.store import EndpointChange, Store
from stockade.model import Direction, Protocol

ALL_SID = set_id("all")


def members_sid(block: IPBlockPeer) -> str:
    """The pods inside an ipBlock (to resolve named ports against them)."""
    return set_id("ipmembers", block.cidr, *block.excepts)


def peer_sid(peer: Peer | None) -> str:
    """The address set id of a peer definition (None: every pod, for egress named ports)."""
    return ALL_SID if peer is None else peer.sid


def rule_bases(rule: PolicyRule, direction: Direction) -> list[Peer | None]:
    """The groups a rule needs: one per peer; for egress named ports with any peer, 'all'."""
    if rule.peers is not None:
        return list(rule.peers)
    if direction is Direction.EGRESS and rule.has_named_ports:
        return [None]
    return []


def _canon_of(sel: Selector | None) -> str | None:
    return None if sel is None else sel.canon


def _peer_definition(peer: Peer | None) -> tuple[Any, ...]:
    """What a peer's address set holds, to tell two definitions apart under one id."""
    if peer is None:
        return ("all",)
    if isinstance(peer, IPBlockPeer):
        return ("ipblock", peer.cidr, peer.excepts)
    scope = peer.namespace if peer.ns_selector is None else None
    return ("pods", scope, _canon_of(peer.pod_selector), _canon_of(peer.ns_selector))


def _group_definition(g: Group) -> tuple[Any, ...]:
    if g.kind == "all":
        return ("all",)
    if g.kind == "ipblock" and g.block is not None:
        return ("ipblock", g.block.cidr, g.block.excepts)
    if g.kind == "pods":
        scope = g.namespace if g.ns_selector is None else None
        return ("pods", scope, _canon_of(g.pod_selector), _canon_of(g.ns_selector))
    return (g.kind, g.sid)  # named slices and ipmembers: never a policy peer's set


@dataclass
class Group:
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
    named: dict[tuple[str, Protocol], Named] = field(default_factory=dict)


@dataclass
class Named:
    """Members of a base group, split by what one named port resolves to on each of them."""

    base: Group
    port_name: str
    protocol: Protocol
    by_number: dict[int, set[str]] = field(default_factory=dict)
    policies: dict[str, int] = field(default_factory=dict)  # policy key -> references

    def sid(self, number: int) -> str:
        return set_id("named", self.base.sid, self.port_name, self.protocol.value, str(number))


def _elems_in(g: Group, pod: PodInfo) -> tuple[str, ...]:
    """The pod's set elements in group ``g``: all of them, or those inside the group's ipBlock."""
    if g.kind == "ipmembers":
        block = g.block
        assert block is not None
        return tuple(e for ip, e in zip(pod.ips, pod.elems, strict=True) if block.contains(ip))
    return pod.elems


class AddressGroups:
    """``named_changed`` is told when a named port's set of resolved numbers changes (the egress
    rules of its policies change) and returns the pods to refresh."""

    def __init__(self, store: Store, sets: SetTable, named_changed: Callable[[Named], set[str]]) -> None:
        self._store = store
        self._sets = sets
        self._named_changed = named_changed
        self.groups: dict[str, Group] = {}
        self._in_ns: dict[str, set[str]] = {}  # single-namespace pod groups
        self._ns_group_index = SelectorIndex()  # groups with a namespaceSelector
        self._ns_matching: dict[str, set[str]] = {}  # ns -> ns-selector groups matching it
        self._global: set[str] = set()  # "all" and "ipmembers" groups
        self._node_groups: dict[str, tuple[NodePeer, int]] = {}  # nodes peers: sid -> (peer, refs)

    # ---------------------------------------------------------------- membership

    def namespace_put(self, info: NamespaceInfo) -> set[str]:
        """A namespace was stored: update ns-selector group membership; return pods to refresh."""
        touched: set[str] = set()
        old_matching = self._ns_matching.get(info.name, set())
        new_matching = {
            gid
            for gid in self._ns_group_index.candidates(info.labels)
            if self.groups[gid].ns_selector.matches(info.labels)  # type: ignore[union-attr]
        }
        self._ns_matching[info.name] = new_matching
        if old_matching != new_matching:
            endpoint = self._store.endpoint
            pods = [k for k in self._store.pods_by_ns.get(info.name, ()) if k in endpoint]
            for gid in old_matching - new_matching:
                g = self.groups[gid]
                g.matched_ns.discard(info.name)
                for k in pods:
                    touched |= self._remove(g, k)
            for gid in new_matching - old_matching:
                g = self.groups[gid]
                g.matched_ns.add(info.name)
                for k in pods:
                    if self._pod_in_group(g, endpoint[k]):
                        touched |= self._add(g, k)
        return touched

    def namespace_gone(self, name: str) -> bool:
        """A deleted namespace with no pods and no policies is forgotten: it leaves the groups
        whose namespaceSelector matched it. False (nothing done) while a group is scoped to it."""
        if self._in_ns.get(name):
            return False
        self._in_ns.pop(name, None)
        for gid in self._ns_matching.pop(name, set()):
            self.groups[gid].matched_ns.discard(name)
        return True

    def follow(self, changes: list[EndpointChange]) -> set[str]:
        """Move pods between groups as their endpoint states changed; returns pods to refresh.

        Every removal before any addition: pods may hand addresses over, and a set element
        must not be removed after its new owner added it."""
        touched: set[str] = set()
        plans = [(k, b, c, self._membership_plan(k, b, c)) for k, b, c in changes]
        for k, before, _, plan in plans:
            for g, was, _ in plan:
                if was:
                    touched |= self._remove(g, k, before)
        for k, _, after, plan in plans:
            for g, _, joins in plan:
                if joins:
                    touched |= self._add(g, k, after)
        return touched

    def _pod_in_group(self, g: Group, pod: PodInfo) -> bool:
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
        elif g.sid not in self._ns_matching.get(pod.namespace, ()):
            return False
        return g.pod_selector is None or g.pod_selector.matches(pod.labels)

    def _candidates(self, ns: str) -> set[str]:
        return self._in_ns.get(ns, set()) | self._ns_matching.get(ns, set()) | self._global

    def _membership_plan(self, key: str, old: PodInfo | None, new: PodInfo | None) -> list[tuple[Group, bool, bool]]:
        """The groups pod ``key`` leaves (was) and joins (now) moving between endpoint states."""
        gids: set[str] = set()
        if old is not None:
            gids |= self._candidates(old.namespace)
        if new is not None:
            gids |= self._candidates(new.namespace)
        same_addr = old is not None and new is not None and old.ips == new.ips and old.named_ports == new.named_ports
        plan = []
        for gid in gids:
            g = self.groups[gid]
            was = old is not None and key in g.members
            now = new is not None and self._pod_in_group(g, new)
            if (was or now) and not (was and now and same_addr):
                plan.append((g, was, now))
        return plan

    def _add(self, g: Group, key: str, pod: PodInfo | None = None) -> set[str]:
        pod = pod or self._store.endpoint[key]
        sets = self._sets
        elems = _elems_in(g, pod)
        g.members.add(key)
        sets.put(g.sid, g.elements.union(elems))
        g.elements = sets.elems[g.sid]
        touched: set[str] = set()
        for named in g.named.values():
            num = pod.named_ports.get((named.port_name, named.protocol))
            if num is None:
                continue
            bucket = named.by_number.get(num)
            if bucket is None:
                named.by_number[num] = {key}
                sets.put(named.sid(num), frozenset(elems))
                touched |= self._named_changed(named)
            else:
                bucket.add(key)
                sid = named.sid(num)
                sets.put(sid, sets.elems[sid].union(elems))
        return touched

    def _remove(self, g: Group, key: str, pod: PodInfo | None = None) -> set[str]:
        pod = pod or self._store.endpoint[key]
        if key not in g.members:
            return set()
        sets = self._sets
        elems = _elems_in(g, pod)
        g.members.discard(key)
        sets.put(g.sid, g.elements.difference(elems))
        g.elements = sets.elems[g.sid]
        touched: set[str] = set()
        for named in g.named.values():
            num = pod.named_ports.get((named.port_name, named.protocol))
            bucket = named.by_number.get(num) if num is not None else None
            if bucket is None or key not in bucket:
                continue
            bucket.discard(key)
            sid = named.sid(num)  # type: ignore[arg-type]
            if bucket:
                sets.put(sid, sets.elems[sid].difference(elems))
            else:
                del named.by_number[num]  # type: ignore[arg-type]
                sets.retire(sid)  # no pod resolves the name to that number any more
                touched |= self._named_changed(named)
        return touched

    # ---------------------------------------------------------------- policies' references

    def clash(self, pol: Policy) -> tuple[str, str] | None:
        """(field, message) when a peer's set id already names a different peer's set: two
        definitions are never merged under one id (one tenant's peer would open another's)."""
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            section = "spec.ingress" if direction is Direction.INGRESS else "spec.egress"
            for i, rule in enumerate(rules or ()):
                for j, base in enumerate(rule_bases(rule, direction)):
                    g = self.groups.get(peer_sid(base))
                    if g is not None and _group_definition(g) != _peer_definition(base):
                        return (
                            f"{section}[{i}] peer {j}",
                            f"its address set id {g.sid} already names a different peer's set; refused, "
                            "not merged (an id collision: report it as a bug)",
                        )
        return None

    def ref_policy(self, pol: Policy) -> None:
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            for rule in rules or ():
                for base in rule_bases(rule, direction):
                    g = self._ref_group(base)
                    if direction is Direction.EGRESS and rule.has_named_ports:
                        for p in rule.ports or ():
                            if isinstance(p.port, str):
                                self._ref_named(g, p.port, p.protocol, pol.key)

    def unref_policy(self, pol: Policy) -> None:
        for direction, rules in ((Direction.INGRESS, pol.ingress), (Direction.EGRESS, pol.egress)):
            for rule in rules or ():
                for base in rule_bases(rule, direction):
                    gid = peer_sid(base)
                    g = self.groups[gid]
                    if direction is Direction.EGRESS and rule.has_named_ports:
                        for p in rule.ports or ():
                            if isinstance(p.port, str):
                                self._unref_named(g, p.port, p.protocol, pol.key)
                    self._unref_group(gid)

    def _ref_group(self, peer: Peer | None) -> Group:
        gid = peer_sid(peer)
        g = self.groups.get(gid)
        if g is None:
            g = self._new_group(gid, peer)
        g.refs += 1
        return g

    def _new_group(self, gid: str, peer: Peer | None) -> Group:
        store = self._store
        if peer is None:
            g = Group(gid, "all")
            self._global.add(gid)
            self.groups[gid] = g
            self._fill(g, store.endpoint)
            return g
        if isinstance(peer, IPBlockPeer):
            g = Group(gid, "ipblock", block=peer)
            g.elements = frozenset(peer.networks())
            self.groups[gid] = g
            self._sets.put(gid, g.elements)
            return g
        g = Group(
            gid,
            "pods",
            namespace=peer.namespace,
            pod_selector=peer.pod_selector,
            ns_selector=peer.ns_selector,
        )
        self.groups[gid] = g
        self._sets.put(gid, frozenset())
        if peer.ns_selector is None:
            self._in_ns.setdefault(peer.namespace, set()).add(gid)
            namespaces: Iterable[str] = [peer.namespace]
        else:
            self._ns_group_index.add(gid, peer.ns_selector)
            namespaces = []
            for ns in store.ns_labels.candidates(peer.ns_selector):
                if peer.ns_selector.matches(store.ns[ns].labels):
                    g.matched_ns.add(ns)
                    self._ns_matching.setdefault(ns, set()).add(gid)
                    namespaces.append(ns)
        sel = peer.pod_selector
        pods, endpoint = store.pods, store.endpoint
        self._fill(
            g,
            (
                k
                for ns in namespaces
                for k in store.pods_by_ns.get(ns, ())
                if k in endpoint and (sel is None or sel.matches(pods[k].labels))
            ),
        )
        return g

    def _fill(self, g: Group, keys: Iterable[str]) -> None:
        """Set a new group's members in one go (adding one by one would copy the set each time)."""
        g.members = set(keys)
        eps = self._store.endpoint
        if g.kind == "ipmembers":
            g.elements = frozenset(e for k in g.members for e in _elems_in(g, eps[k]))
        else:
            g.elements = frozenset(e for k in g.members for e in eps[k].elems)
        self._sets.put(g.sid, g.elements)

    def _unref_group(self, gid: str) -> None:
        g = self.groups[gid]
        g.refs -= 1
        if g.refs > 0:
            return
        del self.groups[gid]
        self._sets.drop(gid)
        if g.kind == "all" or g.kind == "ipmembers":
            self._global.discard(gid)
        elif g.kind == "pods":
            if g.ns_selector is None:
                scoped = self._in_ns.get(g.namespace or "")
                if scoped is not None:
                    scoped.discard(gid)
                    if not scoped:
                        del self._in_ns[g.namespace or ""]
            else:
                self._ns_group_index.remove(gid, g.ns_selector)
                for ns in g.matched_ns:
                    self._ns_matching.get(ns, set()).discard(gid)

    def _ref_named(self, base: Group, name: str, protocol: Protocol, policy: str) -> None:
        endpoint = self._store.endpoint
        if base.kind == "ipblock":
            # Named ports resolve against pods: use the pods inside the block.
            assert base.block is not None
            mid = members_sid(base.block)
            mg = self.groups.get(mid)
            if mg is None:
                mg = Group(mid, "ipmembers", block=base.block)
                self.groups[mid] = mg
                self._global.add(mid)
                self._fill(mg, (k for k, ep in endpoint.items() if self._pod_in_group(mg, ep)))
            mg.refs += 1
            base = mg
        named = base.named.get((name, protocol))
        if named is None:
            named = Named(base, name, protocol)
            base.named[(name, protocol)] = named
            for k in base.members:
                num = endpoint[k].named_ports.get((name, protocol))
                if num is not None:
                    named.by_number.setdefault(num, set()).add(k)
            for num, keys in named.by_number.items():
                self._sets.put(named.sid(num), frozenset(e for k in keys for e in _elems_in(base, endpoint[k])))
        named.policies[policy] = named.policies.get(policy, 0) + 1

    def _unref_named(self, base: Group, name: str, protocol: Protocol, policy: str) -> None:
        if base.kind == "ipblock":
            assert base.block is not None
            mid = members_sid(base.block)
            mg = self.groups[mid]
            self._drop_named(mg, name, protocol, policy)
            self._unref_group(mid)
            return
        self._drop_named(base, name, protocol, policy)

    def _drop_named(self, base: Group, name: str, protocol: Protocol, policy: str) -> None:
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
                self._sets.elems.pop(named.sid(num), None)

    # ---------------------------------------------------------------- ClusterNetworkPolicy peers

    def peer_clash(self, peer: Peer) -> bool:
        """Whether ``peer``'s set id already names a different definition's set (see `clash`)."""
        g = self.groups.get(peer.sid)
        return g is not None and _group_definition(g) != _peer_definition(peer)

    def ref_peer(self, peer: Peer | NodePeer) -> None:
        if isinstance(peer, NodePeer):
            peer_held = self._node_groups.get(peer.sid)
            refs = peer_held[1] if peer_held is not None else 0
            self._node_groups[peer.sid] = (peer, refs + 1)
            if refs == 0:
                self._sets.put(peer.sid, self._node_elems(peer))
            return
        self._ref_group(peer)

    def unref_peer(self, peer: Peer | NodePeer) -> None:
        if isinstance(peer, NodePeer):
            held, refs = self._node_groups[peer.sid]
            if refs > 1:
                self._node_groups[peer.sid] = (held, refs - 1)
            else:
                del self._node_groups[peer.sid]
                self._sets.drop(peer.sid)
            return
        self._unref_group(peer.sid)

    def ref_named_peer(self, peer: Peer, name: str, protocol: Protocol, key: str) -> None:
        """A named port resolved on ``peer``'s pods (its group referenced by `ref_peer` first)."""
        self._ref_named(self.groups[peer.sid], name, protocol, key)

    def unref_named_peer(self, peer: Peer, name: str, protocol: Protocol, key: str) -> None:
        self._unref_named(self.groups[peer.sid], name, protocol, key)

    def _node_elems(self, peer: NodePeer) -> frozenset[str]:
        sel = peer.node_selector
        return frozenset(e for n in self._store.node_info.values() if sel.matches(n.labels) for e in n.elems())

    def nodes_changed(self) -> None:
        """A node came, went or changed its labels or addresses: the nodes peers follow."""
        for sid, (peer, _) in self._node_groups.items():
            elems = self._node_elems(peer)
            if self._sets.get(sid) != elems:
                self._sets.put(sid, elems)

    # ---------------------------------------------------------------- queries

    def named_for(self, peer: Peer | None, name: str, protocol: Protocol) -> Named | None:
        """The named-port slices of a peer's group (None: no policy resolves that name there)."""
        g = self.groups.get(peer_sid(peer))
        if g is None:
            return None
        if g.kind == "ipblock":
            assert g.block is not None
            g = self.groups.get(members_sid(g.block))
            if g is None:
                return None
        return g.named.get((name, protocol))
