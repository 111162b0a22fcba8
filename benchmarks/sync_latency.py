"""Sync latency: from an API change to every agent acked, and brain memory per connected agent.

    .venv/bin/python benchmarks/sync_latency.py                 # 100 and 1,000 agents
    .venv/bin/python benchmarks/sync_latency.py --agents 100 --changes 200

How it is measured: the brain (real Engine, FanOut and gRPC Sync service with mTLS) runs in
this process; all agents run in one child process (real gRPC clients with mTLS, one channel
and TCP connection each, the real Applier with its validation and digest checks, a no-op
dataplane). The cluster has one "server" pod on every node, selected by a policy whose
ingress peer is `app=client`; each change relabels a client pod in or out of that peer, so it
changes the address set on every node. Latency = from `engine.upsert()` of the change to the
brain having received every agent's ack for the resulting generation. Memory per agent =
growth of the brain process's RSS from before the agents connect to after all are in sync,
divided by the number of agents.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("common", "brain", "node-agent"):
    sys.path.insert(0, str(ROOT / "services" / sub))

from stockade.agent.sync import AgentClient, Applier, Backoff  # noqa: E402
from stockade.brain.engine import Engine  # noqa: E402
from stockade.brain.fanout import FanOut  # noqa: E402
from stockade.brain.sync_service import serve_sync  # noqa: E402
from stockade.model import NodeDelta, NodeModel  # noqa: E402
from stockade.tls import ClientTLS, ServerTLS, write_bundle  # noqa: E402

TARGETS = {100: 0.100, 1000: 1.0}


class NoopDataplane:
    name = "noop"

    def apply_snapshot(self, model: NodeModel) -> None:
        pass

    def apply_delta(self, delta: NodeDelta, model: NodeModel) -> None:
        pass

    def verify(self, model: NodeModel) -> list[str]:
        return []

    def repair(self, model: NodeModel) -> None:
        pass

    def close(self) -> None:
        pass


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int | str) -> float:
    """Seconds a process's threads spent waiting for a CPU (runnable, not running)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def objects(n: int) -> dict[str, list[dict]]:
    nodes = [f"node-{i}" for i in range(n)]
    ns = [{"kind": "Namespace", "metadata": {"name": "bench", "labels": {"team": "bench"}}}]
    pods = [
        {
            "kind": "Pod",
            "metadata": {"name": f"server-{i}", "namespace": "bench", "labels": {"app": "server"}},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": f"10.{10 + i // 250}.{i % 250}.10"},
        }
        for i, node in enumerate(nodes)
    ]
    pods += [client_pod(i, "client") for i in range(20)]
    policy = {
        "kind": "NetworkPolicy",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"name": "servers", "namespace": "bench"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]}],
        },
    }
    return {
        "namespaces": ns,
        "pods": pods,
        "policies": [policy],
        "nodes": [{"kind": "Node", "metadata": {"name": n}} for n in nodes],
    }


def client_pod(i: int, app: str) -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": f"client-{i}", "namespace": "bench", "labels": {"app": app}},
        "spec": {"nodeName": "node-0", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": f"10.200.0.{i + 1}"},
    }


# ---- the agents' process ---------------------------------------------------------------------


def agents_main(n: int, address: str, certs: str) -> None:
    raise_fd_limit()

    async def run() -> None:
        stop = asyncio.Event()
        tasks = []
        for i in range(n):
            node = f"node-{i}"
            applier = Applier(node, NoopDataplane(), offload=False)
            client = AgentClient(applier, address, ClientTLS.from_dir(Path(certs), node), backoff=Backoff(0.2, 2))
            tasks.append(asyncio.create_task(client.run(stop)))
        await asyncio.gather(*tasks)

    asyncio.run(run())


# ---- the brain (this process) ------------------------------------------------------------------


async def measure(n: int, changes: int, certs: Path) -> dict[str, float]:
    engine = Engine()
    engine.load(**objects(n))
    fanout = FanOut(engine.model)
    nodes = [f"node-{i}" for i in range(n)]
    for node in nodes:  # start the feeds now so their models count in the baseline
        fanout.feed(node)
    server, port, _ = await serve_sync(fanout, ServerTLS.from_dir(certs), "127.0.0.1:0")
    rss0 = rss_bytes()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=agents_main, args=(n, f"127.0.0.1:{port}", str(certs)), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    try:
        if not await fanout.wait_synced(nodes, timeout=300):
            raise SystemExit(f"agents did not connect: {sum(s.in_sync for s in fanout.status.values())}/{n}")
        connect_time = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        rss1 = rss_bytes()
        cpu0 = time.process_time()
        agents_cpu0 = proc_cpu(proc.pid)
        wait0 = (run_delay("self"), run_delay(proc.pid or 0))
        lat = []
        for i in range(changes):
            pod = client_pod(i % 20, "other" if (i // 20) % 2 == 0 else "client")
            start = time.perf_counter()
            fanout.on_deltas(engine.upsert(pod))
            if not await fanout.wait_synced(nodes, timeout=60):
                raise SystemExit(f"change {i} was not acked by every agent within 60 s")
            lat.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)
        brain_cpu = (time.process_time() - cpu0) / changes
        agents_cpu = (proc_cpu(proc.pid) - agents_cpu0) / changes
        brain_wait = (run_delay("self") - wait0[0]) / changes
        agents_wait = (run_delay(proc.pid or 0) - wait0[1]) / changes
    finally:
        proc.terminate()
        proc.join(10)
        await server.stop(None)
    lat.sort()
    return {
        "agents": n,
        "changes": changes,
        "p50": statistics.median(lat),
        "p90": lat[min(len(lat) - 1, int(len(lat) * 0.90))],
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "max": lat[-1],
        "connect": connect_time,
        "rss_per_agent": (rss1 - rss0) / n,
        "brain_cpu": brain_cpu,
        "agents_cpu": agents_cpu,
        "brain_wait": brain_wait,
        "agents_wait": agents_wait,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    raise_fd_limit()
    for n in args.agents:
        with tempfile.TemporaryDirectory() as tmp:
            write_bundle(Path(tmp), [f"node-{i}" for i in range(n)])
            r = asyncio.run(measure(n, args.changes, Path(tmp)))
        target = TARGETS.get(n)
        ratio = f" = {r['p99'] / target:.2f}x the {target * 1000:.0f} ms target" if target else ""
        print(
            f"{n:5d} agents, {r['changes']} changes: change -> all acked p50 {r['p50'] * 1000:.1f} ms, "
            f"p90 {r['p90'] * 1000:.1f} ms, p99 {r['p99'] * 1000:.1f} ms{ratio}, max {r['max'] * 1000:.1f} ms; "
            f"CPU per change: brain {r['brain_cpu'] * 1000:.0f} ms, agents {r['agents_cpu'] * 1000:.0f} ms; "
            f"waiting for a CPU per change: brain {r['brain_wait'] * 1000:.0f} ms, "
            f"agents {r['agents_wait'] * 1000:.0f} ms; "
            f"all connected+synced in {r['connect']:.1f} s; "
            f"brain memory {r['rss_per_agent'] / 1024:.1f} KiB per connected agent",
            flush=True,
        )
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
