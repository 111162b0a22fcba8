"""The lab's brains: ``lab up --brains N`` runs N replicas, as the deploy runs 2 (issue 13).

Every brain serves agents on its own ports, logs to its own file and keeps its own state; they
share the lab's API server (leader election by the Lease stockade-system/stockade-brain, so one
writes to the API) and the lab's Redis. Brain 1 keeps the names a one-brain lab always had
(process ``brain``, ports ``brain_grpc``, ``brain_admin``, ...); brain i is ``brain<i>``.
Each agent gets every brain's address and picks its own (stockade.dial.order_for).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stockade.lab import procs
from stockade.lab.state import LabState

DEFAULT = 2  # as the deploy's replicas
MAX = 5
PORTS = ("grpc", "admin", "admin_mtls", "http")
LEASE_NAMESPACE = "stockade-system"
LEASE_NAME = "stockade-brain"
# Short enough that a fault drill sees a new leader within seconds, with the order leader.py
# demands (retry < renew deadline < duration) and room for a slow, busy CI machine.
LEASE_FLAGS = ("--lease-duration", "4", "--lease-renew-deadline", "3", "--lease-retry", "1")


def check_count(n: int) -> None:
    if not 1 <= n <= MAX:
        raise ValueError(f"--brains {n}: the lab runs 1 to {MAX} brains (default {DEFAULT}, as the deploy)")


@dataclass(frozen=True)
class Brain:
    index: int  # 1-based, as operators count them

    @property
    def name(self) -> str:
        """The process's name (and its log file's): ``brain`` for brain 1, ``brain<i>`` after."""
        return "brain" if self.index == 1 else f"brain{self.index}"

    @property
    def identity(self) -> str:
        """Its name in the Lease: distinct per brain, else every brain would think it leads."""
        return f"lab-brain-{self.index}"

    def key(self, port: str) -> str:
        return f"{self.name}_{port}"

    def port(self, st: LabState, port: str) -> int:
        return st.ports[self.key(port)]

    def describe(self, st: LabState) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "process": self.name,
            "identity": self.identity,
            "ports": {p: st.ports[self.key(p)] for p in PORTS if self.key(p) in st.ports},
        }


def planned(n: int) -> list[Brain]:
    return [Brain(i) for i in range(1, n + 1)]


def of(st: LabState) -> list[Brain]:
    """The lab's brains, from its state (a lab made before `--brains` has brain 1 only)."""
    if st.brains:
        return [Brain(int(b["index"])) for b in st.brains]
    return [Brain(1)] if "brain_grpc" in st.ports else []


def find(st: LabState, index: int) -> Brain:
    for b in of(st):
        if b.index == index:
            return b
    raise LookupError(f"this lab has no brain {index} (it has {len(of(st))}: 1..{len(of(st))})")


def grpc_ports(st: LabState) -> list[int]:
    return [b.port(st, "grpc") for b in of(st)]


def agent_brain_flag(st: LabState) -> str:
    """``--brain`` for the agents: every brain, through the relays on the node's loopback."""
    return ",".join(f"127.0.0.1:{p}" for p in grpc_ports(st))


def pid(st: LabState, b: Brain) -> int | None:
    """The brain's pid while that very process exists (running or stopped)."""
    rec = st.processes.get(b.name)
    return rec[0] if rec and procs.same_process(rec[0], rec[1]) else None


def process_state(st: LabState, b: Brain) -> str:
    """running | stopped (SIGSTOP: frozen, its sockets open) | down."""
    p = pid(st, b)
    if p is None or not procs.alive(p):
        return "down"
    try:
        with open(f"/proc/{p}/stat") as f:
            code = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "down"
    return "stopped" if code in ("T", "t") else "running"


def metrics(st: LabState, b: Brain, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{b.port(st, 'http')}/metrics", timeout=timeout) as r:
        return str(r.read().decode())


def served(text: str) -> tuple[list[str], bool | None]:
    """From a brain's /metrics: the nodes whose agent stream it holds, and whether it leads."""
    nodes: list[str] = []
    leader: bool | None = None
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "stockade_brain_node_agent_connected" and s.value == 1:
                nodes.append(s.labels["node"])
            elif s.name == "stockade_brain_leader":
                leader = s.value == 1
    return sorted(nodes), leader


def lease_holder(api_url: str) -> str | None:
    """The Lease's holder as the API server has it (None: no Lease, or nobody holds it)."""
    import json

    url = f"{api_url}/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEASE_NAME}"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            lease = json.loads(r.read())
    except (OSError, ValueError):
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


def status(st: LabState, api_url: str | None) -> list[dict[str, Any]]:
    """Every brain: ports, process state, whether it leads (its own metric, and the Lease), the
    nodes it serves now. A brain that does not answer is shown without the last two."""
    holder = lease_holder(api_url) if api_url else None
    out = []
    for b in of(st):
        row = b.describe(st)
        row["state"] = process_state(st, b)
        row["lease_holder"] = holder == b.identity
        row["leader"] = None
        row["nodes"] = None
        if row["state"] == "running":
            try:
                row["nodes"], row["leader"] = served(metrics(st, b))
            except (OSError, ValueError):
                pass
        out.append(row)
    return out


def render(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        ports = r["ports"]
        leads = "leader" if r["leader"] else ("not leader" if r["leader"] is False else "leader ?")
        nodes = "?" if r["nodes"] is None else (",".join(r["nodes"]) or "none")
        lines.append(
            f"brain {r['index']} ({r['identity']}): {r['state']}, {leads}; gRPC 127.0.0.1:{ports.get('grpc')}, "
            f"admin 127.0.0.1:{ports.get('admin')}, HTTP 127.0.0.1:{ports.get('http')}; serves nodes: {nodes}"
        )
    return "\n".join(lines)
