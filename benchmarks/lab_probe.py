"""Benchmark: a full `stockade lab probe` of a 3-node, 9-pod lab.

10 sources (9 pods and the external host) x 9 destinations x 4 declared ports (80/81 over TCP and
UDP) = 360 connections, all run concurrently from one process. With no policy every probe
connects, so this measures the probe's own cost; a probe where policy drops packets takes about
one timeout (1 s) more. In a dual-stack lab (``dual`` as the second argument) every connection is
made over both families: 720. Run as root: ``.venv/bin/python benchmarks/lab_probe.py [runs] [dual]``.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lab_common import XYZ, lab, lab_env, report

TARGET = 1.0  # seconds for the whole matrix: less than one probe timeout (one more when some time out)
DENY_X = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
"""


def main(runs: int, family: str) -> None:
    env = lab_env()
    lab(env, "up", "--nodes", "3", "--cluster", str(XYZ), "--ip-family", family)
    try:
        times = []
        for _ in range(runs):
            took, out = lab(env, "probe", "-o", "json")
            times.append(took)
        results = json.loads(out)["results"]
        ok = sum(r["connected"] for r in results)
        print(f"{len(results)} probes, {ok} connected")
        report(f"full probe, no policy, {family} (median of {runs}, wall time)", statistics.median(times), TARGET)
        # With a default-deny policy in x, 108 probes wait out the 1 s timeout, all at once.
        policy = Path(env["STOCKADE_LAB_DIR"]) / "deny-x.yaml"
        policy.write_text(DENY_X)
        lab(env, "apply", "-f", str(policy), "--wait")
        blocked = []
        for _ in range(runs):
            took, out = lab(env, "probe", "-o", "json")
            blocked.append(took)
        results = json.loads(out)["results"]
        print(f"{len(results)} probes, {sum(not r['connected'] for r in results)} blocked by policy")
        report(f"full probe, default deny in x, {family} (median of {runs})", statistics.median(blocked), TARGET + 1.0)
    finally:
        lab(env, "down")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, sys.argv[2] if len(sys.argv) > 2 else "ipv4")
