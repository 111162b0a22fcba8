"""Parse ``ipset save`` and ``iptables-save -c -t filter`` / ``ip6tables-save`` into a view of what
we hold, and compare it with what the model asks for (pure).

Both families hold the same chains (see `ipt_render`): the view keeps one `RulesView` per family,
and every difference found in the IPv6 copy says so ("ip6tables: ...").
"""

from __future__ import annotations

import functools
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from stockade.agent.backends import elements, ipt_tiers, names
from stockade.agent.backends.ipt_render import (
    DENY_COMMENT,
    FAMILIES,
    FWD,
    TABLES,
    addr_set,
    bucket_chains,
    bucket_of,
    bucket_set,
    buckets,
    host,
    ipset_elements,
    pod_set,
    set_family,
)
from stockade.model import NodeModel, Tier

# Pod and bucket sets of every dispatch (NetworkPolicy, Admin, Baseline), both families.
_POD_TAGS = ("PI", "PO", "AI", "AO", "LI", "LO", "BI", "BO", "BAI", "BAO", "BLI", "BLO")
POD_SET_PREFIXES = tuple(f"STK-{t}{v}-" for t in _POD_TAGS for v in ("", "6"))
_COUNTED = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


@dataclass
class RulesView:
    """One family's copy of our chains, as ``iptables-save`` / ``ip6tables-save`` shows it."""

    chains: dict[str, int] = field(default_factory=dict)  # STK-* chains: rule count
    # STK-* chains' rules in canonical form (`canonical`): each rule's effect is compared
    specs: dict[str, list[str]] = field(default_factory=dict)
    fwd: list[str] | None = None  # STOCKADE-FWD's rules, None when the chain is missing
    forward_jump: bool = False
    input_jump: bool = False  # INPUT -j STK-INPUT (tiers only)
    denied: dict[str, int] = field(default_factory=dict)  # chain id (NFLOG prefix) -> count


@dataclass
class IptView:
    sets: dict[str, frozenset[str]] = field(default_factory=dict)  # STK-A-* / STK-A6-*: address sets
    pods: dict[str, frozenset[str]] = field(default_factory=dict)  # STK-P?-* / STK-B?-* (and 6)
    rules: dict[int, RulesView] = field(default_factory=lambda: {f: RulesView() for f in FAMILIES})

    @property
    def denied(self) -> dict[str, int]:
        """Denied connections per chain id, both families added up."""
        out: dict[str, int] = {}
        for view in self.rules.values():
            for cid, n in view.denied.items():
                out[cid] = out.get(cid, 0) + n
        return out


def _cidr(elem: str, family: int) -> str:
    if family == 6:
        # ipset prints addresses its own way: compare in Python's canonical form, as rendered
        return str(ipaddress.IPv6Network(elem, strict=False))
    return elem if "/" in elem else f"{elem}/32"


def parse_ipsets(ipset_save: str, view: IptView) -> None:
    for line in ipset_save.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("STK-"):
            continue
        name = parts[1]
        target = view.pods if name.startswith(POD_SET_PREFIXES) else view.sets
        if parts[0] == "create":
            target.setdefault(name, frozenset())
        elif parts[0] == "add":
            target[name] = target.get(name, frozenset()) | {_cidr(parts[2], set_family(name))}


def parse_rules(save: str) -> RulesView:
    view = RulesView()
    prefix_of: dict[str, str] = {}  # the chain's last NFLOG prefix so far
    deny_of: dict[str, int] = {}
    for line in save.splitlines():
        if line.startswith(":"):
            chain = line[1:].split()[0]
            if chain == FWD:
                view.fwd = view.fwd or []
            elif chain.startswith("STK-"):
                view.chains.setdefault(chain, 0)
            continue
        m = _COUNTED.match(line)
        if not m:
            continue
        packets, chain, spec = int(m.group(1)), m.group(3), m.group(4)
        if chain == "FORWARD" and spec == f"-j {FWD}":
            view.forward_jump = True
        elif chain == "INPUT" and spec == ipt_tiers.INPUT_JUMP:
            view.input_jump = True
        elif chain == FWD:
            view.fwd = [*(view.fwd or []), spec]
        elif chain.startswith("STK-"):
            view.chains[chain] = view.chains.get(chain, 0) + 1
            view.specs.setdefault(chain, []).append(canonical(spec))
            words = shlex.split(spec)
            if "--nflog-prefix" in words:
                prefix_of[chain] = words[words.index("--nflog-prefix") + 1]
            if "--comment" in words and words[words.index("--comment") + 1] == DENY_COMMENT:
                # Under the prefix of the NFLOG line before it: a tier chain has a counted drop
                # per Deny rule (and match), logged as "<chain id>/<rule index>".
                key = prefix_of.get(chain, chain)
                deny_of[key] = deny_of.get(key, 0) + packets
    view.denied = deny_of
    return view


_DEFAULTS = {("limit", "--limit-burst 5")}  # what iptables-save leaves out


@functools.lru_cache(maxsize=1 << 16)  # pod chains share their deny tails
def canonical(spec: str) -> str:
    """A rule spec as the renderer writes it or iptables-save prints it, in one form: the
    options of each match (``-m x``) and of the target (``-j X``) sorted, defaults left out.
    Options within one module are unordered for the kernel (a module gets them as one struct),
    so this never makes two rules that do different things equal; ``! --opt value`` stays a
    unit. Anything else is kept as it is (a foreign rule still reads as different)."""
    words = spec.split()
    parts: list[str] = []
    module, units = "", list[str]()  # the current -m/-j segment and its options
    i = 0

    def flush() -> None:
        parts.extend(sorted(u for u in units if (module, u) not in _DEFAULTS))
        units.clear()

    while i < len(words):
        w = words[i]
        if w in ("-m", "-j", "-g") and i + 1 < len(words):
            flush()
            module = words[i + 1].lower()
            parts.append(f"{w} {words[i + 1]}")
            i += 2
            continue
        start = i
        i += 1
        if w == "!" and i < len(words):
            i += 1
        while i < len(words) and not words[i].startswith("-") and words[i] != "!":
            i += 1
        units.append(" ".join(words[start:i]))
    flush()
    return " ".join(parts)


def chain_outdated(rules: RulesView, name: str, specs: list[str]) -> bool:
    """Whether one of our STK-* chains must be rewritten: missing, another rule count, or a
    rule that does something else than ``specs`` (the renderer's)."""
    if rules.chains.get(name) != len(specs):
        return True
    have = rules.specs.get(name)
    return have is not None and have != [canonical(s) for s in specs]


def parse(ipset_save: str, iptables_save: str, ip6tables_save: str | None = None) -> IptView:
    """The view of ``ipset save`` and both families' saves (``None``: no IPv6 side at all)."""
    view = IptView()
    parse_ipsets(ipset_save, view)
    view.rules = {4: parse_rules(iptables_save)}
    if ip6tables_save is not None:
        view.rules[6] = parse_rules(ip6tables_save)
    return view


@dataclass
class IptDesired:
    sets: dict[str, frozenset[str]]  # both families' address sets, by name
    pods: dict[str, frozenset[str]]  # both families' pod and bucket sets
    chains: dict[int, dict[str, list[str]]]  # family -> name -> rule specs
    chain_ids: dict[str, str]  # name -> model chain id
    fwd: dict[int, list[str]]
    input_jump: bool = False  # INPUT -j STK-INPUT wanted (the model has tiers)


def input_hooks(have: bool, want: bool) -> list[str]:
    """The restore lines that add or remove INPUT's jump to STK-INPUT (`restore_script` hooks)."""
    if want and not have:
        return [f"-I INPUT 1 {ipt_tiers.INPUT_JUMP}"]
    if have and not want:
        return [f"-D INPUT {ipt_tiers.INPUT_JUMP}"]
    return []


def hooks(rules: RulesView, want: IptDesired) -> list[str]:
    """The restore lines putting our jumps in the kernel's own chains as ``want`` has them:
    FORWARD's to STOCKADE-FWD when missing (always wanted), INPUT's to STK-INPUT (`input_hooks`)."""
    forward = [] if rules.forward_jump else [f"-I FORWARD 1 -j {FWD}"]
    return forward + input_hooks(rules.input_jump, want.input_jump)


def desired(
    model: NodeModel, nflog_group: int, log_rate: int | None, seen_timeout: int, families: tuple[int, ...] = FAMILIES
) -> IptDesired:
    """What the kernel must hold for ``model``, in ``families`` (an address of a family not
    among them, or of neither, raises `elements.ElementError`)."""
    pods: dict[str, set[str]] = {}
    for f in families:
        pods |= {pod_set(cid, ch.direction, f, ch.tier): set() for cid, ch in model.chains.items()}
        for tier in Tier:
            for direction, b in buckets(model.chains, tier):
                pods[bucket_set(direction, b, f, tier)] = set()
    for tier, direction, table in model.tier_tables():
        for ip, cid in table.items():
            f = dispatch_family(ip, families)
            name = pod_set(cid, direction, f, tier)
            elem = host(str(ipaddress.ip_address(ip)) if f == 6 else ip, f)
            pods[name].add(elem)
            pods[bucket_set(direction, bucket_of(name), f, tier)].add(elem)
    sets: dict[str, frozenset[str]] = {}
    for s, e in model.sets.items():
        check_families(s, e, families)
        sets |= {addr_set(s, f): ipset_elements(e, f) for f in families}
    return IptDesired(
        sets=sets,
        pods={k: frozenset(v) for k, v in pods.items()},
        chains={
            f: bucket_chains(model.chains, f)
            | ipt_tiers.layout_chains(model.chains, f)
            | {
                names.ipt_chain(c): ipt_tiers.chain_specs(c, ch, nflog_group, log_rate, seen_timeout, f)
                for c, ch in model.chains.items()
            }
            for f in families
        },
        chain_ids={names.ipt_chain(c): c for c in model.chains},
        fwd={f: ipt_tiers.fwd_specs(model.chains, f) for f in families},
        input_jump=ipt_tiers.is_tiered(model.chains),
    )


def dispatch_family(ip: str, families: tuple[int, ...] = FAMILIES) -> int:
    """The family of a dispatch key; `elements.ElementError` when we cannot place it."""
    try:
        f = elements.ip_family(ip)
    except elements.ElementError as e:
        raise elements.ElementError(f"dispatch entry {e}") from None
    if f not in families:
        raise elements.ElementError(f"pod IP {ip} is IPv{f}, which this node's kernel does not have")
    return f


def check_families(set_id: str, elems: frozenset[str], families: tuple[int, ...] = FAMILIES) -> None:
    """Every element of ``set_id`` can be placed: of a family we hold, and of one at all."""
    for e in elems:
        try:
            f = elements.family(e)
        except elements.ElementError as err:
            raise elements.ElementError(f"address set {set_id}: {err}") from None
        if f not in families:
            raise elements.ElementError(f"address set {set_id}: {e} is IPv{f}, which this node's kernel does not have")


def differences(view: IptView, want: IptDesired) -> list[str]:
    out: list[str] = []
    for f, wanted_chains in want.chains.items():
        rules = view.rules.get(f, RulesView())
        tag = "" if f == 4 else f"{TABLES[f]}: "
        if rules.fwd is None:
            out.append(f"{tag}missing chain {FWD}")
        elif rules.fwd != want.fwd[f]:
            out.append(f"{tag}chain {FWD} differs ({len(rules.fwd)} rules, expected {len(want.fwd[f])})")
        if not rules.forward_jump:
            out.append(f"{tag}missing FORWARD -j {FWD}")
        if rules.input_jump != want.input_jump:
            out.append(f"{tag}{'missing' if want.input_jump else 'extra'} INPUT {ipt_tiers.INPUT_JUMP}")
        for name, specs in sorted(wanted_chains.items()):
            if name not in rules.chains:
                out.append(f"{tag}missing chain {name}")
            elif rules.chains[name] != len(specs):
                out.append(f"{tag}chain {name} has {rules.chains[name]} rules, expected {len(specs)}")
            elif chain_outdated(rules, name, specs):
                kernel = rules.specs[name]
                i = next(i for i, s in enumerate(specs) if canonical(s) != kernel[i])
                out.append(f"{tag}chain {name} rule {i + 1} differs: {kernel[i]!r}, expected {canonical(specs[i])!r}")
        out += [f"{tag}extra chain {n}" for n in sorted(rules.chains.keys() - wanted_chains.keys())]
    for kind, have, wanted in (("ipset", view.sets, want.sets), ("pod ipset", view.pods, want.pods)):
        for name, elems in sorted(wanted.items()):
            if name not in have:
                out.append(f"missing {kind} {name}")
            elif have[name] != elems:
                out.append(
                    f"{kind} {name} differs: missing {sorted(elems - have[name])[:5]}, "
                    f"extra {sorted(have[name] - elems)[:5]}"
                )
        out += [f"extra {kind} {n}" for n in sorted(have.keys() - wanted.keys())]
    return out
