"""Render the rule model for iptables + ipset (pure functions; `iptables.py` runs the scripts).

Objects (all ours, nothing else is ever declared in a restore file: kube-router#1248)::

    ipset STK-A-<h>   hash:net   one per address set
    ipset STK-PI-<h> / STK-PO-<h>  hash:ip   pod IPs dispatched to one ingress / egress chain
    chain STOCKADE-FWD  jumped to from FORWARD: established first, then one jump per chain
    chain STK-<chain id>  allow rules RETURN, deny tail NFLOG + DROP

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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from stockade.agent.backends import elements, names
from stockade.model import Chain, Direction, PortMatch, Protocol, Rule

FWD = "STOCKADE-FWD"
SEEN = {Direction.INGRESS: "stk-seen-in", Direction.EGRESS: "stk-seen-out"}  # hashlimit tables
SEEN_MAX = 65536
DENY_COMMENT = "deny"
_MULTIPORT_MAX = 15  # xt_multiport: 15 slots, a range takes two


def pod_set(chain_id: str, direction: Direction) -> str:
    # Direction in the name, so a read-back knows which dispatch a pod set belongs to.
    tag = "PI" if direction is Direction.INGRESS else "PO"
    return names.ipset_pods(chain_id).replace("STK-P-", f"STK-{tag}-")


def ipset_elements(elems: Iterable[str]) -> frozenset[str]:
    """IPv4 only (see `elements`); hash:net cannot hold a /0, so it becomes two /1."""
    out: set[str] = set()
    for e in elems:
        if not elements.is_v4(e):
            continue
        net = ipaddress.IPv4Network(e, strict=False)
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


def rule_specs(rule: Rule, direction: Direction) -> list[str]:
    flag = "src" if direction is Direction.INGRESS else "dst"
    peer = f" -m set --match-set {names.ipset_set(rule.peer)} {flag}" if rule.peer is not None else ""
    if rule.ports is None:
        return [f"{peer.strip()} -j RETURN".strip()]
    out = []
    for proto, specs in sorted(_port_groups(rule.ports).items()):
        p = proto.value.lower()
        if specs is None:
            out.append(f"-p {p}{peer} -j RETURN")
        else:
            out += [f"-p {p}{peer} -m multiport --dports {','.join(c)} -j RETURN" for c in _chunks(specs)]
    return out


def chain_specs(chain_id: str, chain: Chain, nflog_group: int, log_rate: int | None, seen_timeout: int) -> list[str]:
    seen = SEEN[chain.direction]
    limit = f"-m limit --limit {log_rate}/sec --limit-burst {log_rate} " if log_rate else ""
    specs = [s for r in chain.rules for s in rule_specs(r, chain.direction)]
    return [
        *specs,
        f"-m hashlimit --hashlimit-above 1/hour --hashlimit-burst 1 "
        f"--hashlimit-mode srcip,srcport,dstip,dstport --hashlimit-name {seen} "
        f"--hashlimit-htable-size 16384 --hashlimit-htable-max {SEEN_MAX} "
        f"--hashlimit-htable-expire {seen_timeout * 1000} -j DROP",
        f"{limit}-j NFLOG --nflog-group {nflog_group} --nflog-prefix {chain_id}",
        f"-m comment --comment {DENY_COMMENT} -j DROP",
    ]


BUCKETS = 64
_FLAG = {Direction.EGRESS: "src", Direction.INGRESS: "dst"}


def bucket_of(pod_set_name: str) -> int:
    """The dispatch bucket of a chain, from the digest in its pod set's name (stable, no state)."""
    return int(pod_set_name[-4:], 16) % BUCKETS


def bucket_set(direction: Direction, bucket: int) -> str:
    return f"STK-B{'I' if direction is Direction.INGRESS else 'O'}-{bucket:02d}"


def bucket_chain(direction: Direction, bucket: int) -> str:
    return f"STK-D{'I' if direction is Direction.INGRESS else 'O'}-{bucket:02d}"


def buckets(chains: dict[str, Chain]) -> dict[tuple[Direction, int], list[str]]:
    """Chain ids per (direction, bucket), sorted: the two-level dispatch tree."""
    out: dict[tuple[Direction, int], list[str]] = {}
    for cid in sorted(chains):
        direction = chains[cid].direction
        out.setdefault((direction, bucket_of(pod_set(cid, direction))), []).append(cid)
    return out


def fwd_specs(chains: dict[str, Chain]) -> list[str]:
    """STOCKADE-FWD: established first, then one test per non-empty bucket, egress before ingress.

    Two levels (bucket set, then the chain's pod set inside the bucket chain) keep a new
    connection's walk near 2 x sqrt(chains) set tests instead of one per chain."""
    out = [
        "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        # No mid-stream pickup of a connection conntrack clean-up ended (see the nftables backend).
        "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP",
    ]
    tree = buckets(chains)
    for direction in (Direction.EGRESS, Direction.INGRESS):
        for b in range(BUCKETS):
            if (direction, b) in tree:
                flag = _FLAG[direction]
                out.append(f"-m set --match-set {bucket_set(direction, b)} {flag} -j {bucket_chain(direction, b)}")
    return out


def bucket_specs(direction: Direction, chain_ids: list[str]) -> list[str]:
    """One bucket chain: ``goto`` the pod's chain, whose RETURN goes back to STOCKADE-FWD."""
    flag = _FLAG[direction]
    return [f"-m set --match-set {pod_set(cid, direction)} {flag} -g {names.ipt_chain(cid)}" for cid in chain_ids]


def bucket_chains(chains: dict[str, Chain]) -> dict[str, list[str]]:
    return {bucket_chain(d, b): bucket_specs(d, ids) for (d, b), ids in buckets(chains).items()}


def restore_script(chains: dict[str, list[str]], delete: Iterable[str] = ()) -> str:
    """An ``iptables-restore --noflush`` file: each named chain (re)declared, which flushes it, and
    refilled; ``delete`` chains flushed and removed. Nothing else is mentioned."""
    lines = ["*filter"]
    delete = sorted(delete)
    lines += [f":{name} - [0:0]" for name in [*chains, *delete]]
    for name, specs in chains.items():
        lines += [f"-A {name} {s}" for s in specs]
    lines += [f"-X {name}" for name in delete]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
