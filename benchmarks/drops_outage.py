"""Drop reports during a Redis outage: the brain's CPU and the counter's lag while Redis is stopped.

    .venv/bin/python benchmarks/drops_outage.py [--agents 50] [--events 10000] [--seconds 20]
                                                [--mode both|new|old]

How it is measured: a redis-server of its own and a brain process (the drop service: gRPC server,
resolver, aggregator, Redis writes, with its defaults: 5 s socket timeouts, acks held 1 s while
Redis is away). This process runs ``--agents`` real agent `Reporter`s (one node and one channel
each, the defaults) and one more, the lag probe. Once the agents' first events are in Redis,
Redis gets SIGSTOP (connections accepted, nothing answered); every agent then offers ``--events``
events, which the brain counts but cannot store, so the agents keep them. When the brain has
counted them all and found Redis away (its first write timed out), the window starts:
``--seconds`` of outage, in which the probe offers one event every 0.1 s stamped with the time
of the offer; the brain notes, for each, the time from that stamp to its counting (the
Prometheus counter's lag). Over the window: the brain process's CPU-seconds (utime + stime
from /proc) and the events it parsed, fresh and re-sent (skipped as already counted), and this
process's CPU-seconds (the agents': encoding what they re-send). Then SIGCONT: the time until
every agent's buffer is empty, and every minute hash in Redis compared
with counts made here (exactly once each, or the run fails).

Modes: ``new``: agents re-send only what this brain process has not counted (the brain names
itself and acknowledges what it counted). ``old``: agents re-send every unstored batch on every
stream, as before (`Reporter(skip_counted=False)`); the brain skips them by seq but parses them.
Target: the brain's CPU over the window with ``new`` at most 10% of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services" / s) for s in ("common", "brain", "node-agent")]

import grpc  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from stockade.model.events import BlockedEvent  # noqa: E402
from stockade.model.rules import Direction  # noqa: E402

TARGET = 0.10  # of one core, over the window, with the new agents
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROBE = "lag-probe"


def free_port() -> int:
    for port in random.sample(range(23000, 24000), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 23000-23999")


def pod_table() -> dict[str, tuple[str, str]]:
    return {f"10.{n}.0.{i + 1}": (f"ns-{n}", f"pod-{i}") for n in range(5) for i in range(20)}


# --- the brain process ---------------------------------------------------------------------


async def serve(redis_port: int, grpc_port: int) -> None:
    from prometheus_client import CollectorRegistry

    from stockade.brain.drops import Aggregator, DropMetrics, RedisStore, StaticResolver, connect
    from stockade.brain.drops.servicer import DropServicer
    from stockade.v1 import drops_pb2_grpc

    registry = CollectorRegistry()
    agg = Aggregator(RedisStore(connect(f"redis://127.0.0.1:{redis_port}/0")), StaticResolver(pod_table()),
                     DropMetrics(registry))  # fmt: skip
    servicer = DropServicer(agg)
    lags: list[float] = []
    accept = servicer.accept

    def timed_accept(batch, node=None):  # type: ignore[no-untyped-def]
        out = accept(batch, node)
        if (node or batch.node) == PROBE and out[1]:  # counted now: the counter moved
            now = time.time()
            lags.extend(now - e.time for e in batch.events)
        return out

    servicer.accept = timed_accept  # type: ignore[method-assign]
    server = grpc.aio.server()
    drops_pb2_grpc.add_DropServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while (line := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) != "quit":
        s = servicer.stats
        blocked = sum(x.value for m in registry.collect() for x in m.samples
                      if x.name == "stockade_brain_blocked_connections_total")  # fmt: skip
        report = {"events": s.events, "duplicate_events": s.duplicate_events, "batches": s.batches,
                  "duplicate_batches": s.duplicate_batches, "blocked": blocked, "buffered": agg.buffered_events,
                  "redis_up": agg.redis_up, "lags": lags if line == "lags" else []}  # fmt: skip
        if line == "lags":
            lags = []
        print(json.dumps(report), flush=True)
    await server.stop(0)
    await agg.close(2)
    await flusher


# --- the agents (this process) ---------------------------------------------------------------


class BrainProcess:
    def __init__(self, redis_port: int, grpc_port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--redis-port", str(redis_port), "--grpc-port", str(grpc_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self._lock = threading.Lock()

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def _ask(self, what: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(what + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    async def ask(self, what: str = "stats") -> dict:
        return await asyncio.to_thread(self._ask, what)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def make_events(n: int, node: str, rnd: random.Random) -> list[BlockedEvent]:
    """Events of 300 flows (a noisy cluster's), within the last four minutes: few counters, so
    the brain's in-memory bound is far away and only the re-sends differ between the modes."""
    pods = list(pod_table())
    flows = random.Random(1)
    outside = [f"192.0.2.{i}" for i in range(2, 50)]
    noisy = [
        (flows.choice([Direction.INGRESS, Direction.EGRESS]), flows.choice(pods + outside), flows.choice(pods),
         flows.choice(["TCP", "UDP"]), flows.choice([80, 443, 5432]))
        for _ in range(300)
    ]  # fmt: skip
    now = time.time()
    out = []
    for _ in range(n):
        d, src, dst, proto, port = rnd.choice(noisy)
        out.append(BlockedEvent(
            time=now - 240 + rnd.random() * 230, node=node, direction=d, src=src, dst=dst, protocol=proto,
            sport=rnd.randrange(1024, 65536), dport=port, chain="in_0a1b2c" if d is Direction.INGRESS else "out_0a1b2c",
        ))  # fmt: skip
    return out


def expected(events: list[BlockedEvent]) -> dict[int, Counter[str]]:
    table = pod_table()
    out: dict[int, Counter[str]] = {}
    for e in events:
        dn, dp = table.get(e.dst, ("", e.dst))
        sn, sp = table.get(e.src, ("", e.src))
        out.setdefault(int(e.time // 60), Counter())[
            f"{e.direction.value}|{e.protocol}|{e.dport}|{dn}|{dp}|{sn}|{sp}"
        ] += 1
    return out


async def until(what, deadline: float, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await what():
            return True
        await asyncio.sleep(step)
    return False


async def run_mode(mode: str, args: argparse.Namespace) -> dict:
    from stockade.agent.reporter import CHANNEL_OPTIONS, Reporter

    workdir = tempfile.mkdtemp(prefix="stockade-bench-outage-")
    rport, gport = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = Redis(port=rport)
    for _ in range(100):
        try:
            await client.ping()
            break
        except Exception:
            await asyncio.sleep(0.05)
    brain = BrainProcess(rport, gport)
    target = f"127.0.0.1:{gport}"
    channels = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(args.agents + 1)]
    reporters = [Reporter(f"node-{i}" if i < args.agents else PROBE, ch, skip_counted=mode == "new")
                 for i, ch in enumerate(channels)]  # fmt: skip
    agents, probe = reporters[:-1], reporters[-1]
    tasks = [asyncio.create_task(r.run()) for r in reporters]
    rnd = random.Random(7)
    sent: list[BlockedEvent] = []
    stopped = False
    try:
        for r in agents:  # warm up: connected, and the first events stored
            evs = make_events(100, r.node, rnd)
            sent += evs
            r.offer(evs)
        assert await until(lambda: _empty(agents), 120), "warm-up events were not stored"
        redis.send_signal(signal.SIGSTOP)
        stopped = True
        t_stop = time.monotonic()
        cpu_stop = brain.cpu()
        for r in agents:
            evs = make_events(args.events, r.node, rnd)
            sent += evs
            r.offer(evs)
        total = len(sent)

        async def counted() -> bool:  # and the brain knows Redis is away (its first write timed out)
            got = await brain.ask()
            return got["blocked"] >= total and not got["redis_up"]

        assert await until(counted, 300), "the brain did not count the agents' events"
        t_counted = time.monotonic() - t_stop
        before = await brain.ask("lags")  # forget the probe's lags so far (none: it was idle)
        cpu0, agents_cpu0 = brain.cpu(), _self_cpu()
        t0 = time.monotonic()
        n = 0
        probe_sent: list[BlockedEvent] = []
        while (now := time.monotonic()) < t0 + args.seconds:
            ev = BlockedEvent(
                time=time.time(),
                node=PROBE,
                direction=Direction.INGRESS,
                src="192.0.2.1",
                dst="10.0.0.1",
                protocol="TCP",
                sport=40000 + n % 20000,
                dport=80,
                chain="in_0a1b2c",
            )
            probe_sent.append(ev)
            probe.offer([ev])
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * 0.1 - now))
        cpu, agents_cpu = brain.cpu() - cpu0, _self_cpu() - agents_cpu0
        window = time.monotonic() - t0
        stats = await brain.ask()  # the window's figures, before the last probe events are in

        async def probes_counted() -> bool:
            return (await brain.ask())["blocked"] >= total + n

        assert await until(probes_counted, 60), "the probe's events were not counted"
        lagged = await brain.ask("lags")
        unstored = sum(len(r.buffer) for r in agents)
        resent = sum(r.resent_batches for r in reporters)
        redis.send_signal(signal.SIGCONT)
        stopped = False
        t_cont = time.monotonic()
        drained = await until(lambda: _empty(reporters), 300, 0.05)
        t_drain = time.monotonic() - t_cont
        cpu_outage = cpu0 - cpu_stop + cpu
        lags = sorted(lagged["lags"])
        # exactly once in Redis: every agent's events and the probe's
        prefix = "{stockade}:drops:m:"
        exact = drained
        for m, c in expected(sent + probe_sent).items():
            got = {(k.decode() if isinstance(k, bytes) else k): int(v)
                   for k, v in (await client.hgetall(f"{prefix}{m}")).items()}  # fmt: skip
            exact = exact and got == dict(c)
        return {
            "mode": mode, "counted_after": t_counted, "window": window, "cpu": cpu, "cpu_outage": cpu_outage,
            "fresh": stats["events"] - before["events"], "dup": stats["duplicate_events"] - before["duplicate_events"],
            "dup_batches": stats["duplicate_batches"] - before["duplicate_batches"], "lags": lags,
            "probes": n, "agents_cpu": agents_cpu,
            "unstored": unstored, "resent_batches": resent, "drain": t_drain, "exact": exact,
            "events": len(sent),
        }  # fmt: skip
    finally:
        if stopped:
            redis.send_signal(signal.SIGCONT)
        for r in reporters:
            r.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close(None)
        brain.stop()
        await client.aclose()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _empty(reporters) -> bool:  # type: ignore[no-untyped-def]
    return all(not len(r.buffer) for r in reporters)


def show(r: dict, args: argparse.Namespace) -> None:
    lags = r["lags"]
    print(f"--- {r['mode']}: {args.agents} agents x {args.events:,} unstored events, Redis SIGSTOPped")
    print(f"  brain counted all {r['events']:,} events and found Redis away {r['counted_after']:.1f} s after "
          f"SIGSTOP; the agents still held {r['unstored']:,} at the window's end")  # fmt: skip
    print(f"  brain CPU over the {r['window']:.0f} s window: {r['cpu']:.2f} s ({r['cpu'] / r['window']:.0%} of one "
          f"core); over the whole outage: {r['cpu_outage']:.2f} s")  # fmt: skip
    print(f"  the agents' CPU (all in this process) over the window: {r['agents_cpu']:.2f} s, "
          f"{r['agents_cpu'] / (args.agents + 1) / r['window'] * 1000:.1f} ms per agent per second")  # fmt: skip
    print(
        f"  parsed in the window: {r['fresh']:,} fresh events, {r['dup']:,} re-sent ones skipped "
        f"({r['dup_batches']:,} batches); re-sent batches (agents and probe) so far: {r['resent_batches']:,}"
    )
    if lags:
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        print(f"  counter lag of the {len(lags)} probe events (of {r['probes']}) offered in the window: median "
              f"{statistics.median(lags):.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s")  # fmt: skip
    print(f"  after SIGCONT: every agent's buffer empty in {r['drain']:.1f} s; counts in Redis exact: "
          f"{'yes' if r['exact'] else 'NO'}")  # fmt: skip


async def drive(args: argparse.Namespace) -> int:
    modes = ["old", "new"] if args.mode == "both" else [args.mode]
    results = {}
    for mode in modes:
        results[mode] = await run_mode(mode, args)
        show(results[mode], args)
    if "new" in results:
        share = results["new"]["cpu"] / results["new"]["window"]
        line = (
            f"brain CPU with the new agents: {share:.1%} of one core ({share / TARGET:.2f}x the target of {TARGET:.0%})"
        )
        if "old" in results and results["new"]["cpu"] > 0:
            line += f"; {results['old']['cpu'] / results['new']['cpu']:.1f}x less than with the old agents"
        print(line)
    return 0 if all(r["exact"] for r in results.values()) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--events", type=int, default=10_000, help="unstored events per agent")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured window of the outage")
    ap.add_argument("--mode", choices=["both", "new", "old"], default="both")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.redis_port, args.grpc_port))
        return 0
    return asyncio.run(drive(args))


if __name__ == "__main__":
    sys.exit(main())
