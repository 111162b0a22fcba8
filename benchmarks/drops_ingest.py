"""Drop ingest: one brain process takes agents' drop batches over gRPC into Redis, counts exact.

Starts its own redis-server (loopback, port 23000-23999) and a brain process (the drop service:
gRPC server, resolver, aggregator, Redis writes). This process plays the agents: it streams
pre-encoded batches of 1,000 events on several streams at once, as fast as the brain takes them.
The brain reports when the last event is in Redis; then every minute hash is compared with the
counts computed here independently. Target: 50,000 events/s.

    .venv/bin/python benchmarks/drops_ingest.py [--events 500000] [--flows typical|distinct|hostile]
                                                [--node-quota BYTES]

``typical``: most events come from a few hundred noisy flows, with a long tail (a scan).
``distinct``: nearly every event is a flow of its own (the worst case for the counters; run it
with ``--node-quota 0``, else each node's quota refuses most of them, as it should).
``hostile``: the first stream floods distinct flows, the others are typical: the others' counts
must be exact and the flood refused over its node's quota (``--node-quota``, default the
brain's). Every event is validated as the brain does (the batches carry valid chain ids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services/common"), str(ROOT / "services/brain")]

import grpc  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from stockade.brain.drops.quota import QuotaConfig  # noqa: E402
from stockade.v1 import drops_pb2  # noqa: E402

TARGET = 50_000
BATCH = 1000


def free_port() -> int:
    for port in random.sample(range(23000, 24000), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 23000-23999")


def _text(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def pod_table() -> dict[str, tuple[str, str]]:
    """500 pods in 10 namespaces: 10.<ns>.<i // 250>.<i % 250>."""
    return {f"10.{n}.{i // 250}.{i % 250 + 1}": (f"ns-{n}", f"pod-{i}") for n in range(10) for i in range(50)}


def runqueue_wait() -> float:
    """Seconds this process's threads spent runnable but waiting for a CPU (Linux schedstat)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


# --- the brain process ---------------------------------------------------------------------


async def serve(redis_port: int, grpc_port: int, expect: int, quota: int) -> None:
    from prometheus_client import CollectorRegistry

    from stockade.brain.drops import Aggregator, DropMetrics, RedisStore, StaticResolver
    from stockade.brain.drops.servicer import DropServicer
    from stockade.v1 import drops_pb2_grpc

    store = RedisStore(Redis(port=redis_port))
    agg = Aggregator(store, StaticResolver(pod_table()), DropMetrics(CollectorRegistry()),
                     quota=QuotaConfig(bytes_per_window=quota))  # fmt: skip
    servicer = DropServicer(agg)
    first: list[float] = []
    done = asyncio.Event()
    flushed = 0
    write, accept = store.write, servicer.accept

    async def counting_write(batch, writer):  # type: ignore[no-untyped-def]
        nonlocal flushed
        await write(batch, writer)
        flushed += batch.events
        if flushed + agg.shed_total + agg.refused_total >= expect:
            done.set()

    def timed_accept(batch, node=None):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.time())
        out = accept(batch, node)
        if agg.refused_total and flushed + agg.shed_total + agg.refused_total >= expect:
            done.set()  # the last events were refused: nothing more to flush
        return out

    store.write = counting_write  # type: ignore[method-assign]
    servicer.accept = timed_accept  # type: ignore[method-assign]
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    drops_pb2_grpc.add_DropServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    flusher = asyncio.create_task(agg.run())
    print("ready", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wait0 = runqueue_wait()
    await done.wait()
    t_done = time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    waited = runqueue_wait() - wait0
    report = {"first": first[0], "done": t_done, "cpu": cpu, "flushed": flushed, "shed": agg.shed_total,
              "refused": agg.refused_total,
              "waited": waited, "redis_errors": agg.metrics.redis_errors._value.get()}  # fmt: skip
    print(json.dumps(report), flush=True)
    await agg.close()
    flusher.cancel()
    await server.stop(0)


# --- the agents (this process) ---------------------------------------------------------------


def make_events(n: int, kind: str, seed: int) -> list[tuple[float, int, str, str, str, int, int]]:
    rnd = random.Random(seed)
    pods = list(pod_table())
    outside = [f"192.0.2.{i}" for i in range(1, 200)] + [f"198.51.100.{i}" for i in range(1, 200)]
    now = time.time()
    noisy = [
        (rnd.choice([1, 2]), rnd.choice(pods + outside), rnd.choice(pods), rnd.choice(["TCP", "UDP"]),
         rnd.choice([80, 443, 5432, 6379, 8080]))
        for _ in range(300)
    ]  # fmt: skip
    out = []
    if kind == "flood":  # every event a flow of its own, from addresses no other stream uses
        for i in range(n):
            src = f"203.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            out.append((now - rnd.random() * 60, 1, src, rnd.choice(pods), "TCP", 40000, rnd.randrange(1, 65536)))
        return out
    for _ in range(n):
        t = now - 300 + rnd.random() * 299
        if kind == "typical" and rnd.random() < 0.9:
            d, src, dst, proto, port = rnd.choice(noisy)
        else:
            d, src, dst = rnd.choice([1, 2]), rnd.choice(pods + outside), rnd.choice(pods + outside)
            proto, port = rnd.choice(["TCP", "UDP", "SCTP"]), rnd.randrange(1, 65536)
        out.append((t, d, src, dst, proto, rnd.randrange(1024, 65536), port))
    return out


def expected(events: list[tuple[float, int, str, str, str, int, int]]) -> dict[int, Counter[str]]:
    table = pod_table()
    names = {1: "ingress", 2: "egress"}
    out: dict[int, Counter[str]] = {}
    for t, d, src, dst, proto, _sport, port in events:
        dn, dp = table.get(dst, ("", dst))
        sn, sp = table.get(src, ("", src))
        out.setdefault(int(t // 60), Counter())[f"{names[d]}|{proto}|{port}|{dn}|{dp}|{sn}|{sp}"] += 1
    return out


def encode(events: list[tuple[float, int, str, str, str, int, int]], node: str) -> list[bytes]:
    out = []
    for seq, i in enumerate(range(0, len(events), BATCH), start=1):
        b = drops_pb2.DropBatch(node=node, instance=f"bench-{node}", seq=seq)
        for t, d, src, dst, proto, sport, port in events[i : i + BATCH]:
            chain = "in_0a1b2c" if d == 1 else "out_0a1b2c"
            b.events.add(time=t, direction=d, src=src, dst=dst, protocol=proto, sport=sport, dport=port, chain=chain)
        out.append(b.SerializeToString())
    return out


async def stream(target: str, batches: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        method = ch.stream_unary(
            "/stockade.v1.DropService/ReportDrops",
            request_serializer=None,  # the batches are already bytes
            response_deserializer=drops_pb2.DropAck.FromString,
        )
        call = method(None, wait_for_ready=True)
        for b in batches:
            await call.write(b)
        await call.done_writing()
        ack = await call
        assert ack.batches == len(batches), ack


async def drive(args: argparse.Namespace) -> int:
    workdir = tempfile.mkdtemp(prefix="stockade-bench-drops-")
    rport, gport = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    brain = None
    try:
        client = Redis(port=rport)
        for _ in range(100):
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        print(f"generating {args.events:,} events ({args.flows} flows) ...", flush=True)
        per = (args.events + args.streams - 1) // args.streams
        if args.flows == "hostile":  # stream 0 floods, the others are typical
            flood = make_events(per, "flood", seed=2)
            events = make_events(args.events - per, "typical", seed=1)
            per_good = (len(events) + args.streams - 2) // (args.streams - 1)
            split = [flood] + [events[i * per_good : (i + 1) * per_good] for i in range(args.streams - 1)]
            want = expected(events)
            events = flood + events
        else:
            flood = []
            events = make_events(args.events, args.flows, seed=1)
            want = expected(events)
            split = [events[i * per : (i + 1) * per] for i in range(args.streams)]
        parts = [encode(evs, f"node-{i}") for i, evs in enumerate(split)]
        brain = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--redis-port", str(rport), "--grpc-port", str(gport),
             "--expect", str(len(events)), "--node-quota", str(args.node_quota)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert brain.stdout is not None
        assert brain.stdout.readline().strip() == "ready"
        t0 = time.time()
        await asyncio.gather(*(stream(f"127.0.0.1:{gport}", p) for p in parts))
        t_sent = time.time()
        result = json.loads(await asyncio.to_thread(brain.stdout.readline))
        brain.wait(30)
        secs = result["done"] - result["first"]
        rate = len(events) / secs
        print(f"events: {len(events):,} in {len(parts)} streams, {sum(map(len, parts)):,} batches of {BATCH}")
        print(f"distinct (minute, flow) counters: {sum(len(c) for c in want.values()):,}")
        print(f"agents finished sending after {t_sent - t0:.2f} s; brain had everything in Redis after "
              f"{secs:.2f} s (first batch in → last count written)")  # fmt: skip
        print(
            f"brain CPU: {result['cpu']:.2f} s ({result['cpu'] / secs:.0%} of one core); its threads waited "
            f"{result['waited']:.2f} s for a CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        cpu_rate = len(events) / result["cpu"]
        print(f"brain cost: {1e6 / cpu_rate:.1f} us of CPU per event = {cpu_rate:,.0f} events per CPU-second "
              f"({cpu_rate / TARGET:.2f}x the target, if the brain had one core to itself)")  # fmt: skip
        print(f"ingest rate: {rate:,.0f} events/s — {rate / TARGET:.2f}x the target of {TARGET:,}/s")
        # verify: every minute hash in Redis equals the independent count
        exact = result["shed"] == 0
        if result["shed"]:
            print(f"the brain shed {result['shed']:,} events (in-memory bound hit)")
        if result["refused"]:
            print(f"the brain refused {result['refused']:,} events (invalid, or over a node's quota of "
                  f"{args.node_quota:,} bytes of new counters per window)")  # fmt: skip
        prefix = "{stockade}:drops:m:"
        keys = [_text(k) async for k in client.scan_iter(match=prefix + "*")]
        flood_keys = {k for c in expected(flood).values() for k in c}
        flood_stored = 0
        if {int(k[len(prefix) :]) for k in keys} - set(expected(flood)) != set(want) - set(expected(flood)):
            exact = False
        for m in {*want, *expected(flood)}:
            got = {_text(k): int(v) for k, v in (await client.hgetall(f"{prefix}{m}")).items()}
            flood_stored += sum(v for k, v in got.items() if k in flood_keys)
            got = {k: v for k, v in got.items() if k not in flood_keys}
            if got != dict(want.get(m, {})):
                exact = False
                print(f"minute {m}: {sum(got.values())} in Redis, {sum(want.get(m, {}).values())} expected")
        if flood:
            flood_ok = flood_stored + result["refused"] == len(flood)
            exact = exact and flood_ok
            print(f"flooding node: {flood_stored:,} of its {len(flood):,} events stored, {result['refused']:,} "
                  f"refused over its quota ({'adds up' if flood_ok else 'DOES NOT ADD UP'})")  # fmt: skip
        elif result["refused"]:
            exact = False
        total = sum(sum(c.values()) for c in want.values())
        print(f"counts in Redis exact: {'yes' if exact else 'NO'} ({total:,} events in {len(want)} minute buckets; "
              f"redis errors {result['redis_errors']:.0f})")  # fmt: skip
        await client.aclose()
        return 0 if exact else 1
    finally:
        if brain and brain.poll() is None:
            brain.kill()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--flows", choices=["typical", "distinct", "hostile"], default="typical")
    ap.add_argument("--node-quota", type=int, default=QuotaConfig().bytes_per_window,
                    help="bytes of new counters per node per window (default: the brain's; 0: no quota)")  # fmt: skip
    ap.add_argument("--streams", type=int, default=4, help="agents streaming at once")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.redis_port, args.grpc_port, args.expect, args.node_quota))
        return 0
    return asyncio.run(drive(args))


if __name__ == "__main__":
    sys.exit(main())
