"""The lab daemon alone, as root: pod servers follow the state file; the relay carries a node's
loopback to ours (the agents' way to the brain)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.lab import netcmds, netio, nsenter, probe, procs, state
from stockade.lab.state import LabState
from stockade.lab.topology import PodRequest, empty_plan, place, without

pytestmark = pytest.mark.root
PREFIX = f"st{os.environ.get('STOCKADE_TEST_SLOT', '')}-lab-d-"


@pytest.fixture(params=["ipv4", "dual"])
def wired(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, LabState]]:
    plan = place(
        empty_plan(PREFIX, 2, request.param),
        [PodRequest("x", "a", {}, [("TCP", 80), ("UDP", 80)]), PodRequest("x", "b", {}, [("TCP", 81)])],
    )
    st = LabState(token="daemon-test", prefix=PREFIX, plan=plan)
    netio.run_batch(netcmds.root_namespaces(plan))
    netio.set_sysctls([n.netns for n in plan.nodes], netcmds.node_sysctls(plan))
    netio.run_batch(netcmds.root_links(plan))
    netio.run_scripts(netcmds.ns_scripts(plan))
    netio.settle(netcmds.settle_checks(plan))
    try:
        yield tmp_path, st
    finally:
        procs.stop(procs.marked(st.token))
        netio.delete_namespaces(n for n in nsenter.list_netns() if n.startswith(PREFIX))


def _start(d: Path, st: LabState) -> int:
    pid = procs.spawn(d, st.token, "labd", procs.python_argv("stockade.lab.labd", "--dir", str(d)))
    serial = st.serial
    procs.wait_until(lambda: int((d / "labd.ready").read_text()) >= serial, "labd", 20, pid, d / "logs/labd.log")
    return pid


def _reach(st: LabState, key: str, proto: str, port: int) -> bool:
    """Whether the external host reaches the pod's port, over every family of the lab (the
    answer must be the same in each: the pod servers listen on all of them)."""
    assert st.plan is not None
    pod = st.plan.pod(key)
    assert pod is not None
    # patient (the default is 1 s): an answer must not be missed on a busy machine; a port nothing
    # serves answers TCP with a reset at once
    answers = {ip: asyncio.run(probe.probe_one(st.plan.external.netns, ip, proto, port, 5.0)) for ip in pod.ips}
    assert len(set(answers.values())) == 1, answers
    return answers[pod.ip]


def test_pod_servers_follow_the_state_file(wired: tuple[Path, LabState]) -> None:
    d, st = wired
    state.save(d / "state.json", st)
    pid = _start(d, st)
    assert _reach(st, "x/a", "TCP", 80) and _reach(st, "x/a", "UDP", 80) and _reach(st, "x/b", "TCP", 81)
    assert not _reach(st, "x/a", "TCP", 81)  # not declared, not served
    assert st.plan is not None
    gone = without(st.plan, {"x/b"})
    kept_b = st.plan.pod("x/b")
    st.plan = gone
    state.save(d / "state.json", st)
    os.kill(pid, signal.SIGHUP)
    procs.wait_until(lambda: int((d / "labd.ready").read_text()) >= st.serial, "reload", 10, pid)
    assert kept_b is not None  # its namespace is still there, but nothing serves it any more
    assert not any(asyncio.run(probe.probe_one(gone.external.netns, ip, "TCP", 81)) for ip in kept_b.ips)
    assert _reach(st, "x/a", "TCP", 80)


def test_relay_carries_a_node_loopback_to_ours(wired: tuple[Path, LabState]) -> None:
    d, st = wired
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.listen()
        st.relays = [port]
        state.save(d / "state.json", st)
        _start(d, st)

        def echo_once() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        t = threading.Thread(target=echo_once, daemon=True)
        t.start()
        assert st.plan is not None
        client = nsenter.socket_in(st.plan.nodes[1].netns, socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.settimeout(5)
            client.connect(("127.0.0.1", port))  # the node's own loopback
            client.sendall(b"hello brain")
            assert client.recv(100) == b"HELLO BRAIN"
        t.join(5)


def test_settle_names_a_path_that_never_answers(wired: tuple[Path, LabState]) -> None:
    _, st = wired
    assert st.plan is not None
    if "ipv6" not in st.plan.families:
        assert netcmds.settle_checks(st.plan) == []
        return
    checks = netcmds.settle_checks(st.plan)
    netio.settle(checks)  # the lab's own paths all answer (again)
    nobody = ("the external host to a pod nobody has", st.plan.external.netns, "fd00:10:244:1::99")
    with pytest.raises(
        netio.NetError, match=r"no answer within 0 s from the external host to a pod nobody has \(fd00:10:244:1::99\)"
    ):
        netio.settle([*checks, nobody], deadline=0)
