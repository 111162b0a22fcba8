"""Soak (issue 17, item 6): 10,000 policy create/delete cycles and 10,000 pod churn events with
agents connected; the brain's and the agents' memory must stay flat (<= 5 % growth after the
warm-up) and the kernel must hold no more objects at the end than at the start.

A real `stockade brain` process lists and watches the lab API server (`stockade.lab.apiserver`,
in this process); two `stockade agent` processes, each in a network namespace of its own with
the nftables backend, reach it through the lab's relays on their namespace's loopback. Each
cycle makes a policy (the shapes of `tests/sync/soak_churn.py`: selectors, a label of its own,
ipBlocks with excepts, port ranges, named ports, select-all, a malformed one), waits until
every node applied it (the brain's ``/v1/realized``), makes one pod event (a pod made, relabelled
with another port number, or deleted: a third each), deletes the policy and waits again.

Printed: progress every ``--sample`` cycles; the brain's and each agent's RSS after the warm-up
and at the end (growth and its ratio to the 5 % target); each node's kernel objects (tables,
chains, rules, sets, maps, elements: ``nft list ruleset``) at the start, after the warm-up and
at the end; the brain's engine errors and the agents' failed applies.

Run as root: ``.venv/bin/python benchmarks/soak.py [--cycles 10000] [--warm-up 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sync"))

import soak_churn  # noqa: E402  # the policy shapes and pods of the soak tests

from stockade.agent import netns as ns  # noqa: E402
from stockade.lab.apiserver import ApiServer  # noqa: E402
from stockade.lab.relay import relay  # noqa: E402

TARGET_GROWTH = 0.05  # of RSS, after the warm-up
NODES = ["node-1", "node-2"]
SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs: distinct namespace names
NETNS = {n: f"st{SLOT}-soak-b-{n}" for n in NODES}
AGENT_HTTP = "127.0.0.1:19091"  # on each node namespace's own loopback
SERVING = re.compile(r"serving: sync\+drops on \S+ \(port (\d+)\).*HTTP on \S+ \(port (\d+)\)")
ENV = {
    "PYTHONPATH": os.pathsep.join(str(ROOT / "services" / s) for s in ("common", "brain", "node-agent", "lab", "cli")),
    "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    "GRPC_ENABLE_FORK_SUPPORT": "false",
}


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def kernel_objects(netns: str) -> dict[str, int]:
    """Everything nftables holds in ``netns``, counted by kind (set and map elements summed)."""
    out = ns.run(["nft", "-j", "list", "ruleset"], netns, check=True).stdout
    counts = {"table": 0, "chain": 0, "rule": 0, "set": 0, "map": 0, "element": 0}
    for entry in json.loads(out)["nftables"]:
        for kind, body in entry.items():
            if kind in counts:
                counts[kind] += 1
            if kind in ("set", "map"):
                counts["element"] += len(body.get("elem", ()))
    return counts


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.api = ApiServer()
        self.token = secrets.token_hex(16)
        self.brain: subprocess.Popen[str] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.brain_log: list[str] = []
        self.http_port = 0
        self.session: aiohttp.ClientSession | None = None
        self.relays: list[asyncio.AbstractServer] = []
        self.versions: dict[str, int] = {}  # kind -> resourceVersion of our last write of it

    # -- the parts -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.api.start("127.0.0.1", 0)
        for obj in soak_churn.base_objects(NODES):
            self.write("upsert", obj)
        kc = self.api.kubeconfig(self.tmp / "kubeconfig")
        tokens = self.tmp / "tokens.json"
        tokens.write_text(json.dumps({"tokens": [{"name": "soak", "token": self.token, "role": "read"}]}))
        argv = ["brain", "--kubeconfig", str(kc), "--insecure", "--listen", "127.0.0.1:0"]
        argv += ["--admin-listen", "127.0.0.1:0", "--admin-mtls-listen", "", "--http", "127.0.0.1:0"]
        argv += ["--admin-tokens-file", str(tokens), "--no-leader-election"]
        self.brain = subprocess.Popen(
            [sys.executable, "-m", "stockade.cli.main", "-v", *argv], stderr=subprocess.PIPE, text=True, env=ENV
        )
        grpc_port = await self._serving()
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        for node, name in NETNS.items():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            subprocess.run(["ip", "netns", "add", name], check=True)
            ns.run(["ip", "link", "set", "lo", "up"], name, check=True)
            ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], name, check=True)
            self.relays.append(await relay(name, grpc_port))  # the agent dials the brain on its loopback
            log = open(self.tmp / f"agent-{node}.log", "wb")  # noqa: SIM115 (the process owns it)
            self.agents[node] = subprocess.Popen(
                [
                    *("ip", "netns", "exec", name, sys.executable, "-m", "stockade.cli.main", "agent"),
                    *("--node", node, "--brain", f"127.0.0.1:{grpc_port}", "--insecure", "--backend", "nftables"),
                    *("--http", AGENT_HTTP),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
            log.close()
        if not await self.realized(timeout=60):
            raise SystemExit("the agents did not apply the base cluster:\n" + self.logs())

    async def _serving(self) -> int:
        """Read the brain's log until it serves; its sync port (and its HTTP port, kept)."""
        assert self.brain is not None and self.brain.stderr is not None
        loop = asyncio.get_running_loop()
        found: asyncio.Future[int] = loop.create_future()

        def read() -> None:
            assert self.brain is not None and self.brain.stderr is not None
            for line in self.brain.stderr:
                self.brain_log.append(line)
                del self.brain_log[:-200]
                m = SERVING.search(line)
                if m and not found.done():
                    self.http_port = int(m.group(2))
                    loop.call_soon_threadsafe(found.set_result, int(m.group(1)))

        loop.run_in_executor(None, read)
        try:
            return await asyncio.wait_for(found, 120)
        except TimeoutError:
            raise SystemExit("the brain did not start:\n" + "".join(self.brain_log[-30:])) from None

    async def stop(self) -> None:
        for proc in (*self.agents.values(), self.brain):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (*self.agents.values(), self.brain):
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for server in self.relays:
            server.close()
        if self.session is not None:
            await self.session.close()
        await self.api.stop()
        for name in NETNS.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def logs(self) -> str:
        agents = "".join((self.tmp / f"agent-{n}.log").read_text()[-3000:] for n in NODES)
        return "".join(self.brain_log[-30:]) + agents

    # -- driving and looking ---------------------------------------------------------------------

    def write(self, op: str, obj: dict[str, Any], *, inject: bool = False) -> None:
        """Make, replace or delete an object in the API (``inject``: as a buggy or newer API
        server could serve it, unvalidated); its version is what ``realized`` waits for."""
        meta = obj["metadata"]
        if op == "delete":
            done = self.api.delete_object(obj["kind"], meta["name"], meta.get("namespace") or "")
        else:
            done = (self.api.inject_object if inject else self.api.put_object)(obj)
        self.versions[obj["kind"]] = int(done["metadata"]["resourceVersion"])

    async def realized(self, timeout: float = 60.0) -> bool:
        """Until the brain saw our last write of each kind and every node applied what followed
        (by kind: the brain's own writes, its Events, are versions it never watches)."""
        assert self.session is not None
        url = f"http://127.0.0.1:{self.http_port}/v1/realized"
        params = {**{k: str(v) for k, v in self.versions.items()}, "timeout": str(timeout)}
        async with self.session.get(url, params=params, timeout=aiohttp.ClientTimeout(timeout + 10)) as r:
            return bool((await r.json()).get("realized"))

    async def metric(self, name: str) -> float:
        assert self.session is not None
        async with self.session.get(f"http://127.0.0.1:{self.http_port}/metrics") as r:
            text = await r.text()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    def memory(self) -> dict[str, int]:
        assert self.brain is not None
        return {"brain": rss(self.brain.pid), **{n: rss(p.pid) for n, p in self.agents.items()}}

    def cpu(self) -> dict[str, float]:
        assert self.brain is not None
        return {"brain": cpu_seconds(self.brain.pid), **{n: cpu_seconds(p.pid) for n, p in self.agents.items()}}

    def kernel(self) -> dict[str, dict[str, int]]:
        return {n: kernel_objects(name) for n, name in NETNS.items()}

    async def wait(self, what: str) -> None:
        if not await self.realized():
            raise SystemExit(f"not realized within 60 s after {what}:\n" + self.logs())

    def pod_event(self, i: int) -> None:
        """One pod event: pod k made (i % 3 == 0), relabelled with another port (1), deleted (2)."""
        k = i // 3
        node = NODES[k % len(NODES)]
        p = soak_churn.pod("soak-a" if k % 2 else "soak-b", f"churn-{k}", soak_churn.APPS[k % 4], node, self.ip(k))
        step = i % 3
        if step == 1:
            p = copy.deepcopy(p)
            p["metadata"]["labels"]["app"] = soak_churn.APPS[(k + 2) % 4]
            p["spec"]["containers"][0]["ports"][0]["containerPort"] = soak_churn.PORTS[k % len(soak_churn.PORTS)]
        self.write("delete" if step == 2 else "upsert", p)

    @staticmethod
    def ip(k: int) -> str:
        return f"10.77.0.{k % soak_churn.IP_POOL + 1}"

    async def cycle(self, i: int) -> None:
        """A policy made and realized, one pod event, the policy deleted and realized."""
        pol = soak_churn.policy(i, distinct=self.args.distinct)
        self.write("upsert", pol, inject=soak_churn.malformed(i))  # the API would refuse that one
        await self.wait(f"policy {i}")
        self.pod_event(i)
        self.write("delete", pol)
        await self.wait(f"deleting policy {i}")

    async def run(self) -> None:
        args = self.args
        # Compared where a pod's life is over (i % 3 == 2): then the churn left no pod behind.
        warm_up, cycles = (_closing(n) for n in (args.warm_up, args.cycles))
        start_kernel, start_mem = self.kernel(), self.memory()
        print(f"start: RSS {_mibs(start_mem)}; kernel {start_kernel}", flush=True)
        t0, cpu0 = time.perf_counter(), self.cpu()
        warm_mem: dict[str, int] = {}
        warm_kernel: dict[str, dict[str, int]] = {}
        for i in range(1, cycles + 1):
            await self.cycle(i)
            if i == warm_up:
                warm_mem, warm_kernel = self.memory(), self.kernel()
            if i % args.sample == 0 or i == cycles:
                took = time.perf_counter() - t0
                print(f"cycle {i}/{cycles} ({i / took:.0f}/s, {took:.0f} s): RSS {_mibs(self.memory())}", flush=True)
        end_mem, end_kernel = self.memory(), self.kernel()
        took, cpu = time.perf_counter() - t0, {k: v - cpu0[k] for k, v in self.cpu().items()}
        print(
            f"\n{cycles} policy create/delete cycles and {cycles} pod events in {took:.0f} s "
            f"({cycles / took:.1f} cycles/s, each policy realized on every node before the next step); "
            f"CPU seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
        )
        for who in ("brain", *NODES):
            grow = end_mem[who] / warm_mem[who] - 1
            print(
                f"{'brain' if who == 'brain' else 'agent ' + who} RSS: {mib(warm_mem[who])} after {warm_up} "
                f"cycles, {mib(end_mem[who])} at the end: {grow:+.1%} (target <= {TARGET_GROWTH:.0%}, "
                f"ratio {max(grow, 0.0) / TARGET_GROWTH:.2f})"
            )
        for n in NODES:
            same = start_kernel[n] == warm_kernel[n] == end_kernel[n]
            print(
                f"kernel objects on {n}: start {start_kernel[n]}, after warm-up {warm_kernel[n]}, "
                f"end {end_kernel[n]}: {'the same' if same else 'DIFFERENT'}"
            )
        errors = await self.metric("stockade_brain_engine_errors_total")
        failures = await self.metric("stockade_brain_sync_apply_failures_total")
        print(f"brain engine errors: {errors:.0f}; failed applies reported by agents: {failures:.0f}")


def _closing(n: int) -> int:
    """The first cycle from ``n`` on that ends a pod's life (made, relabelled, deleted)."""
    return n + (2 - n % 3) % 3


def _mibs(mem: dict[str, int]) -> str:
    return ", ".join(f"{k} {mib(v)}" for k, v in mem.items())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10_000, help="policy create/delete cycles (one pod event each)")
    ap.add_argument("--warm-up", type=int, default=1000, help="cycles before the memory baseline is taken")
    ap.add_argument("--sample", type=int, default=500, help="print progress every N cycles")
    ap.add_argument(
        "--distinct",
        type=int,
        default=100,
        help="values the policies' own labels and excepts take in turn (0: each policy its own, which "
        "fills the brain's bounded parse caches all along instead of in the warm-up)",
    )
    args = ap.parse_args()
    if not 0 < args.warm_up < args.cycles:
        ap.error("--warm-up must be between 0 and --cycles")
    soak = Soak(args, Path(tempfile.mkdtemp(prefix="st-soak-")))
    try:
        await soak.start()
        await soak.run()
    finally:
        await soak.stop()


if __name__ == "__main__":
    asyncio.run(main())
