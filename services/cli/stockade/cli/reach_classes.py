"""`stockade reach` at scale: verdicts per equivalence class of pods, not per pair.

Two pods are in one class when the compiled models cannot tell them apart: same declared
ports, same IP families in the same order, and for each of their addresses the same chains in
their node's dispatch and membership in the same sets (which is all `decide` reads). Sets and
chains are compared by content, not by node and id, so pods of one deployment on different
nodes share a class when their nodes' models say the same about them (else 100 nodes would make
nearly every pod a class of its own). The verdict is `decide`'s, read with those memberships (a set lookup, not
a scan of every element of the set: the scan is what made 10,000 pods slow). One pair of
representatives gives the verdict for every pair of members, so the work is classes squared
times ports, while the output stays one probe per pod pair, in the order of
`reachability.reach` (destination, then port, then source, then family).

A pair with a host-network end on the other end's node is the pod's own node (`decide`'s
``own_node``): class does not see it, so those pairs (few: the pods of one node with its
host-network pods) get their own entries in a row, cached per class pair too.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from stockade.brain.admin.reachability import Probe, reach_pods
from stockade.brain.engine import Engine
from stockade.brain.engine.objects import PodInfo
from stockade.model import TIERS, Action, Direction, Protocol, Rule, Tier
from stockade.model.evaluate import FAMILY_NAMES, ip_version

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Membership:
    """Which sets hold an address: exact elements by lookup, prefixes by scan."""

    def __init__(self, sets: dict[frozenset[str], int]) -> None:
        self.exact: dict[Address, list[int]] = defaultdict(list)
        self.prefixes: list[tuple[Network, int]] = []
        for elements, sid in sets.items():
            for element in elements:
                net = ipaddress.ip_network(element, strict=False)
                if net.prefixlen == net.max_prefixlen:
                    self.exact[net.network_address].append(sid)
                else:
                    self.prefixes.append((net, sid))

    def of(self, ip: str) -> frozenset[int]:
        addr = ipaddress.ip_address(ip)
        found = set(self.exact.get(addr, ()))
        found.update(sid for net, sid in self.prefixes if net.version == addr.version and addr in net)
        return frozenset(found)


NO_SET = -1  # a rule naming a set its model lacks: `in_set` finds nothing in it
CanonChain = tuple[tuple[int | None, Rule], ...]


@dataclass
class Row:
    """The probes towards one destination (``pods[index]``) on one port: a source of class ``c``
    gets ``by_class[c]``, a list of (family, allowed) in the order the pair's families are
    checked; the destination itself gets ``own`` (self-traffic is never filtered). ``host``:
    the destination is a host-network pod. ``pairs``: the sources whose pair with the
    destination is own-node (one end a host-network pod on the other's node), by pod index:
    their entries instead of their class's."""

    dst: PodInfo
    index: int
    port: int
    protocol: Protocol
    by_class: list[list[tuple[str, bool]]]
    own: list[tuple[str, bool]]
    host: bool = False
    pairs: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)

    def entries(self, i: int, c: int) -> list[tuple[str, bool]]:
        """The entries of source ``i`` (of class ``c``)."""
        if i == self.index:
            return self.own
        return self.pairs[i] if i in self.pairs else self.by_class[c]


class Classes:
    def __init__(self, engine: Engine, families: Iterable[int] | None = None) -> None:
        self.engine = engine
        self.models = {n: engine.model(n) for n in engine.nodes()}
        self.pods = reach_pods(engine)  # endpoints and host-network pods
        self.wanted = set(families) if families else {4, 6}
        canon: dict[frozenset[str], int] = {}
        self.set_id: dict[tuple[str, str], int] = {}  # (node, set) -> the id of its content
        for node, model in self.models.items():
            for sid, elements in model.sets.items():
                self.set_id[(node, sid)] = canon.setdefault(frozenset(elements), len(canon))
        self.chains: dict[tuple[str, str], CanonChain] = {}  # (node, chain) -> its rules, sets by content
        chain_ids: dict[tuple[object, ...], int] = {}
        self.chain_id: dict[tuple[str, str], int] = {}
        for node, model in self.models.items():
            for chain_name, chain in model.chains.items():
                rules = tuple(
                    (None if r.peer is None else self.set_id.get((node, r.peer), NO_SET), r) for r in chain.rules
                )
                self.chains[(node, chain_name)] = rules
                self.chain_id[(node, chain_name)] = chain_ids.setdefault(
                    (chain.tier, tuple((p, r.ports, r.action) for p, r in rules)), len(chain_ids)
                )
        member = _Membership(canon)
        ids: dict[tuple[object, ...], int] = {}
        self.member = member
        self._sets: dict[str, frozenset[int]] = {}
        self.of: list[int] = []  # class id of each pod
        self.members: list[list[int]] = []
        self.class_host: list[bool] = []  # per class: host-network pods (their own classes)
        for i, ep in enumerate(self.pods):
            key = self._key(ep, member)
            cid = ids.setdefault(key, len(ids))
            if cid == len(self.members):
                self.members.append([])
                self.class_host.append(ep.host_network)
            self.members[cid].append(i)
            self.of.append(cid)
        self.on_node: dict[str, list[int]] = defaultdict(list)  # node -> its pods' indices
        self.hosts_on: dict[str, list[int]] = defaultdict(list)  # node -> its host-network pods'
        for i, ep in enumerate(self.pods):
            assert ep.node
            self.on_node[ep.node].append(i)
            if ep.host_network:
                self.hosts_on[ep.node].append(i)
        self._cache: dict[tuple[int, int, int, Protocol], list[tuple[str, bool]]] = {}
        self._own_cache: dict[tuple[int, int, int, Protocol], list[tuple[str, bool]]] = {}

    def _in_sets(self, ip: str) -> frozenset[int]:
        if ip not in self._sets:
            self._sets[ip] = self.member.of(ip)
        return self._sets[ip]

    def _decide(
        self, node: str, direction: Direction, pod_ip: str, peer_ip: str, proto: Protocol, port: int, own: bool = False
    ) -> bool:
        """`evaluate.decide(...).allowed`, with the peer's set memberships looked up: the tiers
        in order, the first matching rule of a tier chain deciding (Pass: the next tier).
        ``own``: the peer is the pod's own node (`decide`'s ``own_node``)."""
        model = self.models.get(node)
        if model is None or (own and direction is Direction.INGRESS):
            return True
        peer_sets: frozenset[int] | None = None
        for tier in TIERS:
            cid = model.dispatch(direction, tier).get(pod_ip)
            if cid is None:
                continue
            if peer_sets is None:
                peer_sets = self._in_sets(peer_ip)
            if tier is Tier.NETPOL and own:
                return True  # v1 exempts a pod's traffic to its own node
            rules = self.chains[(node, cid)]
            if tier is Tier.NETPOL:
                return any(r.matches_port(proto, port) and (peer is None or peer in peer_sets) for peer, r in rules)
            for peer, r in rules:
                if r.matches_port(proto, port) and (peer is None or peer in peer_sets):
                    if r.action is Action.PASS:
                        break
                    return r.action is Action.ACCEPT
        return True

    def _allowed(self, src: PodInfo, dst: PodInfo, proto: Protocol, port: int, v: int, own: bool = False) -> bool:
        """`reachability.connection_allowed` for two different pods: egress, then ingress.
        ``own``: the pair is own-node (`reachability.own_node`), whatever nodes the two are on
        (they may stand for their classes)."""
        src_ip, dst_ip = src.address(v), dst.address(v)
        assert src_ip and dst_ip and src.node and dst.node
        out = self._decide(src.node, Direction.EGRESS, src_ip, dst_ip, proto, port, own and dst.host_network)
        return out and self._decide(dst.node, Direction.INGRESS, dst_ip, src_ip, proto, port, own and src.host_network)

    def _key(self, ep: PodInfo, member: _Membership) -> tuple[object, ...]:
        assert ep.node
        model = self.models.get(ep.node)
        tables = [t for _, _, t in model.tier_tables()] if model is not None else []
        versions = tuple(ip_version(ip) for ip in ep.ips)
        per_address = []
        for v in dict.fromkeys(versions):
            ip = ep.address(v)
            assert ip
            chains = [None if (c := d.get(ip)) is None else self.chain_id[(ep.node, c)] for d in tables]
            self._sets[ip] = member.of(ip)
            per_address.append((v, *chains, self._sets[ip]))
        return (tuple(ep.ports), versions, tuple(per_address), ep.host_network)

    def _entries(self, s: int, d: int, port: int, proto: Protocol) -> list[tuple[str, bool]]:
        """(family, verdict) for any source of class ``s`` to another pod of class ``d``."""
        key = (s, d, port, proto)
        if key not in self._cache:
            src = self.pods[self.members[s][0]]
            others = [i for i in self.members[d] if i != self.members[s][0]]
            dst = self.pods[others[0]] if others else None
            self._cache[key] = [] if dst is None else self._pair(src, dst, port, proto, False)
        return self._cache[key]

    def _pair(self, src: PodInfo, dst: PodInfo, port: int, proto: Protocol, own: bool) -> list[tuple[str, bool]]:
        mine = {ip_version(ip) for ip in src.ips}
        return [
            (FAMILY_NAMES[v], self._allowed(src, dst, proto, port, v, own))
            for v in (ip_version(ip) for ip in dst.ips)
            if v in mine and v in self.wanted
        ]

    def _own_pairs(self, j: int, port: int, proto: Protocol) -> dict[int, list[tuple[str, bool]]]:
        """The entries of the sources whose pair with ``pods[j]`` is own-node: every pod of its
        node when it is a host-network pod, else its node's host-network pods."""
        dst = self.pods[j]
        assert dst.node
        sources = (self.on_node if dst.host_network else self.hosts_on).get(dst.node, ())
        out = {}
        for i in sources:
            if i != j:
                key = (self.of[i], self.of[j], port, proto)
                if key not in self._own_cache:
                    self._own_cache[key] = self._pair(self.pods[i], dst, port, proto, True)
                out[i] = self._own_cache[key]
        return out

    def _self_entries(self, ep: PodInfo) -> list[tuple[str, bool]]:
        vs = [ip_version(ip) for ip in ep.ips]
        return [(FAMILY_NAMES[v], True) for v in vs if v in self.wanted]

    def rows(self, ports: Iterable[int] | None = None, protocols: Iterable[Protocol] | None = None) -> Iterator[Row]:
        protos = list(protocols) if protocols else None
        port_list = list(ports) if ports else None
        rows: dict[tuple[int, int, Protocol], list[list[tuple[str, bool]]]] = {}
        for j, dst in enumerate(self.pods):
            if port_list is not None:
                targets = [(port, proto) for port in port_list for proto in (protos or [Protocol.TCP])]
            else:
                targets = [(port, proto) for port, proto in dst.ports if protos is None or proto in protos]
            d = self.of[j]
            for port, proto in targets:
                key = (d, port, proto)
                if key not in rows:
                    rows[key] = [self._entries(s, d, port, proto) for s in range(len(self.members))]
                pairs = self._own_pairs(j, port, proto)
                yield Row(dst, j, port, proto, rows[key], self._self_entries(dst), dst.host_network, pairs)

    def probes(self, ports: Iterable[int] | None = None, protocols: Iterable[Protocol] | None = None) -> list[Probe]:
        """The same list `reachability.reach` returns."""
        return [
            Probe(self.pods[i].key, row.dst.key, row.port, row.protocol, ok, fam, row.host or self.class_host[c])
            for row in self.rows(ports, protocols)
            for i, c in enumerate(self.of)
            for fam, ok in row.entries(i, c)
        ]
