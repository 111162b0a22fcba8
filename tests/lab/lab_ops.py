"""Shared by test_drops_lab.py, test_admin_lab.py and benchmarks/agent_capture.py: a lab with its
own prefix and port range, and the ways to look inside it (the brain's and the agents' /metrics,
Redis, the operator CLI) and to make blocked attempts from inside its pods.

Attempts bind distinct source ports: the dataplane counts a denied 5-tuple once (retransmits
are silent), so every attempt here is one new flow and exactly one count. Give them ports below
32768 (`FRESH_PORTS`): `lab probe` takes its source ports all over the kernel's ephemeral range
(32768-60999, by the clock), and an attempt from the port of an earlier denied probe to the same
destination is that flow again, rightly not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from stockade.lab import brains, nsenter, state
from stockade.lab.config import LabConfig
from stockade.lab.state import LabState

from .labenv import Lab

T = TypeVar("T")
Labels = tuple[tuple[str, str], ...]
FRESH_PORTS = 21000  # attempts' source ports start here: below the ephemeral range probes use
HTTP_WAIT = 30.0  # for a /metrics answer: a timeout inside a poll fails the test, so a busy machine's bound


def make_lab(tmp: Path, prefix: str, ports: tuple[int, int]) -> Lab:
    lab = Lab(tmp, prefix)
    lab.env["STOCKADE_LAB_PORTS"] = f"{ports[0]}-{ports[1]}"
    for var in ("STOCKADE_BRAIN", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CERT", "STOCKADE_KEY"):
        lab.env.pop(var, None)  # the CLI must find the lab's brain through admin.json alone
    return lab


def config(lab: Lab) -> LabConfig:
    lo, _, hi = lab.env["STOCKADE_LAB_PORTS"].partition("-")
    return LabConfig(lab.dir, lab.prefix, (int(lo), int(hi)))


def lab_state(lab: Lab) -> LabState:
    st = state.load(lab.dir / "state.json")
    assert st is not None and st.plan is not None
    return st


def enforced(st: LabState) -> bool:
    return "brain" in st.processes and any(n.startswith("agent-") for n in st.processes)


def cli(
    lab: Lab, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`stockade ARGS` as an operator runs it in the lab (it finds the brain via admin.json);
    ``timeout`` bounds a hang (it raises, even inside a poll), so it is generous."""
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        env=dict(env or lab.env),
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 0.25) -> T:
    """`fetch()` until `done` holds or `timeout` seconds pass; the last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- metrics ----------------------------------------------------------------------------------------


def counters(text: str, name: str) -> dict[Labels, float]:
    """Samples of counter `name` (its ``_total`` series) by their sorted label pairs."""
    out: dict[Labels, float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{name}_total":
                out[tuple(sorted(s.labels.items()))] += s.value
    return dict(out)


def brain_metrics(st: LabState) -> str:
    """Brain 1's /metrics (what it alone counts: its own agents' reports)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{st.ports['brain_http']}/metrics", timeout=HTTP_WAIT) as r:
        return str(r.read().decode())


def brains_metrics(st: LabState) -> dict[str, str]:
    """Every running brain's /metrics, by process name (brain, brain2, ...)."""
    return {
        b.name: brains.metrics(st, b, timeout=HTTP_WAIT)
        for b in brains.of(st)
        if brains.process_state(st, b) == "running"
    }


def brain_counters(st: LabState, name: str) -> dict[Labels, float]:
    """Counter `name` summed over every brain: each counts what its own agents report, as
    Prometheus' sum over the replicas does."""
    out: dict[Labels, float] = defaultdict(float)
    for text in brains_metrics(st).values():
        for labels, v in counters(text, name).items():
            out[labels] += v
    return dict(out)


def agent_metrics(st: LabState, node: str) -> str:
    """GET /metrics from the agent of `node`: it listens on the loopback of the node's netns."""
    assert st.plan is not None
    netns = next(n.netns for n in st.plan.nodes if n.name == node)
    s = nsenter.socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(HTTP_WAIT)
        s.connect(("127.0.0.1", st.ports["agent_http"]))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head[:200]
    return body.decode()


def agent_totals(st: LabState) -> dict[str, dict[str, float]]:
    """Per node: NFLOG events by (protocol/dport/direction), kernel counts by direction, NFLOG lost."""
    assert st.plan is not None
    out = {}
    for node in st.plan.nodes:
        text = agent_metrics(st, node.name)
        row: dict[str, float] = {}
        for labels, v in counters(text, "stockade_agent_blocked_connections").items():
            d = dict(labels)
            row[f"nflog:{d['protocol']}/{d['dport']}/{d['direction']}"] = v
        for labels, v in counters(text, "stockade_agent_blocked_connections_kernel").items():
            row[f"kernel:{dict(labels)['direction']}"] = v
        row["lost"] = sum(counters(text, "stockade_agent_nflog_events_lost").values())
        out[node.name] = row
    return out


def diff(after: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """What rose from `before` to `after` (keys that did not change are left out)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


# -- Redis ------------------------------------------------------------------------------------------


def redis_top(
    st: LabState, group_by: Sequence[str], window: str = "15m", limit: int = 1000
) -> dict[tuple[str, ...], int]:
    """The drops store's top flows over `window`, as {(values of group_by...): count}."""
    from stockade.brain.drops.redis_url import connect
    from stockade.brain.drops.store import RedisStore

    async def read() -> list[dict[str, object]]:
        client = connect(st.redis_url or "")
        try:
            return await RedisStore(client).top_flows(window, group_by, limit=limit, now=time.time())
        finally:
            await client.aclose()

    rows = asyncio.run(read())
    return {tuple(str(r[k]) for k in group_by): int(str(r["count"])) for r in rows}


# -- blocked attempts -------------------------------------------------------------------------------


def pod_netns(st: LabState, key: str, family: str | None = None) -> tuple[str, str]:
    """(netns, ip) of pod `ns/name`: its address of `family` (default: its first, as podIP)."""
    assert st.plan is not None
    pod = st.plan.pod(key)
    assert pod is not None, key
    ip = pod.ip_of(family) if family else pod.ip
    assert ip is not None, f"{key} has no {family} address"
    return pod.netns, ip


def attempts(
    netns: str, src_ip: str, dst_ip: str, protocol: str, port: int, sports: Sequence[int], linger: float = 0.3
) -> None:
    """One new flow per source port from inside `netns`: a TCP SYN (connect) or one UDP datagram.

    The sockets stay open `linger` seconds (the SYNs are out by then), then close; closing a
    socket whose SYN had no answer sends nothing."""
    kind = socket.SOCK_STREAM if protocol == "TCP" else socket.SOCK_DGRAM
    socks = []
    try:
        for sport in sports:
            s = nsenter.socket_in(netns, socket.AF_INET6 if ":" in dst_ip else socket.AF_INET, kind)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src_ip, sport))
            s.setblocking(False)
            if kind == socket.SOCK_STREAM:
                err = s.connect_ex((dst_ip, port))
                assert err in (0, 115), os.strerror(err)  # EINPROGRESS: the SYN is on its way
            else:
                s.sendto(b"stockade-test", (dst_ip, port))
        if linger:
            time.sleep(linger)
        if kind == socket.SOCK_STREAM:  # a denied SYN must never complete
            _, writable, _ = select.select([], socks, [], 0)
            done = [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
            assert not done, f"{len(done)} connections to {dst_ip}:{port} completed: not denied"
    finally:
        for s in socks:
            s.close()


# -- the drill cluster of the two-brain and restart tests -------------------------------------


def drill_cluster(nodes: int) -> str:
    """Namespace drill: a server pod app=srv on every node, a client (role=client) on node-1 and
    another pod (role=other) on the last node, as one YAML (JSON is YAML) for `lab up --cluster`."""
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "drill"}}]
    pods = [(f"srv-{i}", f"node-{i}", {"app": "srv"}) for i in range(1, nodes + 1)]
    pods += [("cli", "node-1", {"role": "client"}), ("other", f"node-{nodes}", {"role": "other"})]
    for name, node, labels in pods:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "drill", "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


def drill_only_from(role: str) -> str:
    """The servers' ingress policy of the drill cluster: only pods with ``role`` may connect."""
    return json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "srv-ingress", "namespace": "drill"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "srv"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": role}}}]}],
            },
        }
    )
