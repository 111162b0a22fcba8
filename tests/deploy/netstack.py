"""Stand-ins for containers and pods, for running the deployed command lines for real: a `core`
network namespace (Redis, the API server, the brain) and one per agent, linked to the core by veth
pairs. Each namespace gets its own /etc/hosts (`ip netns exec` bind-mounts
/etc/netns/<ns>/hosts), so Service and compose names resolve as they would in place.
Namespaces are named st-dep-*, addresses are 10.251.<i>.0/30, and everything is removed after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from .render import REPO

ROOTS = ["services/common", "services/brain", "services/node-agent", "services/lab", "services/cli"]
STOCKADE = [sys.executable, "-m", "stockade.cli.main"]


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check)


class Stack:
    def __init__(self, tmp: Path, agents: Iterable[str]) -> None:
        tag = uuid.uuid4().hex[:5]
        self.tmp = tmp
        self.agents = list(agents)
        self.ns = {"core": f"st-dep-c{tag}"} | {a: f"st-dep-{i}{tag}" for i, a in enumerate(self.agents)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": os.pathsep.join(str(REPO / r) for r in ROOTS),
            "HOME": str(tmp),
        }

    def core_ip(self, agent: str) -> str:
        return f"10.251.{self.agents.index(agent) + 1}.1"

    def up(self, core_names: Iterable[str], agent_names: Iterable[str]) -> None:
        """Make the namespaces; `core_names` resolve to loopback in the core, `agent_names` to the
        core's address in every agent namespace."""
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        core = self.ns["core"]
        agent_names = list(agent_names)
        for i, agent in enumerate(self.agents, start=1):
            ns = self.ns[agent]
            a, b = f"stdc{ns[-6:]}", f"stda{ns[-6:]}"
            sh("ip", "link", "add", a, "netns", core, "type", "veth", "peer", "name", b, "netns", ns)
            sh("ip", "-n", core, "addr", "add", f"10.251.{i}.1/30", "dev", a)
            sh("ip", "-n", ns, "addr", "add", f"10.251.{i}.2/30", "dev", b)
            sh("ip", "-n", core, "link", "set", a, "up")
            sh("ip", "-n", ns, "link", "set", b, "up")
            self._hosts(ns, {name: self.core_ip(agent) for name in agent_names})
        self._hosts(core, dict.fromkeys(core_names, "127.0.0.1"))

    def _hosts(self, ns: str, names: dict[str, str]) -> None:
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", *(f"{ip} {name}" for name, ip in names.items())]
        (d / "hosts").write_text("\n".join(lines) + "\n")

    def _ns_of(self, where: str) -> str:
        return self.ns.get(where, self.ns["core"])

    def run(self, name: str, argv: list[str], where: str = "core", env: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self._ns_of(where), *argv],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=log,
        )
        self.procs.append(proc)

    def exec(self, where: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self._ns_of(where), *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def http_status(self, where: str, url: str) -> str:
        return self.exec(where, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url).stdout

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if any(p.poll() is not None for p in self.procs):
                break  # something we started has exited: no use waiting
            time.sleep(0.3)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log"))
        pytest.fail(f"timed out waiting for {what}\n{logs}")

    def down(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


def can_run() -> str | None:
    """Why the stack cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("redis-server", "curl", "nft", "iptables-save"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None
