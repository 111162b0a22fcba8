"""`stockade agent --backend iptables` as a real process against a real brain (see
`agent_stack.py`): the same composition over iptables + ipset, kept short."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from agent_brain import OTHER_PORT, PODS, WEB_PORT, web_policy
from agent_stack import NETNS, Stack, connect, echoes, eventually, running_stack, sh


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_stack(tmp_path_factory.mktemp("certs"), tmp_path_factory.mktemp("logs"), "iptables") as st:
        yield st


def our_state() -> str:
    """Our chains and sets as the kernel holds them, without counters (which packets change)."""
    rules = sh("iptables-save", "-t", "filter", netns=NETNS)
    ours = [re.sub(r"\[\d+:\d+\]", "", line) for line in rules.splitlines() if "STK-" in line]
    sets = [line for line in sh("ipset", "save", netns=NETNS).splitlines() if "STK-" in line]
    return "\n".join(sorted(ours) + sorted(sets))


@pytest.mark.root
def test_iptables_agent_enforces_counts_and_restarts_without_change(stack: Stack) -> None:
    eventually(lambda: stack.http("/readyz")[0] == 200, what="/readyz to turn 200")
    assert stack.kernel_problems() == []
    assert "STK-" in sh("iptables-save", "-t", "filter", netns=NETNS)
    s = connect("client", WEB_PORT)
    assert s is not None and echoes(s)

    def kernel() -> float:
        return stack.metric("stockade_agent_blocked_connections_kernel_total", direction="ingress")

    def nflog() -> float:
        return stack.metric("stockade_agent_blocked_connections_total", direction="ingress")

    base_kernel, base_nflog = kernel(), nflog()
    for _ in range(3):
        assert connect("other", WEB_PORT) is None
    eventually(lambda: kernel() - base_kernel >= 3 and nflog() - base_nflog >= 3, what="blocked counts")
    assert (kernel() - base_kernel, nflog() - base_nflog) == (3, 3)

    # The rules can be in the kernel before the agent has ended the flows they forbid: wait for
    # the generation, which the agent counts applied only after its conntrack clean-up.
    generation = stack.metric("stockade_agent_applied_generation")
    stack.change(web_policy(OTHER_PORT))
    eventually(lambda: stack.metric("stockade_agent_applied_generation") > generation, what="the new generation")
    assert stack.kernel_problems() == []
    assert not echoes(s, timeout=1.0), "an established connection the new policy forbids kept running"
    s.close()

    before = our_state()
    assert stack.stop_agent() == 0
    assert our_state() == before  # fail static
    stack.start_agent()
    eventually(lambda: stack.http("/readyz")[0] == 200, what="the restarted agent to be ready")
    assert our_state() == before
    assert stack.metric("stockade_agent_transactions_total", result="failed") == 0
    t = connect("client", OTHER_PORT)
    assert t is not None and echoes(t)
    t.close()
    assert connect("client", WEB_PORT) is None
    assert PODS["web"] in sh("ipset", "save", netns=NETNS)
