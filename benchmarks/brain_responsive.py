"""The brain stays responsive whatever it compiles (issue 11, item 3).

(a) The worst valid policies, parsed and compiled from cold caches (one policy, one pod, as in
    `engine_ipblock.py`): the widest ipBlocks the limits contract (`stockade.model.limits`)
    accepts, ``::/0`` minus random /128s, up to ``cidrs_per_ipblock`` CIDRs in one block and up
    to ``cidrs_per_policy`` in one policy, next to the cases of `engine_ipblock.py`. Target:
    ≤ 100 ms each (median of ``--repeat`` runs). Over-limit cases print what refusing them costs.
(b) A real brain process (`stockade brain`) against the lab API server in this process: the
    latency of its ``/healthz`` (polled every 5 ms) while it computes the cold start of a 10k-pod
    cluster (`engine_scale.py`'s 10k shape) and then while it compiles the worst valid policy
    several times over (each copy one except short, so nothing is cached). Target: max and
    p99 ≤ 50 ms.

usage: python benchmarks/brain_responsive.py [--repeat N] [--namespaces N] [--skip-brain]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import http.client
import ipaddress
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_ipblock
import engine_scale

ROOT = Path(__file__).resolve().parents[1]
COMPILE_TARGET_MS, HEALTH_TARGET_MS = 100.0, 50.0


def widest_block(seed: int, cap: int) -> list[str]:
    """``::/0`` minus as many random /128s as keep its expansion within ``cap`` CIDRs."""
    from stockade.brain.engine.policy import _block_count

    rnd = random.Random(seed)
    pool = [str(ipaddress.IPv6Network((rnd.getrandbits(128), 128))) for _ in range(4000)]
    lo, hi = 0, len(pool)
    while lo < hi:  # the most excepts that stay within the cap (more excepts, more CIDRs)
        mid = (lo + hi + 1) // 2
        if _block_count("::/0", tuple(sorted(set(pool[:mid])))) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return pool[:lo]


def worst_policy(blocks: list[list[str]]) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "wide-block", "namespace": "x"},
        "spec": {
            "podSelector": {},
            "egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": ex}} for ex in blocks]}],
        },
    }


def compile_once(policy: dict[str, Any]) -> tuple[float, float, int, str]:
    """Seconds (wall, CPU) to parse and compile ``policy`` into an engine with one pod; CIDRs;
    the rejection. CPU time is what a loaded machine distorts least."""
    from stockade.brain.engine import Engine
    from stockade.brain.engine import policy as pol

    for cached in (pol._ipblock, pol._block_networks, pol._block_index, pol._block_count):
        cached.cache_clear()
    pod = {
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "node-1"},
        "status": {"podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}, {"ip": "fd00:10:244:1::2"}]},
    }
    eng = Engine()
    eng.load([{"kind": "Namespace", "metadata": {"name": "x"}}], [pod], [])
    t, c = time.perf_counter(), time.process_time()
    eng.upsert(policy)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    sets = eng.model("node-1").sets.values()
    rejected = "; ".join(f"{r.field}: {r.message}" for r in eng.rejections())
    return elapsed, cpu, sum(len(s) for s in sets), rejected


def part_a(repeat: int) -> dict[str, Any]:
    from stockade.model.limits import POLICY_LIMITS as LIM

    cases: dict[str, dict[str, Any]] = {
        label: engine_ipblock.policy(cidr, excepts) for label, (cidr, excepts) in engine_ipblock.cases().items()
    }
    one = widest_block(1, LIM.cidrs_per_ipblock)
    cases[f"::/0 - {len(one)} random /128 (widest ipBlock)"] = worst_policy([one])
    per_block = min(LIM.cidrs_per_ipblock, LIM.cidrs_per_policy // 2)
    two = [widest_block(2, per_block), widest_block(3, per_block)]
    cases[f"two such blocks, {len(two[0])}+{len(two[1])} /128 (widest policy)"] = worst_policy(two)
    print(f"(a) compile, median of {repeat}; limits: {LIM.cidrs_per_ipblock} CIDRs per ipBlock, "
          f"{LIM.cidrs_per_policy} per policy, {LIM.excepts_per_ipblock} excepts per ipBlock")  # fmt: skip
    worst: tuple[float, str, dict[str, Any]] = (0.0, "", {})
    for label, policy in cases.items():
        runs = [compile_once(policy) for _ in range(max(1, repeat))]
        ms = statistics.median(r[0] for r in runs) * 1000
        cpu = statistics.median(r[1] for r in runs) * 1000
        cidrs, rejected = runs[0][2], runs[0][3]
        what = f"refused ({rejected[:60]}...)" if rejected else f"{cidrs:6d} CIDRs"
        print(
            f"  {label:50s} {ms:6.1f} ms ({ms / COMPILE_TARGET_MS:.2f}x of {COMPILE_TARGET_MS:.0f} ms), "
            f"CPU {cpu:6.1f} ms ({cpu / COMPILE_TARGET_MS:.2f}x)  {what}"
        )
        if not rejected and ms > worst[0]:
            worst = (ms, label, policy)
    print(f"  worst valid: {worst[1]}: {worst[0]:.1f} ms ({worst[0] / COMPILE_TARGET_MS:.2f}x)")
    return worst[2]


# ------------------------------------------------------------------------------------------ (b)


def _serve_lab(namespaces: int, tmp: str, conn: Any) -> None:
    """The lab API server in a process of its own (the poller's timings must not share a GIL
    with it), holding the 10k cluster; then it stores each object the parent sends."""
    from stockade.lab.apiserver import ApiServer

    async def run() -> None:
        server = ApiServer()
        await server.start("127.0.0.1", 0)
        nss, pods, pols = engine_scale.cluster(namespaces, 100)
        for o in nss + pods:
            o["apiVersion"] = "v1"
        for o in pols:
            o["apiVersion"] = "networking.k8s.io/v1"
        for o in [*nss, *pods, *pols, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}]:
            server.put_object(o)
        conn.send(str(server.kubeconfig(Path(tmp) / "kc")))
        loop = asyncio.get_running_loop()
        while True:
            obj = await loop.run_in_executor(None, conn.recv)
            if obj is None:
                break
            server.put_object(obj)
            conn.send("ok")
        await server.stop()

    asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Poller:
    """GET /healthz every 5 ms; latencies (seconds) with the time each request was sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.samples.append((t0, time.perf_counter() - t0))
            except OSError:
                self.failures += 1
                conn = None
            time.sleep(0.005)

    def window(self, start: float, end: float) -> list[float]:
        return [lat for t, lat in self.samples if start <= t <= end]

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def until_idle(pid: int, quiet: float = 0.4, timeout: float = 120.0) -> float:
    """Wait until the process has used no CPU for ``quiet`` seconds; when that began."""
    deadline = time.perf_counter() + timeout
    last, since = cpu_seconds(pid), time.perf_counter()
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        now = cpu_seconds(pid)
        if now - last > 0.01:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since >= quiet:
            return since
    return time.perf_counter()


def report(label: str, lat: list[float]) -> None:
    if not lat:
        print(f"  {label:44s} no samples")
        return
    lat = sorted(lat)
    worst, p99 = lat[-1] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(
        f"  {label:44s} max {worst:6.1f} ms ({worst / HEALTH_TARGET_MS:.2f}x)  p99 {p99:6.1f} ms "
        f"({p99 / HEALTH_TARGET_MS:.2f}x of {HEALTH_TARGET_MS:.0f} ms)  {len(lat)} probes"
    )


def part_b(namespaces: int, policy: dict[str, Any], copies: int) -> None:
    print(f"(b) /healthz of a brain process while it computes ({namespaces * 4} pods, {namespaces * 3} policies)")
    tmp = tempfile.mkdtemp(prefix="st-responsive-")
    ours, theirs = multiprocessing.Pipe()
    lab = multiprocessing.get_context("fork").Process(target=_serve_lab, args=(namespaces, tmp, theirs), daemon=True)
    lab.start()
    kc = ours.recv()
    port = free_port()
    env = {
        "PYTHONPATH": ":".join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli")),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    argv = ["-v", "brain", "--kubeconfig", str(kc), "--insecure", "--listen", "127.0.0.1:0"]
    argv += ["--admin-listen", "127.0.0.1:0", "--admin-mtls-listen", "", "--http", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockade.cli.main", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "serving:" in line:
                serving.set()

    threading.Thread(target=read, daemon=True).start()
    poller = Poller(port)
    try:
        if not serving.wait(300):
            raise SystemExit("the brain did not start:\n" + "".join(lines))
        started = next((t for t, _ in poller.samples), time.perf_counter())
        report("cold start (list + compute)", poller.window(started, time.perf_counter()))
        computed = [ln.strip().split(": ", 1)[-1] for ln in lines if "computed " in ln]
        if computed:
            print(f"    brain: {computed[0]}")
        until_idle(proc.pid)
        t0 = time.perf_counter()
        for i in range(copies):
            p = copy.deepcopy(policy)  # each copy one except short: its own blocks, nothing cached
            p["apiVersion"], p["metadata"] = "networking.k8s.io/v1", {"name": f"wide-{i}", "namespace": "x"}
            for peer in p["spec"]["egress"][0]["to"]:
                peer["ipBlock"]["except"] = peer["ipBlock"]["except"][i:]
            ours.send(p)
            ours.recv()
        t1 = until_idle(proc.pid)
        report(f"compiling the worst valid policy x{copies} ({t1 - t0:.1f} s)", poller.window(t0, t1))
    finally:
        poller.stop()
        proc.terminate()
        proc.wait(30)
        ours.send(None)
        lab.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="runs per compile case; the median is printed")
    ap.add_argument("--namespaces", type=int, default=2500, help="4 pods and 3 policies each (default 2500)")
    ap.add_argument("--copies", type=int, default=5, help="the worst valid policy, under this many names")
    ap.add_argument("--skip-brain", action="store_true", help="only (a)")
    args = ap.parse_args()
    worst = part_a(args.repeat)
    if not args.skip_brain:
        part_b(args.namespaces, worst, args.copies)


if __name__ == "__main__":
    main()
