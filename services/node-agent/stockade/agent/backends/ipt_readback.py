"""Parse ``ipset save`` and ``iptables-save -c -t filter`` into a view of what we hold (pure)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from stockade.agent.backends import names
from stockade.agent.backends.ipt_render import (
    DENY_COMMENT,
    FWD,
    bucket_chains,
    bucket_of,
    bucket_set,
    buckets,
    chain_specs,
    fwd_specs,
    ipset_elements,
    pod_set,
)
from stockade.model import Direction, NodeModel

POD_SET_PREFIXES = ("STK-PI-", "STK-PO-", "STK-BI-", "STK-BO-")
_COUNTED = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


@dataclass
class IptView:
    sets: dict[str, frozenset[str]] = field(default_factory=dict)  # STK-A-*: address sets
    pods: dict[str, frozenset[str]] = field(default_factory=dict)  # STK-PI-* / STK-PO-*
    chains: dict[str, int] = field(default_factory=dict)  # STK-* chains: rule count
    specs: dict[str, list[str]] = field(default_factory=dict)  # bucket chains' rules, verbatim
    fwd: list[str] | None = None  # STOCKADE-FWD's rules, None when the chain is missing
    forward_jump: bool = False
    denied: dict[str, int] = field(default_factory=dict)  # chain id (NFLOG prefix) -> count


def _cidr(elem: str) -> str:
    return elem if "/" in elem else f"{elem}/32"


def parse(ipset_save: str, iptables_save: str) -> IptView:
    view = IptView()
    for line in ipset_save.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("STK-"):
            continue
        name = parts[1]
        target = view.pods if name.startswith(POD_SET_PREFIXES) else view.sets
        if parts[0] == "create":
            target.setdefault(name, frozenset())
        elif parts[0] == "add":
            target[name] = target.get(name, frozenset()) | {_cidr(parts[2])}
    prefix_of: dict[str, str] = {}
    deny_of: dict[str, int] = {}
    for line in iptables_save.splitlines():
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
        elif chain == FWD:
            view.fwd = [*(view.fwd or []), spec]
        elif chain.startswith("STK-"):
            view.chains[chain] = view.chains.get(chain, 0) + 1
            if chain.startswith(("STK-DI-", "STK-DO-")):
                view.specs.setdefault(chain, []).append(spec)
            words = shlex.split(spec)
            if "--nflog-prefix" in words:
                prefix_of[chain] = words[words.index("--nflog-prefix") + 1]
            if "--comment" in words and words[words.index("--comment") + 1] == DENY_COMMENT:
                deny_of[chain] = packets
    view.denied = {prefix_of.get(c, c): n for c, n in deny_of.items()}
    return view


@dataclass
class IptDesired:
    sets: dict[str, frozenset[str]]
    pods: dict[str, frozenset[str]]
    chains: dict[str, list[str]]  # name -> rule specs
    chain_ids: dict[str, str]  # name -> model chain id
    fwd: list[str]


def desired(model: NodeModel, nflog_group: int, log_rate: int | None, seen_timeout: int) -> IptDesired:
    pods: dict[str, set[str]] = {pod_set(cid, ch.direction): set() for cid, ch in model.chains.items()}
    for direction, b in buckets(model.chains):
        pods[bucket_set(direction, b)] = set()
    for direction in Direction:
        for ip, cid in model.dispatch(direction).items():
            if ":" not in ip:
                name = pod_set(cid, direction)
                pods[name].add(f"{ip}/32")
                pods[bucket_set(direction, bucket_of(name))].add(f"{ip}/32")
    return IptDesired(
        sets={names.ipset_set(s): ipset_elements(e) for s, e in model.sets.items()},
        pods={k: frozenset(v) for k, v in pods.items()},
        chains=bucket_chains(model.chains)
        | {
            names.ipt_chain(c): chain_specs(c, ch, nflog_group, log_rate, seen_timeout)
            for c, ch in model.chains.items()
        },
        chain_ids={names.ipt_chain(c): c for c in model.chains},
        fwd=fwd_specs(model.chains),
    )


def differences(view: IptView, want: IptDesired) -> list[str]:
    out: list[str] = []
    if view.fwd is None:
        out.append(f"missing chain {FWD}")
    elif view.fwd != want.fwd:
        out.append(f"chain {FWD} differs ({len(view.fwd)} rules, expected {len(want.fwd)})")
    if not view.forward_jump:
        out.append(f"missing FORWARD -j {FWD}")
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
    for name, specs in sorted(want.chains.items()):
        if name not in view.chains:
            out.append(f"missing chain {name}")
        elif view.chains[name] != len(specs):
            out.append(f"chain {name} has {view.chains[name]} rules, expected {len(specs)}")
        elif name in view.specs and view.specs[name] != specs:
            out.append(f"chain {name} differs")
    out += [f"extra chain {n}" for n in sorted(view.chains.keys() - want.chains.keys())]
    return out
