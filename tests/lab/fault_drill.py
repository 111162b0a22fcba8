"""The fault drill of issue 17 item 5, shared by tests/lab/test_faults_lab.py and
benchmarks/lab_faults.py: one scripted sequence of faults in a 2-brain, 2-node lab while the
prober (`prober.py`) makes new TCP flows over every cell, every `interval` seconds.

Cells (drill cluster, `lab_ops.drill_cluster`): cli (node-1) and other (node-2) to srv-1 (node-1)
and srv-2 (node-2), which the policy lets in from one role only (flipped by each change), and
cli ↔ other, which no policy touches (always allowed). So every node has allowed and denied
cells, same-node and cross-node.

The faults, in order, each with the window it opens (from injection to the recovery event) and
the only wrongness that window explains (see `fault_judge`):

1. Redis frozen (SIGSTOP), then killed (SIGKILL) and restarted by the supervisor; closes when
   every brain reports Redis up with nothing buffered. Explains nothing. The prober starts
   once Redis is frozen, so every attempt's count lands in the restarted Redis.
2. Two tamperings per backend, one per node (nftables: ``nft flush ruleset``, ``nft delete table
   inet stockade``; iptables: ``iptables -F``, ``nft flush ruleset``), run in the node's netns;
   closes when that node's agent counts a repair. Explains: denied cells to that node connect.
3. A policy change (the allowed role flips); closes when the brains say every node applied it.
   Explains: the changed cells show the old or the new verdict.
4. node-1's agent killed (SIGKILL); closes when it is back, connected and ready. Explains: drop
   events to node-1 lost, from `AGENT_HOLD` s before the kill (what it held unacknowledged).
   Its rules stay in the kernel: no verdict may change. Then node-2's agent killed and, at
   once, a policy change; closes when the brains say every node applied it. Explains: drop
   events to node-2 lost, and the changed cells show the old or the new verdict.
5. node-2's streams to the brains cut (``ss -K``: the connections reset, as a network fault
   would); closes when its agent is connected again. Explains nothing.
6. Both brains killed (SIGKILL) and, at once, a policy change: the supervisor restarts them;
   closes when the brains say every node applied the change. Explains: the changed cells show
   the old or the new verdict. Measured: kill → first brain listening → agents in sync.
7. The brain serving most agents stopped (SIGTERM, held): its agents fail over; then started
   again. Explains nothing.
8. The API server killed (SIGKILL), restarted with the lab's objects; then a policy change.
   The kill explains nothing; the change as in 3.
9. Certificates renewed on disk (the brains' and node-1's, as cert-manager would): node-1's
   agent reconnects with its new one; then a policy change. Renewal explains nothing.

Between faults the prober runs `QUIET` seconds with no window open.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stockade.lab import brains, kubeapi, procs, realize
from stockade.lab import lab as labcmd
from stockade.lab.state import LabState
from stockade.tls import CertPair, issue_brain_cert, issue_node_cert

from . import fault_judge as fj
from .lab_ops import agent_metrics, config, drill_cluster, drill_only_from, lab_state, redis_top
from .labenv import Lab
from .prober import ALLOWED, DENIED, Attempt, Prober, cells

T = TypeVar("T")

WAIT = 90.0  # a failure guard for every recovery; a busy CI machine gets all of it
QUIET = 1.0  # seconds of probing with no fault between faults
AGENT_HOLD = 3.0  # events an agent may hold unacknowledged: a report stream lasts up to 2 s
NODES = 2
SRV = ("drill/srv-1", "drill/srv-2")
ROLE_POD = {"client": "drill/cli", "other": "drill/other"}
PAIRS = [(src, dst) for src in ROLE_POD.values() for dst in SRV] + [
    ("drill/cli", "drill/other"),
    ("drill/other", "drill/cli"),
]
TAMPERS = {
    "nftables": [
        ("node-1", "nft flush ruleset", ["nft", "flush", "ruleset"]),
        ("node-2", "nft delete table inet stockade", ["nft", "delete", "table", "inet", "stockade"]),
    ],
    "iptables": [
        ("node-1", "iptables -F", ["iptables", "-F"]),
        ("node-2", "nft flush ruleset", ["nft", "flush", "ruleset"]),
    ],
}
STORE_PREFIX = "{stockade}:drops"  # the brains' default (the lab sets none)


class DrillError(AssertionError):
    pass


def start_lab(lab: Lab, backend: str) -> None:
    """Up a 2-brain lab of the drill cluster with the first policy applied (only cli reaches srv)."""
    lab.run("down", check=False)
    cluster = lab.write("c.yaml", drill_cluster(NODES))
    lab.run("up", "--backend", backend, "--brains", "2", "--nodes", str(NODES), "--cluster", cluster, timeout=240)
    st = lab_state(lab)
    if "brain" not in st.processes or not any(n.startswith("agent-") for n in st.processes):
        raise DrillError("the lab started without its brains and agents: nothing would be enforced")
    lab.run("apply", "-f", lab.write("client.yaml", drill_only_from("client")), "--wait")


def verdicts(role: str) -> dict[str, str]:
    """What each cell should get while the srv pods let in `role` only."""
    out = {}
    for c in PAIRS:
        name = f"{c[0].split('/')[1]}→{c[1].split('/')[1]}"
        out[name] = ALLOWED if c[1] not in SRV or c[0] == ROLE_POD[role] else DENIED
    return out


@dataclass
class Result:
    backend: str
    windows: list[fj.Window]
    attempts: list[Attempt]
    wrong: list[Attempt]
    denied_first: list[Attempt]  # allowed, connected, but their first SYN was recorded denied
    counts: list[fj.CellCount]
    prober_errors: list[str]
    started: float
    seconds: float

    def report(self) -> list[str]:
        lines = [f"fault drill ({self.backend}): {len(self.attempts)} attempts in {self.seconds:.1f} s; windows:"]
        lines += [f"  {w.describe()}" for w in self.windows]
        lines += ["drop counts:"] + [f"  {c.describe()}" for c in self.counts if c.denied or c.recorded or c.counted]
        lines += [f"wrong verdicts outside the windows: {len(self.wrong)}"]
        lines += [f"  {fj.describe(a, self.started)}" for a in self.wrong[:30]]
        lines += [f"allowed attempts whose first SYN was denied, outside a change: {len(self.denied_first)}"]
        lines += [f"  {fj.describe(a, self.started)}" for a in self.denied_first[:30]]
        return lines


@dataclass
class Drill:
    lab: Lab
    backend: str
    say: Callable[[str], None] = print
    interval: float = 0.2
    windows: list[fj.Window] = field(default_factory=list)
    role: str = "client"
    prober: Prober = field(init=False)
    _tampers: list[tuple[fj.Window, str, float, float]] = field(default_factory=list)  # window, node, effective, metric
    _changes: list[tuple[fj.Window, dict[str, str]]] = field(default_factory=list)
    _recorded: Counter[fj.FlowKey] = field(default_factory=Counter)  # the store's stream, read so far
    _stream_at: str = "0-0"

    def __post_init__(self) -> None:
        self.cfg = config(self.lab)
        self.cells = cells(self.st(), PAIRS)
        self.prober = Prober(self.cells, verdicts(self.role), self.interval)

    # -- looking at the lab ----------------------------------------------------------------------

    def st(self) -> LabState:
        return lab_state(self.lab)

    def process(self, name: str) -> dict[str, Any]:
        return next(r for r in labcmd.processes_status(self.cfg) if r["name"] == name)

    def node_netns(self, node: str) -> str:
        plan = self.st().plan
        assert plan is not None
        return next(n.netns for n in plan.nodes if n.name == node)

    def agent(self, node: str) -> dict[str, float]:
        """The agent's counters and gauges by name (label sets summed); {} while it does not answer."""
        try:
            text = agent_metrics(self.st(), node)
        except (OSError, AssertionError):
            return {}
        out: dict[str, float] = Counter()
        for line in text.splitlines():
            if line.startswith("stockade_agent_") and " " in line:
                name, _, value = line.rpartition(" ")
                out[name.split("{")[0]] += float(value)
        return dict(out)

    def brain_rows(self) -> list[dict[str, Any]]:
        st = self.st()
        return brains.status(st, f"http://127.0.0.1:{st.ports['apiserver']}")

    def wait(self, what: str, fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = WAIT) -> T:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = fetch()
                if done(value):
                    return value
            except (OSError, ValueError, KeyError, StopIteration):
                value = None  # type: ignore[assignment]
            if time.monotonic() > deadline:
                raise DrillError(f"{what}: not after {timeout:.0f} s (last seen: {value!r})\n{self.diagnose()}")
            time.sleep(0.05)

    def diagnose(self) -> str:
        """What a failed wait shows: every process's row, and the end of the supervisor's log."""
        rows = [
            f"{r['name']}: {r['state']}, pid {r['pid']}, restarts {r['restarts']}"
            for r in labcmd.processes_status(self.cfg)
        ]
        try:
            log = procs.log_path(self.cfg.state_dir, "supervisor").read_text().splitlines()[-15:]
        except OSError:
            log = []
        return "\n".join(["processes:", *rows, "supervisor log:", *log])

    def restarted(self, name: str, before: dict[str, Any]) -> None:
        self.wait(
            f"{name} restarted by the supervisor",
            lambda: self.process(name),
            lambda r: r["state"] == "running" and r["restarts"] > before["restarts"],
        )

    def open(self, fault: str, start: float | None = None, **explains: Any) -> fj.Window:
        w = fj.Window(fault, start if start is not None else time.monotonic(), **explains)
        self.windows.append(w)
        return w

    def close(self, w: fj.Window) -> None:
        w.end = w.end or time.monotonic()
        self.say(f"  {w.fault}: {w.seconds * 1000:.0f} ms")
        time.sleep(QUIET)
        self.collect()

    # -- policy changes --------------------------------------------------------------------------

    def change(self, fault: str, start: float | None = None) -> fj.Window:
        """Flip the allowed role; the window runs until the brains say every node applied it."""
        w, since = self.write_change(fault, start)
        self.await_change(w, since)
        return w

    def write_change(self, fault: str, start: float | None = None) -> tuple[fj.Window, dict[str, int]]:
        self.role = "other" if self.role == "client" else "client"
        new = verdicts(self.role)
        changed = frozenset(n for n, v in new.items() if v != self.prober.expected[n])
        t = self.prober.expect(new)
        w = self.open(fault, start if start is not None else t, either=changed)
        self._changes.append((w, new))
        path = self.lab.write(f"{self.role}.yaml", drill_only_from(self.role))
        labcmd.apply(self.cfg, [path], False, lambda _: None)
        st = self.st()
        api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
        pol = next(p for p in api.list("NetworkPolicy", "drill") if p["metadata"]["name"] == "srv-ingress")
        return w, {"NetworkPolicy": int(pol["metadata"]["resourceVersion"])}

    def await_change(self, w: fj.Window, since: dict[str, int]) -> None:
        answer = realize.wait(self.st(), since, WAIT, self.cfg.state_dir)
        if not (answer or {}).get("realized"):
            raise DrillError(f"{w.fault}: not realized after {WAIT:.0f} s: {answer}\n{self.diagnose()}")

    # -- the faults ------------------------------------------------------------------------------

    def redis_outage(self) -> None:
        before = self.process("redis")
        w = self.open("Redis frozen (SIGSTOP) 2 s, then killed (SIGKILL)")
        os.kill(before["pid"], signal.SIGSTOP)
        self.prober.start()
        time.sleep(2.0)
        os.kill(before["pid"], signal.SIGKILL)
        self.restarted("redis", before)

        def flushing(rows: list[dict[str, float]]) -> bool:
            return bool(rows) and all(r.get("up") == 1 and r.get("buffer") == 0 for r in rows)

        self.wait("every brain writes to the restarted Redis", self._brain_drops, flushing)
        self.close(w)

    def _brain_drops(self) -> list[dict[str, float]]:
        st = self.st()
        rows = []
        for b in brains.of(st):
            text = brains.metrics(st, b)
            row: dict[str, float] = {}
            for line in text.splitlines():
                if line.startswith("stockade_brain_drops_redis_up "):
                    row["up"] = float(line.split()[1])
                elif line.startswith("stockade_brain_drops_buffer_events "):
                    row["buffer"] = float(line.split()[1])
            rows.append(row)
        return rows

    def tamper(self, node: str, label: str, argv: list[str]) -> None:
        def repairs(m: dict[str, float]) -> float:
            return m.get("stockade_agent_tamper_repairs_total", 0.0) + m.get("stockade_agent_drift_repairs_total", 0.0)

        before = self.agent(node)
        w = self.open(f"tamper on {node}: {label}", may_open=frozenset({node}))
        subprocess.run(["ip", "netns", "exec", self.node_netns(node), *argv], check=True, capture_output=True)
        effective = time.monotonic()
        self.wait(f"{node}'s agent repairs {label}", lambda: self.agent(node), lambda m: repairs(m) > repairs(before))
        w.end = time.monotonic()
        # The repair's histogram is observed just after its counter: a moment's patience.
        hist = "stockade_agent_tamper_repair_seconds"
        seen = self.wait(
            f"{node}'s {hist}", lambda: self.agent(node), lambda m: m[f"{hist}_count"] > before[f"{hist}_count"], 10
        )
        metric = seen[f"{hist}_sum"] - before[f"{hist}_sum"]
        self._tampers.append((w, node, effective, metric))
        self.close(w)

    def kill_agent(self, node: str, change: bool = False) -> None:
        """SIGKILL a node's agent; with `change`, flip the policy at once, while it is down."""
        name = f"agent-{node}"
        before = self.process(name)
        t_kill = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        since = None
        if change:
            w, since = self.write_change(f"{name} killed (SIGKILL), a change written meanwhile", start=t_kill)
            w.may_lose, w.lose_before = frozenset({node}), AGENT_HOLD
        else:
            w = self.open(f"{name} killed (SIGKILL)", t_kill, may_lose=frozenset({node}), lose_before=AGENT_HOLD)
        self.restarted(name, before)
        self.wait(
            f"{name} connected and ready",
            lambda: self.agent(node),
            lambda m: m.get("stockade_agent_brain_connected") == 1 and m.get("stockade_agent_ready") == 1,
        )
        if since is not None:
            self.await_change(w, since)
        self.close(w)

    def cut_streams(self, node: str) -> None:
        st = self.st()
        before = self.agent(node)["stockade_agent_brain_connects_total"]
        ports = " or ".join(f"dport = :{p}" for p in brains.grpc_ports(st))
        w = self.open(f"{node}'s streams to the brains cut (ss -K)")
        cmd = ["ss", "-K", "-tn", "dst", "127.0.0.1", f"( {ports} )"]
        subprocess.run(["ip", "netns", "exec", self.node_netns(node), *cmd], check=True, capture_output=True)
        self.wait(
            f"{node}'s agent connected again",
            lambda: self.agent(node),
            lambda m: m["stockade_agent_brain_connects_total"] > before and m["stockade_agent_brain_connected"] == 1,
        )
        self.close(w)

    def kill_brains_and_change(self) -> None:
        st = self.st()
        every = brains.of(st)
        before = {b.name: self.process(b.name) for b in every}
        t_kill = time.monotonic()
        for row in before.values():
            os.kill(row["pid"], signal.SIGKILL)
        # Written at once, while no brain runs: the supervisor waits 0.2 s at least, and a brain
        # takes longer than that to start.
        w, since = self.write_change("both brains killed (SIGKILL), a change written meanwhile", start=t_kill)
        for b in every:  # started again as new processes (the old ones' sockets are gone)
            self.restarted(b.name, before[b.name])
        ports = [b.port(st, "grpc") for b in every]
        self.wait("a restarted brain listening", lambda: any(map(_listening, ports)), bool)
        listen_mono, listen_wall = time.monotonic(), time.time()
        self.await_change(w, since)
        applied = [self.agent(n.name)["stockade_agent_last_apply_timestamp_seconds"] for n in self._nodes()]
        w.figures["kill → a brain listens"] = listen_mono - t_kill
        w.figures["listens → agents in sync"] = max(applied) - listen_wall
        self.close(w)

    def _nodes(self) -> list[Any]:
        plan = self.st().plan
        assert plan is not None
        return list(plan.nodes)

    def failover(self) -> None:
        rows = self.brain_rows()
        serving = max(rows, key=lambda r: len(r["nodes"] or ()))
        index, other = serving["index"], next(r["index"] for r in rows if r["index"] != serving["index"])
        every = {n.name for n in self._nodes()}
        w = self.open(f"brain {index} stopped (SIGTERM): its agents fail over")
        labcmd.brain_stop(self.cfg, index, "TERM", lambda _: None)
        self.wait(
            f"every agent served by brain {other}",
            self.brain_rows,
            lambda rs: set(next(r for r in rs if r["index"] == other)["nodes"] or ()) == every,
        )
        self.close(w)
        w = self.open(f"brain {index} started again")
        labcmd.brain_start(self.cfg, index, lambda _: None)
        self.wait(
            f"brain {index} serving",
            self.brain_rows,
            lambda rs: next(r for r in rs if r["index"] == index)["nodes"] is not None,
        )
        self.close(w)

    def kill_apiserver(self) -> None:
        before = self.process("apiserver")
        w = self.open("API server killed (SIGKILL)")
        os.kill(before["pid"], signal.SIGKILL)
        self.restarted("apiserver", before)
        url = f"http://127.0.0.1:{self.st().ports['apiserver']}/readyz"
        self.wait(
            "the restarted API server ready", lambda: urllib.request.urlopen(url, timeout=2).status, lambda s: s == 200
        )
        self.close(w)

    def renew_certs(self, node: str = "node-1") -> None:
        certs = self.cfg.state_dir / "certs"
        ca = CertPair((certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes())
        before = self.agent(node)["stockade_agent_certificate_renewals"]
        w = self.open(f"certificates renewed (the brains', {node}'s)")
        _install(issue_brain_cert(ca, ["localhost", "127.0.0.1"], days=2), certs / "brain")
        _install(issue_node_cert(ca, node, days=2), certs / "nodes" / node)
        self.wait(
            f"{node}'s agent reconnected with its new certificate",
            lambda: self.agent(node),
            lambda m: m["stockade_agent_certificate_renewals"] > before and m["stockade_agent_brain_connected"] == 1,
        )
        self.close(w)

    # -- the whole drill ---------------------------------------------------------------------------

    def run(self) -> Result:
        t0 = time.monotonic()
        self.redis_outage()
        for node, label, argv in TAMPERS[self.backend]:
            self.tamper(node, label, argv)
        self.close(self.change("policy changed"))
        self.kill_agent("node-1")
        self.kill_agent("node-2", change=True)
        self.cut_streams("node-2")
        self.kill_brains_and_change()
        self.failover()
        self.kill_apiserver()
        self.close(self.change("policy changed after the API server's restart"))
        self.renew_certs()
        self.close(self.change("policy changed after the renewal"))
        self.prober.stop()
        recorded, counted = self.settled_counts()
        attempts = self.prober.attempts()
        self._figures(attempts)
        wrong = fj.judge(attempts, self.windows)
        counts = fj.account(attempts, self.windows, recorded, counted)
        denied_first = fj.dropped_then_allowed(attempts, self.windows, recorded)
        return Result(
            self.backend,
            self.windows,
            attempts,
            wrong,
            denied_first,
            counts,
            self.prober.errors,
            t0,
            time.monotonic() - t0,
        )

    def _figures(self, attempts: list[Attempt]) -> None:
        for w, node, effective, metric in self._tampers:
            until = min((o.start for o in self.windows if o.start > w.start), default=float("inf"))
            by_packets = fj.repaired_by_packets(attempts, node, w.start, effective, until)
            if by_packets is not None:
                w.figures["repaired by packets ≤"] = by_packets
            w.figures["by the agent's metric"] = metric
            w.tallies["denied SYNs through"] = fj.got_through(attempts, node, w.start, w.start + w.seconds)
        starts = [w.start for w, _ in self._changes] + [float("inf")]
        for (w, new), until in zip(self._changes, starts[1:], strict=True):
            enforced = fj.enforced_by_packets(attempts, w.either, new, w.start, until)
            if enforced is not None:
                w.figures["enforced by packets ≤"] = enforced

    # -- drop counts -------------------------------------------------------------------------------

    def collect(self) -> None:
        """Read the store's stream of events from where the last read ended: it keeps only its
        newest few hundred entries (one per brain flush), fewer than a whole drill makes."""
        import redis

        client = redis.Redis.from_url(self.st().redis_url or "", socket_timeout=5)
        try:
            while page := client.xrange(f"{STORE_PREFIX}:recent", min=f"({self._stream_at}", count=500):
                for entry_id, entry in page:
                    for line in entry[b"e"].decode().split("\n"):
                        f = line.split("|")
                        self._recorded[(f[4], int(f[5]), f[6], int(f[7]))] += 1
                    self._stream_at = entry_id.decode()
        except redis.RedisError:
            pass  # away (a fault): the next read goes on from here
        finally:
            client.close()

    def store_view(self) -> tuple[Counter[fj.FlowKey], dict[str, int]]:
        """The store's events by 5-tuple (its stream, read along) and its counts per cell (its
        minute counts)."""
        names = {(c.dst.split("/")[1], c.src.split("/")[1]): c.name for c in self.cells}
        counted: dict[str, int] = {}
        for key, n in redis_top(self.st(), ("direction", "protocol", "dport", "dst_pod", "src")).items():
            name = names.get((key[3], key[4]))
            if name is not None and key[:3] == ("ingress", "TCP", "80"):
                counted[name] = counted.get(name, 0) + n
        self.collect()
        return Counter(self._recorded), counted

    def settled_counts(self) -> tuple[Counter[fj.FlowKey], dict[str, int]]:
        """The store's view once nothing is left to deliver: every agent's and brain's buffer
        empty, and two looks a second apart the same."""

        def idle() -> bool:
            agents = [self.agent(n.name).get("stockade_agent_drop_reporter_buffer_events") for n in self._nodes()]
            return all(a == 0 for a in agents) and all(r.get("buffer") == 0 for r in self._brain_drops())

        self.wait("every drop event delivered", idle, bool)
        last = self.store_view()
        while True:
            time.sleep(1.0)
            now = self.store_view()
            if now == last:
                return now
            last = now


def _install(pair: CertPair, stem: Path) -> None:
    """Replace a certificate and its key as a Secret volume does: each by an atomic rename."""
    for suffix, data in ((".crt", pair.cert), (".key", pair.key)):
        path = stem.with_name(stem.name + suffix)
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
