"""The lab's state file: what was built, which processes run, which ports they use.

Written atomically (temp file + rename) after every step, so a crashed `up` still leaves enough
behind for `down` to find and remove. A lock file serialises commands that change the lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.lab.topology import Plan

VERSION = 2  # 2: plans with IP families and a topology


@dataclass
class LabState:
    token: str  # marks every process the lab starts (in its environment), so `down` finds them all
    prefix: str
    status: str = "building"  # building | ready | failed
    created: float = field(default_factory=time.time)
    serial: int = 0  # bumped on every write; the lab daemon reports which serial it serves
    backend: str = "nftables"
    plan: Plan | None = None
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Namespace object
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # ns/name -> Pod object (with status)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # ns/name -> NetworkPolicy
    cluster_policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ClusterNetworkPolicy
    ports: dict[str, int] = field(default_factory=dict)  # apiserver, brain_grpc, brain_http, redis, ...
    processes: dict[str, list[int]] = field(default_factory=dict)  # name -> [pid, start time]
    redis_url: str | None = None
    relays: list[int] = field(default_factory=list)  # ports relayed from every node's loopback to ours
    brains: list[dict[str, Any]] = field(default_factory=list)  # every brain: name, process, ports (brains.py)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # ns/name -> Service as stored (restarts.py)
    notes: list[str] = field(default_factory=list)  # what was not started, and why

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "plan"}
        data["plan"] = self.plan.to_json() if self.plan else None
        data["version"] = VERSION
        return data

    @staticmethod
    def from_json(data: dict[str, Any]) -> LabState:
        if data.get("version") != VERSION:
            raise ValueError(f"it is of version {data.get('version')}, this stockade reads version {VERSION}")
        fields = {k: v for k, v in data.items() if k not in {"plan", "version"}}
        st = LabState(**fields)
        st.plan = Plan.from_json(data["plan"]) if data.get("plan") else None
        return st


def save(path: Path, st: LabState) -> None:
    st.serial += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st.to_json(), indent=1, sort_keys=True))
    os.replace(tmp, path)


def load(path: Path) -> LabState | None:
    """The state; each process's pid as the supervisor has it now (it restarts what dies)."""
    try:
        st = LabState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    _current_pids(path.parent, st)
    return st


def _current_pids(state_dir: Path, st: LabState) -> None:
    try:
        sup = json.loads((state_dir / "supervisor.json").read_text())
    except (OSError, ValueError):
        return
    for name, proc in (sup.get("processes") or {}).items():
        if name in st.processes:
            st.processes[name] = [proc.get("pid") or 0, proc.get("started") or 0]


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
