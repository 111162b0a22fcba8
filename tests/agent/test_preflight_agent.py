"""`stockade agent` as a real process on a node whose pods share a Linux bridge (see
`agent_stack.py`, ``bridge=True``), against a real brain. Traffic between two pods on the bridge
reaches the rules only with br_netfilter and ``net.bridge.bridge-nf-call-iptables=1``; with it at
0 the agent must not say it is ready, and must say why: on /readyz, in its metrics, and to the
brain (the real `stockade nodes` and `stockade policies`). The tests run in order."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from agent_brain import NODE, WEB_PORT
from agent_stack import NETNS, Stack, connect, echoes, eventually, running_stack, sh

from stockade.agent import netns as ns

IPT = "net.bridge.bridge-nf-call-iptables"


def sysctl_value() -> str:
    return ns.run(["sysctl", "-n", IPT], NETNS).stdout.strip()


def bridge_off() -> None:
    sh("sysctl", "-qw", f"{IPT}=0", netns=NETNS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_stack(
        tmp_path_factory.mktemp("certs"),
        tmp_path_factory.mktemp("logs"),
        "nftables",
        bridge=True,
        before_agent=bridge_off,  # a node where "the agent may not set it": --no-fix-sysctls
        agent_args=("--no-fix-sysctls", "--preflight-interval", "0.3"),
    ) as st:
        yield st


def readyz(stack: Stack) -> tuple[int, str]:
    return stack.http("/readyz")


@pytest.mark.root
def test_a_bridge_without_bridge_netfilter_is_not_ready_and_says_what_to_enable(stack: Stack) -> None:
    # The rules are in the kernel, but the node is not ready, and says exactly why.
    eventually(lambda: stack.http("/healthz")[0] == 200, timeout=30, what="the agent's HTTP endpoints")
    eventually(lambda: stack.metric("stockade_agent_applied_generation") >= 1, what="the first generation applied")
    assert stack.kernel_problems() == []
    code, body = readyz(stack)
    assert code == 503, body
    for text in (
        "bridge br0 (ports v-client, v-other, v-web",
        f"{IPT} is 0",
        f"sysctl -w {IPT}=1",
        "--no-fix-sysctls",
    ):
        assert text in body, body
    assert "no rules from the brain yet" not in body  # the rules are in: that is not the reason
    assert stack.metric("stockade_agent_ready") == 0
    assert stack.metric("stockade_agent_not_ready", reason="bridge_sysctl") == 1
    assert stack.metric("stockade_agent_not_ready", reason="no_rules") == 0
    assert sysctl_value() == "0"  # it was told not to touch the node
    assert "not ready" in stack.agent_log() and IPT in stack.agent_log()

    # The reason is real: bridged pod traffic bypasses the rules (the policy admits only client).
    s = connect("other", WEB_PORT)
    assert s is not None and echoes(s), "expected the bridge to bypass the rules with the sysctl at 0"
    s.close()

    # The brain knows: `stockade nodes` says NOT READY and why; the policy is not realized there.
    # The problems come with the hello, the ack of the snapshot after it: both are awaited.
    def reported() -> bool:
        node = stack.node_status()
        return bool(node.get("problems")) and node["appliedGeneration"] == node["desiredGeneration"]

    eventually(reported, what="the problems and the ack in stockade nodes")
    node = stack.node_status()
    assert node["connected"] is True and node["ready"] is False
    assert any(f"{IPT} is 0" in p and f"sysctl -w {IPT}=1" in p for p in node["problems"])
    assert node["appliedGeneration"] == node["desiredGeneration"]  # acked, and still not enforcing
    (policy,) = stack.cli("policies")["items"]
    assert policy["nodesApplied"] == 0 and policy["nodesPending"] == [NODE]


@pytest.mark.root
def test_fixed_by_hand_the_node_becomes_ready_by_itself(stack: Stack) -> None:
    sh("sysctl", "-qw", f"{IPT}=1", netns=NETNS)
    eventually(lambda: readyz(stack)[0] == 200, what="/readyz to turn 200 after the fix")
    assert stack.metric("stockade_agent_ready") == 1
    assert stack.metric("stockade_agent_not_ready", reason="bridge_sysctl") == 0
    eventually(lambda: stack.node_status().get("ready") is True, what="stockade nodes to say ready")
    assert not stack.node_status().get("problems")
    (policy,) = stack.cli("policies")["items"]
    assert policy["nodesApplied"] == 1 and policy["nodesPending"] == []
    # and now the bridge's traffic meets the rules
    assert connect("other", WEB_PORT) is None
    s = connect("client", WEB_PORT)
    assert s is not None and echoes(s)
    s.close()


@pytest.mark.root
def test_allowed_to_fix_the_agent_sets_the_sysctl_and_keeps_it_set(stack: Stack) -> None:
    assert stack.stop_agent() == 0
    bridge_off()
    stack.agent_args = ("--preflight-interval", "0.3")  # fixing allowed (the default)
    stack.start_agent()
    eventually(lambda: readyz(stack)[0] == 200, what="the agent to fix the node and be ready")
    assert sysctl_value() == "1"
    assert f"sysctl -w {IPT}=1" in stack.agent_log()
    assert connect("other", WEB_PORT) is None

    # Someone flips it back: the periodic re-check sets it again.
    fixes = stack.agent_log().count(f"sysctl -w {IPT}=1")
    bridge_off()
    eventually(lambda: stack.agent_log().count(f"sysctl -w {IPT}=1") > fixes, what="the re-check to fix it again")
    eventually(lambda: sysctl_value() == "1", what="the sysctl set again")
    time.sleep(0.1)
    assert readyz(stack)[0] == 200
    eventually(lambda: stack.node_status().get("ready") is True, what="stockade nodes to say ready")
