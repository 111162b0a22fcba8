"""Benchmark: the agents' capture rate under a flood of blocked attempts, in a lab.

A 3-node lab (namespaces x, y, z; 3 pods each); a policy denies all ingress to x's pods. The 6
pods of y and z then send N TCP SYNs (default 20,000) to port 80 of x's pods, one new flow each
(distinct source ports), as fast as the machine allows, one process per source pod, bounded in
count and time. Reported, summed over the agents:

* kernel: the deny rules' exact counters (each flow once);
* captured: events the agents received over NFLOG, and at what rate;
* lost: what the agents counted as NFLOG loss, and kernel - captured;
* brain and Redis: what reached ``stockade_brain_blocked_connections_total`` and the 15 m counts.

Only lab addresses are targets. Run as root: ``.venv/bin/python benchmarks/agent_capture.py [N]``.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab.lab_ops import (  # type: ignore[import-not-found]
    agent_totals,
    brain_counters,
    lab_state,
    make_lab,
    redis_top,
)

from stockade.lab import nsenter
from stockade.lab.state import LabState

XYZ = Path(__file__).resolve().parents[1] / "examples" / "lab" / "xyz.yaml"
DENY_X = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
"""
SOURCES = ["y/a", "y/b", "y/c", "z/a", "z/b", "z/c"]
TARGETS = ["x/a", "x/b", "x/c"]
PORT = 80
FIRST_SPORT = 20000
FLOOD_LIMIT = 60.0  # seconds: the flood stops here whatever is left
SETTLE_LIMIT = 40.0  # seconds to wait for the counters to settle after the flood
BATCH = 512


def flood(netns: str, src_ip: str, dsts: list[str], count: int, deadline: float) -> None:
    """`count` SYNs from `netns`, each from its own source port, round robin over `dsts`."""
    with nsenter.netns(netns):  # this process's thread: every socket below is the pod's
        sent = 0
        while sent < count and time.time() < deadline:
            socks = []
            for i in range(sent, min(sent + BATCH, count)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((src_ip, FIRST_SPORT + i))
                s.setblocking(False)
                s.connect_ex((dsts[i % len(dsts)], PORT))  # the SYN leaves in this call
                socks.append(s)
            for s in socks:
                s.close()  # a socket whose SYN had no answer closes silently
            sent += len(socks)


def totals(st: LabState) -> dict[str, float]:
    agents = agent_totals(st)
    out = {
        "kernel": sum(v for row in agents.values() for k, v in row.items() if k.startswith("kernel:")),
        "captured": sum(v for row in agents.values() for k, v in row.items() if k.startswith("nflog:")),
        "lost": sum(row["lost"] for row in agents.values()),
    }
    # Each brain counts what its own agents report: summed over the brains, as Prometheus does.
    out["brain"] = sum(brain_counters(st, "stockade_brain_blocked_connections").values())
    out["brain_dropped"] = sum(brain_counters(st, "stockade_brain_drop_events_dropped").values())
    out["redis"] = float(sum(redis_top(st, [], "15m").values()))
    return out


def captured(st: LabState) -> float:
    return sum(v for row in agent_totals(st).values() for k, v in row.items() if k.startswith("nflog:"))


def watch(st: LabState, workers: Sequence[BaseProcess], t0: float, base: float) -> tuple[float, float, float]:
    """Sample the agents' NFLOG counts during the flood and until they stop rising.

    Returns the flood's duration, the time the last event was captured (both from t0), and the
    highest capture rate between two samples."""
    sent_s = 0.0
    last_n, last_t, change_t, peak = base, t0, t0, 0.0
    while True:
        alive = any(w.is_alive() for w in workers)
        if not alive and not sent_s:
            sent_s = time.perf_counter() - t0
        n, t = captured(st), time.perf_counter()
        if n != last_n:
            peak = max(peak, (n - last_n) / (t - last_t))
            change_t = t
        last_n, last_t = n, t
        if not alive and t - change_t > 1.5:
            return sent_s, change_t - t0, peak
        time.sleep(0.1)


def settle(st: LabState, before: dict[str, float], want: int) -> dict[str, float]:
    """Poll until the counters stop moving (the kernel's are read by the agents every 5 s)."""
    deadline = time.monotonic() + SETTLE_LIMIT
    last: dict[str, float] = {}
    still = 0
    while time.monotonic() < deadline:
        now = {k: v - before[k] for k, v in totals(st).items()}
        accounted = now["kernel"] >= want and now["captured"] + now["lost"] >= now["kernel"]
        still = still + 1 if now == last else 0
        if accounted and now["redis"] + now["brain_dropped"] >= now["captured"] and still >= 2:
            return now
        if still >= 24:  # 6 s without change: as done as it gets (kernel counters are read every 5 s)
            return now
        last = now
        time.sleep(0.25)
    return last


def report(n: int, sent_s: float, capture_s: float, peak: float, got: dict[str, float]) -> None:
    kernel, cap = max(got["kernel"], 1.0), max(got["captured"], 1.0)
    print(
        f"flood: {n} SYNs from {len(SOURCES)} pods to {len(TARGETS)} denied pods, port {PORT}, "
        f"in {sent_s:.2f} s ({n / sent_s:,.0f}/s sent)"
    )
    print(f"kernel counters: {got['kernel']:.0f} (ratio to attempts {got['kernel'] / n:.4f})")
    print(
        f"captured via NFLOG: {got['captured']:.0f} in {capture_s:.2f} s -> {got['captured'] / capture_s:,.0f}/s "
        f"(peak {peak:,.0f}/s between samples); captured/kernel {got['captured'] / kernel:.4f} (target 1.0)"
    )
    print(f"NFLOG lost: agents counted {got['lost']:.0f}; kernel - captured = {got['kernel'] - got['captured']:.0f}")
    print(
        f"brain stockade_brain_blocked_connections_total: {got['brain']:.0f} "
        f"(ratio to captured {got['brain'] / cap:.4f}); "
        f"dropped on the way (stockade_brain_drop_events_dropped_total): {got['brain_dropped']:.0f}"
    )
    print(
        f"Redis (15 m counts): {got['redis']:.0f} (ratio to kernel {got['redis'] / kernel:.4f}, "
        f"to captured {got['redis'] / cap:.4f})"
    )


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="st-lo-bench-"))
    lab = make_lab(tmp, "st-lo-b-", (27600, 27999))
    lab.run("down", check=False)
    lab.run("up", "--nodes", "3", "--cluster", str(XYZ), timeout=120)
    try:
        lab.run("apply", "-f", lab.write("deny-x.yaml", DENY_X), "--wait")
        st = lab_state(lab)
        assert st.plan is not None
        pods = {p.key: p for p in st.plan.pods}
        dsts = [pods[t].ip for t in TARGETS]
        before = totals(st)
        per = [n // len(SOURCES) + (1 if i < n % len(SOURCES) else 0) for i in range(len(SOURCES))]
        deadline = time.time() + FLOOD_LIMIT
        workers = [
            multiprocessing.get_context("fork").Process(
                target=flood, args=(pods[s].netns, pods[s].ip, dsts, k, deadline)
            )
            for s, k in zip(SOURCES, per, strict=True)
        ]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        sent_s, capture_s, peak = watch(st, workers, t0, before["captured"])
        got = settle(st, before, n)
        report(n, sent_s, capture_s, peak, got)
    finally:
        lab.run("down", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
