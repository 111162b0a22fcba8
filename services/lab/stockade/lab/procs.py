"""Starting the lab's long-running processes detached, and finding and stopping them again.

Every process is recorded with its pid and start time (so a recycled pid of some unrelated
process is never signalled), and gets ``STOCKADE_LAB_TOKEN=<token>`` in its environment, so
`marked` also finds processes whose pid never reached the state file (a crash mid-`up`).
Programs that rewrite their process title (redis-server) clobber that environment: for them the
recorded pid is what counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TOKEN_ENV = "STOCKADE_LAB_TOKEN"


class ProcessError(RuntimeError):
    pass


def log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def spawn(
    state_dir: Path,
    token: str,
    name: str,
    argv: Sequence[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start `argv` detached (own session, output to logs/<name>.log); inside `netns` if given."""
    return popen(state_dir, token, name, argv, netns, env).pid


def popen(
    state_dir: Path,
    token: str,
    name: str,
    argv: Sequence[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """As `spawn`, keeping the Popen: its owner learns the exit status (the lab's supervisor)."""
    log = log_path(state_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)  # `ip netns exec` execs
    child_env = {**os.environ, **(env or {}), TOKEN_ENV: token}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
    return proc


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def has_token(pid: int, token: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in environ.split(b"\0")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, a name no other process gets."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, started: int | None) -> bool:
    return started is not None and start_time(pid) == started


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): not dead, and not to be restarted."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def marked(token: str) -> list[int]:
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and has_token(int(p.name), token)
    ]


def stop(pids: Sequence[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds; return pids that survived."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        _reap(left)
        left = [p for p in left if alive(p)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    _reap(left)
    return [p for p in left if alive(p)]


def _reap(pids: Sequence[int]) -> None:
    for pid in pids:  # our own children would linger as zombies otherwise
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, pid: int | None = None, log: Path | None = None
) -> None:
    """Poll `check` until it holds; fail early, with the log's tail, if `pid` dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not ready yet; any error means "try again"
            pass
        if pid is not None and not alive(pid):
            _reap([pid])
            raise ProcessError(f"{what}: the process exited. Its log ({log}):\n{tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise ProcessError(f"{what}: not ready after {timeout:.0f} s" + (f"; see {log}" if log else ""))
        time.sleep(0.05)
