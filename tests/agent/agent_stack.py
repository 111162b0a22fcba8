"""A node namespace with three pods, a real brain and the real `stockade agent` process in it.

    st-ag-web    10.231.1.2 ┐
    st-ag-client 10.231.2.2 ┼─ st-ag-node: `stockade agent` + a brain (subprocess),
    st-ag-other  10.231.3.2 ┘              both on the namespace's loopback, with mTLS

The brain is the real Engine + FanOut + SyncService (see `agent_brain.py`), with its admin API
for the real `stockade nodes` / `stockade policies`; the agent is the installed `stockade agent`
command. Namespaces use the ``st-ag`` prefix.

With ``bridge=True`` the pods share one Linux bridge, ``br0`` (10.231.0.1/16), as weave, flannel
and the bridge CNI plugin do: traffic between them crosses the bridge, not the node's routes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent_brain import NODE, OTHER_PORT, PODS, WEB_PORT, engine
from prometheus_client.parser import text_string_to_metric_families

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend
from stockade.model import NodeModel
from stockade.tls import write_bundle

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")  # concurrent runs on one machine pick distinct slots
NETNS = f"st{_SLOT}-ag-node"
POD_NS = {name: f"st{_SLOT}-ag-{name}" for name in PODS}
BRAIN_PORT = 26443
ADMIN_PORT = 26444
ADMIN_TOKEN = "agent-stack-read-token"
HTTP = "127.0.0.1:26091"
ROOT = Path(__file__).resolve().parents[2]
STOCKADE = str(Path(sys.executable).with_name("stockade"))
BRAIN_SCRIPT = str(Path(__file__).with_name("agent_brain.py"))

ECHO = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def echo(c):
    try:
        while data := c.recv(1024):
            c.sendall(data)
    except OSError:
        pass
    c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


# -- topology ------------------------------------------------------------------------------------


def sh(*argv: str, netns: str | None = None) -> str:
    proc = ns.run(list(argv), netns)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {netns}: {proc.stderr.strip()}")
    return proc.stdout


def delete_namespaces() -> None:
    for name in [NETNS, *POD_NS.values()]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


BRIDGE, BRIDGE_GW = "br0", "10.231.0.1"


def build_topology(bridge: bool = False) -> subprocess.Popen[str]:
    delete_namespaces()
    for name in [NETNS, *POD_NS.values()]:
        subprocess.run(["ip", "netns", "add", name], check=True)
        sh("ip", "link", "set", "lo", "up", netns=name)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=NETNS)
    if bridge:
        sh("ip", "link", "add", BRIDGE, "type", "bridge", netns=NETNS)
        sh("ip", "addr", "add", f"{BRIDGE_GW}/16", "dev", BRIDGE, netns=NETNS)
        sh("ip", "link", "set", BRIDGE, "up", netns=NETNS)
    for name, addr in PODS.items():
        gw = BRIDGE_GW if bridge else addr.rsplit(".", 1)[0] + ".1"
        sh("ip", "link", "add", f"v-{name}", "netns", NETNS, "type", "veth", "peer", "eth0", "netns", POD_NS[name])
        if bridge:  # one segment: pod to pod goes over the bridge
            sh("ip", "link", "set", f"v-{name}", "master", BRIDGE, netns=NETNS)
        else:
            sh("ip", "addr", "add", f"{gw}/24", "dev", f"v-{name}", netns=NETNS)
        sh("ip", "link", "set", f"v-{name}", "up", netns=NETNS)
        sh("ip", "addr", "add", f"{addr}/{16 if bridge else 24}", "dev", "eth0", netns=POD_NS[name])
        sh("ip", "link", "set", "eth0", "up", netns=POD_NS[name])
        sh("ip", "route", "add", "default", "via", gw, netns=POD_NS[name])
    server = subprocess.Popen(
        ["ip", "netns", "exec", POD_NS["web"], sys.executable, "-c", ECHO, str(WEB_PORT), str(OTHER_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def in_node(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


# -- processes -----------------------------------------------------------------------------------


class Stack:
    """The brain and agent processes in the node namespace, and ways to look at them."""

    def __init__(self, certs: Path, logs: Path, backend: str = "nftables", agent_args: tuple[str, ...] = ()) -> None:
        self.backend = backend
        self.agent_args = agent_args  # extra `stockade agent` flags
        self.certs = certs
        self.logs = logs
        self.brain: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.changes: list[dict[str, Any]] = []  # what the cluster went through, in order
        self.agent_runs = 0

    # brain
    def start_brain(self) -> None:
        self.brain = subprocess.Popen(
            [
                *in_node(sys.executable, BRAIN_SCRIPT),
                *("--port", str(BRAIN_PORT), "--certs", str(self.certs)),
                *("--admin-port", str(ADMIN_PORT), "--admin-token", ADMIN_TOKEN),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.brain.stdout is not None
        assert json.loads(self.brain.stdout.readline())["port"] == BRAIN_PORT
        for obj in self.changes:  # a restarted brain computes from the same API state
            self.brain_cmd({"op": "upsert", "obj": obj})

    def brain_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.brain is not None and self.brain.stdin and self.brain.stdout
        self.brain.stdin.write(json.dumps(cmd) + "\n")
        self.brain.stdin.flush()
        answer: dict[str, Any] = json.loads(self.brain.stdout.readline())
        return answer

    def change(self, obj: dict[str, Any]) -> None:
        self.changes.append(obj)
        self.brain_cmd({"op": "upsert", "obj": obj})

    def kill_brain(self) -> None:
        assert self.brain is not None
        self.brain.kill()
        self.brain.wait()
        self.brain = None

    def model(self) -> NodeModel:
        return engine(self.changes).model(NODE)

    # agent
    def start_agent(self, *extra: str) -> None:
        self.agent_runs += 1
        log = open(self.logs / f"agent-{self.agent_runs}.log", "wb")  # noqa: SIM115 (the process owns it)
        self.agent = subprocess.Popen(
            [
                *in_node(STOCKADE, "agent", "--node", NODE, "--brain", f"127.0.0.1:{BRAIN_PORT}"),
                *("--tls-dir", str(self.certs), "--backend", self.backend, "--http", HTTP),
                *("--verify-interval", "1", "--counters-interval", "0.3"),
                *self.agent_args,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop_agent(self) -> int:
        assert self.agent is not None
        self.agent.terminate()
        code = self.agent.wait(60)  # a bound for a hang: it takes a second or two, longer when busy
        self.agent = None
        return code

    def agent_log(self, run: int | None = None) -> str:
        return (self.logs / f"agent-{run or self.agent_runs}.log").read_text()

    # looking
    def http(self, path: str) -> tuple[int, str]:
        with ns.entered(NETNS):
            try:
                with urllib.request.urlopen(f"http://{HTTP}{path}", timeout=10) as r:  # a busy machine
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError as e:
                return 0, str(e)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        _, text = self.http("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def cli(self, *argv: str) -> Any:
        """The real `stockade` operator command against this brain's admin API, as JSON."""
        proc = subprocess.run(
            in_node(
                STOCKADE,
                *argv,
                "--brain",
                f"127.0.0.1:{ADMIN_PORT}",
                "--insecure",
                "--token",
                ADMIN_TOKEN,
                "-o",
                "json",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def node_status(self) -> dict[str, Any]:
        """This node's entry in `stockade nodes -o json`."""
        nodes: list[dict[str, Any]] = self.cli("nodes")["items"]
        return next(n for n in nodes if n["name"] == NODE)

    def kernel_problems(self, model: NodeModel | None = None) -> list[str]:
        backend = make_backend(self.backend, NETNS)
        try:
            return backend.verify(model or self.model())
        finally:
            backend.close()


def eventually(check: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Wait for ``check()`` to hold; the deadline is for a busy machine (processes start, the CLI
    runs), not a measure of how fast anything is."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running_stack(
    certs: Path,
    logs: Path,
    backend: str,
    *,
    bridge: bool = False,
    before_agent: Callable[[], object] = lambda: None,
    agent_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """The topology, a brain and an agent using ``backend``; everything removed afterwards.
    ``before_agent`` runs once the namespaces exist, before the agent starts."""
    write_bundle(certs, [NODE], ["localhost", "127.0.0.1"])
    server = build_topology(bridge)
    st = Stack(certs, logs, backend, agent_args)
    try:
        st.start_brain()
        before_agent()
        st.start_agent()
        yield st
    finally:
        for proc in (st.agent, st.brain, server):
            if proc is not None:
                proc.kill()
                proc.wait()
        if st.agent_runs:
            print(st.agent_log())
        delete_namespaces()


# -- clients -------------------------------------------------------------------------------------


def connect(src: str, port: int, timeout: float = 0.9) -> socket.socket | None:
    """A TCP connection from pod ``src`` to the web pod, or None when it does not complete
    within ``timeout`` (by default under the 1 s after which a denied SYN is retransmitted)."""
    with ns.entered(POD_NS[src]):
        s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((PODS["web"], port))
        return s
    except OSError:
        s.close()
        return None


def echoes(s: socket.socket, timeout: float = 5.0) -> bool:
    """The web pod's echo server answers on ``s``: generous by default, as the answer waits for
    that process to be scheduled (pass a short ``timeout`` where no answer is expected)."""
    s.settimeout(timeout)
    try:
        s.sendall(b"ping")
        return s.recv(16) == b"ping"
    except OSError:
        return False
