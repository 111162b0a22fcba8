"""Tampering repaired by the real `stockade agent` process itself (its tamper watcher), for both
backends, against a real brain (see `agent_stack.py`).

The agent runs with ``--verify-interval 3600``: the periodic check cannot have repaired anything
during a test, so a repair is the watcher's. That is asserted on the agent's own
``stockade_agent_tamper_repairs_total`` (only the watcher counts there), never on time; the
verdicts are checked with real connections afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from agent_brain import PODS, WEB_PORT
from agent_stack import NETNS, Stack, connect, echoes, eventually, running_stack

from stockade.agent import netns as ns
from stockade.agent.backends import names

pytestmark = pytest.mark.root

DEADLINE = 30.0  # seconds to wait for what should take milliseconds (a busy machine)


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    backend: str = request.param
    certs, logs = tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("logs")
    with running_stack(certs, logs, backend, agent_args=("--verify-interval", "3600")) as st:
        eventually(lambda: st.http("/readyz")[0] == 200, timeout=DEADLINE, what="/readyz to turn 200")
        yield st


def repairs(stack: Stack) -> float:
    return stack.metric("stockade_agent_tamper_repairs_total", backend=stack.backend)


def enforced(stack: Stack) -> None:
    """client may reach web's port, other may not (the model of `agent_brain.web_policy`)."""
    s = connect("client", WEB_PORT, timeout=2.0)
    assert s is not None and echoes(s, timeout=2.0), "an allowed connection was refused"
    s.close()
    assert connect("other", WEB_PORT) is None, "a denied connection went through"


def tamper(stack: Stack, *argv: str) -> None:
    before = repairs(stack)
    drift_before = stack.metric("stockade_agent_drift_repairs_total")
    ns.run(list(argv), NETNS, check=True)
    eventually(lambda: repairs(stack) > before, timeout=DEADLINE, what=f"the agent to repair {' '.join(argv)}")
    assert stack.metric("stockade_agent_drift_repairs_total") > drift_before
    assert stack.kernel_problems() == []
    enforced(stack)


def test_agent_enforces_with_the_watcher_running(stack: Stack) -> None:
    enforced(stack)
    assert stack.kernel_problems() == []
    assert repairs(stack) == 0


def test_our_rules_removed_are_repaired_by_the_agent(stack: Stack) -> None:
    if stack.backend == "nftables":
        tamper(stack, "nft", "delete", "table", "inet", "stockade")
    else:
        tamper(stack, "iptables", "-F")


def test_flush_ruleset_is_repaired_by_the_agent(stack: Stack) -> None:
    tamper(stack, "nft", "flush", "ruleset")


def test_a_rule_replaced_one_for_one_is_repaired_by_the_agent(stack: Stack) -> None:
    """web's deny tail turned into an accept, keeping its comment: rule count unchanged."""
    model = stack.model()
    cid = model.ingress[PODS["web"]]
    if stack.backend == "nftables":
        chain = names.nft_chain(cid)
        listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", chain], NETNS, check=True).stdout
        line = next(ln for ln in listing.splitlines() if "comment" in ln and "# handle " in ln)
        handle = line.rsplit("# handle ", 1)[1].strip()
        comment = line.split("comment ", 1)[1].split(" # handle", 1)[0]
        tamper(
            stack, "nft", "replace", "rule", "inet", "stockade", chain, "handle", handle, f"accept comment {comment}"
        )
    else:
        chain = names.ipt_chain(cid)
        rules = [
            ln for ln in ns.run(["iptables", "-S", chain], NETNS, check=True).stdout.splitlines() if ln.startswith("-A")
        ]
        number = next(i + 1 for i, ln in enumerate(rules) if "--comment deny" in ln)
        tamper(stack, "iptables", "-R", chain, str(number), "-m", "comment", "--comment", "deny", "-j", "ACCEPT")
