"""The tier compiler: the ClusterNetworkPolicies selecting a pod, compiled into its Admin and
Baseline chains (one per direction), with the policy rule behind every chain rule.

Per pod, direction and tier: the policies of that tier whose subject selects the pod, by
priority then name (`ClusterNetworkPolicy.order`), their rules in written order, each rule one
model rule per peer, all with the rule's action: consecutive rules of one action are "any of
these peers", so first-match order is kept. A rule that fails closed (`cnp.Rule.unknown`)
becomes "Deny all" (Deny, Pass) or nothing (Accept). A pod isolated by a NetworkPolicy in a
direction gets no Baseline chain there: the NetworkPolicy verdict is final.

Peers share the address groups of NetworkPolicy peers (a ``pods`` peer is the set of a
``namespaceSelector`` + ``podSelector`` NetworkPolicy peer; ``networks`` an ipBlock's; ``nodes``
a set of node addresses), so a pod joining one is one element change on the nodes that hold it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stockade.brain.engine.api import RuleOrigin
from stockade.brain.engine.cnp import (
    Action as CnpAction,
)
from stockade.brain.engine.cnp import (
    ClusterNetworkPolicy,
    NamedPort,
    Namespaces,
    Networks,
    Nodes,
    Pods,
    PortRange,
    Subject,
)
from stockade.brain.engine.cnp import (
    Peer as CnpPeer,
)
from stockade.brain.engine.cnp import (
    Rule as CnpRule,
)
from stockade.brain.engine.cnp import (
    Tier as CnpTier,
)
from stockade.brain.engine.groups import AddressGroups
from stockade.brain.engine.objects import PodInfo
from stockade.brain.engine.policy import IPBlockPeer, NodePeer, PodPeer
from stockade.brain.engine.selectors import Selector
from stockade.brain.engine.store import Store
from stockade.model import Action, Chain, Direction, PortMatch, Protocol, Rule, Tier
from stockade.model.limits import NodeLimits

ModelPeer = PodPeer | IPBlockPeer | NodePeer
TIER_OF = {CnpTier.ADMIN: Tier.ADMIN, CnpTier.BASELINE: Tier.BASELINE}
ACTION_OF = {CnpAction.ACCEPT: Action.ACCEPT, CnpAction.DENY: Action.DENY, CnpAction.PASS: Action.PASS}
PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
DENY_ALL = Rule(None, None, Action.DENY)
# Tier chains' origins are kept by chain id; a bound so retired ids do not pile up for ever.
_ORIGINS_MAX = 1 << 16

TierChains = dict[tuple[Tier, Direction], Chain]


def named_key(cnp: ClusterNetworkPolicy) -> str:
    """The key a policy's named-port slices are referenced under (NetworkPolicies use theirs)."""
    return f"cnp:{cnp.name}"


def model_peers(peer: CnpPeer) -> list[ModelPeer]:
    """The address groups a peer is made of."""
    if isinstance(peer, Namespaces):
        return [PodPeer("", None, peer.namespace_selector)]
    if isinstance(peer, Pods):
        return [PodPeer("", peer.pod_selector, peer.namespace_selector)]
    if isinstance(peer, Networks):
        return [IPBlockPeer(c, ()) for c in peer.cidrs]
    assert isinstance(peer, Nodes)
    return [NodePeer(peer.node_selector)]


def _rules(cnp: ClusterNetworkPolicy, direction: Direction) -> tuple[CnpRule, ...]:
    return cnp.ingress if direction is Direction.INGRESS else cnp.egress


def _named(rule: CnpRule) -> list[str]:
    return [p.name for p in rule.protocols or () if isinstance(p, NamedPort)]


def subject_selects(subject: Subject, ns_labels: Any, pod_labels: Any) -> bool:
    if not subject.namespace_selector.matches(ns_labels):
        return False
    return not isinstance(subject, Pods) or subject.pod_selector.matches(pod_labels)


class TierCompiler:
    def __init__(self, store: Store, groups: AddressGroups, limits: NodeLimits) -> None:
        self._store = store
        self._groups = groups
        self._limits = limits
        # namespace -> the policies whose subject's namespaceSelector matches it (None: rebuild);
        # then (those policies, pod labels) -> per tier the names selecting the pod, in order
        self._ns_match: dict[str, frozenset[str]] | None = None
        self._subjects: dict[tuple[frozenset[str], tuple[tuple[str, str], ...]], dict[Tier, tuple[str, ...]]] = {}
        self._chains: dict[tuple[Any, ...], tuple[Chain, tuple[RuleOrigin, ...]]] = {}
        self._pods: dict[tuple[Any, ...], TierChains] = {}  # pods alike -> their chains
        self._named_in: dict[tuple[Any, ...], bool] = {}
        self._origins: dict[str, tuple[RuleOrigin, ...]] = {}

    # ---------------------------------------------------------------- policies' references

    def clash(self, cnp: ClusterNetworkPolicy) -> tuple[str, str] | None:
        for direction in Direction:
            for rule in _rules(cnp, direction):
                for j, peer in enumerate(rule.peers):
                    for mp in model_peers(peer):
                        if not isinstance(mp, NodePeer) and self._groups.peer_clash(mp):
                            field = "from" if direction is Direction.INGRESS else "to"
                            return (
                                f"spec.{direction}[{rule.index}].{field}[{j}]",
                                f"its address set id {mp.sid} already names a different peer's set; refused, "
                                "not merged (an id collision: report it as a bug)",
                            )
        return None

    def add(self, cnp: ClusterNetworkPolicy) -> None:
        for direction, rule, mp in self._peers(cnp):
            self._groups.ref_peer(mp)
            if direction is Direction.EGRESS and isinstance(mp, PodPeer):
                for name in _named(rule):
                    for proto in PROTOCOLS:
                        self._groups.ref_named_peer(mp, name, proto, named_key(cnp))

    def remove(self, cnp: ClusterNetworkPolicy) -> None:
        for direction, rule, mp in self._peers(cnp):
            if direction is Direction.EGRESS and isinstance(mp, PodPeer):
                for name in _named(rule):
                    for proto in PROTOCOLS:
                        self._groups.unref_named_peer(mp, name, proto, named_key(cnp))
            self._groups.unref_peer(mp)

    @staticmethod
    def _peers(cnp: ClusterNetworkPolicy) -> Iterable[tuple[Direction, CnpRule, ModelPeer]]:
        for direction in Direction:
            for rule in _rules(cnp, direction):
                for peer in rule.peers:
                    for mp in model_peers(peer):
                        yield direction, rule, mp

    def invalidate(self) -> None:
        """A named port's numbers changed, or anything else the chains read: recompile."""
        self._ns_match = None
        self._subjects.clear()
        self._chains.clear()
        self._pods.clear()
        self._named_in.clear()

    def replaced(self, name: str, old: ClusterNetworkPolicy | None, new: ClusterNetworkPolicy | None) -> None:
        """Policy ``name`` went from ``old`` to ``new`` (either None: added, deleted): its
        namespaces follow, one index lookup (not a rebuild of every namespace's entry), and the
        compiled chains go (they are keyed by policy names, whose content changed)."""
        self._subjects.clear()
        self._chains.clear()
        self._pods.clear()
        self._named_in.clear()
        index = self._ns_match
        if index is None:
            return
        for cnp, present in ((old, False), (new, True)):
            if cnp is None:
                continue
            for ns in self._namespaces_of(cnp.subject.namespace_selector):
                names = set(index.get(ns, ()))
                if present:
                    names.add(name)
                else:
                    names.discard(name)
                index[ns] = frozenset(names)

    def namespace_changed(self, name: str) -> None:
        """A namespace came or changed its labels: which subjects it is in (the chains and the
        per-labels selections are functions of their keys, so they stay)."""
        if self._ns_match is not None:
            self._ns_match[name] = self._unindexed(name)

    def _namespaces_matching(self) -> dict[str, frozenset[str]]:
        """namespace -> policies whose namespaceSelector matches it: one index lookup per
        distinct selector, not one test per (namespace, policy)."""
        if self._ns_match is None:
            store = self._store
            by_selector: dict[Any, list[str]] = {}
            for cnp in store.cnps.values():
                by_selector.setdefault(cnp.subject.namespace_selector, []).append(cnp.name)
            found: dict[str, set[str]] = {}
            for sel, names in by_selector.items():
                for ns in self._namespaces_of(sel):
                    found.setdefault(ns, set()).update(names)
            self._ns_match = {ns: frozenset(v) for ns, v in found.items()}
        return self._ns_match

    # ---------------------------------------------------------------- subjects

    def selected(self, cnp: ClusterNetworkPolicy) -> set[str]:
        """The endpoint pods the policy's subject selects (host-network pods never are)."""
        store = self._store
        out = set()
        for ns in self._namespaces_of(cnp.subject.namespace_selector):
            ns_labels = store.ns[ns].labels
            for k in store.pods_by_ns.get(ns, ()):
                if k in store.endpoint and subject_selects(cnp.subject, ns_labels, store.pods[k].labels):
                    out.add(k)
        return out

    def _selecting(self, pod: PodInfo) -> tuple[Any, dict[Tier, tuple[str, ...]]]:
        """(a key for what the pod's subjects depend on, per tier the policies selecting it)."""
        in_ns = self._namespaces_matching().get(pod.namespace)
        if in_ns is None:
            in_ns = self._unindexed(pod.namespace)
        key = (in_ns, tuple(sorted(pod.labels.items())))
        found = self._subjects.get(key)
        if found is None:
            by_tier: dict[Tier, list[ClusterNetworkPolicy]] = {Tier.ADMIN: [], Tier.BASELINE: []}
            for name in in_ns:
                cnp = self._store.cnps[name]
                if not isinstance(cnp.subject, Pods) or cnp.subject.pod_selector.matches(pod.labels):
                    by_tier[TIER_OF[cnp.tier]].append(cnp)
            found = {t: tuple(c.name for c in sorted(cs, key=lambda c: c.order)) for t, cs in by_tier.items()}
            self._subjects[key] = found
        return key, found

    def _namespaces_of(self, sel: Selector) -> list[str]:
        """The namespaces ``sel`` matches: the label index's candidates, each tested."""
        store = self._store
        return [ns for ns in store.ns_labels.candidates(sel) if (i := store.ns.get(ns)) and sel.matches(i.labels)]

    def _unindexed(self, ns: str) -> frozenset[str]:
        """The policies whose namespaceSelector matches namespace ``ns``, tested one by one (a
        namespace the index does not hold yet, or one whose labels just changed)."""
        labels = self._store.namespace_info(ns).labels
        return frozenset(c.name for c in self._store.cnps.values() if c.subject.namespace_selector.matches(labels))

    # ---------------------------------------------------------------- chains

    def pod_chains(self, pod: PodInfo, np_ingress: bool, np_egress: bool) -> TierChains:
        """The pod's tier chains, by (tier, direction); absent: none (nothing selects the pod
        there, its policies have no rules in that direction, or NetworkPolicy decides)."""
        if not self._store.cnps:
            return {}
        skey, selecting = self._selecting(pod)
        # Pods alike (same subjects, same NetworkPolicy isolation) share the result, unless an
        # ingress rule's named port resolves on each pod.
        pkey = (skey, np_ingress, np_egress)
        hit = self._pods.get(pkey)
        if hit is not None:
            return hit
        out: TierChains = {}
        shared = True
        for tier, names in selecting.items():
            if not names:
                continue
            for direction in Direction:
                if tier is Tier.BASELINE and (np_ingress if direction is Direction.INGRESS else np_egress):
                    continue
                chain, per_pod = self._chain(tier, direction, names, pod)
                shared = shared and not per_pod
                if chain is not None:
                    out[tier, direction] = chain
        if shared:
            self._pods[pkey] = out
        return out

    def _per_pod(self, tier: Tier, direction: Direction, names: tuple[str, ...]) -> bool:
        """Whether these policies' chain differs per pod: an ingress named port (resolved on the subject)."""
        key = (tier, direction, names)
        found = self._named_in.get(key)
        if found is None:
            found = direction is Direction.INGRESS and any(
                _named(r) for n in names for r in self._store.cnps[n].ingress
            )
            self._named_in[key] = found
        return found

    def _chain(
        self, tier: Tier, direction: Direction, names: tuple[str, ...], pod: PodInfo
    ) -> tuple[Chain | None, bool]:
        """The chain (None: no rules), and whether it is the pod's own (`_per_pod`)."""
        per_pod = self._per_pod(tier, direction, names)
        chain = self._compiled(tier, direction, names, pod, per_pod)
        return (chain if chain.rules else None), per_pod

    def _compiled(self, tier: Tier, direction: Direction, names: tuple[str, ...], pod: PodInfo, per_pod: bool) -> Chain:
        cnps = [self._store.cnps[n] for n in names]
        key = (tier, direction, names, tuple(sorted(pod.named_ports.items())) if per_pod else None)
        hit = self._chains.get(key)
        if hit is None:
            rules: list[Rule] = []
            origins: list[RuleOrigin] = []
            for cnp in cnps:
                for rule in _rules(cnp, direction):
                    origin = RuleOrigin(
                        cnp.name,
                        cnp.tier.value,
                        cnp.priority,
                        direction.value,
                        rule.index,
                        rule.name,
                        rule.action.value,
                    )
                    mine = self.compile_rule(rule, direction, pod)
                    rules += mine
                    origins += [origin] * len(mine)
            cap = self._limits.max_rules_per_chain
            if len(rules) > cap:  # fails closed: what does not fit is denied
                rules, origins = [*rules[: cap - 1], DENY_ALL], origins[:cap]
            if not rules:
                self._chains[key] = hit = (Chain.ordered(direction, tier, ()), ())
            else:
                chain = Chain.ordered(direction, tier, rules)
                hit = (chain, tuple(origins[: len(chain.rules)]))
                self._chains[key] = hit
        chain, origins_of = hit
        if chain.rules and chain.id not in self._origins:
            if len(self._origins) >= _ORIGINS_MAX:
                del self._origins[next(iter(self._origins))]
            self._origins[chain.id] = origins_of
        return chain

    def compile_rule(self, rule: CnpRule, direction: Direction, pod: PodInfo) -> list[Rule]:
        """One policy rule as model rules for subject ``pod`` (named ports resolved)."""
        action = ACTION_OF[rule.action]
        if rule.unknown:  # a peer or protocol of a newer API: fail closed
            return [] if rule.action is CnpAction.ACCEPT else [DENY_ALL]
        ports: tuple[PortMatch, ...] | None = None
        named: list[str] = []
        if rule.protocols is not None:
            matches: list[PortMatch] = []
            for p in rule.protocols:
                if isinstance(p, PortRange):
                    matches.append(PortMatch(p.protocol, p.start, p.end if p.end != p.start else None))
                elif direction is Direction.INGRESS:  # the subject is the destination
                    for proto in PROTOCOLS:
                        num = pod.named_ports.get((p.name, proto))
                        if num is not None:
                            matches.append(PortMatch(proto, num))
                else:
                    named.append(p.name)
            ports = tuple(dict.fromkeys(matches))
            if not ports and not named:
                return []  # only named ports, none of which resolve: matches nothing
        out: list[Rule] = []
        peers = [mp for peer in rule.peers for mp in model_peers(peer)]
        if ports is None or ports:
            out += [Rule(mp.sid, ports, action) for mp in peers]
        for name in named:
            for mp in peers:
                if not isinstance(mp, PodPeer):
                    continue
                for proto in PROTOCOLS:
                    nm = self._groups.named_for(mp, name, proto)
                    if nm is None:
                        continue
                    out += [Rule(nm.sid(num), (PortMatch(proto, num),), action) for num in sorted(nm.by_number)]
        return out

    def origin(self, chain_id: str, index: int) -> RuleOrigin | None:
        origins = self._origins.get(chain_id)
        if origins is None or not 0 <= index < len(origins):
            return None
        return origins[index]
