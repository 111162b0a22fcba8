"""The node preflight: the pure checks over facts, then the real edges in network namespaces
(bridges, br_netfilter sysctls, IPv6 switched off) and an in-process agent that refuses a
generation naming IPv6 pods on a node without IPv6, until the node has it again."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest

from stockade.agent import netns as ns
from stockade.agent import preflight as pf
from stockade.agent.backends.base import Backend, MemoryDataplane, families_of, node_needs
from stockade.agent.main import AgentConfig, NodeAgent
from stockade.brain.fanout import FanOut
from stockade.brain.sync_service import serve_sync
from stockade.model import Chain, Direction, NodeModel, Rule

_SLOT = os.environ.get("STOCKADE_TEST_SLOT", "")
NODE_NS = f"st{_SLOT}-pf-node"
POD_NS = [f"st{_SLOT}-pf-p{i}" for i in range(2)]
IPT, IP6T = pf.BRIDGE_SYSCTLS

ON = {IPT: "1", IP6T: "1"}
BR = (pf.Bridge("cni0", ("veth1", "veth2")),)


def facts(**kw: object) -> pf.NodeFacts:
    base: dict[str, object] = {"bridges": BR, "br_netfilter": True, "sysctls": ON, "ipv6": "enabled"}
    base.update(kw)
    return pf.NodeFacts(**base)  # type: ignore[arg-type]


# -- pure checks ---------------------------------------------------------------------------------


def test_a_bridge_needs_br_netfilter_and_both_sysctls() -> None:
    assert pf.bridge_needs(facts()) == []
    assert pf.bridge_needs(facts(bridges=(pf.Bridge("docker0", ()),), sysctls={})) == []  # no ports: no pods
    assert pf.bridge_needs(facts(bridges=())) == []

    (p,) = pf.bridge_needs(facts(sysctls={IPT: "0", IP6T: "1"}))
    assert p.code == pf.BRIDGE_SYSCTL and p.fixes == (pf.SetSysctl(IPT, "1"),)
    assert "cni0 (ports veth1, veth2)" in p.message and f"{IPT} is 0" in p.message
    assert f"sysctl -w {IPT}=1" in p.message and IP6T not in p.message

    (p,) = pf.bridge_needs(facts(sysctls={IPT: "1", IP6T: "0"}))
    assert p.fixes == (pf.SetSysctl(IP6T, "1"),)

    (p,) = pf.bridge_needs(facts(br_netfilter=False, sysctls={}))
    assert p.code == pf.BR_NETFILTER
    assert f"modprobe br_netfilter; sysctl -w {IPT}=1; sysctl -w {IP6T}=1" in p.message
    assert p.fixes == (pf.LoadModule("br_netfilter"), pf.SetSysctl(IPT, "1"), pf.SetSysctl(IP6T, "1"))


def test_bridges_and_their_ports_from_the_links() -> None:
    links = [
        pf.Link(1, "lo", None, None),
        pf.Link(2, "cni0", "bridge", None),
        pf.Link(3, "veth-b", "veth", 2),
        pf.Link(4, "veth-a", "veth", 2),
        pf.Link(5, "bond0", "bond", None),
        pf.Link(6, "eth1", None, 5),  # enslaved, but not to a bridge
        pf.Link(7, "docker0", "bridge", None),
    ]
    assert pf.bridges_of(links) == (pf.Bridge("cni0", ("veth-a", "veth-b")), pf.Bridge("docker0", ()))


def test_ipv6_on_the_node_needs_a_dataplane_that_filters_it() -> None:
    assert pf.ipv6_needs(facts(), ("ipv4", "ipv6"), "nftables") == []
    assert pf.ipv6_needs(facts(ipv6="disabled"), ("ipv4",), "iptables") == []
    (p,) = pf.ipv6_needs(facts(), ("ipv4",), "iptables")
    assert p.code == pf.IPV6_UNENFORCED and "iptables dataplane enforces ipv4 only" in p.message
    assert "IPv6 pod traffic would bypass the rules" in p.message


def test_a_model_with_ipv6_pods_is_refused_where_ipv6_cannot_be_enforced() -> None:
    chain = Chain.of(Direction.INGRESS, [Rule(None, None)])
    v4 = NodeModel("n1", chains={chain.id: chain}, ingress={"10.0.0.2": chain.id})
    dual = NodeModel("n1", chains={chain.id: chain}, ingress={"10.0.0.2": chain.id, "fd00::2": chain.id})
    both = ("ipv4", "ipv6")
    assert pf.model_needs(v4, facts(ipv6="absent"), both, "nftables") is None
    assert pf.model_needs(dual, facts(), both, "nftables") is None
    why = pf.model_needs(dual, facts(ipv6="absent"), both, "nftables")
    assert why is not None and "fd00::2" in why and "/proc/sys/net/ipv6 is missing" in why
    why = pf.model_needs(dual, facts(ipv6="disabled"), both, "nftables")
    assert why is not None and "net.ipv6.conf.all.disable_ipv6=1" in why
    why = pf.model_needs(dual, facts(), ("ipv4",), "iptables")
    assert why is not None and "iptables dataplane enforces ipv4 only" in why


def test_the_backend_hook_has_a_shared_default_and_backends_extend_it() -> None:
    off = facts(sysctls={IPT: "0", IP6T: "1"})
    assert [p.code for p in MemoryDataplane().preflight(off)] == [pf.BRIDGE_SYSCTL]

    class NoHook:  # a backend that does not derive from Backend gets the same default
        name = "plain"

    assert [p.code for p in node_needs(NoHook(), off)] == [pf.BRIDGE_SYSCTL]
    assert families_of(NoHook()) == ("ipv4", "ipv6")

    class V4Only(Backend):
        name = "v4"
        families = ("ipv4",)

        def preflight(self, facts: pf.NodeFacts) -> list[pf.Problem]:
            return super().preflight(facts) + pf.missing_tool(facts, "ip6tables-restore", "needed for IPv6")

    codes = [p.code for p in node_needs(V4Only(), off)]
    assert codes == [pf.BRIDGE_SYSCTL, pf.IPV6_UNENFORCED, pf.IPV6_UNENFORCED]
    assert families_of(V4Only()) == ("ipv4",)


def test_the_check_fixes_what_it_may_and_says_why_when_it_may_not() -> None:
    state = {IPT: "0", IP6T: "0"}

    def read() -> pf.NodeFacts:
        return facts(sysctls=dict(state))

    def fix(f: pf.Fix) -> str | None:
        assert isinstance(f, pf.SetSysctl)
        if f.key == IP6T:
            return "Read-only file system"
        state[f.key] = f.value
        return None

    check = pf.NodeCheck(read, pf.bridge_needs, fix)
    (p,) = check.run()
    assert state[IPT] == "1" and check.fixed == [f"sysctl -w {IPT}=1"]
    assert f"{IP6T} is 0" in p.message and f"the agent could not: sysctl -w {IP6T}=1: Read-only" in p.message

    state.update({IPT: "0"})
    check = pf.NodeCheck(read, pf.bridge_needs, None)  # --no-fix-sysctls
    (p,) = check.run()
    assert state[IPT] == "0" and check.fixed == []
    assert "--no-fix-sysctls" in p.message and f"sysctl -w {IPT}=1" in p.message

    def broken() -> pf.NodeFacts:
        raise OSError("ip: command not found")

    (p,) = pf.NodeCheck(broken, pf.bridge_needs, None).run()  # fail closed
    assert p.code == pf.CHECK_FAILED and "ip: command not found" in p.message


# -- the edges, in network namespaces ------------------------------------------------------------


def sh(*argv: str, netns: str | None = None) -> None:
    proc = ns.run(list(argv), netns)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"


def _delete() -> None:
    for name in [NODE_NS, *POD_NS]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def bridged_node() -> Iterator[str]:
    """A node namespace with bridge br0 (two pod veths on it) and an empty bridge br1."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _delete()
    try:
        for name in [NODE_NS, *POD_NS]:
            sh("ip", "netns", "add", name)
        sh("ip", "link", "add", "br0", "type", "bridge", netns=NODE_NS)
        sh("ip", "link", "add", "br1", "type", "bridge", netns=NODE_NS)
        for i, pod in enumerate(POD_NS):
            sh("ip", "link", "add", f"veth{i}", "netns", NODE_NS, "type", "veth", "peer", "eth0", "netns", pod)
            sh("ip", "link", "set", f"veth{i}", "master", "br0", netns=NODE_NS)
        yield NODE_NS
    finally:
        _delete()


@pytest.mark.root
def test_facts_are_read_from_the_nodes_namespace_and_the_sysctl_fixed_there(bridged_node: str) -> None:
    sh("sysctl", "-qw", f"{IPT}=0", netns=bridged_node)
    got = pf.read_facts(bridged_node)
    assert {b.name: b.ports for b in got.bridges} == {"br0": ("veth0", "veth1"), "br1": ()}
    assert got.br_netfilter and got.sysctls[IPT] == "0" and got.sysctls[IP6T] == "1"
    assert got.has_ipv6 and "ip6tables-restore" in got.tools
    (p,) = pf.bridge_needs(got)
    assert "br0 (ports veth0, veth1)" in p.message and "br1" not in p.message

    assert pf.apply_fix(pf.SetSysctl(IPT, "1"), bridged_node) is None
    assert pf.bridge_needs(pf.read_facts(bridged_node)) == []
    assert ns.run(["sysctl", "-n", IPT], bridged_node).stdout.strip() == "1"

    sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", netns=bridged_node)
    assert pf.read_facts(bridged_node).ipv6 == "disabled"


def ipv6_model(node: str) -> NodeModel:
    chain = Chain.of(Direction.INGRESS, [Rule(None, None)])
    return NodeModel(node, chains={chain.id: chain}, ingress={"10.0.0.2": chain.id, "fd00:10:244:1::2": chain.id})


@pytest.mark.root
async def test_an_agent_refuses_ipv6_pods_on_a_node_without_ipv6_until_it_has_it(bridged_node: str) -> None:
    sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", netns=bridged_node)
    model = ipv6_model("n1")
    fanout = FanOut(lambda node: model.copy(), retry_min=0.05, retry_max=0.3)
    server, port, _ = await serve_sync(fanout, None, "127.0.0.1:0", allow_insecure=True)
    dataplane = MemoryDataplane()
    config = AgentConfig(
        node="n1",
        brain=f"127.0.0.1:{port}",
        tls=None,
        insecure=True,
        http="127.0.0.1:0",
        netns=bridged_node,
        nflog=False,
        conntrack=False,
        preflight_interval=0.2,
    )
    agent = NodeAgent(config, dataplane)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(lambda: agent.status.refused is not None)
        assert dataplane.model is None and dataplane.transactions == 0  # refused whole, not in part
        reason = agent.not_ready_reason() or ""
        assert "fd00:10:244:1::2" in reason and "IPv6 disabled (net.ipv6.conf.all.disable_ipv6=1)" in reason
        st = fanout.node_status("n1")
        await wait_for(lambda: any("refused" in p for p in st.problems))
        assert st.last_error is not None and "fd00:10:244:1::2" in st.last_error and not st.ready
        assert sample(agent, "stockade_agent_not_ready", reason="generation_refused") == 1
        assert sample(agent, "stockade_agent_ready") == 0

        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", netns=bridged_node)
        await wait_for(lambda: agent.not_ready_reason() is None)  # the brain's next snapshot is checked anew
        assert dataplane.model == model
        await wait_for(lambda: st.ready)
        assert st.problems == () and st.last_error is None
        assert sample(agent, "stockade_agent_ready") == 1
        assert sample(agent, "stockade_agent_not_ready", reason="generation_refused") == 0
    finally:
        stop.set()
        assert await asyncio.wait_for(run, 10) == 0
        await server.stop(None)


def sample(agent: NodeAgent, name: str, **labels: str) -> float:
    agent.render_metrics()  # refreshes the gauges that mirror the agent's state
    value = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_for(check: object, timeout: float = 30.0) -> None:  # a bound for a busy machine
    assert callable(check)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)
