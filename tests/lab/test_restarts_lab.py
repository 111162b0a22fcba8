"""Issue 17 item 2 in the lab: the lab restarts what dies, as the kubelet would (real processes,
nftables, packets).

One 2-brain lab for the module; each test kills something with SIGKILL from outside (as the OOM
killer or a crash would) and waits for what must follow: the process is back (its restart count
and last exit in `lab status`), and enforcement is right (real probes). Every wait is for a state,
with generous deadlines; nothing asserts how long it took (benchmarks/lab_restart.py does).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from stockade.brain.drops.flows import FIELDS
from stockade.lab import lab as labcmd

from .lab_ops import (
    FRESH_PORTS,
    attempts,
    brain_counters,
    config,
    diff,
    drill_cluster,
    drill_only_from,
    enforced,
    lab_state,
    make_lab,
    pod_netns,
    poll,
    redis_top,
)
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

WAIT = 90.0
NODES = 2
SRV = {f"drill/srv-{i}" for i in range(1, NODES + 1)}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = make_lab(tmp_path_factory.mktemp("restarts-lab"), "st-rs-", (26700, 26799))
    lab.run("down", check=False)
    try:
        lab.run(
            "up",
            "--brains",
            "2",
            "--nodes",
            str(NODES),
            "--cluster",
            lab.write("c.yaml", drill_cluster(NODES)),
            timeout=240,
        )
        if not enforced(lab_state(lab)):
            pytest.fail("the lab started without its brains and agents: nothing would be enforced")
        lab.run("apply", "-f", lab.write("client.yaml", drill_only_from("client")), "--wait")
        yield lab
    finally:
        lab.run("down", check=False)


def _processes(lab: Lab) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in lab.json("status")["processes"]}


def _kill(lab: Lab, name: str) -> dict[str, Any]:
    """SIGKILL the process from outside; return its row as it was."""
    row = _processes(lab)[name]
    assert row["state"] == "running", row
    os.kill(row["pid"], signal.SIGKILL)
    return row


def _restarted(lab: Lab, name: str, before: dict[str, Any]) -> dict[str, Any]:
    """Wait until `name` runs again as a new process, counted as a restart after a SIGKILL."""
    row = poll(
        lambda: _processes(lab)[name],
        lambda r: r["state"] == "running" and r["pid"] != before["pid"] and r["restarts"] > before["restarts"],
        WAIT,
    )
    assert row["state"] == "running" and row["pid"] != before["pid"], f"{name} did not come back: {row}"
    assert row["restarts"] == before["restarts"] + 1
    assert row["last_exit"]["reason"] == "killed by SIGKILL" and row["last_exit"]["signal"] == 9
    return row


def _reached(lab: Lab, source: str) -> dict[str, bool]:
    results = labcmd.run_probe(config(lab), [80], ["TCP"], [f"drill/{source}"], sorted(SRV), 2.0, lambda _: None)
    return {r.dst: r.connected for r in results}


def _enforces(lab: Lab, allowed: str, blocked: str) -> bool:
    return _reached(lab, allowed) == dict.fromkeys(SRV, True) and _reached(lab, blocked) == dict.fromkeys(SRV, False)


def _wait_enforced(lab: Lab, allowed: str, blocked: str) -> None:
    assert poll(lambda: _enforces(lab, allowed, blocked), bool, WAIT, interval=0.5), (
        f"srv pods must take {allowed} only, on every node"
    )


def _set_policy(lab: Lab, role: str) -> None:
    lab.run("apply", "-f", lab.write(f"{role}.yaml", drill_only_from(role)))  # no --wait: a brain may be away


def test_killed_brains_come_back_and_enforce_a_change_made_meanwhile(lab: Lab) -> None:
    _wait_enforced(lab, "cli", "other")
    st = lab_state(lab)
    sup = st.processes["supervisor"][0]
    # Hold the supervisor so both brains are surely down together while the change is written.
    os.kill(sup, signal.SIGSTOP)
    try:
        before = {name: _kill(lab, name) for name in ("brain", "brain2")}
        rows = poll(lambda: _processes(lab), lambda p: all(p[n]["state"] == "down" for n in before), WAIT)
        assert all(rows[n]["state"] == "down" for n in before)
        _set_policy(lab, "other")
    finally:
        os.kill(sup, signal.SIGCONT)
    for name, row in before.items():
        _restarted(lab, name, row)
    _wait_enforced(lab, "other", "cli")
    brains = poll(lambda: lab.json("brain", "list"), lambda b: all(r["state"] == "running" for r in b), WAIT)
    assert [b["state"] for b in brains] == ["running", "running"]
    table = lab.run("status").stdout
    assert "killed by SIGKILL" in table and "RESTARTS" in table


def test_killed_agent_comes_back_and_no_denied_probe_passes(lab: Lab) -> None:
    _set_policy(lab, "client")
    _wait_enforced(lab, "cli", "other")
    assert _reached(lab, "other") == dict.fromkeys(SRV, False)
    before = _kill(lab, "agent-node-1")
    seen: list[dict[str, bool]] = []

    def back() -> bool:
        seen.append(_reached(lab, "other"))  # probing all along: the kernel's rules stay
        return bool(_processes(lab)["agent-node-1"]["restarts"] > before["restarts"])

    poll(back, bool, WAIT, interval=0.2)
    _restarted(lab, "agent-node-1", before)
    # Back in sync with its brain: served again, and a change reaches node-1 too.
    brains = poll(lambda: lab.json("brain", "list"), lambda b: any("node-1" in (r["nodes"] or ()) for r in b), WAIT)
    assert any("node-1" in (r["nodes"] or ()) for r in brains)
    seen.append(_reached(lab, "other"))
    assert len(seen) >= 2 and all(s == dict.fromkeys(SRV, False) for s in seen), f"a denied probe passed: {seen}"
    _wait_enforced(lab, "cli", "other")


def test_killed_api_server_comes_back_and_brains_converge(lab: Lab) -> None:
    _set_policy(lab, "client")
    _wait_enforced(lab, "cli", "other")
    _restarted(lab, "apiserver", _kill(lab, "apiserver"))
    # The restarted API server has the lab's objects again, and a change after it is enforced.
    _set_policy(lab, "other")
    _wait_enforced(lab, "other", "cli")
    _set_policy(lab, "client")
    _wait_enforced(lab, "cli", "other")


def test_killed_redis_comes_back_and_drops_are_still_counted(lab: Lab) -> None:
    _set_policy(lab, "client")
    _wait_enforced(lab, "cli", "other")
    _restarted(lab, "redis", _kill(lab, "redis"))
    st = lab_state(lab)
    netns, src_ip = pod_netns(st, "drill/other")
    _, dst_ip = pod_netns(st, "drill/srv-1")
    before_brain = brain_counters(st, "stockade_brain_blocked_connections")
    attempts(netns, src_ip, dst_ip, "TCP", 80, range(FRESH_PORTS, FRESH_PORTS + 5))  # not probes' ports
    # The restarted Redis is empty: every attempt lands in it, and in the brains' counter.
    key = ("ingress", "TCP", "80", "drill", "srv-1", "drill", "other")
    top = poll(lambda: redis_top(lab_state(lab), FIELDS), lambda t: t.get(key, 0) >= 5, WAIT)
    assert top.get(key) == 5, top
    counted = poll(
        lambda: diff(brain_counters(lab_state(lab), "stockade_brain_blocked_connections"), before_brain),
        lambda d: sum(d.values()) >= 5,
        WAIT,
    )
    assert sum(counted.values()) == 5


def test_brain_stop_is_intentional_and_start_brings_it_back(lab: Lab) -> None:
    lab.run("brain", "stop", "1", "--signal", "KILL")
    # The supervisor holds it: it stays down however often we look (its backoff is 0.2 s).
    for _ in range(10):
        row = _processes(lab)["brain"]
        assert row["state"] == "held", row
        assert lab.json("brain", "list")[0]["state"] == "down"
    lab.run("brain", "start", "1")
    row = _processes(lab)["brain"]
    assert row["state"] == "running"
    assert lab.json("brain", "list")[0]["state"] == "running"
    # Started again by hand and killed from outside: restarted by itself, as any other.
    _restarted(lab, "brain", _kill(lab, "brain"))


def test_down_stops_everything(lab: Lab) -> None:
    st = lab_state(lab)
    pids = [p["pid"] for p in _processes(lab).values() if p["pid"]]
    assert st.processes["supervisor"][0] in pids
    lab.run("down")
    assert not any(os.path.exists(f"/proc/{pid}") and _not_zombie(pid) for pid in pids)
    assert lab.namespaces() == []


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
