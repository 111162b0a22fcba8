"""Brains sharing their agents' status through Redis (fanout/peers.py): what it costs, how fast.

    .venv/bin/python benchmarks/brain_peer_status.py                 # 5000 nodes, half on each brain
    .venv/bin/python benchmarks/brain_peer_status.py --nodes 20000

How it is measured: a redis-server of its own; two real `PeerSync`s over real fan-outs (brain X
serves half the nodes, brain Y the other half; sessions stand in for agents' streams, the Redis
side is all real). Figures:

* publish: brain X's full rewrite of its hash (one transaction), and a one-node change;
* read: brain Y's read of X's entries: the first (every entry decoded, feeds started); with
  nothing written since (only X's revision is read); after a one-node change (X's change log
  names it: only its field is read), with the share of one core that costs when some node
  changes at every poll (0.5 s), target at most 5 % of a core per brain; and after every node
  changed (a policy change every agent acked);
* propagation: with both loops running at their defaults, the time from a node's status change
  on X (an ack) to Y's view showing it; target 1 s (a poll interval plus a write).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "services" / s) for s in ("common", "brain")]

from redis.asyncio import Redis  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402

from stockade.brain.fanout import FanOut, NodeStatus  # noqa: E402
from stockade.brain.fanout.peers import PeerSync  # noqa: E402
from stockade.model import NodeModel  # noqa: E402

CPU_TARGET = 0.05  # share of one core per brain for reading its peers
PROPAGATION_TARGET = 1.0  # seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fanout_serving(nodes: list[str], digest: str) -> FanOut:
    fo = FanOut(lambda n: NodeModel(n))
    for n in nodes:
        fo.sessions[n] = SimpleNamespace(end=None)  # type: ignore[assignment]
        fo.status[n] = NodeStatus(
            n, applied_generation=3, applied_digest=digest, connected=True, agent_ready=True, backend="nftables"
        )
    return fo


async def timed(fn: object, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()  # type: ignore[operator]
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="st-peers-")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                await Redis.from_url(url).ping()
                break
            except (OSError, RedisError):
                await asyncio.sleep(0.05)
        nodes = [f"node-{i}" for i in range(args.nodes)]
        digest = NodeModel("x").digest()
        x = PeerSync(Redis.from_url(url), fanout_serving(nodes[::2], digest), brain="brain-x-00000001")
        y = PeerSync(Redis.from_url(url), fanout_serving(nodes[1::2], digest), brain="brain-y-00000002")
        served = len(nodes[::2])
        print(f"machine: {os.cpu_count()} cores; {args.nodes} nodes, {served} served by each brain")

        full = await timed(lambda: (setattr(x, "_rewrite", True), x.publish())[1], 5)
        print(f"publish, full rewrite of {served} nodes: {full * 1000:.1f} ms")

        def one_change() -> object:
            x.changed(nodes[0])
            return x.publish_changes()

        print(f"publish, one node's change: {await timed(one_change, 20) * 1000:.2f} ms")

        t0 = time.perf_counter()
        await y.read_peers()
        first = time.perf_counter() - t0
        assert len(y.view.nodes()) == served
        print(f"read {served} peer entries, first (decode, start feeds): {first * 1000:.1f} ms")
        unchanged = await timed(y.read_peers, 10)
        print(f"read, nothing changed since (the revision only): {unchanged * 1000:.2f} ms")

        async def after_a_change() -> None:
            x.fanout.status[nodes[0]].applied_generation += 1
            x.changed(nodes[0])
            await x.publish_changes()
            await y.read_peers()

        churn = await timed(after_a_change, 10)
        share = churn / y.poll
        print(
            f"read after a one-node change (from the change log; if some node changes every poll): "
            f"{churn * 1000:.2f} ms = {share:.1%} of a core at a {y.poll} s poll "
            f"(target {CPU_TARGET:.0%}, ratio {share / CPU_TARGET:.2f})"
        )

        async def after_every_node_changed() -> None:
            for n in nodes[::2]:
                x.fanout.status[n].applied_generation += 1
                x.changed(n)
            await x.publish_changes()
            await y.read_peers()

        everywhere = await timed(after_every_node_changed, 3)
        print(
            f"publish + read after all {served} nodes changed (a policy change acked everywhere): "
            f"{everywhere * 1000:.1f} ms, once per such change"
        )

        x.start()
        y.start()
        delays = []
        for i in range(args.changes):
            node = nodes[2 * (i % served)]
            x.fanout.status[node].applied_generation += 1
            want = x.fanout.status[node].applied_generation
            t0 = time.perf_counter()
            x.changed(node)
            while (e := y.view.entry(node)) is None or e.applied_generation != want:
                await asyncio.sleep(0.002)
            delays.append(time.perf_counter() - t0)
            await asyncio.sleep(0.13)  # spread the changes over the poll phase
        med, worst = statistics.median(delays), max(delays)
        print(
            f"propagation X -> Y ({len(delays)} changes): median {med * 1000:.0f} ms, max {worst * 1000:.0f} ms "
            f"(target {PROPAGATION_TARGET:.1f} s, ratio {worst / PROPAGATION_TARGET:.2f})"
        )
        await x.close()
        await y.close()
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--changes", type=int, default=20)
    asyncio.run(main(p.parse_args()))
