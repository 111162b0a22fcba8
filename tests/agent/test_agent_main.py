"""`stockade agent` with nftables as a real process in a node's network namespace, against a
real brain (see `agent_stack.py`). The tests run in order and share the running processes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from agent_brain import NODE, OTHER_PORT, PODS, WEB_PORT, web_policy
from agent_stack import NETNS, STOCKADE, Stack, connect, echoes, eventually, in_node, running_stack, sh

from stockade.agent import netns as ns
from stockade.agent.backends import names, nft_render


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_stack(tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("logs"), "nftables") as st:
        yield st


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.root
def test_agent_applies_the_first_snapshot_and_becomes_ready(stack: Stack) -> None:
    eventually(lambda: stack.http("/readyz")[0] == 200, what="/readyz to turn 200")
    assert stack.http("/healthz")[0] == 200
    assert stack.kernel_problems() == []
    assert "table inet stockade" in sh("nft", "list", "tables", netns=NETNS)
    assert stack.metric("stockade_agent_brain_connected") == 1
    assert stack.metric("stockade_agent_applied_generation") >= 1
    assert stack.metric("stockade_agent_transactions_total", result="ok") >= 1
    assert stack.metric("stockade_agent_apply_seconds_count") >= 1
    log = stack.agent_log()
    assert "connected to the brain" in log and "applied generation" in log
    # enforced on real packets: client may reach web's port, other may not
    s = connect("client", WEB_PORT)
    assert s is not None and echoes(s)
    s.close()
    assert connect("other", WEB_PORT) is None


@pytest.mark.root
def test_blocked_connections_are_counted_exactly_and_reach_the_brain(stack: Stack) -> None:
    def at_brain() -> list[list[Any]]:
        return [e for e in stack.brain_cmd({"op": "drops"})["events"] if e[0] == PODS["other"]]

    before = at_brain()

    def kernel() -> float:
        return stack.metric("stockade_agent_blocked_connections_kernel_total", direction="ingress")

    def nflog() -> float:
        return stack.metric("stockade_agent_blocked_connections_total", direction="ingress", protocol="TCP")

    base_kernel, base_nflog = kernel(), nflog()
    for _ in range(3):  # three connections, each given up before its SYN is retransmitted
        assert connect("other", WEB_PORT, timeout=0.3) is None
    eventually(lambda: kernel() - base_kernel >= 3, what="the kernel's deny counters in /metrics")
    eventually(lambda: nflog() - base_nflog >= 3, what="the NFLOG events in /metrics")
    time.sleep(0.5)  # nothing more may trickle in
    assert kernel() - base_kernel == 3  # exact: once per connection
    assert nflog() - base_nflog == 3
    assert stack.metric("stockade_agent_nflog_events_lost_total") == 0
    eventually(lambda: len(at_brain()) - len(before) >= 3, what="the drop reports at the brain")
    events = at_brain()[len(before) :]
    assert len(events) == 3
    assert all(e[1] == PODS["web"] and e[2] == WEB_PORT and e[5] == NODE for e in events)
    assert {e[4] for e in events} == {stack.model().ingress[PODS["web"]]}  # the denying pod chain


@pytest.mark.root
def test_a_policy_change_reaches_the_kernel_and_ends_forbidden_connections(stack: Stack) -> None:
    s = connect("client", WEB_PORT)
    assert s is not None and echoes(s)
    generation = stack.metric("stockade_agent_applied_generation")
    stack.change(web_policy(OTHER_PORT))  # web now accepts OTHER_PORT only
    eventually(lambda: stack.metric("stockade_agent_applied_generation") > generation, what="the new generation")
    assert stack.kernel_problems() == []
    assert not echoes(s, timeout=1.0), "an established connection the new policy forbids kept running"
    s.close()
    assert stack.metric("stockade_agent_conntrack_entries_deleted_total") >= 1
    assert connect("client", WEB_PORT) is None
    t = connect("client", OTHER_PORT)
    assert t is not None and echoes(t)
    t.close()


class NftMonitor:
    """`nft monitor` in the node namespace: every change to the ruleset, as it happens."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(in_node("nft", "monitor"), stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.3)  # let it subscribe

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(2)


@pytest.mark.root
def test_restarting_the_agent_does_not_flap_and_drift_is_repaired(stack: Stack) -> None:
    model = stack.model()
    monitor = NftMonitor()
    try:
        assert stack.stop_agent() == 0
        assert "stays in force in the kernel (fail static)" in stack.agent_log()
        assert stack.kernel_problems(model) == []  # a stopped agent leaves the rules
        stack.start_agent()
        eventually(lambda: stack.http("/readyz")[0] == 200, what="the restarted agent to be ready")
        time.sleep(1.5)  # past one verify interval
        # Our table only: a verify reads its fixed chains' reference from a scratch table (no hook,
        # deleted at once, once per backend: `NftablesBackend.fixed_reference`); the generation
        # lines of those transactions name no object.
        ours = [ln for ln in monitor.lines if "inet stockade_ref" not in ln and not ln.startswith("# new generation")]
        assert ours == [], f"the restart changed the kernel: {ours[:5]}"
        assert stack.metric("stockade_agent_drift_repairs_total") == 0

        # someone empties our address set by hand (its elements in the shared hosts set) and the
        # rule using it: repaired within the verify interval
        chain = names.nft_chain(model.ingress[PODS["web"]])
        (set_id,) = model.chains[model.ingress[PODS["web"]]].set_refs()
        elems = nft_render.tagged(nft_render.set_forms(set_id, model.sets[set_id])[4], names.nft_tag(set_id))
        script = f"flush chain inet stockade {chain}\ndelete element inet stockade hosts4 {{ {', '.join(elems)} }}\n"
        assert ns.run(["nft", "-f", "-"], NETNS, input=script).returncode == 0
        # (no look at the damage here: the tamper watcher repairs it within milliseconds, so the
        # monitor below is the witness that it happened)
        eventually(lambda: stack.metric("stockade_agent_drift_repairs_total") >= 1, timeout=5, what="a drift repair")
        assert stack.kernel_problems(model) == []
        assert any("delete" in line for line in monitor.lines)  # the monitor saw changes: it works
        # the periodic check or the watcher logs it; the counter moves in the repair itself, the log
        # line a moment later on the event loop, so the log is awaited, not read once
        eventually(
            lambda: any(m in stack.agent_log() for m in ("drift repaired", "tampering repaired")),
            timeout=5,
            what="the repair in the agent's log",
        )
    finally:
        monitor.stop()
    t = connect("client", OTHER_PORT)
    assert t is not None and echoes(t)
    t.close()


@pytest.mark.root
def test_the_rules_stay_while_the_brain_is_away(stack: Stack) -> None:
    model = stack.model()
    stack.kill_brain()
    eventually(lambda: stack.metric("stockade_agent_brain_connected") == 0, what="the agent to see the brain gone")
    # the gauge drops a moment before the line is written: the log is awaited, not read once
    eventually(lambda: "fail static" in stack.agent_log(), what="the agent to log that it fails static")
    assert stack.kernel_problems(model) == []
    assert stack.http("/readyz")[0] == 200  # still enforcing
    assert connect("other", OTHER_PORT) is None
    # an agent started while the brain is away changes nothing, and is not ready
    assert stack.stop_agent() == 0
    stack.start_agent()
    eventually(lambda: stack.http("/readyz")[0] == 503, what="the new agent's /readyz")
    assert "no rules from the brain yet" in stack.http("/readyz")[1]
    time.sleep(1.5)  # past a verify interval and several reconnect attempts
    assert stack.kernel_problems(model) == []
    assert connect("other", OTHER_PORT) is None
    t = connect("client", OTHER_PORT)
    assert t is not None and echoes(t)
    t.close()
    # the brain comes back (a new process, a new epoch): ready again, and changes follow
    stack.start_brain()
    eventually(lambda: stack.http("/readyz")[0] == 200, timeout=15, what="the agent to get its rules")
    assert stack.metric("stockade_agent_brain_connected") == 1
    stack.change(web_policy(WEB_PORT))
    eventually(lambda: stack.kernel_problems() == [], what="the change after the reconnect")
    s = connect("client", WEB_PORT)
    assert s is not None and echoes(s)
    s.close()


def test_plain_text_needs_insecure() -> None:
    proc = subprocess.run(
        [STOCKADE, "agent", "--node", "n1", "--brain", "127.0.0.1:26999", "--http", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "no TLS credentials" in proc.stderr and "--insecure" in proc.stderr
