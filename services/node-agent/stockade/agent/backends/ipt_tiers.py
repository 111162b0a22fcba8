"""ClusterNetworkPolicy tiers for iptables + ipset (pure; `stockade.model.evaluate.decide` is the
meaning). Only a table whose model has a tier chain (`is_tiered`) has these; one without renders
exactly as `ipt_render` did before tiers existed.

Layout, per family (each direction decided on its own, egress first)::

    STOCKADE-FWD   established, ..., -j STK-E-TIERS, -j STK-I-TIERS
    STK-E-TIERS    Admin egress bucket tests (-g STK-DAO-nn), then -g STK-E-NEXT
    STK-E-NEXT     NetworkPolicy egress bucket tests (-j STK-DO-nn), Baseline (-j STK-DLO-nn)
    STK-I-TIERS / STK-I-NEXT   the same for ingress (STK-DAI-nn, STK-DI-nn, STK-DLI-nn)
    INPUT          -j STK-INPUT (inserted first, with tiers only)
    STK-INPUT      established, neighbour discovery, -j STK-E-TIERS
    STK-E-LOCAL    Baseline egress bucket tests (-j STK-DLO-nn): STK-E-NEXT's own-node branch
    ipset STK-AI-<h> STK-AO-<h> STK-LI-<h> STK-LO-<h> (+6)   pods of an Admin / Baseline chain
    ipset STK-BAI-NN ... STK-BLO-NN (+6)                     pods of a tier dispatch bucket

iptables' RETURN goes back to the last chain that *jumped*; a ``goto`` leaves no return point.
So an Admin chain, reached by ``goto`` through ``goto``, RETURNs on Accept straight to
STOCKADE-FWD, past the rest of its direction (egress then meets the ingress dispatch), and its
Pass and its end ``goto`` STK-?-NEXT; an Admin bucket chain whose pod sets do not match (a pod
mid-move) also ends with that ``goto``: never past the NetworkPolicy tier. A NetworkPolicy chain
RETURNs into STK-?-NEXT (its deny tail is final), which goes on to the Baseline buckets, where that
pod never is (`NodeModel.check`); a Baseline chain's Accept and Pass RETURN, as does its end.

A Deny repeats its match before each line of the deny tail (`ipt_render.deny_specs`: one count and
one NFLOG event per connection), logged and counted under ``<chain id>/<rule index>``; it drops,
never rejects. Per packet: two jumps more than without tiers, and one set test per non-empty
bucket of each tier dispatch (and one address-type test past the Admin egress tier).

A pod's traffic to its own node reaches INPUT, never FORWARD: STK-INPUT runs the same egress
tiers on it, but past the Admin tier a local destination (``-m addrtype --dst-type LOCAL``,
never true in FORWARD) goes to STK-E-LOCAL, the Baseline tier alone: v1 exempts a pod's own
node, so a pod a NetworkPolicy isolates (never in a Baseline set) is allowed there. The node's
own traffic to its pods leaves by OUTPUT and is not filtered; STK-INPUT lets its replies in
first. Without tiers there is no STK-INPUT and no INPUT jump (v1 filters none of this).
"""

from __future__ import annotations

from stockade.agent.backends import ipt_render
from stockade.model import CNP_TIERS, Action, Chain, Direction, Tier

E_TIERS, E_NEXT, I_TIERS, I_NEXT = "STK-E-TIERS", "STK-E-NEXT", "STK-I-TIERS", "STK-I-NEXT"
TIERS = {Direction.EGRESS: E_TIERS, Direction.INGRESS: I_TIERS}
NEXT = {Direction.EGRESS: E_NEXT, Direction.INGRESS: I_NEXT}
E_LOCAL, INPUT_CHAIN = "STK-E-LOCAL", "STK-INPUT"
FIXED = (E_TIERS, E_NEXT, I_TIERS, I_NEXT, E_LOCAL, INPUT_CHAIN)
INPUT_JUMP = f"-j {INPUT_CHAIN}"  # in INPUT, with tiers


def is_tiered(chains: dict[str, Chain]) -> bool:
    """Whether the table has the tier layout: when the model has a tier chain."""
    return any(c.tier is not Tier.NETPOL for c in chains.values())


def fwd_specs(chains: dict[str, Chain], family: int = 4) -> list[str]:
    """STOCKADE-FWD for ``chains``, with or without tiers."""
    if not is_tiered(chains):
        return ipt_render.fwd_specs(chains, family)
    return [*ipt_render.fwd_head(family), f"-j {E_TIERS}", f"-j {I_TIERS}"]


def fixed_chains(chains: dict[str, Chain], family: int = 4) -> dict[str, list[str]]:
    """STK-E-TIERS, STK-E-NEXT, STK-I-TIERS, STK-I-NEXT: each tier dispatch's bucket tests;
    STK-E-LOCAL and STK-INPUT: the egress tiers of a pod's traffic to its own node."""
    out: dict[str, list[str]] = {}
    for d in Direction:
        baseline = ipt_render.bucket_tests(chains, d, family, Tier.BASELINE)
        local = [f"-m addrtype --dst-type LOCAL -g {E_LOCAL}"] if d is Direction.EGRESS else []
        out[TIERS[d]] = [*ipt_render.bucket_tests(chains, d, family, Tier.ADMIN, "-g"), f"-g {NEXT[d]}"]
        out[NEXT[d]] = [*local, *ipt_render.bucket_tests(chains, d, family), *baseline]
        if d is Direction.EGRESS:
            out[E_LOCAL] = baseline
    out[INPUT_CHAIN] = [ipt_render.ESTABLISHED, *ipt_render.nd_specs(family), f"-j {E_TIERS}"]
    return out


def bucket_chain_specs(direction: Direction, tier: Tier, chain_ids: list[str], family: int = 4) -> list[str]:
    """One bucket chain of any dispatch: ``goto`` the pod's chain; an Admin one then goes on to
    the next tier (a pod in the bucket set but in none of its pod sets: mid-move), never past it."""
    specs = ipt_render.bucket_specs(direction, chain_ids, family, tier)
    return [*specs, f"-g {NEXT[direction]}"] if tier is Tier.ADMIN else specs


def layout_chains(chains: dict[str, Chain], family: int = 4) -> dict[str, list[str]]:
    """The fixed tier chains and the tier bucket chains (empty without tiers)."""
    if not is_tiered(chains):
        return {}
    out = fixed_chains(chains, family)
    for tier in CNP_TIERS:
        for (d, b), ids in ipt_render.buckets(chains, tier).items():
            out[ipt_render.bucket_chain(d, b, tier)] = bucket_chain_specs(d, tier, ids, family)
    return out


def tier_chain_specs(
    chain_id: str, chain: Chain, nflog_group: int, log_rate: int | None, seen_timeout: int, family: int = 4
) -> list[str]:
    """A tier chain's rules in order (first match wins), then, for an Admin chain, its end."""
    leave = f"-g {NEXT[chain.direction]}" if chain.tier is Tier.ADMIN else "-j RETURN"
    out: list[str] = []
    for i, rule in enumerate(chain.rules):
        if rule.action is Action.ACCEPT:
            verdicts = ["-j RETURN"]
        elif rule.action is Action.PASS:
            verdicts = [leave]
        else:
            verdicts = ipt_render.deny_specs(f"{chain_id}/{i}", chain.direction, nflog_group, log_rate, seen_timeout)
        out += [f"{m} {v}".strip() for m in ipt_render.rule_matches(rule, chain.direction, family) for v in verdicts]
    if chain.tier is Tier.ADMIN:
        out.append(leave)
    return out


def chain_specs(
    chain_id: str, chain: Chain, nflog_group: int, log_rate: int | None, seen_timeout: int, family: int = 4
) -> list[str]:
    """Any chain of the model: a NetworkPolicy chain as `ipt_render` renders it, a tier chain here."""
    if chain.tier is Tier.NETPOL:
        return ipt_render.chain_specs(chain_id, chain, nflog_group, log_rate, seen_timeout, family)
    return tier_chain_specs(chain_id, chain, nflog_group, log_rate, seen_timeout, family)
