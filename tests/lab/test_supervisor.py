"""The lab's supervisor on real processes (no root, no lab): restarts with backoff, holds, exit
reasons, and the status file `lab status` reads. Waits are for states, never for elapsed time."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from stockade.lab import procs, supervisor
from stockade.lab.supervisor import BACKOFF_CAP, BACKOFF_FIRST, Supervisor, exit_reason

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _drive(sup: Supervisor, until: object, rounds: int = 2000) -> None:
    """Run the supervisor's loop (reap, restart what is due) until `until()` holds."""

    async def go() -> None:
        for _ in range(rounds):
            sup.reap()
            await sup.restart_due()
            if until():  # type: ignore[operator]
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the supervisor did not get there")

    asyncio.run(go())


def test_exit_reasons() -> None:
    assert exit_reason(-9) == {"reason": "killed by SIGKILL", "signal": 9, "code": None}
    assert exit_reason(3) == {"reason": "exited with code 3", "signal": None, "code": 3}


def test_killed_process_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, "tok")
    child = sup.spawn("sleeper", SLEEP, None)
    try:
        delays = []
        for n in range(1, 4):
            pid = child.pid
            os.kill(pid, signal.SIGKILL)
            _drive(sup, lambda pid=pid: child.pid not in (0, pid))
            assert child.restarts == n and child.last_exit is not None
            assert child.last_exit["reason"] == "killed by SIGKILL"
            delays.append(child.delay)
        assert delays == [BACKOFF_FIRST * 2, BACKOFF_FIRST * 4, BACKOFF_FIRST * 8]  # the next waits
        doc = supervisor.read_status(tmp_path)["processes"]["sleeper"]
        assert doc["pid"] == child.pid and doc["restarts"] == 3 and doc["state"] == "running"
        assert procs.has_token(child.pid, "tok")
    finally:
        os.kill(child.pid, signal.SIGKILL)


def test_backoff_is_capped(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, "tok")
    child = sup.spawn("sleeper", SLEEP, None)
    child.delay = BACKOFF_CAP
    os.kill(child.pid, signal.SIGKILL)
    child.proc.wait()  # type: ignore[union-attr]
    sup.reap()
    assert child.state() == "backoff" and child.delay == BACKOFF_CAP


def test_a_held_process_stays_down_until_spawned_again(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, "tok")
    child = sup.spawn("brain", SLEEP, None)
    sup.hold("brain")
    proc = child.proc
    assert proc is not None
    os.kill(child.pid, signal.SIGTERM)
    proc.wait()
    _drive(sup, lambda: child.last_exit is not None)
    assert child.state() == "held" and child.due is None and child.restarts == 0
    assert supervisor.read_status(tmp_path)["processes"]["brain"]["state"] == "held"
    again = sup.spawn("brain", SLEEP, None)
    try:
        assert again is child and child.state() == "running" and not child.held
    finally:
        os.kill(child.pid, signal.SIGKILL)


def test_a_stopped_process_is_not_dead(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, "tok")
    child = sup.spawn("frozen", SLEEP, None)
    try:
        os.kill(child.pid, signal.SIGSTOP)
        _drive(sup, lambda: procs.stopped(child.pid))
        sup.reap()
        assert child.state() == "running" and child.restarts == 0
    finally:
        os.kill(child.pid, signal.SIGKILL)


def test_backoff_starts_over_after_a_long_run(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, "tok")
    child = sup.spawn("sleeper", SLEEP, None)
    child.delay = BACKOFF_CAP
    child.since -= supervisor.RESET_AFTER  # as if it had run that long
    os.kill(child.pid, signal.SIGKILL)
    child.proc.wait()  # type: ignore[union-attr]
    sup.reap()
    assert child.due is not None and child.delay == BACKOFF_FIRST * 2  # waited BACKOFF_FIRST
