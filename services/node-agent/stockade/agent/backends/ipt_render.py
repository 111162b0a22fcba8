"""Render the rule model for iptables + ipset (pure functions; `iptables.py` runs the scripts).

Objects (all ours, nothing else is ever declared in a restore file: kube-router#1248)::

    ipset STK-A-<h> / STK-A6-<h>     hash:net   one per address set and family
    ipset STK-PI-<h> / STK-PO-<h>    hash:ip    IPv4 pod IPs dispatched to one ingress / egress
          STK-PI6-<h> / STK-PO6-<h>             chain, and their IPv6 twins
    ipset STK-BI-NN / STK-BO-NN (+6)  hash:ip   the pods of a dispatch bucket (see `fwd_specs`)
    chain STOCKADE-FWD  jumped to from FORWARD: established first, then one jump per bucket
    chain STK-<chain id>  allow rules RETURN, deny tail NFLOG + DROP

Both families carry the same chains under the same names: iptables holds the IPv4 copy,
ip6tables the IPv6 one, each naming its own family's sets (an ipset holds one family, so an
element only ever matches packets of its family). A rule with no peer matches both. The IPv6
copy of STOCKADE-FWD also lets neighbour discovery through before any dispatch (`ND_TYPES`).

iptables has no verdict map, so dispatch is one ``-m set`` test per distinct chain (not per
pod): per-packet cost grows with the number of distinct rule lists on the node, which is far
smaller than the number of pods, but it is not constant as with the nftables backend. Allow
verdicts are RETURN, never ACCEPT, so rules of other components in FORWARD still run.

Once per connection: the deny tail keys a ``hashlimit`` table by (src, sport, dst, dport) with one
token per hour: the first packet of a connection (or UDP flow) gets through to NFLOG and the
counted ``deny`` DROP; its retransmits find the token spent and are dropped silently. Entries
expire after ``seen_timeout`` idle seconds. (An ipset ``hash:ip,port,ip`` with ``-j SET`` was
tried first: it cannot hold the destination port, so a new connection reusing a source port
of an earlier denied one to another port was not counted; 999 of 1,000 in the test.) When the
table is full (65,536 flows per direction) hashlimit drops the packet before it is counted.
hashlimit tables are per family, so each family has its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from stockade.agent.backends import elements, names
from stockade.model import Chain, Direction, PortMatch, Protocol, Rule, Tier

FWD = "STOCKADE-FWD"
SEEN = {Direction.INGRESS: "stk-seen-in", Direction.EGRESS: "stk-seen-out"}  # hashlimit tables
SEEN_MAX = 65536
DENY_COMMENT = "deny"
_MULTIPORT_MAX = 15  # xt_multiport: 15 slots, a range takes two

FAMILIES = (4, 6)
INET = {4: "inet", 6: "inet6"}  # ipset's family names
TABLES = {4: "iptables", 6: "ip6tables"}
VARIANTS = ("nft", "legacy")


def tool(family: int, action: str = "", variant: str | None = None) -> str:
    """The binary for ``family``: ``iptables``, ``ip6tables-restore``, ``iptables-legacy-save``...
    ``variant`` None takes the one the PATH's alternatives point to."""
    return "-".join([TABLES[family], *([variant] if variant else []), *([action] if action else [])])


_HOST = {4: "/32", 6: "/128"}

# ICMPv6 for isolated pods, as the nftables backend renders it (see ND_RULE there): ICMPv6 errors
# (destination-unreachable, packet-too-big, time-exceeded, parameter-problem) about a flow
# conntrack tracks are RELATED and pass the first rule, which keeps path-MTU discovery working;
# an error about no known flow is dispatched like any other packet (no unsolicited "errors").
# Neighbour discovery and router messages are link-local: they cross FORWARD only between
# bridged pods (br_netfilter), and pass only with hop limit 255, which no routed packet has
# left by the time it reaches FORWARD. Numeric types, as ip6tables-save prints them back.
ND_TYPES = (
    133,  # router-solicitation
    134,  # router-advertisement
    135,  # neighbour-solicitation
    136,  # neighbour-advertisement
    137,  # redirect
)


def tagged(name: str, family: int) -> str:
    """``STK-X-<h>`` for IPv4, ``STK-X6-<h>`` for IPv6: the family is in the tag."""
    if family == 4:
        return name
    head, tag, rest = name.split("-", 2)
    return f"{head}-{tag}6-{rest}"


def set_family(name: str) -> int:
    """The family of one of our ipsets, from its name (see `tagged`)."""
    return 6 if name.split("-", 2)[1].endswith("6") else 4


def addr_set(set_id: str, family: int = 4) -> str:
    return tagged(names.ipset_set(set_id), family)


# The dispatch a pod or bucket set belongs to, in its name, so a read-back knows it: NetworkPolicy
# pod sets "PI"/"PO" (bucket sets "BI"/"BO"), the tiers' "AI"/"AO" (Admin) and "LI"/"LO" (Baseline).
_TAG = {
    (Tier.NETPOL, Direction.INGRESS): "I",
    (Tier.NETPOL, Direction.EGRESS): "O",
    (Tier.ADMIN, Direction.INGRESS): "AI",
    (Tier.ADMIN, Direction.EGRESS): "AO",
    (Tier.BASELINE, Direction.INGRESS): "LI",
    (Tier.BASELINE, Direction.EGRESS): "LO",
}


_POD_TAG = {(f"P{t}" if tier is Tier.NETPOL else t): (tier, d) for (tier, d), t in _TAG.items()}


def pod_set_dispatch(name: str) -> tuple[Tier, Direction] | None:
    """The dispatch (tier, direction) of one of our pod sets, from its name; None for any other
    set (a bucket set, an address set)."""
    return _POD_TAG.get(name.split("-", 2)[1].removesuffix("6"))


def pod_set(chain_id: str, direction: Direction, family: int = 4, tier: Tier = Tier.NETPOL) -> str:
    tag = _TAG[tier, direction]
    tag = f"P{tag}" if tier is Tier.NETPOL else tag
    return tagged(names.ipset_pods(chain_id).replace("STK-P-", f"STK-{tag}-"), family)


def host(ip: str, family: int) -> str:
    return f"{ip}{_HOST[family]}"


def ipset_elements(elems: Iterable[str], family: int = 4) -> frozenset[str]:
    """The elements of ``family`` (others are the other family's set's); hash:net cannot hold
    a /0, so it becomes two /1. An element of neither family raises `elements.ElementError`."""
    out: set[str] = set()
    for e in elems:
        if elements.family(e) != family:
            continue
        net = ipaddress.ip_network(e, strict=False)
        if net.prefixlen == 0:
            out.update(str(n) for n in net.subnets(new_prefix=1))
        else:
            out.add(str(net))
    return frozenset(out)


def _port_groups(ports: Iterable[PortMatch]) -> dict[Protocol, list[str] | None]:
    out: dict[Protocol, list[str] | None] = {}
    for p in ports:
        if p.port is None:
            out[p.protocol] = None
        elif out.get(p.protocol, []) is not None:
            hi = p.end_port if p.end_port is not None else p.port
            spec = str(p.port) if hi == p.port else f"{p.port}:{hi}"
            specs = out.setdefault(p.protocol, [])
            assert specs is not None
            if spec not in specs:
                specs.append(spec)
    return out


def _chunks(specs: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    used = 0
    for spec in specs:
        cost = 2 if ":" in spec else 1
        if used + cost > _MULTIPORT_MAX:
            out.append([])
            used = 0
        out[-1].append(spec)
        used += cost
    return out


def rule_matches(rule: Rule, direction: Direction, family: int = 4) -> list[str]:
    """A rule's matches, one per protocol and multiport chunk ("" matches everything)."""
    flag = "src" if direction is Direction.INGRESS else "dst"
    peer = f" -m set --match-set {addr_set(rule.peer, family)} {flag}" if rule.peer is not None else ""
    if rule.ports is None:
        return [peer.strip()]
    out = []
    for proto, specs in sorted(_port_groups(rule.ports).items()):
        p = proto.value.lower()
        if specs is None:
            out.append(f"-p {p}{peer}")
        else:
            out += [f"-p {p}{peer} -m multiport --dports {','.join(c)}" for c in _chunks(specs)]
    return out


def rule_specs(rule: Rule, direction: Direction, family: int = 4) -> list[str]:
    return [f"{m} -j RETURN".strip() for m in rule_matches(rule, direction, family)]


def deny_specs(
    prefix: str, direction: Direction, nflog_group: int, log_rate: int | None, seen_timeout: int
) -> list[str]:
    """The deny tail: drop a flow's repeats, log and count its first packet under ``prefix``."""
    limit = f"-m limit --limit {log_rate}/sec --limit-burst {log_rate} " if log_rate else ""
    shown = f'"{prefix}"' if "/" in prefix else prefix  # as iptables-save prints it back
    return [
        f"-m hashlimit --hashlimit-above 1/hour --hashlimit-burst 1 "
        f"--hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name {SEEN[direction]} "
        f"--hashlimit-htable-size 16384 --hashlimit-htable-max {SEEN_MAX} "
        f"--hashlimit-htable-expire {seen_timeout * 1000} -j DROP",
        f"{limit}-j NFLOG --nflog-group {nflog_group} --nflog-prefix {shown}",
        f"-m comment --comment {DENY_COMMENT} -j DROP",
    ]


def chain_specs(
    chain_id: str, chain: Chain, nflog_group: int, log_rate: int | None, seen_timeout: int, family: int = 4
) -> list[str]:
    """A NetworkPolicy chain: its allows, then the deny tail (tier chains: `ipt_tiers`)."""
    specs = [s for r in chain.rules for s in rule_specs(r, chain.direction, family)]
    return [*specs, *deny_specs(chain_id, chain.direction, nflog_group, log_rate, seen_timeout)]


BUCKETS = 64
_FLAG = {Direction.EGRESS: "src", Direction.INGRESS: "dst"}


def bucket_of(pod_set_name: str) -> int:
    """The dispatch bucket of a chain, from the digest in its pod set's name (stable, no state;
    the same for both families, whose pod sets share the digest)."""
    return int(pod_set_name[-4:], 16) % BUCKETS


def bucket_set(direction: Direction, bucket: int, family: int = 4, tier: Tier = Tier.NETPOL) -> str:
    return tagged(f"STK-B{_TAG[tier, direction]}-{bucket:02d}", family)


def bucket_chain(direction: Direction, bucket: int, tier: Tier = Tier.NETPOL) -> str:
    return f"STK-D{_TAG[tier, direction]}-{bucket:02d}"


def buckets(chains: dict[str, Chain], tier: Tier = Tier.NETPOL) -> dict[tuple[Direction, int], list[str]]:
    """Chain ids of ``tier`` per (direction, bucket), sorted: the two-level dispatch tree (both
    families)."""
    out: dict[tuple[Direction, int], list[str]] = {}
    for cid in sorted(chains):
        chain = chains[cid]
        if chain.tier is tier:
            out.setdefault((chain.direction, bucket_of(pod_set(cid, chain.direction))), []).append(cid)
    return out


ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"


def fwd_head(family: int = 4) -> list[str]:
    """What STOCKADE-FWD does before any dispatch."""
    out = [
        ESTABLISHED,
        # No mid-stream pickup of a connection conntrack clean-up ended (see the nftables backend).
        "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP",
    ]
    return out + nd_specs(family)


def nd_specs(family: int) -> list[str]:
    """IPv6 neighbour discovery, let through before any dispatch (hop limit 255: never routed)."""
    if family != 6:
        return []
    return [f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -m hl --hl-eq 255 -j RETURN" for t in ND_TYPES]


def bucket_tests(
    chains: dict[str, Chain], direction: Direction, family: int = 4, tier: Tier = Tier.NETPOL, verb: str = "-j"
) -> list[str]:
    """One test per non-empty bucket of ``tier`` and ``direction``: ``verb`` its bucket chain."""
    tree = buckets(chains, tier)
    flag = _FLAG[direction]
    return [
        f"-m set --match-set {bucket_set(direction, b, family, tier)} {flag} {verb} {bucket_chain(direction, b, tier)}"
        for b in range(BUCKETS)
        if (direction, b) in tree
    ]


def fwd_specs(chains: dict[str, Chain], family: int = 4) -> list[str]:
    """STOCKADE-FWD of a table without tiers: established first, then one test per non-empty
    bucket, egress before ingress (with tiers: `ipt_tiers.fwd_specs`).

    Two levels (bucket set, then the chain's pod set inside the bucket chain) keep a new
    connection's walk near 2 x sqrt(chains) set tests instead of one per chain."""
    tests = [t for d in (Direction.EGRESS, Direction.INGRESS) for t in bucket_tests(chains, d, family)]
    return [*fwd_head(family), *tests]


def bucket_specs(direction: Direction, chain_ids: list[str], family: int = 4, tier: Tier = Tier.NETPOL) -> list[str]:
    """One bucket chain: ``goto`` the pod's chain, whose RETURN goes back to the chain that
    jumped to the bucket chain."""
    flag = _FLAG[direction]
    return [
        f"-m set --match-set {pod_set(cid, direction, family, tier)} {flag} -g {names.ipt_chain(cid)}"
        for cid in chain_ids
    ]


def bucket_chains(chains: dict[str, Chain], family: int = 4) -> dict[str, list[str]]:
    """The NetworkPolicy bucket chains (the tiers': `ipt_tiers.tier_chains`)."""
    return {bucket_chain(d, b): bucket_specs(d, ids, family) for (d, b), ids in buckets(chains).items()}


def restore_script(chains: dict[str, list[str]], delete: Iterable[str] = (), hooks: Iterable[str] = ()) -> str:
    """An ``iptables-restore --noflush`` file: each named chain (re)declared, which flushes it, and
    refilled; ``hooks`` (our jumps in the kernel's own chains, ``-I FORWARD 1 ...``, ``-D INPUT ...``)
    after the chains they name are filled and before those they name are removed; ``delete``
    chains flushed and removed. Nothing else is mentioned."""
    lines = ["*filter"]
    delete = sorted(delete)
    lines += [f":{name} - [0:0]" for name in [*chains, *delete]]
    for name, specs in chains.items():
        lines += [f"-A {name} {s}" for s in specs]
    lines += list(hooks)
    lines += [f"-X {name}" for name in delete]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
