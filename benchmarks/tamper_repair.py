"""Tampering → repaired: how long a denied port is open after someone damages our rules.

Target (issue 17 item 1): drift in our table or hooks repaired within 100 ms, 1 s worst case,
measured with real packets. The node's agent part runs as in the agent (a metered dataplane, the
tamper loop in an event loop of its own, conntrack clean-up on) over the chosen backend, with a
synthetic load (``--pods``, ``--policies``: a repair that replaces the table costs with its size).

Topology (namespaces st-tr-*, with STOCKADE_TEST_SLOT): prober 10.230.1.2 -> node -> server
10.230.2.2, a UDP echo on a denied port. The prober sends one datagram every ``--interval``
seconds, each from a fresh socket (a new flow: one that got through never rides on an earlier
one's conntrack entry), and reports the send time of every datagram answered. Per round: tamper
(the command runs in the node), wait for the repair, wait for stragglers; the window "by packets"
is last answered - first answered + one interval (an upper bound, to one probe interval), "by the
metric" is `stockade_agent_tamper_repair_seconds` (notification read → repair committed), "from
the command" is the command's start → repair committed (includes starting ``nft``/``iptables``).
Run as root: `.venv/bin/python benchmarks/tamper_repair.py [--backend iptables]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext

from dataplane_models import ratio_line, slotted, synthetic

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend
from stockade.agent.metered import MeteredDataplane, conntrack_end_flows
from stockade.agent.metrics import AgentMetrics
from stockade.agent.tamper import tamper_watch_loop
from stockade.model import Chain, Direction, NodeModel, PortMatch, Protocol, Rule

PROBER, NODE, SERVER = slotted("st-tr-c"), slotted("st-tr-n"), slotted("st-tr-s")
PROBER_IP, SERVER_IP = "10.230.1.2", "10.230.2.2"
DENIED, ALLOWED = 20053, 20054
TARGET, WORST = 0.100, 1.0

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(64); s.sendto(data, addr)
"""

# One datagram per fresh socket every interval; prints the send time (CLOCK_MONOTONIC, shared
# with the benchmark) of each one answered. Sockets are kept 0.5 s for a late answer.
PROBE = r"""
import collections, selectors, socket, sys, time
dst, interval = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
sel = selectors.DefaultSelector(); live = collections.deque()
print("ready", flush=True)
nxt = time.monotonic()
while True:
    now = time.monotonic()
    if now >= nxt:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        try:
            s.sendto(b"%.6f" % now, dst)
        except OSError:
            s.close()
        else:
            sel.register(s, selectors.EVENT_READ); live.append((now, s))
        nxt = max(nxt + interval, now)
    while live and live[0][0] < now - 0.5:
        _, s = live.popleft()
        if s.fileno() >= 0:
            sel.unregister(s); s.close()
    for key, _ in sel.select(max(0.0, nxt - time.monotonic())):
        try:
            data = key.fileobj.recv(64)
        except OSError:
            continue
        print(data.decode(), flush=True)
"""


def sh(netns: str | None, *argv: str) -> None:
    ns.run(list(argv), netns, check=True)


def teardown() -> None:
    for name in (PROBER, NODE, SERVER):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def build() -> None:
    teardown()
    for name in (PROBER, NODE, SERVER):
        subprocess.run(["ip", "netns", "add", name], check=True)
        sh(name, "ip", "link", "set", "lo", "up")
    sh(NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for pod, addr, host_if in ((PROBER, PROBER_IP, "v-c"), (SERVER, SERVER_IP, "v-s")):
        gw = addr.rsplit(".", 1)[0] + ".1"
        sh(None, "ip", "link", "add", host_if, "netns", NODE, "type", "veth", "peer", "name", "eth0", "netns", pod)
        sh(NODE, "ip", "addr", "add", f"{gw}/24", "dev", host_if)
        sh(NODE, "ip", "link", "set", host_if, "up")
        sh(pod, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        sh(pod, "ip", "link", "set", "eth0", "up")
        sh(pod, "ip", "route", "add", "default", "via", gw)


SERVER_CHAIN = Chain.of(Direction.INGRESS, [Rule(None, (PortMatch(Protocol.UDP, ALLOWED),))])


def model(pods: int, policies: int) -> NodeModel:
    m = synthetic(pods, policies, 20) if policies else NodeModel("bench")
    m.chains[SERVER_CHAIN.id] = SERVER_CHAIN
    m.ingress[SERVER_IP] = SERVER_CHAIN.id
    assert not m.check()
    return m


class Prober:
    def __init__(self, interval: float) -> None:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", SERVER, sys.executable, "-c", ECHO, str(DENIED)], stdout=subprocess.PIPE, text=True
        )
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"
        cmd = [sys.executable, "-c", PROBE, SERVER_IP, str(DENIED), str(interval)]
        self.proc = subprocess.Popen(["ip", "netns", "exec", PROBER, *cmd], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.passed: list[float] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.passed.append(float(line))

    def between(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [t for t in self.passed if start <= t <= end]

    def close(self) -> None:
        for p in (self.proc, self.server):
            p.kill()
            p.wait()


class Agent:
    """The agent's part that matters here: metered dataplane + tamper loop (own event loop)."""

    def __init__(self, backend: str) -> None:
        self.metrics = AgentMetrics()
        self.dataplane = MeteredDataplane(make_backend(backend, NODE, 100), self.metrics, conntrack_end_flows(NODE))
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.dataplane.write_window is nullcontext:
            assert time.monotonic() < deadline, "the tamper loop did not start"
            time.sleep(0.01)

    def _run(self) -> None:
        self._loop.run_until_complete(tamper_watch_loop(self.dataplane, self._stop, NODE))

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self.dataplane.close()


def nft_deny_rule() -> list[str]:
    name = SERVER_CHAIN.id
    listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", name], NODE, check=True).stdout
    handle = next(line.rsplit("# handle ", 1)[1] for line in listing.splitlines() if '"deny' in line)
    return ["nft", "delete", "rule", "inet", "stockade", name, "handle", handle.strip()]


KINDS: dict[str, dict[str, Callable[[], list[str]]]] = {
    "nftables": {
        "nft delete table": lambda: ["nft", "delete", "table", "inet", "stockade"],
        "nft flush ruleset": lambda: ["nft", "flush", "ruleset"],
        "our deny rule deleted": nft_deny_rule,
    },
    "iptables": {
        "iptables -F": lambda: ["iptables", "-F"],
        "nft flush ruleset": lambda: ["nft", "flush", "ruleset"],
        "our FORWARD jump deleted": lambda: ["iptables", "-D", "FORWARD", "-j", "STOCKADE-FWD"],
    },
}


def round_(agent: Agent, prober: Prober, command: list[str], interval: float) -> tuple[float | None, float, float]:
    """(window by packets, by the metric, from the command) in seconds; by packets None when no
    datagram got through (the window was shorter than the probes could see)."""
    name = agent.dataplane.name
    repairs = agent.sample("stockade_agent_tamper_repairs_total", backend=name)
    total = agent.sample("stockade_agent_tamper_repair_seconds_sum")
    time.sleep(0.2)  # quiet before
    start = time.monotonic()
    ns.run(command, NODE, check=True)
    deadline = start + 30
    while agent.sample("stockade_agent_tamper_repairs_total", backend=name) == repairs:
        assert time.monotonic() < deadline, f"no repair after {command}"
        time.sleep(0.002)
    from_command = agent.dataplane.repaired_at - start
    metric = agent.sample("stockade_agent_tamper_repair_seconds_sum") - total
    time.sleep(0.6)  # answers to datagrams sent just before the repair
    passed = prober.between(start - 0.05, time.monotonic())
    return (max(passed) - min(passed) + interval if passed else None), metric, from_command


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=sorted(KINDS), default="nftables")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between probe datagrams")
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=100)
    args = ap.parse_args()
    print(f"nproc {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    build()
    prober = agent = None
    try:
        prober = Prober(args.interval)
        agent = Agent(args.backend)
        m = model(args.pods, args.policies)
        t = time.perf_counter()
        agent.dataplane.apply_snapshot(m)
        print(
            f"{args.backend}: {args.pods} pods, {args.policies} policies ({len(m.chains)} chains); "
            f"snapshot {1000 * (time.perf_counter() - t):.0f} ms; probing every {1000 * args.interval:.0f} ms"
        )
        time.sleep(0.5)
        assert not prober.between(time.monotonic() - 0.4, time.monotonic()), "the denied port answers: bad model"
        for kind, command in KINDS[args.backend].items():
            rows = []
            for r in range(args.rounds):
                seen, metric_s, cmd_s = round_(agent, prober, command(), args.interval)
                if seen is None:
                    print(f"  {kind} round {r + 1}: no datagram got through")
                rows.append((seen or 0.0, metric_s, cmd_s))
            packets, metric, cmd = (sorted(col) for col in zip(*rows, strict=True))
            print(f"{kind} ({args.rounds} rounds):")
            for label, values in (("by packets", packets), ("by the metric", metric), ("from the command", cmd)):
                print(f"  {label}: median {1000 * statistics.median(values):.1f} ms, max {1000 * values[-1]:.1f} ms")
            print("  " + ratio_line("open window by packets, median (s)", statistics.median(packets), TARGET, True))
            print("  " + ratio_line("open window by packets, max (s)", packets[-1], WORST, True))
        leftover = agent.dataplane.check()
        print(f"in sync at the end: {not leftover}")
    finally:
        if agent is not None:
            agent.stop()
        if prober is not None:
            prober.close()
        teardown()


if __name__ == "__main__":
    main()
