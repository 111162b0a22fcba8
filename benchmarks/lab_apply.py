"""Benchmark: `stockade lab apply -f POLICY --wait` on a 3-node, 9-pod lab, apply to realized.

Each round applies one policy (default deny in namespace x: three nodes must change) and waits
until the brain has seen it and every node's agent has acked the result (the brain's
/v1/realized), then deletes it the same way. Timed in-process (the lab's own `apply`, as the CLI
runs it, without the CLI's interpreter start), and the CLI's wall time once for comparison.
Run as root: ``.venv/bin/python benchmarks/lab_apply.py [rounds]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from lab_common import XYZ, lab, lab_env, report

TARGET = 1.0  # seconds from apply to realized on every node (issue 5)
POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bench-deny, namespace: x}
spec: {podSelector: {}}
"""


def main(rounds: int) -> None:
    env = lab_env()
    lab(env, "up", "--nodes", "3", "--cluster", str(XYZ))
    os.environ.update(env)
    from stockade.lab import config
    from stockade.lab import lab as labcmd

    cfg = config.from_env()
    path = Path(env["STOCKADE_LAB_DIR"]) / "bench-policy.yaml"
    path.write_text(POLICY)
    quiet = lambda _: None  # noqa: E731
    try:
        applies, deletes = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            labcmd.apply(cfg, [str(path)], True, quiet)
            applies.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            labcmd.delete(cfg, [str(path)], True, quiet)
            deletes.append(time.perf_counter() - t0)
        cli, _ = lab(env, "apply", "-f", str(path), "--wait")
        applies.sort()
        report(f"apply one policy to realized on 3 nodes (median of {rounds})", statistics.median(applies), TARGET)
        report(f"  p90 of {rounds}", applies[int(0.9 * (rounds - 1))], TARGET)
        report(f"delete it to realized (median of {rounds})", statistics.median(deletes), TARGET)
        report("the same through the CLI, wall time (includes Python start-up)", cli, TARGET)
    finally:
        lab(env, "down")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
