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
Run as root: `.venv/bin/python benchmarks/dataplane_tiers.py`.
"""

from __future__ import annotations

import argparse
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

from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Action, Chain, Direction, NodeModel, Rule, Tier

TARGET = 0.90
TEAMS, PER_TEAM = 100, 5  # 500 Admin CNPs


def tiered(model: NodeModel) -> NodeModel:
    """``model`` with the Admin tier of 500 CNPs: per team, ingress and egress chains of Deny rules
    naming other teams' pods (a set of 10 pod addresses each), every pod IP dispatched to its team's."""
    m = model.copy()
    ips = sorted({*m.ingress, *m.egress})
    teams = {ip: i % TEAMS for i, ip in enumerate(ips)}
    teams[SERVER_IP] = teams[SERVER_IP6] = 0
    teams[CLIENT_IP] = teams[CLIENT_IP6] = 1
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
    args = ap.parse_args()
    plain = loaded_model()
    tier = tiered(plain)
    tier_chains = sum(1 for c in tier.chains.values() if c.tier is Tier.ADMIN)
    print(f"loaded node: {len(plain.ingress)} dispatch entries per direction; + Admin tier: {tier_chains} chains")
    build()
    load = Load(args.workers)
    nft = NftablesBackend(NODE)
    try:
        warm_up(load)
        per_cpu: dict[str, list[float]] = {"no tiers": [], "500 Admin CNPs": []}
        wall: dict[str, list[float]] = {k: [] for k in per_cpu}
        for r in range(args.rounds):
            order = list(per_cpu) if r % 2 == 0 else list(reversed(per_cpu))
            for name in order:
                t0 = time.perf_counter()
                nft.apply_snapshot(tier if name != "no tiers" else plain)
                took = time.perf_counter() - t0
                time.sleep(0.2)
                for f in SERVERS:
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
    finally:
        load.close()
        teardown()


if __name__ == "__main__":
    main()
