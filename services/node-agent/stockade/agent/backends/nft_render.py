"""Render the rule model as nftables scripts (pure functions of data; the applier runs them).

Layout (one table, ``inet stockade``)::

    set hosts4 / hosts6      every host-only address set of a family, keyed address . tag
    set a_<set> / a6_<set>   an address set with a CIDR in that family: its own interval set
    map ingress_dispatch / egress_dispatch     IPv4 pod IP -> jump <chain>  (one lookup per packet)
    map ingress_dispatch6 / egress_dispatch6   IPv6 pod IP -> jump <chain>
    set seen_in / seen_out, seen_in6 / seen_out6   denied 5-tuples per family (dynamic, timeout)
    chain in_<h> / out_<h>   one per distinct rule list, shared by pods and by both families
    chain p_<h>        the port lines of ingress peer rules, shared by content (`port_chain`)
    chain forward      hook forward: established first, then egress, then ingress dispatch

Both families are enforced: the forward chain dispatches on ``ip`` and ``ip6`` addresses, and a
pod chain renders a rule with a peer once per family (an element only ever matches packets of
its own family) and a rule without a peer once, matching both. An element or pod IP of neither
family is refused (`ElementError`): the table must never leave a family to the forward chain's
``policy accept``.

Host-only sets (every pod-selector set, and empty ones: `is_hash`) share one concatenated hash
set per family instead of a kernel set each. The kernel finds a set by name by walking the
table's set list, once per set created, per element command and per rule naming a set, so
thousands of kernel sets made a snapshot quadratic (BENCHMARKS.md, dual-stack datapath). An
address set's elements are ``addr . hi . lo`` in ``hosts4``/``hosts6``, its tag (hi, lo) two
32-bit words of a digest of its id (`names.nft_tag`: the same in every snapshot and delta), and
a peer rule matches ``ip saddr . numgen random mod 1 offset hi . numgen random mod 1 offset lo
@hosts4`` (nft's CLI takes no constant in a concatenation; ``numgen ... mod 1 offset T`` always
evaluates to T). Two ids with one tag in a model are refused (`tag_owners`), never merged. A set
whose content holds a CIDR in a family keeps its own interval set there; a delta moving a set
between the two (`kind_changes`) is applied as a full snapshot.

The IPv6 side of the pod chains (the ``a6_`` sets, the ``hosts6`` elements and the ``ip6`` peer
rules) is rendered only when the model dispatches at least one IPv6 address (`layout`); the
fixed objects (both families' dispatch maps, hosts and seen sets, once and forward rules) always
are. That enforces exactly the same: a pod chain is only ever entered through a dispatch map, so
with no IPv6 entry no IPv6 packet reaches a pod chain, and the IPv6 rules left out could never
have matched. An IPv6 pod address in a dispatch map is therefore always enforced by a chain that
has its IPv6 rules; a change of layout is applied as a full snapshot (see
`NftablesBackend.apply_delta`).

Per packet: one conntrack state test, two hash lookups, then only the rules of the pod's own
chain (a peer rule: one hash lookup, after two numgen evaluations for a host-only set); nothing
grows with the number of pods or policies on the node. Egress chains ``return`` on allow so the
destination's ingress chain is checked next; ingress chains ``accept``.

Deny tail of every pod chain::

    jump once_in                                        # shared, see below
    log group G prefix "<chain id>" counter drop comment "deny"   # exact: once per connection/flow

(with ``log_rate``: ``limit rate N/second ... log ...`` in one rule, ``counter drop`` in the next,
so the limit thins the NFLOG events, never the counter.)

    chain once_in {
      <5-tuple> @seen_in update @seen_in { <5-tuple> } drop   # retransmit/same flow: silent
      add @seen_in { <5-tuple> }                              # first packet: note it, return
    }

A dropped SYN leaves no confirmed conntrack entry, so without ``seen`` every retransmit would
count again. If ``seen`` is full the ``add`` fails and retransmits of that flow count again
(over-count, never under-count). NFLOG loss = ``deny`` counter minus NFLOG events received.

Tiers (ClusterNetworkPolicy, `stockade.model.evaluate.decide`). Only a model with a tier chain
(`is_tiered`) has these; one without renders exactly as before tiers existed. A delta that
brings the first tier chain (or takes the last) creates (deletes) them and rewrites the forward
chain in its one transaction (`render_delta`), keeping counters and seen sets::

    map admin_ingress_dispatch(6) / baseline_ingress_dispatch(6)   pod IP -> jump <chain>
    map admin_egress_dispatch(6)                                   pod IP -> goto <chain>
    map baseline_egress_dispatch(6)                                pod IP -> jump <chain>
    chain egress_tiers         admin egress vmap, then as egress_after_admin
    chain egress_after_admin   own node: goto egress_local; NetworkPolicy egress vmap, baseline egress vmap
    chain egress_local         baseline egress vmap
    chain forward              ..., jump egress_tiers, admin ingress vmap, NetworkPolicy
                               ingress vmap, baseline ingress vmap
    chain input                hook input: established, neighbour discovery, jump egress_tiers

Ingress: an Admin chain's Accept ``accept``s, its Pass (or no match) ``return``s to the forward
chain, on to the NetworkPolicy map (its chain is final) and the Baseline map (only pods that
no NetworkPolicy isolates are in it). Egress must go on to the ingress dispatch after an
allow, so it runs in ``egress_tiers``: an Admin chain is entered by ``goto``, so its Accept's
``return`` goes straight back to the forward chain (past the other egress tiers); its Pass
and its end ``goto egress_after_admin``. A NetworkPolicy egress allow ``return``s into
``egress_tiers`` (or ``egress_after_admin``) and meets the Baseline map, which never holds
that pod (`NodeModel.check`); a Baseline chain's Accept, Pass and end all ``return``.

A tier chain's rules stay in order (first match wins, `tier_rule_lines`); a Deny repeats its
match on the `deny_lines` (``jump once_*``, then ``log ... prefix "<chain id>/<rule index>"
counter drop``), so it is counted once per connection, logged under its rule and dropped
silently. Per packet without tiers: nothing more than before; with them, one jump and four
more map lookups per family in the forward path, one ``fib`` address-type lookup past the Admin
tier, then only the pod's own chains.

A pod's traffic to its own node (its gateway, the node's addresses, host-network pods) reaches
the input hook, never forward: with tiers, the input chain runs the same egress tiers on it, the
NetworkPolicy tier excepted (v1 exempts a pod's own node: see `INPUT_RULES`). Without tiers
nothing filters it, as v1 says; no input chain is rendered.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Container, Iterable, Mapping
from dataclasses import dataclass

from stockade.agent.backends import elements, names
from stockade.model import CNP_TIERS, Action, Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule, Tier

TABLE = "inet stockade"
FORWARD = "forward"
FAMILIES = (4, 6)
IP = {4: "ip", 6: "ip6"}  # the nft payload protocol of a family
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
# Dispatch maps per family; the IPv4 ones keep their pre-dual-stack names.
DISPATCH = {Direction.INGRESS: "ingress_dispatch", Direction.EGRESS: "egress_dispatch"}
DISPATCH6 = {Direction.INGRESS: "ingress_dispatch6", Direction.EGRESS: "egress_dispatch6"}


# The ClusterNetworkPolicy tiers' maps (see "Tiers" in the module docstring), "6" for IPv6.
TIER_DISPATCH = {(t, d): f"{t.value}_{d.value}_dispatch" for t in CNP_TIERS for d in Direction}


def dispatch_map(direction: Direction, version: int, tier: Tier = Tier.NETPOL) -> str:
    if tier is Tier.NETPOL:
        return (DISPATCH6 if version == 6 else DISPATCH)[direction]
    return TIER_DISPATCH[tier, direction] + ("6" if version == 6 else "")


MAPS = {dispatch_map(d, v): (d, v) for d in Direction for v in FAMILIES}
TIER_MAPS = {dispatch_map(d, v, t): (t, d, v) for t in CNP_TIERS for d in Direction for v in FAMILIES}
EGRESS_TIERS = "egress_tiers"  # forward (and input) jump here for egress when the table has tiers
EGRESS_AFTER_ADMIN = "egress_after_admin"  # an Admin egress chain's Pass (or end) goes on here
EGRESS_LOCAL = "egress_local"  # egress to the node's own addresses after the Admin tier
INPUT = "input"  # hook input: a pod's traffic to its own node (with tiers only)
BASE_SPEC = {
    FORWARD: "type filter hook forward priority filter; policy accept;",
    INPUT: "type filter hook input priority filter; policy accept;",
}


def map_verb(tier: Tier, direction: Direction) -> str:
    """How a dispatch map enters its chains: ``goto`` for Admin egress (its Accept ``return``s
    past the egress tiers, straight to the forward chain), ``jump`` for every other."""
    return "goto" if (tier, direction) == (Tier.ADMIN, Direction.EGRESS) else "jump"


def is_tiered(model: NodeModel) -> bool:
    """Whether the table has the tier objects (maps, egress chains, forward lines): when the
    model has a tier chain. A model without one renders exactly as before tiers existed."""
    return any(c.tier is not Tier.NETPOL for c in model.chains.values())


IPV4_ONLY = (4,)  # the layout of a model that dispatches no IPv6 address


def layout_of(pod_ips: Iterable[str]) -> tuple[int, ...]:
    """The families whose peer sets and rules are rendered for these dispatched pod IPs: IPv6
    only when one of them is IPv6 (see the module docstring for why that is exact)."""
    return FAMILIES if any(":" in ip for ip in pod_ips) else IPV4_ONLY


def layout(model: NodeModel) -> tuple[int, ...]:
    return layout_of(ip for _, _, table in model.tier_tables() for ip in table)  # every map, every tier


SEEN = {
    (Direction.INGRESS, 4): "seen_in",
    (Direction.EGRESS, 4): "seen_out",
    (Direction.INGRESS, 6): "seen_in6",
    (Direction.EGRESS, 6): "seen_out6",
}
# Shared by every pod chain of a direction: drop a flow already denied (silently), else note it.
ONCE = {Direction.INGRESS: "once_in", Direction.EGRESS: "once_out"}


def _key(version: int) -> str:
    return f"{IP[version]} saddr . {IP[version]} daddr . meta l4proto . th sport . th dport"


def once_lines(direction: Direction, cfg: NftConfig) -> list[str]:
    """A flow already denied is dropped silently (its entry refreshed); a new one is noted.

    TCP entries live through a SYN's whole retransmit series; other flows as long as conntrack
    keeps an unreplied UDP flow, so a flow that conntrack would see as new counts again. Four
    rules per family: each names its family's addresses, so a packet only meets its own."""
    tcp, other = cfg.seen_timeout, cfg.flow_timeout
    lines = []
    for version in FAMILIES:
        key, seen = _key(version), SEEN[direction, version]
        lines += [
            f"meta l4proto tcp {key} @{seen} update @{seen} {{ {key} timeout {tcp}s }} drop",
            f"{key} @{seen} update @{seen} {{ {key} timeout {other}s }} drop",
            f"meta l4proto tcp add @{seen} {{ {key} timeout {tcp}s }}",
            f"meta l4proto != tcp add @{seen} {{ {key} timeout {other}s }}",
        ]
    return lines


DENY_COMMENT = "deny"  # the deny rule's comment starts so; the rest records the settings it was built with

ANON_SET_MAX_RULES = 4  # up to this many port specs in one rule: one nft rule each
_L4 = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}


@dataclass(frozen=True)
class NftConfig:
    nflog_group: int = 100
    log_rate: int | None = None  # NFLOG events per second per chain; None: every denied connection
    seen_timeout: int = 130  # seconds a denied TCP connection is remembered: > a SYN's retries (~127 s)
    flow_timeout: int = 30  # other protocols: conntrack's unreplied-UDP timeout
    seen_size: int = 65535


def deny_comment(cfg: NftConfig) -> str:
    """Settings in the comment: a restart with another NFLOG group or rate rewrites the chains."""
    return f"{DENY_COMMENT} g{cfg.nflog_group} r{cfg.log_rate or 0}"


def _quote(text: str) -> str:
    return json.dumps(text)  # a double-quoted string nft accepts


def _ports(ports: Iterable[PortMatch]) -> dict[Protocol, list[str] | None]:
    """Per protocol: the dport set elements, or None for every port."""
    out: dict[Protocol, list[str] | None] = {}
    for p in ports:
        if p.port is None:
            out[p.protocol] = None
            continue
        if p.protocol in out and out[p.protocol] is None:
            continue
        hi = p.end_port if p.end_port is not None else p.port
        spec = str(p.port) if hi == p.port else f"{p.port}-{hi}"
        elems = out.setdefault(p.protocol, [])
        assert elems is not None
        if spec not in elems:
            elems.append(spec)
    return out


@functools.lru_cache(maxsize=4096)  # rules share port lists; a snapshot asks for each several times
def _bodies(ports: tuple[PortMatch, ...], verdict: str) -> tuple[str, ...]:
    """A rule's port matches with its verdict: one line per port spec (or per protocol)."""
    bodies = []
    for proto, specs in sorted(_ports(ports).items()):
        l4 = _L4[proto]
        if specs is None:
            bodies.append(f"meta l4proto {l4} {verdict}")
        elif len(specs) <= ANON_SET_MAX_RULES:
            # An anonymous set is a kernel object of its own: thousands of them made a snapshot
            # ten times slower than the rules themselves. A few ports are cheaper as rules.
            bodies += [f"{l4} dport {spec} {verdict}" for spec in specs]
        else:
            bodies.append(f"{l4} dport {{ {', '.join(specs)} }} {verdict}")
    return tuple(bodies)


@functools.lru_cache(maxsize=4096)
def port_chain(rule: Rule, direction: Direction) -> tuple[str, tuple[str, ...]] | None:
    """The shared port chain (name, rules) an ingress rule with a peer jumps to, when its ports
    take more than one line.

    Every rule naming a set costs the kernel a walk of the table's set list (see `set_order`),
    so a peer with N port lines is named once per family, not N times; the port lines live in
    a chain shared by every rule with the same ports. Ingress only: an ingress allow is
    ``accept``, final wherever it is. An egress allow is ``return`` to the forward chain (for
    the destination's ingress check), and a ``return`` in a jumped chain would only return to
    the pod chain, which would go on to its deny tail; so egress keeps its port lines inline.
    Likewise a tier rule's Pass (``return`` / ``goto``) and Deny (two lines per match, see
    `tier_rule_lines`) stay inline: only an Accept (``accept``, final) may be shared."""
    if direction is not Direction.INGRESS or rule.peer is None or rule.ports is None:
        return None
    if rule.action is not Action.ACCEPT:
        return None
    bodies = _bodies(rule.ports, "accept")
    return (names.nft_ports("\n".join(bodies)), bodies) if len(bodies) > 1 else None


def port_chains(chains: Iterable[Chain]) -> dict[str, tuple[str, ...]]:
    """Every port chain these pod chains jump to: name -> rules."""
    out: dict[str, tuple[str, ...]] = {}
    for chain in chains:
        for rule in chain.rules:
            found = port_chain(rule, chain.direction)
            if found is not None:
                out[found[0]] = found[1]
    return out


EMPTY: frozenset[str] = frozenset()
NO_SETS: Mapping[str, frozenset[str]] = {}


def peer_match(sid: str, version: int, field: str, sets: Mapping[str, frozenset[str]]) -> str:
    """The match of one family's peer: the shared hosts set under the set's tag, or the set's
    own interval set when its content holds a CIDR in that family (`interval_families`)."""
    if version in interval_families(sid, sets.get(sid, EMPTY)):
        return f"{IP[version]} {field} @{names.nft_set_of(sid, version)}"
    return f"{IP[version]} {field} . {tag_key(names.nft_tag(sid))} @{HOSTS[version]}"


def rule_lines(
    rule: Rule,
    direction: Direction,
    families: tuple[int, ...] = FAMILIES,
    sets: Mapping[str, frozenset[str]] = NO_SETS,
) -> list[str]:
    """A rule with a peer once per family of the layout (`peer_match`; ``sets``: the model's,
    a peer absent from them is an empty host-only set) and port line, or jumping to its
    `port_chain`; one without a peer once, for both."""
    verdict = "accept" if direction is Direction.INGRESS else "return"
    bodies = [verdict] if rule.ports is None else list(_bodies(rule.ports, verdict))
    if rule.peer is None:
        return bodies
    shared = port_chain(rule, direction)
    if shared is not None:
        bodies = [f"jump {shared[0]}"]
    field = "saddr" if direction is Direction.INGRESS else "daddr"
    return [f"{peer_match(rule.peer, v, field, sets)} {body}" for v in families for body in bodies]


def deny_lines(prefix: str, direction: Direction, cfg: NftConfig) -> list[str]:
    """A deny's statements, one rule each: once per flow (`ONCE`), NFLOG under ``prefix``, the
    counted drop (silent: never a reject)."""
    log = f"log group {cfg.nflog_group} prefix {_quote(prefix)}"
    deny = f"counter drop comment {_quote(deny_comment(cfg))}"
    lines = [f"jump {ONCE[direction]}"]
    if cfg.log_rate:
        # The limit must not stop the counter: log in a rule of its own, count in the next.
        lines += [f"limit rate {cfg.log_rate}/second burst {cfg.log_rate} packets {log}", deny]
    else:
        lines.append(f"{log} {deny}")
    return lines


def chain_lines(
    chain_id: str,
    chain: Chain,
    cfg: NftConfig,
    families: tuple[int, ...] = FAMILIES,
    sets: Mapping[str, frozenset[str]] = NO_SETS,
) -> list[str]:
    """Every rule of one pod chain: allow rules then the deny tail (a NetworkPolicy chain), or
    a tier chain's rules in order (`tier_chain_lines`)."""
    if chain.tier is not Tier.NETPOL:
        return tier_chain_lines(chain_id, chain, cfg, families, sets)
    lines = [line for rule in chain.rules for line in rule_lines(rule, chain.direction, families, sets)]
    return lines + deny_lines(chain_id, chain.direction, cfg)


def _matches(rule: Rule, field: str, families: tuple[int, ...], sets: Mapping[str, frozenset[str]]) -> list[str]:
    """A rule's matches, one per (peer family, port line): "" matches everything."""
    ports = [""] if rule.ports is None else [b.rstrip() for b in _bodies(rule.ports, "")]
    if rule.peer is None:
        return ports
    peers = [peer_match(rule.peer, v, field, sets) for v in families]
    return [f"{peer} {port}".rstrip() for peer in peers for port in ports]


def tier_rule_lines(
    chain_id: str,
    index: int,
    chain: Chain,
    cfg: NftConfig,
    families: tuple[int, ...] = FAMILIES,
    sets: Mapping[str, frozenset[str]] = NO_SETS,
) -> list[str]:
    """One rule of a tier chain: first match wins, so every verdict is final for the chain.

    Accept: as a NetworkPolicy allow (ingress ``accept``; egress ``return``: from an Admin chain,
    entered by ``goto``, straight to the forward chain, past the other egress tiers). Pass: leave
    the tier (``return``; Admin egress: ``goto`` `EGRESS_AFTER_ADMIN`). Deny: per match, the
    `deny_lines` each repeating the match (the first notes the flow, drops a repeat; the next
    log and count the first packet), NFLOG prefix ``<chain id>/<index>``."""
    rule = chain.rules[index]
    direction = chain.direction
    if rule.action is Action.ACCEPT:
        return rule_lines(rule, direction, families, sets)
    field = "saddr" if direction is Direction.INGRESS else "daddr"
    if rule.action is Action.PASS:
        verdicts = [_pass_verdict(chain)]
    else:
        verdicts = deny_lines(f"{chain_id}/{index}", direction, cfg)
    return [f"{match} {v}".lstrip() for match in _matches(rule, field, families, sets) for v in verdicts]


def _pass_verdict(chain: Chain) -> str:
    egress_admin = (chain.tier, chain.direction) == (Tier.ADMIN, Direction.EGRESS)
    return f"goto {EGRESS_AFTER_ADMIN}" if egress_admin else "return"


def tier_chain_lines(
    chain_id: str,
    chain: Chain,
    cfg: NftConfig,
    families: tuple[int, ...] = FAMILIES,
    sets: Mapping[str, frozenset[str]] = NO_SETS,
) -> list[str]:
    """A tier chain's rules in order, then what no match does (as a Pass): an Admin egress chain
    goes on to the NetworkPolicy and Baseline egress dispatch, every other returns."""
    lines = [line for i in range(len(chain.rules)) for line in tier_rule_lines(chain_id, i, chain, cfg, families, sets)]
    if (chain.tier, chain.direction) == (Tier.ADMIN, Direction.EGRESS):
        lines.append(_pass_verdict(chain))
    return lines


def chain_has_deny(chain: Chain) -> bool:
    """Whether the chain's rules carry the deny comment (every NetworkPolicy chain's tail does)."""
    return chain.tier is Tier.NETPOL or any(r.action is Action.DENY for r in chain.rules)


def set_forms(sid: str, elems: Iterable[str]) -> dict[int, frozenset[str]]:
    """An address set's kernel elements per family; refuses (loudly) an element of neither."""
    try:
        return elements.kernel_forms(elems)
    except elements.ElementError as e:
        raise elements.ElementError(f"address set {sid!r}: {e}") from None


def _ip_family(ip: str, direction: Direction) -> int:
    try:
        return elements.ip_family(ip)
    except elements.ElementError as e:
        raise elements.ElementError(f"{direction} dispatch: {e}") from None


def split_dispatch(table: dict[str, str], direction: Direction) -> dict[int, dict[str, str]]:
    """A dispatch table (pod IP -> chain id) per family; refuses a key that is no IP address."""
    out: dict[int, dict[str, str]] = {4: {}, 6: {}}
    for ip, cid in table.items():
        out[_ip_family(ip, direction)][ip] = cid
    return out


HOST_SUFFIX = {4: "/32", 6: "/128"}


def is_hash(form: Iterable[str], version: int) -> bool:
    """Whether a set with this content (one family's kernel form) is host-only: every element
    a host address (pod-selector sets, and empty ones). A host-only set lives under its tag in
    the shared hosts set; any other is an interval set of its own. A delta that would change
    which a set is is applied as a full snapshot (`kind_changes`), so where a set lives always
    follows its content."""
    host = HOST_SUFFIX[version]
    return all(e.endswith(host) for e in form)


def _all_hosts(elems: Iterable[str]) -> bool:
    # Text only, both families (model elements are canonical CIDRs): "/32" is a host in IPv4 only.
    return all(e.endswith("/128") or (e.endswith("/32") and ":" not in e) for e in elems)


def interval_families(sid: str, elems: frozenset[str]) -> frozenset[int]:
    """The families in which this address set is an interval set (`is_hash`)."""
    return _SET_KINDS.get(sid, elems)


def _interval_families(sid: str, elems: frozenset[str]) -> frozenset[int]:
    if _all_hosts(elems):  # the common case, without splitting by family
        return frozenset()
    forms = set_forms(sid, elems)
    return frozenset(v for v in FAMILIES if not is_hash(forms[v], v))


class _SetKinds:
    """`interval_families` remembered per set id, for the elements it was last asked with: a
    snapshot asks for every set, each rule naming one asks again, then the backend for its
    record. Keyed by the id and checked by identity (callers pass the model's own frozenset),
    so a set's next version (pods come and go) replaces the last instead of piling up beside
    it; the least recently asked go first once ``budget`` elements, or ``most`` sets, are held
    (the sets of deleted policies are only pushed out)."""

    def __init__(self, budget: int, most: int) -> None:
        self.budget, self.most = budget, most
        self._held: OrderedDict[str, tuple[frozenset[str], frozenset[int], int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()  # a hit takes none: each step is atomic under the GIL

    def get(self, sid: str, elems: frozenset[str]) -> frozenset[int]:
        hit = self._held.get(sid)
        if hit is not None and hit[0] is elems:
            try:
                self._held.move_to_end(sid)
            except KeyError:  # pushed out by another thread just now
                pass
            return hit[1]
        kinds = _interval_families(sid, elems)
        weight = 4 + len(elems)
        if weight <= self.budget:
            with self._lock:
                old = self._held.pop(sid, None)
                if old is not None:
                    self._total -= old[2]
                self._held[sid] = (elems, kinds, weight)
                self._total += weight
                while self._total > self.budget or len(self._held) > self.most:
                    _, (_, _, gone) = self._held.popitem(last=False)
                    self._total -= gone
        return kinds

    def held(self) -> tuple[int, int]:
        """(sets remembered, their elements and overhead in all), for tests."""
        return len(self._held), self._total


_SET_KINDS = _SetKinds(1 << 20, 1 << 14)  # the elements of a whole model (NodeLimits.max_set_elements)


def interval_sets(sets: Mapping[str, frozenset[str]], families: tuple[int, ...] = FAMILIES) -> set[str]:
    """The kernel names (of the layout's families) of these address sets that are interval sets
    of their own (the others live in the hosts sets)."""
    out: set[str] = set()
    for sid, elems in sets.items():
        out.update(names.nft_set_of(sid, v) for v in interval_families(sid, elems) if v in families)
    return out


def set_decl(name: str, version: int, items: Iterable[str] = (), qualified: bool = False) -> str:
    """An address set's own interval set (``qualified``: with the table, for an ``add`` command)."""
    body = ", ".join(sorted(items))
    elems = f" elements = {{ {body} }};" if body else ""
    return f"set {f'{TABLE} ' if qualified else ''}{name} {{ type {ADDR_TYPE[version]}; flags interval;{elems} }}"


# -- the shared hosts sets -------------------------------------------------------------------
HOSTS = {4: "hosts4", 6: "hosts6"}
HOSTS_FAMILY = {name: v for v, name in HOSTS.items()}
# The key as `nft -j list` reports it, for the read-back to spot a set re-created otherwise.
HOSTS_TYPE = {4: ["ipv4_addr", "integer", "integer"], 6: ["ipv6_addr", "integer", "integer"]}
Tag = tuple[int, int]


def tag_key(tag: Tag) -> str:
    """A constant in a concatenation, as nft's CLI takes one (see the module docstring)."""
    return f"numgen random mod 1 offset {tag[0]} . numgen random mod 1 offset {tag[1]}"


def hosts_decl(version: int, items: Iterable[str] = ()) -> str:
    key = f"{IP[version]} saddr . {tag_key((0, 0))}"
    body = ", ".join(items)
    elems = f" elements = {{ {body} }};" if body else ""
    return f"set {HOSTS[version]} {{ typeof {key};{elems} }}"


def tagged(form: Iterable[str], tag: Tag) -> list[str]:
    """One host-only set's kernel elements (CIDRs /32 or /128) in a hosts set: ``addr . hi . lo``."""
    hi, lo = tag
    return [f"{e.partition('/')[0]} . {hi} . {lo}" for e in sorted(form)]


def tag_owners(sids: Iterable[str], tag_of: Callable[[str], Tag] | None = None) -> dict[Tag, str]:
    """tag -> set id for these sets (``tag_of``: `names.nft_tag`); two ids with one tag, or
    with one own-set name (`names.nft_set`: a digest for ids that are no safe identifier), are
    refused, never merged (their elements would allow each other's peers)."""
    tag_of = tag_of or names.nft_tag
    out: dict[Tag, str] = {}
    named: dict[str, str] = {}
    for sid in sids:
        tag = tag_of(sid)
        other = out.setdefault(tag, sid)
        if other != sid:
            raise elements.ElementError(
                f"address sets {other!r} and {sid!r} have the same tag {tag[0]}.{tag[1]} in the shared hosts "
                "sets; refusing to merge them (rename one of the policies or selectors to change its set id)"
            )
        name = names.nft_set(sid)
        other = named.setdefault(name, sid)
        if other != sid:
            raise elements.ElementError(
                f"address sets {other!r} and {sid!r} would share the kernel set {name}; refusing to merge "
                "them (rename one of the policies or selectors to change its set id)"
            )
    return out


def check_new_tags(delta: NodeDelta, model: NodeModel) -> None:
    """`tag_owners` of the resulting model when ``delta`` brings new sets (their tags are the
    only ones it can bring)."""
    if delta.new_sets:
        tag_owners(model.sets)


def _seen_decl(direction: Direction, version: int, cfg: NftConfig) -> str:
    addr = ADDR_TYPE[version]
    return (
        f"set {SEEN[direction, version]} {{ type {addr} . {addr} . inet_proto . inet_service . inet_service; "
        f"flags dynamic,timeout; timeout {cfg.seen_timeout}s; size {cfg.seen_size}; }}"
    )


# ICMPv6 that IPv6 needs, and why this is all the forward chain renders for it:
# - ICMPv6 errors (packet too big, destination unreachable, time exceeded, parameter problem)
#   about a flow conntrack tracks are `related` and accepted by the first rule, in both
#   families; that keeps path-MTU discovery working for isolated pods. An error about a flow
#   conntrack never saw is "invalid" and is dispatched like any packet of that pod.
# - Neighbour discovery and router messages are link-local: on a routed node they reach the
#   node's input/output hooks, never forward. On a bridge with br_netfilter they do cross
#   forward, and a neighbour solicitation from an isolated pod (its source is the pod's global
#   address) would be dispatched to the pod's chain and dropped. So they are accepted, but only
#   with hop limit 255: RFC 4861 receivers discard any other, and a routed packet has had its hop
#   limit decremented before the forward hook, so this never lets routed traffic through.
ND_RULE = (
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } "
    "ip6 hoplimit 255 accept"
)
FORWARD_RULES = [
    "ct state established,related accept",
    # A TCP packet that is "new" but no SYN is a connection picked up mid-stream, e.g. from the
    # server's side after conntrack clean-up ended a forbidden connection: without this, the
    # kernel would re-create the entry in reverse and the ended connection would live on.
    "tcp flags & (fin | syn | rst | ack) != syn ct state new drop",
    ND_RULE,
    # Each family's address fields only match packets of that family: an IPv6 packet skips the
    # `ip` rules and is dispatched by the `ip6` ones, so neither family reaches `policy accept`
    # from an isolated pod.
    f"ip saddr vmap @{DISPATCH[Direction.EGRESS]}",
    f"ip6 saddr vmap @{DISPATCH6[Direction.EGRESS]}",
    f"ip daddr vmap @{DISPATCH[Direction.INGRESS]}",
    f"ip6 daddr vmap @{DISPATCH6[Direction.INGRESS]}",
]


def _vmaps(tier: Tier, direction: Direction) -> list[str]:
    field = "daddr" if direction is Direction.INGRESS else "saddr"
    return [f"{IP[v]} {field} vmap @{dispatch_map(direction, v, tier)}" for v in FAMILIES]


# With tiers (`is_tiered`): egress through its own chain (`EGRESS_TIERS`), so that an Admin
# Accept can skip the other egress tiers and still reach the ingress dispatch; ingress Admin
# before the NetworkPolicy dispatch (an Admin Pass or no match returns here), Baseline after
# (a NetworkPolicy ingress chain is final, so only pods it does not isolate get there).
TIER_FORWARD_RULES = [
    *FORWARD_RULES[:3],
    f"jump {EGRESS_TIERS}",
    *_vmaps(Tier.ADMIN, Direction.INGRESS),
    *FORWARD_RULES[5:],
    *_vmaps(Tier.BASELINE, Direction.INGRESS),
]
assert FORWARD_RULES[3:5] == _vmaps(Tier.NETPOL, Direction.EGRESS)  # the egress lines moved
# Admin egress enters its chain by ``goto``: its Accept ``return``s to the forward chain, its
# Pass (and its end) ``goto``s `EGRESS_AFTER_ADMIN`. A NetworkPolicy egress allow ``return``s
# here, and the Baseline map after it never holds that pod (`NodeModel.check`).
#
# A pod's traffic to its own node never crosses forward: it reaches the input hook, where the
# same egress tiers run (`INPUT_RULES`). Only the tiers decide it: v1 exempts traffic to the
# pod's own node, so past the Admin tier a local destination (``fib daddr type local``: never
# true in forward) skips the NetworkPolicy map and goes to `EGRESS_LOCAL`, the Baseline map
# alone (a pod a NetworkPolicy isolates is never in it: allowed, as v1 says). Traffic from the
# node to its pods leaves by the output hook and is not filtered (v1's exemption; no CNP peer
# names a node for ingress).
_EGRESS_AFTER_ADMIN = [
    f"fib daddr type local goto {EGRESS_LOCAL}",
    *FORWARD_RULES[3:5],
    *_vmaps(Tier.BASELINE, Direction.EGRESS),
]
# Established first (replies to the node's own connections into its pods, e.g. the kubelet's
# probes, must not meet a pod's egress chain), then neighbour discovery (an isolated pod's
# solicitations to its gateway), then the egress tiers.
INPUT_RULES = ["ct state established,related accept", ND_RULE, f"jump {EGRESS_TIERS}"]
# In the order they are created: each names only those before it.
TIER_CHAINS = {
    EGRESS_LOCAL: _vmaps(Tier.BASELINE, Direction.EGRESS),
    EGRESS_AFTER_ADMIN: _EGRESS_AFTER_ADMIN,
    EGRESS_TIERS: [*_vmaps(Tier.ADMIN, Direction.EGRESS), *_EGRESS_AFTER_ADMIN],
    INPUT: INPUT_RULES,
}


def chain_head(name: str) -> str:
    """What follows ``chain <name>`` in an ``add chain`` command: a base chain's hook spec."""
    return f" {{ {BASE_SPEC[name]} }}" if name in BASE_SPEC else ""


def forward_rules(tiered: bool) -> list[str]:
    return TIER_FORWARD_RULES if tiered else FORWARD_RULES


def map_decl(name: str, version: int, entries: Iterable[str] = ()) -> str:
    body = ", ".join(entries)
    elems = f" elements = {{ {body} }};" if body else ""
    return f"map {name} {{ type {ADDR_TYPE[version]} : verdict;{elems} }}"


def set_order(model: NodeModel) -> list[str]:
    """Set ids, the most named by rules first (ties: the model's order).

    The kernel finds the set a rule names by walking the table's set list from its head, so a
    snapshot's cost grows with (rules naming a set) x (sets before it); the sets most rules name
    go first (BENCHMARKS.md, full snapshot). Only the interval sets are kernel sets of their own
    now, behind the maps and the hosts sets."""
    refs = dict.fromkeys(model.sets, 0)
    for chain in model.chains.values():
        for rule in chain.rules:
            if rule.peer in refs:
                refs[rule.peer] += len(rule_lines(rule, chain.direction, IPV4_ONLY))
    return sorted(refs, key=lambda sid: -refs[sid])


def render_snapshot(model: NodeModel, cfg: NftConfig) -> str:
    """One transaction that replaces our table (whatever it held) with ``model``."""
    families = layout(model)
    out = [f"table {TABLE} {{}}", f"delete table {TABLE}", f"table {TABLE} {{"]
    out += [f"  {_seen_decl(d, v, cfg)}" for d in Direction for v in FAMILIES]
    # The maps before the address sets: every element change walks the set list to its map or
    # set, and the maps are what most deltas change.
    tiered = is_tiered(model)
    for tier in (Tier.NETPOL, *CNP_TIERS) if tiered else (Tier.NETPOL,):
        for direction in Direction:
            verb = map_verb(tier, direction)
            by_family = split_dispatch(model.dispatch(direction, tier), direction)
            for v in FAMILIES:
                entries = [f"{ip} : {verb} {names.nft_chain(cid)}" for ip, cid in by_family[v].items()]
                out.append(f"  {map_decl(dispatch_map(direction, v, tier), v, entries)}")
    tag_owners(model.sets)
    own: list[str] = []
    hosts: dict[int, list[str]] = {4: [], 6: []}
    for sid in set_order(model):
        elems = model.sets[sid]
        kinds = interval_families(sid, elems)
        if not elems and not kinds:
            continue  # an empty host-only set: its tag simply has no elements
        form = set_forms(sid, elems)
        for v in families:
            if v in kinds:
                own.append(f"  {set_decl(names.nft_set_of(sid, v), v, form[v])}")
            else:
                hosts[v] += tagged(form[v], names.nft_tag(sid))
    out += [f"  {hosts_decl(v, hosts[v])}" for v in FAMILIES]
    out += own
    for direction in Direction:
        out.append(f"  chain {ONCE[direction]} {{")
        out += [f"    {line}" for line in once_lines(direction, cfg)]
        out.append("  }")
    for name, lines in port_chains(model.chains.values()).items():
        out += [f"  chain {name} {{", *(f"    {line}" for line in lines), "  }"]
    for name, fixed in TIER_CHAINS.items() if tiered else ():
        head = [f"    {BASE_SPEC[name]}"] if name in BASE_SPEC else []
        out += [f"  chain {name} {{", *head, *(f"    {line}" for line in fixed), "  }"]
    for cid, chain in model.chains.items():
        out.append(f"  chain {names.nft_chain(cid)} {{")
        out += [f"    {line}" for line in chain_lines(cid, chain, cfg, families, model.sets)]
        out.append("  }")
    out.append(f"  chain {FORWARD} {{")
    out.append(f"    {BASE_SPEC[FORWARD]}")
    out += [f"    {line}" for line in forward_rules(tiered)]
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def _set_cmds(verb: str, name: str, items: Iterable[str]) -> list[str]:
    text = sorted(items)
    return [f"{verb} element {TABLE} {name} {{ {', '.join(text)} }}"] if text else []


def add_port_chain_cmds(name: str, lines: Iterable[str]) -> list[str]:
    return [f"add chain {TABLE} {name}", f"flush chain {TABLE} {name}"] + [
        f"add rule {TABLE} {name} {line}" for line in lines
    ]


def port_changes(
    delta: NodeDelta, model: NodeModel, had_ports: Collection[str] | None
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """(port chains to create, port chains to delete) for ``delta``; ``had_ports``: the port
    chains in the kernel (None: unknown, so the new chains' port chains are (re)created and
    none deleted; the next repair removes what is left)."""
    if not (delta.new_chains or delta.removed_chains):
        return {}, []
    needed = port_chains(delta.new_chains.values())
    create = {n: lines for n, lines in needed.items() if had_ports is None or n not in had_ports}
    if had_ports is None or not delta.removed_chains:
        return create, []
    keep = port_chains(model.chains.values())
    return create, sorted(n for n in had_ports if n not in keep)


def add_chain_cmds(
    cid: str, chain: Chain, cfg: NftConfig, families: tuple[int, ...], sets: Mapping[str, frozenset[str]]
) -> list[str]:
    """Create (or reset) one pod chain: ``flush`` makes it idempotent when the chain exists."""
    name = names.nft_chain(cid)
    return [f"add chain {TABLE} {name}", f"flush chain {TABLE} {name}"] + [
        f"add rule {TABLE} {name} {line}" for line in chain_lines(cid, chain, cfg, families, sets)
    ]


# ("add" | "delete", set or map name, items): an interval set's items are CIDRs, a hosts set's
# "addr . hi . lo" (`tagged`), a map's "ip : chain" (or "ip" to delete).
ElementOp = tuple[str, str, list[str]]


def _set_element_ops(
    delta: NodeDelta, model: NodeModel, families: tuple[int, ...], interval: Container[str]
) -> list[ElementOp]:
    """Element changes of the sets that stay, per family of the layout (the other's elements are
    checked, not loaded), in their own set (``interval``: the kernel's own sets) or under their
    tag in the hosts set: deletions before additions per set."""
    out: list[ElementOp] = []
    for sid in delta.set_added.keys() | delta.set_removed.keys():
        if sid in delta.new_sets or sid in delta.removed_sets:
            continue
        added = delta.set_added.get(sid, frozenset())
        removed = delta.set_removed.get(sid, frozenset())
        new = model.sets.get(sid, frozenset())
        try:
            per_family = elements.changes((new - added) | removed, new, added, removed)
        except elements.ElementError as e:
            raise elements.ElementError(f"address set {sid!r}: {e}") from None
        for v in families:
            to_add, to_del = per_family[v]
            name = names.nft_set_of(sid, v)
            if name not in interval:
                name = HOSTS[v]
                to_add, to_del = (frozenset(tagged(f, names.nft_tag(sid))) for f in (to_add, to_del))
            if to_del:
                out.append(("delete", name, sorted(to_del)))
            if to_add:
                out.append(("add", name, sorted(to_add)))
    return out


# Pod IPs dispatched in the kernel per (tier, direction) of the tier maps (the NetworkPolicy
# ones are passed as ``had_ingress`` / ``had_egress``); absent: none.
HadTiers = Mapping[tuple[Tier, Direction], Container[str]]
NO_TIERS: HadTiers = {}


def _dispatch_ops(
    delta: NodeDelta, had_ingress: Container[str], had_egress: Container[str], script: bool, had_tiers: HadTiers
) -> list[ElementOp]:
    """Dispatch changes per map: a map refuses to overwrite, so a replaced entry is deleted
    first. ``script``: entries as ``"ip : jump chain"`` (else ``"ip : chain"``, netlink's form)."""
    out: list[ElementOp] = []
    todo: list[tuple[Tier, Direction, Container[str]]] = [
        (Tier.NETPOL, Direction.INGRESS, had_ingress),
        (Tier.NETPOL, Direction.EGRESS, had_egress),
    ]
    if delta.has_tiers():
        todo += [(t, d, had_tiers.get((t, d), EMPTY)) for t in CNP_TIERS for d in Direction]
    for tier, direction, had in todo:
        upserts = split_dispatch(delta.dispatch_set(direction, tier), direction)
        gone: dict[int, list[str]] = {4: [], 6: []}
        for ip in delta.dispatch_removed(direction, tier):
            if ip in had:
                gone[_ip_family(ip, direction)].append(ip)
        verb = f"{map_verb(tier, direction)} " if script else ""
        for v in FAMILIES:
            gone[v] += [ip for ip in upserts[v] if ip in had]
            vmap = dispatch_map(direction, v, tier)
            if gone[v]:
                out.append(("delete", vmap, sorted(gone[v])))
            if upserts[v]:
                entries = [f"{ip} : {verb}{names.nft_chain(c)}" for ip, c in sorted(upserts[v].items())]
                out.append(("add", vmap, entries))
    return out


def _op_cmds(ops: list[ElementOp]) -> list[str]:
    return [cmd for verb, name, items in ops for cmd in _set_cmds(verb, name, items)]


def _touched(delta: NodeDelta) -> set[str]:
    """The sets that stay and whose elements change."""
    sids = delta.set_added.keys() | delta.set_removed.keys()
    return {sid for sid in sids if sid not in delta.new_sets and sid not in delta.removed_sets}


def kinds_before(delta: NodeDelta, model: NodeModel, families: tuple[int, ...]) -> set[str]:
    """The interval sets among those ``delta`` changes, from their content before it (for a
    caller that does not keep the kinds in the kernel, as `NftablesBackend` does)."""
    before = {}
    for sid in _touched(delta):
        new = model.sets.get(sid, frozenset())
        before[sid] = (new - delta.set_added.get(sid, frozenset())) | delta.set_removed.get(sid, frozenset())
    return interval_sets(before, families)


def kind_changes(delta: NodeDelta, model: NodeModel, interval: Container[str], families: tuple[int, ...]) -> list[str]:
    """Kernel sets whose kind (`is_hash`) ``delta`` changes: a host-only set (under its tag in
    the hosts set) gaining a CIDR, an interval set (its own) losing its last one. Those move
    between the hosts set and a set of their own, and every rule naming them changes with them:
    the caller applies a full snapshot instead. O(delta) but for an interval set losing a CIDR (rare: an ipBlock
    set's id changes with its definition)."""
    out: list[str] = []
    for sid in _touched(delta):
        added = delta.set_added.get(sid, frozenset())
        removed = delta.set_removed.get(sid, frozenset())
        for v in families:
            name = names.nft_set_of(sid, v)
            if name not in interval:
                changed = not _all_hosts(added) and not is_hash(set_forms(sid, added)[v], v)
            else:
                changed = (
                    not _all_hosts(removed)
                    and not is_hash(set_forms(sid, removed)[v], v)
                    and is_hash(set_forms(sid, model.sets.get(sid, frozenset()))[v], v)
                )
            if changed:
                out.append(name)
    return sorted(out)


def render_delta(
    delta: NodeDelta,
    model: NodeModel,
    cfg: NftConfig,
    had_ingress: Container[str],
    had_egress: Container[str],
    families: tuple[int, ...] | None = None,
    had_ports: Collection[str] | None = None,
    interval: Container[str] | None = None,
    gone: Mapping[str, frozenset[str]] = NO_SETS,
    had_tiers: HadTiers = NO_TIERS,
    tiers: tuple[bool, bool] | None = None,
    ports: tuple[dict[str, tuple[str, ...]], list[str]] | None = None,
) -> str:
    """One transaction for ``delta``; ``model`` is the result, ``had_*`` the pod IPs dispatched
    before (``had_tiers``: of the tier maps), ``had_ports`` the port chains in the kernel
    (`port_changes`; ``ports``: what that returns, when the caller knows it from the delta
    alone, `nft_ports.PortBook`). ``tiers``: whether the table has the tier objects (`is_tiered`) before
    and after ``delta``; when they differ, the tier objects are created (before the new chains,
    which may name them) or deleted (after the chains that used them), and the forward chain
    is rewritten, in the same transaction (None: unchanged).

    ``families``: the layout, ``layout(model)`` (which the caller may know without scanning the
    model); it must be the table's (a change of layout is a snapshot, `NftablesBackend`).
    ``interval``: the kernel's own (interval) sets (None: from the changed sets' content before
    ``delta``); a delta with `kind_changes` must be a snapshot instead. ``gone``: the content
    of the sets ``delta`` removes, as loaded (a host-only set's elements are deleted from the
    hosts set one by one; a `ValueError` when one is missing).
    Order: sets created and filled, element changes, new chains, dispatch, removed chains,
    removed sets — so no rule ever names a set, tag or chain that is not there yet (or any more).
    """
    families = families or layout(model)
    check_new_tags(delta, model)
    unknown = sorted(delta.removed_sets - gone.keys())
    if unknown:
        raise ValueError(f"render_delta: the content of removed sets {unknown[:5]} is needed to delete them")
    if interval is None:
        interval = kinds_before(delta, model, families) | interval_sets({s: gone[s] for s in delta.removed_sets})
    out: list[str] = []
    for sid, elems in delta.new_sets.items():
        kinds, forms = interval_families(sid, elems), set_forms(sid, elems)
        for v in families:
            if v in kinds:
                name = names.nft_set_of(sid, v)
                out.append(f"add {set_decl(name, v, qualified=True)}")
                out += _set_cmds("add", name, forms[v])
            else:
                out += _set_cmds("add", HOSTS[v], tagged(forms[v], names.nft_tag(sid)))
    out += _op_cmds(_set_element_ops(delta, model, families, interval))
    create_ports, delete_ports = ports if ports is not None else port_changes(delta, model, had_ports)
    for name, lines in create_ports.items():
        out += add_port_chain_cmds(name, lines)
    before, after = tiers if tiers is not None else (False, False)
    if after and not before:
        out += tier_objects_cmds()
    for cid, chain in delta.new_chains.items():
        out += add_chain_cmds(cid, chain, cfg, families, model.sets)
    out += _op_cmds(_dispatch_ops(delta, had_ingress, had_egress, True, had_tiers))
    if before != after:
        out += [f"flush chain {TABLE} {FORWARD}"] + [f"add rule {TABLE} {FORWARD} {r}" for r in forward_rules(after)]
    if before and not after:
        for name in (INPUT, EGRESS_TIERS):
            out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for cid in delta.removed_chains:
        name = names.nft_chain(cid)
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    if before and not after:
        for name in (EGRESS_AFTER_ADMIN, EGRESS_LOCAL):
            out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
        out += [f"delete map {TABLE} {name}" for name in TIER_MAPS]
    for name in delete_ports:
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for sid in sorted(delta.removed_sets):
        forms = set_forms(sid, gone[sid])
        for v in families:
            name = names.nft_set_of(sid, v)
            if name in interval:
                out.append(f"delete set {TABLE} {name}")
            else:
                out += _set_cmds("delete", HOSTS[v], tagged(forms[v], names.nft_tag(sid)))
    return "\n".join(out) + ("\n" if out else "")


def tier_objects_cmds() -> list[str]:
    """Create the tier objects in a table without them (the forward chain is rewritten apart):
    the maps, then the chains of `TIER_CHAINS` in order (each names only those before it)."""
    out = [
        f"add {map_decl(name, version).replace('map ', f'map {TABLE} ', 1)}"
        for name, (_, _, version) in TIER_MAPS.items()
    ]
    for name, lines in TIER_CHAINS.items():
        out += [f"add chain {TABLE} {name}{chain_head(name)}"] + [f"add rule {TABLE} {name} {line}" for line in lines]
    return out


def expected_rule_counts(model: NodeModel, cfg: NftConfig) -> dict[str, int]:
    """Rules per pod chain (by nft name), for the read-back to spot a chain edited by hand."""
    families = layout(model)
    return {names.nft_chain(cid): len(chain_lines(cid, c, cfg, families)) for cid, c in model.chains.items()}


def is_element_only(delta: NodeDelta) -> bool:
    """True when ``delta`` changes only set elements and dispatch entries (no set or chain comes or goes)."""
    return not (delta.new_sets or delta.new_chains or delta.removed_chains or delta.removed_sets)


def element_ops(
    delta: NodeDelta,
    model: NodeModel,
    had_ingress: Container[str],
    had_egress: Container[str],
    families: tuple[int, ...] | None = None,
    interval: Container[str] | None = None,
    had_tiers: HadTiers = NO_TIERS,
) -> list[ElementOp]:
    """The element changes of an element-only ``delta``, in the order `render_delta` uses
    (dispatch entries as ``"ip : chain"``, the netlink encoder's form); ``families`` and
    ``interval`` as there."""
    families = families or layout(model)
    if interval is None:
        interval = kinds_before(delta, model, families)
    ops = _set_element_ops(delta, model, families, interval)
    return ops + _dispatch_ops(delta, had_ingress, had_egress, False, had_tiers)
