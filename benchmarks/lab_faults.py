"""Benchmark: the fault drill of issue 17 item 5, its windows measured, on both backends.

The same drill as tests/lab/test_faults_lab.py (tests/lab/fault_drill.py: Redis frozen then
killed, two tamperings, agent killed, streams cut, both brains killed with a policy change
meanwhile, failover, API server killed, certificates renewed, changes after each), `rounds`
times per backend in one 2-brain, 2-node lab, with the prober making a new TCP flow over every
cell every ``--interval`` seconds (finer than the test's 0.2 s: the packets bound each window to
one interval). Each round must also pass the test's checks (no wrong verdict outside the windows,
no lost count); the figures are printed only for rounds that do.

Figures, median and worst over the rounds, with their ratio to the target (issue 17):

- tamper → repaired, by packets: from the tampering command's start to the first denied
  attempt to that node that was silent after the last that got through (an upper bound, to one
  interval); target 1 s worst case. Also the agent's own metric (notification → repaired).
- both brains killed → a change written meanwhile enforced on every node, by packets (the first
  attempt per changed cell after the last with the old verdict); target 5 s after the kill.
- a restarted brain listening → every agent in sync (the latest agent's last apply, which the
  change made necessary); target 2 s.
- every other window, event to recovery event, for the record.

Run as root: ``.venv/bin/python benchmarks/lab_faults.py [--rounds 3] [--backend nftables]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab.fault_drill import Drill, Result, start_lab  # type: ignore[import-not-found]
from lab.lab_ops import drill_only_from, make_lab  # type: ignore[import-not-found]

TARGETS = {  # figure -> (target seconds, what it is)
    "repaired by packets ≤": (1.0, "tamper → repaired (packets)"),
    "enforced by packets ≤": (5.0, "both brains killed → change enforced (packets)"),
    "listens → agents in sync": (2.0, "restarted brain listens → agents in sync"),
}
PORTS = (29000, 29099)  # the tests use 28000-28999 (by STOCKADE_TEST_SLOT)


def figures(result: Result) -> dict[str, list[float]]:
    """Each figure of one round, by a name that is the same in every round."""
    out: dict[str, list[float]] = {}
    for w in result.windows:
        fault = w.fault.replace("brain 2", "brain N").replace("brain 1", "brain N")  # whichever served most
        out.setdefault(f"window: {fault}", []).append(w.seconds)
        for name, value in w.figures.items():
            targeted = name in TARGETS and (name != "enforced by packets ≤" or fault.startswith("both brains"))
            key = TARGETS[name][1] if targeted else f"{fault}: {name}"
            if fault.startswith("tamper") and not targeted:
                key = f"tamper → repaired ({name})"
            out.setdefault(key, []).append(value)
    return out


def ok(result: Result) -> list[str]:
    problems = [f"{len(result.wrong)} wrong verdicts outside the windows"] if result.wrong else []
    problems += [f"{len(result.denied_first)} allowed attempts denied at first"] if result.denied_first else []
    problems += [c.describe() for c in result.counts if not c.ok]
    return problems + result.prober_errors


def run(backend: str, rounds: int, interval: float) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="st-lab-faults-"))
    slot = os.environ.get("STOCKADE_TEST_SLOT", "")
    lab = make_lab(tmp, f"st{slot}-flt-b-", PORTS)
    every: dict[str, list[float]] = {}
    try:
        start_lab(lab, backend)
        for i in range(rounds):
            if i:  # each round starts as the first: only cli reaches srv
                lab.run("apply", "-f", lab.write("client.yaml", drill_only_from("client")), "--wait")
            result = Drill(lab, backend, say=lambda _: None, interval=interval).run()
            problems = ok(result)
            print(f"  {backend} round {i + 1}: {len(result.attempts)} attempts in {result.seconds:.1f} s; "
                  + ("checks passed" if not problems else "FAILED: " + "; ".join(problems)))  # fmt: skip
            if problems:
                print("\n".join(f"    {line}" for line in result.report()))
                continue
            for name, values in figures(result).items():
                every.setdefault(name, []).extend(values)
    finally:
        lab.run("down", check=False)
    return every


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=["nftables", "iptables"], action="append")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between the prober's rounds")
    args = ap.parse_args()
    print(f"nproc {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.rounds} rounds per backend, 2 brains, 2 nodes, a new flow per cell every "
          f"{args.interval * 1000:.0f} ms")  # fmt: skip
    for backend in args.backend or ["nftables", "iptables"]:
        every = run(backend, args.rounds, args.interval)
        print(f"{backend}:")
        targeted = {what: target for target, what in TARGETS.values()}
        for name in sorted(every, key=lambda n: (n not in targeted, n)):
            values = sorted(every[name])
            med, worst = statistics.median(values), values[-1]
            line = f"  {name}: median {med * 1000:.0f} ms, max {worst * 1000:.0f} ms (n={len(values)})"
            if name in targeted:
                t = targeted[name]
                line += f"; target {t * 1000:.0f} ms, ratio max/target {worst / t:.2f}"
            print(line)


if __name__ == "__main__":
    main()
