"""Benchmark: `stockade lab up` of 3 nodes and 9 pods (the e2e x/y/z layout), and `down`.

Wall time of the whole command, as a user sees it: namespaces, links, routes, pod servers,
Redis, the API server (and the brain and agents, when this build has them). Each lab mode in
one run (IPv4 routed, dual-stack routed, dual-stack on bridges), so their figures compare. Run as
root: ``.venv/bin/python benchmarks/lab_up.py [runs] [MODE ...]``, MODE being FAMILY/TOPOLOGY.
"""

from __future__ import annotations

import statistics
import sys

from lab_common import XYZ, lab, lab_env, report

UP_TARGET = 3.0  # seconds: a newcomer's first command should feel quick
DOWN_TARGET = 1.0


MODES = ["ipv4/routed", "dual/routed", "dual/bridge"]


def main(runs: int, modes: list[str]) -> None:
    env = lab_env()
    for mode in modes:
        family, _, topology = mode.partition("/")
        ups, downs = [], []
        for _ in range(runs):
            args = ("--ip-family", family, "--topology", topology or "routed")
            t_up, out = lab(env, "up", "--nodes", "3", "--cluster", str(XYZ), *args)
            t_down, _ = lab(env, "down")
            ups.append(t_up)
            downs.append(t_down)
        print(out.split("\n\n")[0])
        report(f"lab up {mode}, 3 nodes, 9 pods (median of {runs})", statistics.median(ups), UP_TARGET)
        report(f"lab down {mode} (median of {runs})", statistics.median(downs), DOWN_TARGET)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2:] or MODES)
