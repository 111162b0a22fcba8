"""Render the rule model as nftables scripts (pure functions of data; the applier runs them).

Layout (one table, ``inet stockade``)::

    set a_<set>        ipv4 interval set per address set
    map ingress_dispatch / egress_dispatch   pod IP -> jump <chain>   (one lookup per packet)
    set seen_in / seen_out   denied 5-tuples (dynamic, timeout): count a connection once
    chain in_<h> / out_<h>   one per distinct rule list, shared by pods
    chain forward      hook forward: established first, then egress, then ingress dispatch

Per packet: one conntrack state test, two hash lookups, then only the rules of the pod's own
chain; nothing grows with the number of pods or policies on the node. Egress chains ``return``
on allow so the destination's ingress chain is checked next; ingress chains ``accept``.

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
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable
from dataclasses import dataclass

from stockade.agent.backends import elements, names
from stockade.model import Chain, Direction, NodeDelta, NodeModel, PortMatch, Protocol, Rule

TABLE = "inet stockade"
FORWARD = "forward"
DISPATCH = {Direction.INGRESS: "ingress_dispatch", Direction.EGRESS: "egress_dispatch"}
_KEY = "ip saddr . ip daddr . meta l4proto . th sport . th dport"
SEEN = {Direction.INGRESS: "seen_in", Direction.EGRESS: "seen_out"}
# Shared by every pod chain of a direction: drop a flow already denied (silently), else note it.
ONCE = {Direction.INGRESS: "once_in", Direction.EGRESS: "once_out"}


def once_lines(direction: Direction, cfg: NftConfig) -> list[str]:
    """A flow already denied is dropped silently (its entry refreshed); a new one is noted.

    TCP entries live through a SYN's whole retransmit series; other flows as long as conntrack
    keeps an unreplied UDP flow, so a flow that conntrack would see as new counts again."""
    seen, tcp, other = SEEN[direction], cfg.seen_timeout, cfg.flow_timeout
    return [
        f"meta l4proto tcp {_KEY} @{seen} update @{seen} {{ {_KEY} timeout {tcp}s }} drop",
        f"{_KEY} @{seen} update @{seen} {{ {_KEY} timeout {other}s }} drop",
        f"meta l4proto tcp add @{seen} {{ {_KEY} timeout {tcp}s }}",
        f"meta l4proto != tcp add @{seen} {{ {_KEY} timeout {other}s }}",
    ]


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


def rule_lines(rule: Rule, direction: Direction) -> list[str]:
    peer = ""
    if rule.peer is not None:
        field = "saddr" if direction is Direction.INGRESS else "daddr"
        peer = f"ip {field} @{names.nft_set(rule.peer)} "
    verdict = "accept" if direction is Direction.INGRESS else "return"
    if rule.ports is None:
        return [f"{peer}{verdict}"]
    lines = []
    for proto, specs in sorted(_ports(rule.ports).items()):
        l4 = _L4[proto]
        if specs is None:
            lines.append(f"{peer}meta l4proto {l4} {verdict}")
        elif len(specs) <= ANON_SET_MAX_RULES:
            # An anonymous set is a kernel object of its own: thousands of them made a snapshot
            # ten times slower than the rules themselves. A few ports are cheaper as rules.
            lines += [f"{peer}{l4} dport {spec} {verdict}" for spec in specs]
        else:
            lines.append(f"{peer}{l4} dport {{ {', '.join(specs)} }} {verdict}")
    return lines


def chain_lines(chain_id: str, chain: Chain, cfg: NftConfig) -> list[str]:
    """Every rule of one pod chain, allow rules then the deny tail."""
    lines = [line for rule in chain.rules for line in rule_lines(rule, chain.direction)]
    log = f"log group {cfg.nflog_group} prefix {_quote(chain_id)}"
    deny = f"counter drop comment {_quote(deny_comment(cfg))}"
    lines.append(f"jump {ONCE[chain.direction]}")
    if cfg.log_rate:
        # The limit must not stop the counter: log in a rule of its own, count in the next.
        lines += [f"limit rate {cfg.log_rate}/second burst {cfg.log_rate} packets {log}", deny]
    else:
        lines.append(f"{log} {deny}")
    return lines


def _elems(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _seen_decl(direction: Direction, cfg: NftConfig) -> str:
    return (
        f"set {SEEN[direction]} {{ type ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service; "
        f"flags dynamic,timeout; timeout {cfg.seen_timeout}s; size {cfg.seen_size}; }}"
    )


FORWARD_RULES = [
    "ct state established,related accept",
    # A TCP packet that is "new" but no SYN is a connection picked up mid-stream, e.g. from the
    # server's side after conntrack clean-up ended a forbidden connection: without this, the
    # kernel would re-create the entry in reverse and the ended connection would live on.
    "tcp flags & (fin | syn | rst | ack) != syn ct state new drop",
    f"ip saddr vmap @{DISPATCH[Direction.EGRESS]}",
    f"ip daddr vmap @{DISPATCH[Direction.INGRESS]}",
]


def render_snapshot(model: NodeModel, cfg: NftConfig) -> str:
    """One transaction that replaces our table (whatever it held) with ``model``."""
    out = [f"table {TABLE} {{}}", f"delete table {TABLE}", f"table {TABLE} {{"]
    out += [f"  {_seen_decl(d, cfg)}" for d in Direction]
    for sid, elems in model.sets.items():
        kernel = elements.kernel_form(elems)
        body = f" elements = {{ {_elems(kernel)} }};" if kernel else ""
        out.append(f"  set {names.nft_set(sid)} {{ type ipv4_addr; flags interval;{body} }}")
    for direction in Direction:
        entries = [
            f"{ip} : jump {names.nft_chain(cid)}" for ip, cid in model.dispatch(direction).items() if elements.is_v4(ip)
        ]
        body = f" elements = {{ {', '.join(entries)} }};" if entries else ""
        out.append(f"  map {DISPATCH[direction]} {{ type ipv4_addr : verdict;{body} }}")
    for direction in Direction:
        out.append(f"  chain {ONCE[direction]} {{")
        out += [f"    {line}" for line in once_lines(direction, cfg)]
        out.append("  }")
    for cid, chain in model.chains.items():
        out.append(f"  chain {names.nft_chain(cid)} {{")
        out += [f"    {line}" for line in chain_lines(cid, chain, cfg)]
        out.append("  }")
    out.append(f"  chain {FORWARD} {{")
    out.append("    type filter hook forward priority filter; policy accept;")
    out += [f"    {line}" for line in FORWARD_RULES]
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def _set_cmds(verb: str, name: str, items: Iterable[str]) -> list[str]:
    items = sorted(items)
    return [f"{verb} element {TABLE} {name} {{ {', '.join(items)} }}"] if items else []


def add_chain_cmds(cid: str, chain: Chain, cfg: NftConfig) -> list[str]:
    """Create (or reset) one pod chain: ``flush`` makes it idempotent when the chain exists."""
    name = names.nft_chain(cid)
    return [f"add chain {TABLE} {name}", f"flush chain {TABLE} {name}"] + [
        f"add rule {TABLE} {name} {line}" for line in chain_lines(cid, chain, cfg)
    ]


def render_delta(
    delta: NodeDelta,
    model: NodeModel,
    cfg: NftConfig,
    had_ingress: Container[str],
    had_egress: Container[str],
) -> str:
    """One transaction for ``delta``; ``model`` is the result, ``had_*`` the pod IPs dispatched before.

    Order: sets created and filled, element changes, new chains, dispatch, removed chains,
    removed sets — so no rule ever names a set or chain that is not there yet (or any more).
    """
    out: list[str] = []
    for sid, elems in delta.new_sets.items():
        name = names.nft_set(sid)
        out.append(f"add set {TABLE} {name} {{ type ipv4_addr; flags interval; }}")
        out += _set_cmds("add", name, elements.kernel_form(elems))
    for sid in delta.set_added.keys() | delta.set_removed.keys():
        if sid in delta.new_sets or sid in delta.removed_sets:
            continue
        added = delta.set_added.get(sid, frozenset())
        removed = delta.set_removed.get(sid, frozenset())
        new = model.sets.get(sid, frozenset())
        to_add, to_del = elements.change((new - added) | removed, new, added, removed)
        name = names.nft_set(sid)
        out += _set_cmds("delete", name, to_del)
        out += _set_cmds("add", name, to_add)
    for cid, chain in delta.new_chains.items():
        out += add_chain_cmds(cid, chain, cfg)
    for direction, had in ((Direction.INGRESS, had_ingress), (Direction.EGRESS, had_egress)):
        vmap = DISPATCH[direction]
        upserts = {ip: c for ip, c in delta.dispatch_set(direction).items() if elements.is_v4(ip)}
        gone = [ip for ip in delta.dispatch_removed(direction) if elements.is_v4(ip) and ip in had]
        gone += [ip for ip in upserts if ip in had]  # a map refuses to overwrite: delete, then add
        out += _set_cmds("delete", vmap, gone)
        out += _set_cmds("add", vmap, [f"{ip} : jump {names.nft_chain(c)}" for ip, c in upserts.items()])
    for cid in delta.removed_chains:
        name = names.nft_chain(cid)
        out += [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]
    for sid in delta.removed_sets:
        out.append(f"delete set {TABLE} {names.nft_set(sid)}")
    return "\n".join(out) + ("\n" if out else "")


def expected_rule_counts(model: NodeModel, cfg: NftConfig) -> dict[str, int]:
    """Rules per pod chain (by nft name), for the read-back to spot a chain edited by hand."""
    return {names.nft_chain(cid): len(chain_lines(cid, c, cfg)) for cid, c in model.chains.items()}


def is_element_only(delta: NodeDelta) -> bool:
    """True when ``delta`` changes only set elements and dispatch entries (no set or chain comes or goes)."""
    return not (delta.new_sets or delta.new_chains or delta.removed_chains or delta.removed_sets)


ElementOp = tuple[str, str, list[str]]  # ("add" | "delete", set or map name, CIDRs or "ip : chain")


def element_ops(
    delta: NodeDelta, model: NodeModel, had_ingress: Container[str], had_egress: Container[str]
) -> list[ElementOp]:
    """The element changes of an element-only ``delta``, in the order `render_delta` uses."""
    out: list[ElementOp] = []
    for sid in delta.set_added.keys() | delta.set_removed.keys():
        added = delta.set_added.get(sid, frozenset())
        removed = delta.set_removed.get(sid, frozenset())
        new = model.sets.get(sid, frozenset())
        to_add, to_del = elements.change((new - added) | removed, new, added, removed)
        name = names.nft_set(sid)
        if to_del:
            out.append(("delete", name, sorted(to_del)))
        if to_add:
            out.append(("add", name, sorted(to_add)))
    for direction, had in ((Direction.INGRESS, had_ingress), (Direction.EGRESS, had_egress)):
        vmap = DISPATCH[direction]
        upserts = {ip: c for ip, c in delta.dispatch_set(direction).items() if elements.is_v4(ip)}
        gone = [ip for ip in delta.dispatch_removed(direction) if elements.is_v4(ip) and ip in had]
        gone += [ip for ip in upserts if ip in had]
        if gone:
            out.append(("delete", vmap, sorted(gone)))
        if upserts:
            out.append(("add", vmap, [f"{ip} : {names.nft_chain(c)}" for ip, c in sorted(upserts.items())]))
    return out
