"""Benchmark: every lab brain killed (SIGKILL), a policy changed meanwhile → enforced on every node.

Target (issue 17, done-when): a killed lab brain comes back by itself and a change made while it
was down is enforced ≤ 5 s after the kill. Per round, in a 2-brain lab of 2 nodes: SIGKILL both
brains from outside, at once write a NetworkPolicy that flips who may reach the srv pods (one on
each node), then probe with real TCP connections (from pod namespaces, 0.3 s timeout, over and
over) until the flip holds on every node: the allowed pod reaches every srv pod and the other
reaches none. Reported: the median (and worst) time from the kill to that, over the rounds; the
lab's supervisor restarts the brains (backoff 0.2 s for a process that ran ≥ 10 s). Run as root:
``.venv/bin/python benchmarks/lab_restart.py [rounds]``.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path

from lab_common import lab, lab_env, report

from stockade.lab import config, state
from stockade.lab import lab as labcmd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lab.lab_ops import drill_cluster, drill_only_from  # type: ignore[import-not-found]

TARGET = 5.0
NODES = 2
SRV = [f"drill/srv-{i}" for i in range(1, NODES + 1)]


def enforces(cfg: config.LabConfig, allowed: str, blocked: str) -> bool:
    def reached(src: str) -> set[str]:
        rs = labcmd.run_probe(cfg, [80], ["TCP"], [f"drill/{src}"], SRV, 0.3, lambda _: None)
        return {r.dst for r in rs if r.connected}

    return reached(allowed) == set(SRV) and not reached(blocked)


def round_(cfg: config.LabConfig, files: dict[str, str], allowed: str, blocked: str) -> float:
    st = state.load(cfg.state_file)
    assert st is not None
    pids = [st.processes[n][0] for n in ("brain", "brain2")]
    t0 = time.perf_counter()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    labcmd.apply(cfg, [files[allowed]], False, lambda _: None)
    while not enforces(cfg, allowed, blocked):
        if time.perf_counter() - t0 > 120:
            raise SystemExit("not enforced 120 s after the kill")
    return time.perf_counter() - t0


def main(rounds: int) -> None:
    env = lab_env()
    ports = config.parse_port_range(env["STOCKADE_LAB_PORTS"])
    cfg = config.LabConfig(Path(env["STOCKADE_LAB_DIR"]), env["STOCKADE_LAB_PREFIX"], ports)
    work = Path(env["STOCKADE_LAB_DIR"]).parent / f"{cfg.prefix}files"
    work.mkdir(exist_ok=True)
    (work / "c.yaml").write_text(drill_cluster(NODES))
    files = {}
    for role in ("client", "other"):
        (work / f"{role}.yaml").write_text(drill_only_from(role))
        files[{"client": "cli", "other": "other"}[role]] = str(work / f"{role}.yaml")
    print(f"nproc {os.cpu_count()}; {rounds} rounds; 2 brains, {NODES} nodes")
    try:
        lab(env, "up", "--brains", "2", "--nodes", str(NODES), "--cluster", str(work / "c.yaml"))
        lab(env, "apply", "-f", files["cli"], "--wait")
        took = []
        allowed, blocked = "other", "cli"
        for i in range(rounds):
            time.sleep(11)  # past the supervisor's reset (10 s): each round starts from the first backoff
            t = round_(cfg, files, allowed, blocked)
            took.append(t)
            print(f"  round {i + 1}: kill → enforced on every node in {t * 1000:.0f} ms")
            allowed, blocked = blocked, allowed
        report("brains killed, change meanwhile → enforced (median)", statistics.median(took), TARGET)
        print(f"  worst {max(took) * 1000:.0f} ms")
    finally:
        lab(env, "down")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
