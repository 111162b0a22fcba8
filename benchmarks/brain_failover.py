"""Agent failover between two brains (issue 13 item 4; target: every agent served again within 2 s).

    .venv/bin/python benchmarks/brain_failover.py                       # 20 agents, 2 rounds per mode
    .venv/bin/python benchmarks/brain_failover.py --agents 50 --rounds 3 --idle-agents 200

How it is measured: two real `stockade brain` processes (plain text) watch one API server (the
lab's, in this process) holding a namespace, pods and a policy on every node, so both compile the
same models. K agents (the real sync client, memory dataplane, the default keepalive) run in this
process, one node each, spread over the brains by their own order. Each round signals the brain
serving the most agents — SIGKILL (the process dies: the kernel resets its connections),
SIGTERM (the brain ends every stream first) or SIGSTOP (frozen: nothing is closed, only the
agents' keepalive notices) — and takes, for every agent that was on it, the time from the signal
to its first stream accepted by the other brain, and to its first ack there (the Resume). The
signalled brain is then killed and started again for the next round.

Restart (issue 17 item 3; target: every agent in sync within 2 s of the restarted brain
listening): one brain serving K agents is killed, stays down ``--down-seconds`` (long enough for
every agent's backoff to reach its cap), and is started again on its port; for every agent, the
time from the brain's "serving" line to its first ack. Once with the agents' backoff (cap 1 s)
and once with the old one (cap 10 s), side by side.

Keepalive cost: N idle agents connected to one brain for 10 s, once with the agents' keepalive
(0.5 s pings, 1 s timeout) and once with the old one (10 s, 5 s); the brain process's CPU-seconds
(utime + stime from /proc) over those seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = [str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli")]
sys.path[:0] = SERVICES

from stockade.agent.backends.base import MemoryDataplane  # noqa: E402
from stockade.agent.sync import AgentClient, Applier, Backoff, channel_options  # noqa: E402
from stockade.lab.apiserver import ApiServer  # noqa: E402
from stockade.v1 import sync_pb2  # noqa: E402

TARGET = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BrainProcess:
    serving_at = 0.0  # monotonic time of its "serving" line

    def __init__(self, kubeconfig: Path, port: int = 0) -> None:
        argv = ["-v", "brain", "--kubeconfig", str(kubeconfig), "--insecure", "--listen", f"127.0.0.1:{port}"]
        argv += ["--admin-listen", "127.0.0.1:0", "--admin-mtls-listen", "", "--http", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.cli.main", *argv],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={"PYTHONPATH": ":".join(SERVICES), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self.port = 0
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if m := re.search(r"serving: sync\+drops on \S+ \(port (\d+)\)", line):
                self.port, self.serving_at = int(m.group(1)), time.monotonic()
                self._ready.set()
        self._ready.set()

    def wait_serving(self) -> int:
        self._ready.wait(120)
        if not self.port:
            raise RuntimeError("a brain did not start")
        return self.port

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


class TimedClient(AgentClient):
    """The real client, noting when a brain accepted its stream and when it first acked there."""

    accepted: tuple[str, float] | None = None
    acked: tuple[str, float] | None = None

    def _link_up(self) -> None:
        super()._link_up()
        self.accepted, self.acked = (self.status.brain, time.monotonic()), None

    async def _write(self, call: Any, msg: sync_pb2.AgentMessage) -> None:
        await super()._write(call, msg)
        if self.acked is None and msg.HasField("ack"):
            self.acked = (self.status.brain, time.monotonic())


def cluster(server: ApiServer, nodes: list[str]) -> None:
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    for i, node in enumerate(nodes):
        server.put_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        ip = f"10.{1 + i // 250}.{i % 250}.2"
        server.put_object(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"web-{i}", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
                "status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"},
            }
        )
    server.put_object(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 80}]}]},
        }
    )


def start_agents(
    nodes: list[str], brains: str, options: list[tuple[str, Any]], cap: float | None = None
) -> list[tuple[TimedClient, asyncio.Event, asyncio.Task[None]]]:
    out = []
    for node in nodes:
        client = TimedClient(
            Applier(node, MemoryDataplane(), offload=False),
            brains,
            None,
            allow_insecure=True,
            backoff=Backoff() if cap is None else Backoff(cap=cap),
            options=options,
        )
        stop = asyncio.Event()
        out.append((client, stop, asyncio.create_task(client.run(stop))))
    return out


async def stop_agents(agents: list[tuple[TimedClient, asyncio.Event, asyncio.Task[None]]]) -> None:
    for _, stop, _ in agents:
        stop.set()
    await asyncio.gather(*(asyncio.wait_for(t, 20) for *_, t in agents))


async def until(check: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out: {what}")
        await asyncio.sleep(0.01)


def all_up(agents: list[tuple[TimedClient, asyncio.Event, asyncio.Task[None]]]) -> bool:
    return all(c.status.connected and c.acked for c, *_ in agents)


def moved(movers: list[TimedClient], brain: str) -> bool:
    return all(c.acked is not None and c.acked[0] == brain for c in movers)


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<22} (none)"
    med, top = statistics.median(values), max(values)
    return (
        f"  {label:<22} n={len(values):<4} median {med * 1000:7.0f} ms  max {top * 1000:7.0f} ms"
        f"  (max/target {top / TARGET:.2f})"
    )


async def failover(kc: Path, nodes: list[str], rounds: int) -> None:
    procs = [BrainProcess(kc), BrainProcess(kc)]
    ports = [await asyncio.to_thread(p.wait_serving) for p in procs]
    addresses = [f"127.0.0.1:{p}" for p in ports]
    agents = start_agents(nodes, ",".join(addresses), channel_options())
    try:
        await until(functools.partial(all_up, agents), 60, "agents connected")
        for how in ("SIGKILL", "SIGTERM", "SIGSTOP"):
            accepted: list[float] = []
            acked: list[float] = []
            for _ in range(rounds):
                on = [sum(c.status.brain == a for c, *_ in agents) for a in addresses]
                victim = on.index(max(on))
                gone, other = addresses[victim], addresses[1 - victim]
                movers = [c for c, *_ in agents if c.status.brain == gone]
                t0 = time.monotonic()
                os.kill(procs[victim].proc.pid, getattr(signal, how))
                await until(functools.partial(moved, movers, other), 60, f"{how}: agents moved")
                accepted += [c.accepted[1] - t0 for c in movers if c.accepted]
                acked += [c.acked[1] - t0 for c in movers if c.acked]
                procs[victim].kill()
                procs[victim] = BrainProcess(kc, ports[victim])  # back on its port: the agents' list holds it
                await asyncio.to_thread(procs[victim].wait_serving)
            print(f"{how}: {len(accepted)} moves over {rounds} round(s)")
            print(summary("signal -> accepted", accepted))
            print(summary("signal -> first ack", acked))
    finally:
        await stop_agents(agents)
        for p in procs:
            p.kill()


async def restart(kc: Path, nodes: list[str], down: float) -> None:
    for label, cap in (("cap 1 s (agents' default)", None), ("cap 10 s (before)", 10.0)):
        proc = BrainProcess(kc)
        port = await asyncio.to_thread(proc.wait_serving)
        agents = start_agents(nodes, f"127.0.0.1:{port}", channel_options(), cap)
        try:
            await until(functools.partial(all_up, agents), 60, "agents connected")
            proc.kill()
            await asyncio.sleep(down)
            for c, *_ in agents:
                c.acked = None
            proc = BrainProcess(kc, port)
            await asyncio.to_thread(proc.wait_serving)
            await until(functools.partial(lambda a: all(c.acked for c, *_ in a), agents), 120, "agents back")
            print(f"restart, backoff {label}: {len(agents)} agents, down {down:.0f} s")
            print(summary("serving -> first ack", [c.acked[1] - proc.serving_at for c, *_ in agents if c.acked]))
        finally:
            await stop_agents(agents)
            proc.kill()


async def keepalive_cost(kc: Path, nodes: list[str], seconds: float) -> None:
    proc = BrainProcess(kc)
    port = await asyncio.to_thread(proc.wait_serving)
    try:
        for label, options in (
            ("0.5 s / 1 s (new)", channel_options()),
            ("10 s / 5 s (old)", channel_options(10_000, 5_000)),
        ):
            agents = start_agents(nodes, f"127.0.0.1:{port}", options)
            try:
                await until(functools.partial(all_up, agents), 120, "idle agents up")
                await asyncio.sleep(2.0)
                before, mine, t0 = proc.cpu_seconds(), time.process_time(), time.monotonic()
                await asyncio.sleep(seconds)
                used, agents_cpu, wall = proc.cpu_seconds() - before, time.process_time() - mine, time.monotonic() - t0
                print(
                    f"  keepalive {label:<18} {len(nodes)} idle agents, {wall:.1f} s: brain {used:.2f} CPU-s"
                    f" ({used / wall * 100:.1f}% of a core); the agents' process {agents_cpu:.2f} CPU-s"
                )
            finally:
                await stop_agents(agents)
    finally:
        proc.kill()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle-agents", type=int, default=200)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--down-seconds", type=float, default=15.0, help="how long the restarted brain stays down")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the agents' per-node "unreachable" lines would drown the figures
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}); target {TARGET:.0f} s")
    server = ApiServer()
    await server.start("127.0.0.1", 0)
    try:
        nodes = [f"node-{i}" for i in range(max(args.agents, args.idle_agents))]
        cluster(server, nodes)
        with tempfile.TemporaryDirectory() as d:
            kc = server.kubeconfig(Path(d) / "kc")
            await failover(kc, nodes[: args.agents], args.rounds)
            await restart(kc, nodes[: args.agents], args.down_seconds)
            await keepalive_cost(kc, nodes[: args.idle_agents], args.idle_seconds)
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
