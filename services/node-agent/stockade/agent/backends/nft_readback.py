"""Parse what the kernel holds (``nft -j list table inet stockade``) into a comparable view.

Pure functions of the JSON text, so the drift logic is testable without a kernel. The view is in
kernel names (see `names`), and the comparison with a model happens in that name space; the
elements of the shared hosts sets are grouped by tag (`nft_render.tagged`), each group one
host-only address set, compared with the model's sets by tag (`names.nft_tag`). Every rule is
compared by what it does: pod and port chains with the renderer's lines (`nft_canon`), the fixed
chains with a scratch copy read from the same kernel (`Reference`), so a rule replaced one-for-one
is drift.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stockade.agent.backends import elements, names
from stockade.agent.backends.nft_canon import kernel_rule, rendered_rule
from stockade.agent.backends.nft_render import (
    BASE_SPEC,
    DENY_COMMENT,
    EGRESS_TIERS,
    FORWARD,
    FORWARD_RULES,
    HOSTS,
    HOSTS_FAMILY,
    HOSTS_TYPE,
    MAPS,
    ONCE,
    SEEN,
    TIER_CHAINS,
    TIER_MAPS,
    NftConfig,
    Tag,
    chain_has_deny,
    chain_lines,
    deny_comment,
    forward_rules,
    is_hash,
    is_tiered,
    layout,
    map_verb,
    once_lines,
    port_chains,
    set_forms,
    split_dispatch,
    tag_owners,
)
from stockade.model import CNP_TIERS, Direction, NodeModel, Tier

PORT_CHAIN = "p_"  # names.nft_ports


@dataclass
class KernelView:
    """Our table as the kernel holds it."""

    sets: dict[str, frozenset[str]] = field(default_factory=dict)  # own address sets (both families): name -> CIDRs
    # the hosts sets' elements: (family, tag) -> CIDRs (/32, /128)
    tagged: dict[tuple[int, Tag], frozenset[str]] = field(default_factory=dict)
    interval: set[str] = field(default_factory=set)  # the address sets that are interval sets (others: hash)
    chains: dict[str, int] = field(default_factory=dict)  # pod chains: name -> rule count
    ports: dict[str, int] = field(default_factory=dict)  # shared port chains: name -> rule count
    settings: dict[str, str] = field(default_factory=dict)  # pod chains: name -> deny rule's comment
    # pod and port chains: name -> each rule's canonical text (`nft_canon`), in order
    rules: dict[str, list[str]] = field(default_factory=dict)
    ingress: dict[str, str] = field(default_factory=dict)  # pod IP (either family) -> chain name
    egress: dict[str, str] = field(default_factory=dict)
    fixed: set[str] = field(default_factory=set)  # our fixed objects present: maps, seen sets, forward
    forward_rules: int = 0
    once_rules: dict[str, int] = field(default_factory=dict)
    fixed_rules: dict[str, list[str]] = field(default_factory=dict)  # forward, once_*: canonical texts
    handles: dict[str, int] = field(default_factory=dict)  # "table", "set NAME", "chain NAME" -> handle
    # log prefix -> deny counter: a chain id (a NetworkPolicy chain's tail), "<chain id>/<rule
    # index>" (a tier chain's Deny rule)
    denied: dict[str, int] = field(default_factory=dict)
    # the tier maps: (tier, direction) -> pod IP -> "jump <chain>" / "goto <chain>"
    tiers: dict[tuple[Tier, Direction], dict[str, str]] = field(default_factory=dict)

    def dispatch(self, direction: Direction, tier: Tier = Tier.NETPOL) -> dict[str, str]:
        if tier is not Tier.NETPOL:
            return self.tiers.setdefault((tier, direction), {})
        return self.ingress if direction is Direction.INGRESS else self.egress


def _elem_cidrs(elem: Any) -> list[str]:
    if isinstance(elem, dict) and "elem" in elem:  # an element with options (timeout, comment)
        elem = elem["elem"]["val"]
    if isinstance(elem, str):
        return [elem if "/" in elem else f"{elem}/{128 if ':' in elem else 32}"]
    if "prefix" in elem:
        return [f"{elem['prefix']['addr']}/{elem['prefix']['len']}"]
    if "range" in elem:
        lo, hi = (ipaddress.ip_address(a) for a in elem["range"])
        return [str(n) for n in ipaddress.summarize_address_range(lo, hi)]
    raise ValueError(f"unexpected set element {elem!r}")


def _tagged(version: int, elems: Iterable[Any], into: dict[tuple[int, Tag], frozenset[str]]) -> None:
    """Group a hosts set's ``addr . hi . lo`` elements by tag."""
    host = "/128" if version == 6 else "/32"
    groups: dict[tuple[int, Tag], set[str]] = {}
    for elem in elems:
        if isinstance(elem, dict) and "elem" in elem:
            elem = elem["elem"]["val"]
        addr, hi, lo = elem["concat"]
        groups.setdefault((version, (hi, lo)), set()).add(addr + host)
    into.update((key, frozenset(addrs)) for key, addrs in groups.items())


def parse(text: str) -> KernelView:
    view = KernelView()
    prefix_of: dict[str, str] = {}
    deny_of: dict[str, int] = {}
    for obj in json.loads(text)["nftables"]:
        if "table" in obj:
            view.handles["table"] = obj["table"]["handle"]
        elif "set" in obj:
            s = obj["set"]
            view.handles[f"set {s['name']}"] = s["handle"]
            if s["name"] in SEEN.values():
                view.fixed.add(s["name"])
            elif s["name"] in HOSTS_FAMILY:
                version = HOSTS_FAMILY[s["name"]]
                if s.get("type") == HOSTS_TYPE[version] and not s.get("flags"):
                    view.fixed.add(s["name"])  # else re-created by hand: missing, the table is replaced
                _tagged(version, s.get("elem", []), view.tagged)
            else:
                view.sets[s["name"]] = frozenset(c for e in s.get("elem", []) for c in _elem_cidrs(e))
                flags = s.get("flags", [])
                if "interval" in ([flags] if isinstance(flags, str) else flags):
                    view.interval.add(s["name"])
        elif "map" in obj:
            m = obj["map"]
            view.handles[f"map {m['name']}"] = m["handle"]
            view.fixed.add(m["name"])
            if m["name"] in MAPS:
                target = view.dispatch(MAPS[m["name"]][0])
                for key, verdict in m.get("elem", []):
                    target[key] = next(iter(verdict.values()))["target"]
            elif m["name"] in TIER_MAPS:
                tier, direction, _ = TIER_MAPS[m["name"]]
                target = view.dispatch(direction, tier)
                for key, verdict in m.get("elem", []):  # the verb too: jump and goto differ
                    ((verb, body),) = verdict.items()
                    target[key] = f"{verb} {body['target']}"
        elif "chain" in obj:
            c = obj["chain"]
            view.handles[f"chain {c['name']}"] = c["handle"]
            if c["name"] in BASE_SPEC:  # forward, input: ours only with their hook (named as they are)
                if c.get("hook") == c["name"] and c.get("policy") == "accept":
                    view.fixed.add(c["name"])
            elif c["name"] in ONCE.values() or c["name"] in TIER_CHAINS:
                view.fixed.add(c["name"])
            elif c["name"].startswith(PORT_CHAIN):
                view.ports[c["name"]] = 0
                view.rules[c["name"]] = []
            else:
                view.chains[c["name"]] = 0
                view.rules[c["name"]] = []
        elif "rule" in obj:
            r = obj["rule"]
            chain = r["chain"]
            if chain == FORWARD:
                view.forward_rules += 1
                view.fixed_rules.setdefault(chain, []).append(kernel_rule(r))
                continue
            if chain in ONCE.values() or chain in TIER_CHAINS:
                view.once_rules[chain] = view.once_rules.get(chain, 0) + 1
                view.fixed_rules.setdefault(chain, []).append(kernel_rule(r))
                continue
            view.rules.setdefault(chain, []).append(kernel_rule(r))
            if chain.startswith(PORT_CHAIN):
                view.ports[chain] = view.ports.get(chain, 0) + 1
                continue
            view.chains[chain] = view.chains.get(chain, 0) + 1
            for expr in r["expr"]:
                if "log" in expr and "prefix" in expr["log"]:
                    prefix_of[chain] = expr["log"]["prefix"]
                if "counter" in expr and r.get("comment", "").startswith(DENY_COMMENT):
                    # Under the prefix of the log before it (this rule's, or with log_rate the
                    # rule before): a tier chain has a counted drop per Deny rule (and match).
                    key = prefix_of.get(chain, chain)
                    deny_of[key] = deny_of.get(key, 0) + expr["counter"]["packets"]
                    view.settings[chain] = r["comment"]
    view.denied = deny_of
    return view


# The fixed chains (forward, once_in, once_out) -> their rules' canonical texts as this kernel and
# nft show them, read from a scratch table (`NftablesBackend.fixed_reference`): nft shows these
# rules otherwise than they are written (a dependency such as ``meta l4proto tcp`` left out, ``th``
# shown as ``tcp``), so the renderer's text cannot stand for them.
Reference = dict[str, tuple[str, ...]]


@dataclass
class Desired:
    """A model in kernel names: what `KernelView` should equal."""

    sets: dict[str, frozenset[str]]  # both families' kernel sets
    families: dict[str, int]  # kernel set name -> 4 or 6
    chains: dict[str, int]
    comment: str  # the deny rule's comment every pod chain should carry
    rules: dict[str, tuple[str, ...]]  # pod and port chains: name -> canonical rule texts (`nft_canon`)
    ingress: dict[str, str]
    egress: dict[str, str]
    ports: dict[str, tuple[str, ...]] = field(default_factory=dict)  # shared port chains: name -> rules
    interval: set[str] = field(default_factory=set)  # the sets that must be interval sets (`is_hash`)
    tagged: dict[tuple[int, Tag], frozenset[str]] = field(default_factory=dict)  # non-empty host-only sets
    owners: dict[Tag, str] = field(default_factory=dict)  # tag -> set id (`tag_owners`)
    # own-set kernel name -> set id, for every set and family of the layout (where it lives or
    # would live with a CIDR): a set that moved between its own set and the hosts set
    set_ids: dict[str, str] = field(default_factory=dict)
    fixed: Reference | None = None  # the fixed chains' rules; None: compared by count only
    tiered: bool = False  # whether the table must have the tier objects (`nft_render.is_tiered`)
    # the tier maps: (tier, direction) -> pod IP -> "jump <chain>" / "goto <chain>"
    tiers: dict[tuple[Tier, Direction], dict[str, str]] = field(default_factory=dict)
    no_deny: set[str] = field(default_factory=set)  # pod chains without a deny rule (tier chains)

    def dispatch(self, direction: Direction, tier: Tier = Tier.NETPOL) -> dict[str, str]:
        if tier is not Tier.NETPOL:
            return self.tiers.get((tier, direction), {})
        return self.ingress if direction is Direction.INGRESS else self.egress

    def comment_of(self, name: str) -> str | None:
        """The deny comment a pod chain's rules carry (None: it has no deny rule)."""
        return None if name in self.no_deny else self.comment


def desired(model: NodeModel, cfg: NftConfig, fixed: Reference | None = None) -> Desired:
    """``model`` in kernel names and in its layout (`nft_render.layout`: no ``a6_`` sets and no
    ``ip6`` peer rules when it dispatches no IPv6 address); refuses (`ElementError`) what no
    family can hold, as rendering does. ``fixed``: the fixed chains' `Reference`."""
    sets: dict[str, frozenset[str]] = {}
    families: dict[str, int] = {}
    interval: set[str] = set()
    tagged: dict[tuple[int, Tag], frozenset[str]] = {}
    set_ids: dict[str, str] = {}
    owners = tag_owners(model.sets)
    in_layout = layout(model)
    lines = {names.nft_chain(c): chain_lines(c, ch, cfg, in_layout, model.sets) for c, ch in model.chains.items()}
    ports = port_chains(model.chains.values())
    for sid, elems in model.sets.items():
        for version, form in set_forms(sid, elems).items():
            if version not in in_layout:
                continue
            name = names.nft_set_of(sid, version)
            set_ids[name] = sid
            if is_hash(form, version):
                if form:
                    tagged[version, names.nft_tag(sid)] = form
                continue
            sets[name] = form
            families[name] = version
            interval.add(name)
    dispatch = {
        d: {ip: names.nft_chain(c) for by_v in split_dispatch(model.dispatch(d), d).values() for ip, c in by_v.items()}
        for d in Direction
    }
    tiered = is_tiered(model)
    tiers = {
        (t, d): {
            ip: f"{map_verb(t, d)} {names.nft_chain(c)}"
            for by_v in split_dispatch(model.dispatch(d, t), d).values()
            for ip, c in by_v.items()
        }
        for t in CNP_TIERS
        for d in Direction
    }
    no_deny = {names.nft_chain(c) for c, ch in model.chains.items() if not chain_has_deny(ch)} if tiered else set()
    return Desired(
        sets=sets,
        families=families,
        chains={name: len(ls) for name, ls in lines.items()},
        comment=deny_comment(cfg),
        rules={name: tuple(map(rendered_rule, ls)) for name, ls in (lines | ports).items()},
        ingress=dispatch[Direction.INGRESS],
        egress=dispatch[Direction.EGRESS],
        ports=ports,
        interval=interval,
        tagged=tagged,
        owners=owners,
        set_ids=set_ids,
        fixed=fixed,
        tiered=tiered,
        tiers=tiers,
        no_deny=no_deny,
    )


def set_contents(view: KernelView, sids: Iterable[str]) -> dict[str, frozenset[str]]:
    """What the kernel holds of these address sets (both families, own sets and tags)."""
    out: dict[str, frozenset[str]] = {}
    for sid in sids:
        tag = names.nft_tag(sid)
        parts = [
            view.tagged.get((v, tag), frozenset()) | view.sets.get(names.nft_set_of(sid, v), frozenset()) for v in HOSTS
        ]
        out[sid] = parts[0] | parts[1]
    return out


def tag_problems(view: KernelView, want: Desired) -> list[str]:
    """The hosts sets' elements that differ from the model, per tag (a tag no model set has:
    elements left behind, or added by hand)."""
    out = []
    for key in sorted(want.tagged.keys() | view.tagged.keys()):
        version, tag = key
        have, elems = view.tagged.get(key, frozenset()), want.tagged.get(key, frozenset())
        if same_coverage(have, elems):
            continue
        missing, extra = sorted(elems - have), sorted(have - elems)
        sid = want.owners.get(tag)
        whose = f"address set {sid!r}" if sid is not None else "no address set"
        out.append(
            f"set {HOSTS[version]} tag {tag[0]}.{tag[1]} ({whose}) differs: missing elements {missing[:5]}, "
            f"extra {extra[:5]}"
        )
    return out


def same_coverage(a: frozenset[str], b: frozenset[str]) -> bool:
    return a == b or elements.coverages(a) == elements.coverages(b)


FIXED = {*MAPS, *SEEN.values(), *HOSTS.values(), *ONCE.values(), FORWARD}
TIER_FIXED = {*TIER_MAPS, *TIER_CHAINS}  # beside FIXED in a table with tiers (`nft_render.is_tiered`)
FORWARD_RULE_COUNT = len(FORWARD_RULES)
# The reference's key for the forward rules of a table with tiers; the scratch table holds the
# forward rules without them in a chain of this name (`NftablesBackend.fixed_reference`).
TIER_FORWARD = "forward+tiers"
REF_FORWARD = "ref_forward"


def reference_from(view: KernelView) -> Reference:
    """The fixed chains' rules of a table written from `nft_render` (the scratch table); when
    it has the tier objects, theirs too (and the forward rules of both kinds of table)."""
    out = {name: tuple(view.fixed_rules.get(name, ())) for name in (FORWARD, *ONCE.values())}
    if EGRESS_TIERS in view.fixed:
        out[TIER_FORWARD] = out.pop(FORWARD)
        out.update((name, tuple(view.fixed_rules.get(name, ()))) for name in TIER_CHAINS)
        if REF_FORWARD in view.rules:
            out[FORWARD] = tuple(view.rules[REF_FORWARD])
    return out


def fixed_problems(view: KernelView, fixed: Reference, tiered: bool = False) -> list[str]:
    """The fixed chains' rules that differ from the reference (counts compared already)."""
    out = []
    names_of = {FORWARD: TIER_FORWARD if tiered else FORWARD, **{n: n for n in ONCE.values()}}
    if tiered:
        names_of.update((n, n) for n in TIER_CHAINS)
    for name, key in sorted(names_of.items()):
        wanted = fixed.get(key)
        have = view.fixed_rules.get(name, [])
        if wanted is not None and name in view.fixed and len(have) == len(wanted) and tuple(have) != wanted:
            i = next(i for i, (a, b) in enumerate(zip(have, wanted, strict=True)) if a != b)
            out.append(f"chain {name} rule {i + 1} differs: {have[i]!r}, expected {wanted[i]!r}")
    return out


def structure_problems(view: KernelView, fixed: Reference | None = None, tiered: bool = False) -> list[str]:
    """Our fixed objects missing, changed or (the tier objects of a table without tiers) extra:
    any of these, the table is replaced."""
    expected = FIXED | TIER_FIXED if tiered else FIXED
    out = [f"missing {name}" for name in sorted(expected - view.fixed)]
    out += [f"extra {name}" for name in sorted((TIER_FIXED - expected) & view.fixed)]
    want_forward = len(forward_rules(tiered))
    if FORWARD in view.fixed and view.forward_rules != want_forward:
        out.append(f"chain {FORWARD} has {view.forward_rules} rules, expected {want_forward}")
    for direction, name in ONCE.items():
        want = len(once_lines(direction, NftConfig()))  # the count does not depend on settings
        if name in view.fixed and view.once_rules.get(name, 0) != want:
            out.append(f"chain {name} has {view.once_rules.get(name, 0)} rules, expected {want}")
    for name, lines in TIER_CHAINS.items() if tiered else ():
        if name in view.fixed and view.once_rules.get(name, 0) != len(lines):
            out.append(f"chain {name} has {view.once_rules.get(name, 0)} rules, expected {len(lines)}")
    if fixed is not None and not out:
        out += fixed_problems(view, fixed, tiered)
    return out


def _kind(interval: bool) -> str:
    return "an interval set" if interval else "a hash set"


def kind_problems(view: KernelView, want: Desired) -> list[str]:
    """Address sets of the wrong kind: a set's kind follows its content (`is_hash`), and it
    can only be changed by re-creating the set, i.e. the rules naming it (`render_reconcile`)."""
    return [
        f"set {name} is {_kind(name in view.interval)}, expected {_kind(name in want.interval)}"
        for name in sorted(want.sets.keys() & view.sets.keys())
        if (name in view.interval) != (name in want.interval)
    ]


def rule_problems(view: KernelView, want: Desired, name: str) -> list[str]:
    """The rules of a pod or port chain (of the expected count) that do something else than the
    model's: one message per chain, naming the first such rule. A view built without rule texts
    (a unit test's) compares counts only."""
    have, wanted = view.rules.get(name), want.rules.get(name)
    if have is None or wanted is None or tuple(have) == wanted:
        return []
    i = next(i for i, (a, b) in enumerate(zip(have, wanted, strict=True)) if a != b)
    return [f"chain {name} rule {i + 1} differs: {have[i]!r}, expected {wanted[i]!r}"]


def chain_outdated(view: KernelView, want: Desired, name: str) -> bool:
    """Whether a pod chain must be rewritten: missing, another rule count, other settings, or
    a rule that does something else."""
    return (
        view.chains.get(name) != want.chains[name]
        or view.settings.get(name) != want.comment_of(name)
        or bool(rule_problems(view, want, name))
    )


def port_chain_outdated(view: KernelView, want: Desired, name: str) -> bool:
    return view.ports.get(name) != len(want.ports[name]) or bool(rule_problems(view, want, name))


def differences(view: KernelView | None, want: Desired) -> list[str]:
    """What the kernel lacks or holds beyond ``want`` (empty when in sync)."""
    if view is None:
        return ["table inet stockade is missing"]
    out = structure_problems(view, want.fixed, want.tiered)
    for name, elems in sorted(want.sets.items()):
        have = view.sets.get(name)
        if have is None:
            out.append(f"missing set {name}")
        elif not same_coverage(have, elems):
            missing, extra = sorted(elems - have), sorted(have - elems)
            out.append(f"set {name} differs: missing elements {missing[:5]}, extra {extra[:5]}")
    out += tag_problems(view, want)
    out += kind_problems(view, want)
    out += [f"extra set {n}" for n in sorted(view.sets.keys() - want.sets.keys())]
    for name, count in sorted(want.chains.items()):
        have_count = view.chains.get(name)
        if have_count is None:
            out.append(f"missing chain {name}")
        elif have_count != count:
            out.append(f"chain {name} has {have_count} rules, expected {count}")
        elif view.settings.get(name) != want.comment_of(name):
            wanted_comment = want.comment_of(name)
            out.append(f"chain {name} built with other settings ({view.settings.get(name)!r}, want {wanted_comment!r})")
        else:
            out += rule_problems(view, want, name)
    out += [f"extra chain {n}" for n in sorted(view.chains.keys() - want.chains.keys())]
    for name, lines in sorted(want.ports.items()):
        if name not in view.ports:
            out.append(f"missing chain {name}")
        elif view.ports[name] != len(lines):
            out.append(f"chain {name} has {view.ports[name]} rules, expected {len(lines)}")
        else:
            out += rule_problems(view, want, name)
    out += [f"extra chain {n}" for n in sorted(view.ports.keys() - want.ports.keys())]
    for direction in Direction:
        have_map = view.dispatch(direction)
        for ip, chain in sorted((want.ingress if direction is Direction.INGRESS else want.egress).items()):
            if ip not in have_map:
                out.append(f"missing {direction} dispatch {ip} -> {chain}")
            elif have_map[ip] != chain:
                out.append(f"{direction} dispatch {ip} -> {have_map[ip]}, expected {chain}")
        wanted = want.ingress if direction is Direction.INGRESS else want.egress
        out += [f"extra {direction} dispatch {ip}" for ip in sorted(have_map.keys() - wanted.keys())]
    for tier in CNP_TIERS:
        for direction in Direction:
            out += _tier_map_problems(
                view.tiers.get((tier, direction), {}), want.dispatch(direction, tier), tier, direction
            )
    return out


def _tier_map_problems(have: dict[str, str], wanted: dict[str, str], tier: Tier, direction: Direction) -> list[str]:
    out = []
    for ip, target in sorted(wanted.items()):
        if ip not in have:
            out.append(f"missing {tier} {direction} dispatch {ip} -> {target}")
        elif have[ip] != target:
            out.append(f"{tier} {direction} dispatch {ip} -> {have[ip]}, expected {target}")
    return out + [f"extra {tier} {direction} dispatch {ip}" for ip in sorted(have.keys() - wanted.keys())]
