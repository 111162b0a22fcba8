"""The lab's supervisor: it starts the lab's processes and restarts what dies, as the kubelet does
for ``restartPolicy: Always``.

``python -m stockade.lab.supervisor --dir STATE_DIR``, started by `lab up` before anything else.
Every process of the lab (API server, Redis, brains, agents, labd, kube-proxy) is its child, so
it learns of every exit with its status (`waitpid`), and restarts the process with the same
command line (same ports, same flags) after a backoff: 0.2 s, doubling, capped at 5 s, reset
once a process ran 10 s. The kubelet waits 10 s doubling to 5 min, reset after 10 min: far too
slow for a lab whose tests kill things on purpose. A stopped process (SIGSTOP) is not dead.

Requests come on an abstract unix socket (one JSON line each way): ``spawn`` (start, or start
again, a named process), ``hold`` (its next exit is intentional, as scaling to 0: not
restarted until the next ``spawn``). What it runs, and each process's restarts, are written
to ``supervisor.json``, which `state.load` reads for the current pids and `lab status` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.lab import procs

log = logging.getLogger("stockade.lab.supervisor")

NAME = "supervisor"
STATUS_FILE = "supervisor.json"
BACKOFF_FIRST = 0.2
BACKOFF_CAP = 5.0
RESET_AFTER = 10.0  # a process that ran this long starts its backoff over
TICK = 0.05


def address(token: str) -> str:
    """The abstract socket's name (no file: no path-length limit, nothing to clean up)."""
    return f"\0stockade-lab-supervisor-{token}"


def status_path(state_dir: Path) -> Path:
    return state_dir / STATUS_FILE


def exit_reason(returncode: int) -> dict[str, Any]:
    """Popen's returncode (negative: the signal that ended it) as `lab status` shows it."""
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"reason": f"killed by {name}", "signal": sig, "code": None}
    return {"reason": f"exited with code {returncode}", "signal": None, "code": returncode}


@dataclass
class Child:
    name: str
    argv: list[str]
    netns: str | None
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    started: int = 0  # start time in clock ticks (procs.start_time), with the pid a unique name
    since: float = 0.0  # monotonic, for the backoff's reset
    restarts: int = 0
    delay: float = BACKOFF_FIRST
    held: bool = False  # an intentional stop: no restart until the next spawn
    due: float | None = None  # monotonic time of the pending restart
    last_exit: dict[str, Any] | None = None

    def state(self) -> str:
        if self.pid:
            return "running"
        return "held" if self.held else "backoff"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid or None,
            "started": self.started or None,
            "state": self.state(),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "restart_in": round(max(0.0, self.due - time.monotonic()), 3) if self.due else None,
        }


@dataclass
class Supervisor:
    dir: Path
    token: str
    children: dict[str, Child] = field(default_factory=dict)
    hooks: dict[str, Any] = field(default_factory=dict)  # name -> restarts.Hook
    tasks: set[asyncio.Future[None]] = field(default_factory=set)  # running `after` hooks

    def spawn(self, name: str, argv: list[str], netns: str | None) -> Child:
        child = self.children.get(name)
        if child is None or child.argv != argv or child.netns != netns:
            old = child
            child = Child(name, argv, netns)
            if old:
                child.restarts, child.last_exit = old.restarts, old.last_exit
            self.children[name] = child
        if child.pid:
            return child  # running already: the caller gets its pid
        child.held, child.due = False, None
        self._start(child)
        return child

    def _start(self, child: Child, extra: list[str] | None = None) -> None:
        argv = [*child.argv, *(extra or [])]
        child.proc = procs.popen(self.dir, self.token, child.name, argv, child.netns)
        child.pid = child.proc.pid
        child.started = procs.start_time(child.pid) or 0
        child.since = time.monotonic()
        self.write()

    def hold(self, name: str) -> None:
        child = self.children.get(name)
        if child:
            child.held, child.due = True, None
            self.write()

    def reap(self) -> None:
        # Through each child's Popen: a bare waitpid(-1) would race subprocess's own reaping.
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                self._exited(child, child.proc.returncode)

    def _exited(self, child: Child, returncode: int) -> None:
        now = time.monotonic()
        pid = child.pid
        child.last_exit = {**exit_reason(returncode), "at": time.time()}
        child.proc, child.pid, child.started = None, 0, 0
        if now - child.since >= RESET_AFTER:
            child.delay = BACKOFF_FIRST
        wait = child.delay
        if not child.held:
            child.due = now + wait
            child.delay = min(wait * 2, BACKOFF_CAP)
        log.warning(
            "%s (pid %s) %s%s",
            child.name,
            pid,
            child.last_exit["reason"],
            " (held: not restarted)" if child.held else f"; restarting in {wait:.1f} s",
        )
        self.write()

    async def restart_due(self) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.due is None or child.due > now or child.pid:
                continue
            child.due = None
            hook = self.hooks.get(child.name)
            extra = await asyncio.to_thread(hook.before, self.dir) if hook else []
            child.restarts += 1
            self._start(child, extra)
            log.info("%s restarted (restart %d, pid %d)", child.name, child.restarts, child.pid)
            if hook:
                task = asyncio.ensure_future(asyncio.to_thread(hook.after, self.dir, child.pid))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def write(self) -> None:
        doc = {"pid": os.getpid(), "processes": {n: c.to_json() for n, c in self.children.items()}}
        path = status_path(self.dir)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.replace(tmp, path)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = json.loads(await reader.readline())
            if req["op"] == "spawn":
                c = self.spawn(req["name"], list(req["argv"]), req.get("netns"))
                answer: dict[str, Any] = {"ok": True, "pid": c.pid, "started": c.started}
            elif req["op"] == "hold":
                self.hold(req["name"])
                answer = {"ok": True}
            else:
                answer = {"ok": False, "error": f"unknown op {req['op']!r}"}
        except Exception as e:  # a bad request must not end the supervisor
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()


async def main(state_dir: Path, token: str) -> None:
    from stockade.lab import restarts

    sup = Supervisor(state_dir, token, hooks=restarts.HOOKS)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address(token))
    server = await asyncio.start_unix_server(sup.handle, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sup.write()
    log.info("supervising the lab in %s", state_dir)
    async with server:
        while not stop.is_set():
            sup.reap()
            await sup.restart_due()
            try:
                await asyncio.wait_for(stop.wait(), TICK)
            except TimeoutError:
                pass
    # Stopping supervises nothing more; `lab down` stops the children (they carry the lab's token).
    log.info("stopped")


# -- the client side (the CLI) ------------------------------------------------------------------


class Unavailable(RuntimeError):
    pass


def request(token: str, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to the lab's supervisor; waits up to `timeout` for it to listen (it starts
    while `lab up` wires the network)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(address(token))
                s.sendall(json.dumps(req).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            answer: dict[str, Any] = json.loads(data)
            break
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise Unavailable("the lab's supervisor does not answer") from None
            time.sleep(0.02)
        except (OSError, ValueError) as e:
            raise Unavailable(f"the lab's supervisor: {e}") from None
    if not answer.get("ok"):
        raise Unavailable(f"the lab's supervisor: {answer.get('error')}")
    return answer


def read_status(state_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(status_path(state_dir).read_text())
        return data
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, type=Path)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(a.dir, os.environ[procs.TOKEN_ENV]))
