"""Foreign rules that can override our verdicts, found so that they can be reported.

nftables: every base chain of a hook runs, in priority order, and only ``drop`` is final: an
``accept`` in another table's base chain at ``forward`` (of any priority) ends that chain, not
the hook, and our forward chain still judges the packet. So no foreign nftables rule can undo a
drop of ours; what can is a change to our own table, which is drift, and repaired.

iptables: our rules hang off one jump in the filter table's shared FORWARD chain (there is no
table of our own). A foreign rule in FORWARD *before* that jump that accepts the packet (``-j
ACCEPT``, or a jump to a chain that may accept) ends FORWARD before our jump is reached: pods are
open. Such a rule is reported (log, metric, readiness), not removed: it is someone else's, and
deleting or reordering another component's rules could break it in ways we cannot see.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stockade.agent import netns as ns
from stockade.agent.backends import ipt_render

# Targets that end FORWARD (or continue it) without accepting: a rule ending in one cannot let a
# packet skip our jump. Any other target is an extension (MARK, LOG, NFLOG, CONNMARK...: they
# continue) or a user chain (which may accept: looked into).
_HARMLESS = frozenset({"DROP", "REJECT", "RETURN", "LOG", "NFLOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE"})


@dataclass(frozen=True)
class Override:
    family: int  # 4 or 6
    rule: str  # as ``iptables -S`` prints it

    def describe(self) -> str:
        tool = ipt_render.TABLES[self.family]
        return f"{tool}: '{self.rule}' comes before '-A FORWARD -j {ipt_render.FWD}' and can accept pod traffic"


def _target(spec: Sequence[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in spec[:-1]:
            return spec[spec.index(flag) + 1]
    return None


def chains_of(save: str) -> dict[str, list[tuple[str, list[str]]]]:
    """``iptables -S`` output: chain -> its rules as (line, tokens), in order."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for line in save.splitlines():
        try:
            tokens = shlex.split(line)
        except ValueError:
            continue
        if len(tokens) >= 2 and tokens[0] in ("-N", "-P"):
            out.setdefault(tokens[1], [])
        elif len(tokens) >= 2 and tokens[0] == "-A":
            out.setdefault(tokens[1], []).append((line, tokens))
    return out


_ESTABLISHED = frozenset({"ESTABLISHED", "RELATED"})


def _established_only(spec: Sequence[str]) -> bool:
    """The rule matches only packets of known connections (which our chain accepts too: docker
    and kube-proxy put such a rule first)."""
    for flag in ("--ctstate", "--state"):
        if flag in spec[:-1]:
            states = set(spec[spec.index(flag) + 1].split(","))
            if states <= _ESTABLISHED:
                return True
    return False


def _rule_may_accept(spec: Sequence[str], chains: Mapping[str, list[tuple[str, list[str]]]], seen: set[str]) -> bool:
    target = _target(spec)
    if target is None or _established_only(spec):
        return False
    if target == "ACCEPT":
        return True
    if target in _HARMLESS or target in seen or target not in chains:
        return False  # not a user chain: an extension target (SNAT, TCPMSS, ...), none accepts
    seen.add(target)
    return any(_rule_may_accept(tokens, chains, seen) for _, tokens in chains[target])


def overrides(save: str, family: int) -> list[Override]:
    """The rules of FORWARD before our jump that may accept a packet (none if our jump is missing:
    that is drift, which the check repairs)."""
    chains = chains_of(save)
    found: list[Override] = []
    for line, tokens in chains.get("FORWARD", []):
        if tokens[2:] == ["-j", ipt_render.FWD]:
            return found
        if _rule_may_accept(tokens, chains, set()):
            found.append(Override(family, line))
    return []


def reader(netns: str | None, versions: Sequence[int], variant: str | None) -> Callable[[], list[Override]]:
    """A blocking function that lists the overrides of every family the backend programs."""

    def read() -> list[Override]:
        out: list[Override] = []
        for f in versions:
            proc = ns.run([ipt_render.tool(f, "", variant), "-w", "-S", "-t", "filter"], netns, timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"{ipt_render.tool(f, '', variant)} -S failed: {proc.stderr.strip()}")
            out += overrides(proc.stdout, f)
        return out

    return read


def legacy(netns: str | None, variant: str | None) -> bool:
    """True when ``iptables`` here is iptables-legacy: its tables are not nf_tables, never announced."""
    if variant is not None:
        return variant == "legacy"
    proc = ns.run([ipt_render.tool(4, "", None), "--version"], netns, timeout=30)
    return "legacy" in proc.stdout
