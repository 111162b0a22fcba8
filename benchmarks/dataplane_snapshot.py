"""Full snapshot for 10,000 pods and 2,000 policies: render + one transaction, target ≤ 2 s.

Also times the restart path (a new backend re-applying the same model onto the kernel that
already holds it: read back, compare, apply nothing) and the iptables backend for comparison.
Run as root: `.venv/bin/python benchmarks/dataplane_snapshot.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dataplane_models import element_count, netns, ratio_line, synthetic

from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import NodeModel

TARGET_S = 2.0


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def run_nft(model: NodeModel, rounds: int) -> tuple[list[float], list[float]]:
    cold, restart = [], []
    for _ in range(rounds):
        with netns("st-dp-bench-snap") as ns:
            cold.append(timed(NftablesBackend(ns).apply_snapshot, model))
            fresh = NftablesBackend(ns)
            restart.append(timed(fresh.apply_snapshot, model))
            assert fresh.transactions == 0 and fresh.verify(model) == []
    return cold, restart


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-iptables", action="store_true")
    args = ap.parse_args()
    model = synthetic(pods=10_000, policies=2_000, set_size=10)
    print(
        f"model: {len(model.ingress)} ingress + {len(model.egress)} egress dispatch entries, "
        f"{len(model.chains)} chains, {len(model.sets)} sets, {element_count(model)} set elements"
    )
    cold, restart = run_nft(model, args.rounds)
    med = statistics.median(cold)
    print(
        f"nftables full snapshot (empty kernel): median {med:.3f} s over {len(cold)} runs {[round(c, 3) for c in cold]}"
    )
    print(ratio_line("nftables snapshot seconds", med, TARGET_S, lower_is_better=True))
    print(
        f"nftables restart onto the same state (read back, diff, no change): median {statistics.median(restart):.3f} s"
    )
    if not args.skip_iptables:
        with netns("st-dp-bench-snap") as ns:
            t = timed(IptablesBackend(ns).apply_snapshot, model)
        print(f"iptables full snapshot: {t:.3f} s (ratio to target {t / TARGET_S:.2f}x; informational)")


if __name__ == "__main__":
    main()
