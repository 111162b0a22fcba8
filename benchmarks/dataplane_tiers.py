"""Per-packet cost of ClusterNetworkPolicy tiers: new-connection rate through a loaded node with
500 Admin ClusterNetworkPolicies realized on it, versus the same node without them.

Target: the rate with the Admin tier loaded is >= 0.9 of the rate without it, in the same run.

Both configurations are the nftables node of `dataplane_packets.py` (2,000 policies, 10,000
dual-stack pods, 20,004 dispatch entries per direction). The tiered one adds what 500 Admin
CNPs compile to on that node: each selects the pods of one of 100 teams (5 CNPs per team, one
Deny rule each against another team's pods), so every pod IP has an Admin ingress and an Admin
egress chain of 5 Deny rules, 200 tier chains in all. The server and the client are in teams
whose Deny rules do not match each other: each SYN walks both Admin chains to their end (10
rule tests), then the NetworkPolicy chains that allow it. Configurations alternate round by
round (a full snapshot each time) so machine noise hits them alike; medians per CPU-second of
the client workers are the figure (see `dataplane_packets.Load.rate`).

``--backend iptables``: the same on the iptables backend, with the IPv4 model (as
`dataplane_packets.py`'s iptables phase) and IPv4 traffic; it also times one change on the
tiered node (a pod moving to another team's Admin chains) against a NetworkPolicy-only change on
the node without tiers.
Run as root: `.venv/bin/python benchmarks/dataplane_tiers.py [--backend iptables]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from dataplane_models import pod_cidrs, ratio_line
from dataplane_packets import (
    CLIENT_IP,
    CLIENT_IP6,
    NODE,
    SERVER_IP,
    SERVER_IP6,
    SERVERS,
    Load,
    build,
    loaded_model,
    teardown,
    warm_up,
)

from stockade.agent.backends.base import Dataplane
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Action, Chain, Direction, NodeModel, Rule, Tier, diff

TARGET = 0.90
TEAMS, PER_TEAM = 100, 5  # 500 Admin CNPs


def tiered(model: NodeModel) -> NodeModel:
    """``model`` with the Admin tier of 500 CNPs: per team, ingress and egress chains of Deny rules
    naming other teams' pods (a set of 10 pod addresses each), every pod IP dispatched to its team's."""
    m = model.copy()
    ips = sorted({*m.ingress, *m.egress})
    teams = {ip: i % TEAMS for i, ip in enumerate(ips)}
    for ip, team in ((SERVER_IP, 0), (SERVER_IP6, 0), (CLIENT_IP, 1), (CLIENT_IP6, 1)):
        if ip in teams:  # the IPv6 ones only in a dual-stack model
            teams[ip] = team
    for t in range(TEAMS):
        sid = f"cnp-team-{t}"
        # Another team's pods: never the client's or the server's own team, so nothing matches them.
        m.sets[sid] = frozenset(e for i in range(10) for e in pod_cidrs(1000 + t * 10 + i, True))
    chains: dict[tuple[Direction, int], str] = {}
    for t in range(TEAMS):
        for d in Direction:
            rules = [Rule(f"cnp-team-{(t + k + 2) % TEAMS}", None, Action.DENY) for k in range(PER_TEAM)]
            if t in (0, 1):  # the server's and the client's teams: rules naming neither of them
                rules = [Rule(f"cnp-team-{50 + k}", None, Action.DENY) for k in range(PER_TEAM)]
            chain = Chain.ordered(d, Tier.ADMIN, rules)
            m.chains[chain.id] = chain
            chains[d, t] = chain.id
    for ip, t in teams.items():
        m.admin_ingress[ip] = chains[Direction.INGRESS, t]
        m.admin_egress[ip] = chains[Direction.EGRESS, t]
    problems = m.check()
    assert not problems, problems[:3]
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", choices=("nftables", "iptables"), default="nftables")
    ap.add_argument("--deltas", type=int, default=9, help="changes timed per configuration (iptables)")
    args = ap.parse_args()
    ipt = args.backend == "iptables"
    plain = loaded_model(dual=not ipt)
    tier = tiered(plain)
    families = ["ipv4"] if ipt else list(SERVERS)
    tier_chains = sum(1 for c in tier.chains.values() if c.tier is Tier.ADMIN)
    print(f"loaded node: {len(plain.ingress)} dispatch entries per direction; + Admin tier: {tier_chains} chains")
    build()
    load = Load(args.workers)
    backend: Dataplane = IptablesBackend(NODE) if ipt else NftablesBackend(NODE)
    try:
        warm_up(load)
        per_cpu: dict[str, list[float]] = {"no tiers": [], "500 Admin CNPs": []}
        wall: dict[str, list[float]] = {k: [] for k in per_cpu}
        for r in range(args.rounds):
            order = list(per_cpu) if r % 2 == 0 else list(reversed(per_cpu))
            for name in order:
                t0 = time.perf_counter()
                backend.apply_snapshot(tier if name != "no tiers" else plain)
                took = time.perf_counter() - t0
                time.sleep(0.2)
                for f in families:
                    w, c = load.rate(args.seconds, f)
                    wall[name].append(w)
                    per_cpu[name].append(c)
                print(
                    f"  round {r + 1} {name}: {wall[name][-1]:.0f}/s ({per_cpu[name][-1]:.0f}/cpu-s), "
                    f"snapshot {took:.1f} s"
                )
        med = {k: statistics.median(v) for k, v in per_cpu.items()}
        medw = {k: statistics.median(v) for k, v in wall.items()}
        print(", ".join(f"{k} {v:.0f}" for k, v in med.items()) + " new connections per CPU-second (medians)")
        print(
            ratio_line(
                "with 500 Admin CNPs / without, per CPU-second", med["500 Admin CNPs"] / med["no tiers"], TARGET, False
            )
        )
        print(
            ratio_line(
                "with 500 Admin CNPs / without, wall clock", medw["500 Admin CNPs"] / medw["no tiers"], TARGET, False
            )
        )
        if ipt:
            delta_costs(backend, plain, tier, args.deltas)
    finally:
        load.close()
        teardown()


def delta_costs(backend: Dataplane, plain: NodeModel, tier: NodeModel, count: int) -> None:
    """Median CPU-seconds (the agent and the iptables/ipset processes it runs) and wall seconds of
    one change: a pod moving to another team's Admin chains on the tiered node (what a change of a
    CNP's subject does), and a pod moving to another NetworkPolicy ingress chain on the node
    without tiers; each change and its undo applied as deltas, the change timed."""

    def moved(m: NodeModel, i: int, tiered: bool) -> NodeModel:
        out = m.copy()
        tables = [out.admin_ingress, out.admin_egress] if tiered else [out.ingress]
        ips = sorted(tables[0])
        ip = ips[(7 * i) % len(ips)]
        other = next(o for o in ips[(7 * i + 1) % len(ips) :] + ips if tables[0][o] != tables[0][ip])
        for table in tables:
            table[ip] = table[other]
        assert not out.check()
        return out

    def cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    for name, model, tiered in (
        ("tiered node, Admin dispatch change", tier, True),
        ("no tiers, NetworkPolicy dispatch change", plain, False),
    ):
        backend.apply_snapshot(model)
        cpus, walls = [], []
        for i in range(count):
            new = moved(model, i, tiered)
            c0, w0 = cpu(), time.perf_counter()
            backend.apply_delta(diff(model, new), new)
            cpus.append(cpu() - c0)
            walls.append(time.perf_counter() - w0)
            backend.apply_delta(diff(new, model), model)
        print(
            f"one change, {name}: median {statistics.median(cpus) * 1000:.0f} ms CPU, "
            f"{statistics.median(walls) * 1000:.0f} ms wall"
        )


if __name__ == "__main__":
    main()
