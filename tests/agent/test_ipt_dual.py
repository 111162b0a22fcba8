"""The iptables + ipset backend on a dual-stack node: ip6tables and ``family inet6`` ipsets beside
the IPv4 side, real packets of both families (the dual-stack topology of ``conftest.py``)."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    NODE,
    P2_INGRESS,
    PODS,
    PODS6,
    TCP,
    Topology,
    case_atomic,
    churn_models,
    dual_policy_model,
    raise_fd_limit,
    run_matrix,
    settled_count,
    syn_burst,
    tcp_ok,
    udp_burst,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import elements, ipt_render, names
from stockade.agent.backends.base import ApplyError
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.nflog import NflogReader
from stockade.model import Chain, Direction, NodeModel, PortMatch, Rule, diff

pytestmark = pytest.mark.root

FOREIGN = "OTHER-COMPONENT"
P2_CHAIN = names.ipt_chain(P2_INGRESS.id)


def ip6t(*args: str) -> str:
    return ns.run(["ip6tables", *args], NODE, check=True).stdout


@pytest.fixture(scope="module")
def backend(topology: Topology) -> IptablesBackend:
    # Someone else's IPv6 chain and FORWARD rule: we must never touch them.
    ip6t("-N", FOREIGN)
    ip6t("-A", FOREIGN, "-s", "2001:db8::1", "-j", "DROP")
    ip6t("-A", "FORWARD", "-j", FOREIGN)
    b = IptablesBackend(NODE, nflog_group=100)
    assert b.versions == (4, 6) and b.families == ("ipv4", "ipv6")
    b.apply_snapshot(dual_policy_model())
    return b


def test_both_families_rendered_and_every_rule_kind_enforced(topology: Topology, backend: IptablesBackend) -> None:
    model = dual_policy_model()
    assert backend.verify(model) == []
    sets = ns.run(["ipset", "save"], NODE, check=True).stdout
    assert f"create {ipt_render.addr_set('blk', 6)} hash:net family inet6" in sets
    assert f"add {ipt_render.addr_set('blk', 6)} fd00:202:1::/65" in sets
    assert f"add {ipt_render.pod_set(P2_INGRESS.id, Direction.INGRESS, 6)} {PODS6['p2']}" in sets
    assert "fd00" not in "".join(line for line in sets.splitlines() if "family inet " in line)
    saved6 = ip6t("-S")
    assert "-A FORWARD -j STOCKADE-FWD" in saved6 and f"-N {P2_CHAIN}" in saved6
    assert "--icmpv6-type 135 -m hl --hl-eq 255 -j RETURN" in saved6
    assert run_matrix(topology, "ipv6") == []
    assert run_matrix(topology, "ipv4") == []


def test_restart_applies_nothing(topology: Topology, backend: IptablesBackend) -> None:
    before = backend.read_view()
    fresh = IptablesBackend(NODE)
    fresh.apply_snapshot(dual_policy_model())
    assert fresh.transactions == 0
    assert fresh.read_view().rules[6].denied == before.rules[6].denied


def test_an_element_matches_only_its_own_family(topology: Topology, backend: IptablesBackend) -> None:
    model = dual_policy_model()
    only6 = model.copy()
    only6.sets["web"] = model.sets["web"] | {f"{PODS6['p3']}/128"}  # p3's IPv6 address joins
    backend.apply_delta(diff(model, only6), only6)
    try:
        assert tcp_ok(topology.netns("p3"), PODS6["p2"], 20080)
        assert not tcp_ok(topology.netns("p3"), PODS["p2"], 20080, DENIED_WAIT)
    finally:
        backend.apply_delta(diff(only6, model), model)
    assert backend.verify(model) == []


def test_ipv6_deltas_change_what_passes(topology: Topology, backend: IptablesBackend) -> None:
    model = dual_policy_model()
    # p3's IPv6 address moves to a chain that allows nothing; p2 leaves IPv6 ingress isolation
    closed = model.copy()
    deny_all = Chain.of(Direction.INGRESS, [])
    closed.chains[deny_all.id] = deny_all
    closed.ingress[PODS6["p3"]] = deny_all.id
    del closed.ingress[PODS6["p2"]]
    backend.apply_delta(diff(model, closed), closed)
    assert backend.verify(closed) == []
    assert not udp_ok(topology.netns("q1"), PODS6["p3"], 20054, DENIED_WAIT)
    assert udp_ok(topology.netns("q1"), PODS["p3"], 20054)  # its IPv4 address keeps its chain
    assert tcp_ok(topology.netns("q1"), PODS6["p2"], 20080)
    assert not tcp_ok(topology.netns("q1"), PODS["p2"], 20080, DENIED_WAIT)
    backend.apply_delta(diff(closed, model), model)
    assert backend.verify(model) == []
    assert udp_ok(topology.netns("q1"), PODS6["p3"], 20054)
    assert not tcp_ok(topology.netns("q1"), PODS6["p2"], 20080, DENIED_WAIT)


def test_ipv6_blocked_counts_exact_once_per_connection(topology: Topology, backend: IptablesBackend) -> None:
    raise_fd_limit()

    def denied() -> int:
        return backend.denied_counts()[P2_INGRESS.id]

    before = denied()
    syn_burst(topology.netns("p3"), PODS6["p2"], 20443, 1000, linger=1.5)  # SYNs retransmit after 1 s
    after_tcp = settled_count(denied, before + 1000)
    assert after_tcp - before == 1000
    udp_burst(topology.netns("p3"), PODS6["p2"], 20054, flows=300, per_flow=3)
    assert settled_count(denied, after_tcp + 300) - after_tcp == 300
    assert backend.read_view().rules[6].denied[P2_INGRESS.id] >= 1300


def test_nflog_events_for_real_ipv6_drops(topology: Topology, backend: IptablesBackend) -> None:
    before = backend.denied_counts()[P2_INGRESS.id]
    with NflogReader("n1", 100, netns=NODE) as reader:
        syn_burst(topology.netns("p3"), PODS6["p2"], 20511, 5, linger=1.2)
        events = []
        deadline = time.monotonic() + 5
        while len(events) < 5 and time.monotonic() < deadline:
            events += reader.read_batch()
            time.sleep(0.02)
        time.sleep(0.1)
        events += reader.read_batch()
    assert len(events) == 5 and reader.stats.lost == 0
    assert {(e.src, e.dst, e.protocol, e.dport, e.chain, e.direction) for e in events} == {
        (PODS6["p3"], PODS6["p2"], "TCP", 20511, P2_INGRESS.id, Direction.INGRESS)
    }
    assert settled_count(lambda: backend.denied_counts()[P2_INGRESS.id], before + 5) - before == 5


def churn6(base: NodeModel, count: int, chain_every: int) -> Iterator[NodeModel]:
    """`churn_models` with an IPv6 twin of every churned element and dispatch entry."""
    for m in churn_models(base, count, chain_every):
        for sid in [s for s in m.sets if s.startswith("churn")]:
            m.sets[sid] = m.sets[sid] | {f"fd00:209::{e.split('.')[-1].split('/')[0]}/128" for e in m.sets[sid]}
        for ip in [i for i in m.ingress if i.startswith("10.208.")]:
            m.ingress[f"fd00:208::{ip.rsplit('.', 1)[1]}"] = m.ingress[ip]
        yield m


def test_deltas_are_atomic_for_ipv6_clients(topology: Topology, backend: IptablesBackend) -> None:
    """`conftest.case_atomic` over IPv6, with deltas that change both families' sets and dispatch."""
    model = dual_policy_model()
    churn = churn6(model, 500, chain_every=10)
    case_atomic(topology, backend, 500, every=25, model=model, churn=churn, dst=PODS6["p2"])


@pytest.mark.parametrize(
    "damage",
    [
        ["ip6tables", "-F", "STOCKADE-FWD"],
        ["ip6tables", "-D", "FORWARD", "-j", "STOCKADE-FWD"],
        ["ip6tables", "-F", P2_CHAIN],
        ["ipset", "del", ipt_render.addr_set("web", 6), f"{PODS6['p1']}"],
        ["ipset", "del", ipt_render.pod_set(P2_INGRESS.id, Direction.INGRESS, 6), PODS6["p2"]],
        ["ipset", "flush", ipt_render.bucket_set(Direction.INGRESS, ipt_render.bucket_of(
            ipt_render.pod_set(P2_INGRESS.id, Direction.INGRESS)), 6)],
    ],
    ids=["fwd-chain", "forward-jump", "pod-chain", "set-element", "pod-dispatch", "bucket-set"],
)  # fmt: skip
def test_ipv6_drift_found_and_repaired(topology: Topology, backend: IptablesBackend, damage: list[str]) -> None:
    model = dual_policy_model()
    foreign = ip6t("-S", FOREIGN)
    ns.run(damage, NODE, check=True)
    problems = backend.verify(model)
    assert problems and all("6" in p for p in problems), problems  # named as the IPv6 side's
    repairs = backend.repairs
    backend.repair(model)
    assert backend.repairs == repairs + 1
    assert backend.verify(model) == []
    assert tcp_ok(topology.netns("p1"), PODS6["p2"], 20080)
    assert not tcp_ok(topology.netns("p3"), PODS6["p2"], 20080, DENIED_WAIT)
    assert ip6t("-S", FOREIGN) == foreign and f"-A FORWARD -j {FOREIGN}" in ip6t("-S", "FORWARD")


def test_second_family_failing_raises_and_a_snapshot_repairs(topology: Topology, backend: IptablesBackend) -> None:
    """ip6tables-restore fails after iptables-restore took effect: the apply raises naming what
    is in force, neither family is left open, and the next snapshot brings both in line."""
    model = dual_policy_model()
    extra = model.copy()
    chain = Chain.of(Direction.INGRESS, [Rule(None, (PortMatch(TCP, 1999),))])
    extra.chains[chain.id] = chain
    extra.ingress["fd00:208::99"] = chain.id
    backend.apply_delta(diff(model, extra), extra)
    # another component's IPv6 rule refers to that chain: ip6tables cannot delete it
    ip6t("-N", "OTHER-REF")
    ip6t("-A", "OTHER-REF", "-j", names.ipt_chain(chain.id))
    try:
        with pytest.raises(ApplyError, match="IPv4 rules of this change are in force, the IPv6 ones are not"):
            backend.apply_delta(diff(extra, model), model)
        v4 = ns.run(["iptables", "-S"], NODE, check=True).stdout
        assert names.ipt_chain(chain.id) not in v4  # the IPv4 side took the change
        assert f"-N {names.ipt_chain(chain.id)}" in ip6t("-S")  # the IPv6 side did not
        problems = backend.verify(model)
        assert any(p.startswith("ip6tables: ") for p in problems), problems
        assert [p for p in problems if "chain" in p and not p.startswith("ip6tables: ")] == []
        assert run_matrix(topology, "ipv6") == [] and run_matrix(topology, "ipv4") == []
        with pytest.raises(ApplyError):  # the cause is still there: a snapshot fails loudly too
            backend.apply_snapshot(model)
    finally:
        ip6t("-F", "OTHER-REF")
        ip6t("-X", "OTHER-REF")
    backend.apply_snapshot(model)
    assert backend.verify(model) == []
    assert run_matrix(topology, "ipv6") == []


def test_addresses_that_cannot_be_placed_are_refused(topology: Topology, backend: IptablesBackend) -> None:
    model = dual_policy_model()
    bad_set = model.copy()
    bad_set.sets["web"] = model.sets["web"] | {"10.1.2.300/32"}
    with pytest.raises(elements.ElementError, match=re.escape("address set web: '10.1.2.300/32' is neither")):
        backend.apply_delta(diff(model, bad_set), bad_set)
    with pytest.raises(elements.ElementError, match="address set web"):
        backend.apply_snapshot(bad_set)
    bad_pod = model.copy()
    bad_pod.ingress["fd00::zz"] = P2_INGRESS.id
    with pytest.raises(elements.ElementError, match="dispatch entry 'fd00::zz' is neither"):
        backend.apply_delta(diff(model, bad_pod), bad_pod)
    assert backend.verify(model) == []  # nothing reached the kernel
    no6 = IptablesBackend(NODE, ipv6=False)  # a kernel without IPv6 refuses IPv6 addresses
    with pytest.raises(elements.ElementError, match="IPv6, which this node's kernel does not have"):
        no6.apply_snapshot(model)
    assert backend.verify(model) == []


# -- neighbour discovery between bridged pods (br_netfilter) ----------------------------------

SLOT_P = NODE.removesuffix("dp-n1")  # "st<slot>-"
BR_NODE, BR_A, BR_B = f"{SLOT_P}ib-n", f"{SLOT_P}ib-a", f"{SLOT_P}ib-b"
A6, B6 = "fd00:77::a", "fd00:77::b"


@pytest.fixture
def bridged() -> Iterator[None]:
    def delete() -> None:
        for name in (BR_NODE, BR_A, BR_B):
            ns.run(["ip", "netns", "del", name])

    delete()
    try:
        for name in (BR_NODE, BR_A, BR_B):
            ns.run(["ip", "netns", "add", name], check=True)
        ns.run(["ip", "link", "add", "br0", "type", "bridge"], BR_NODE, check=True)
        ns.run(["ip", "link", "set", "br0", "up"], BR_NODE, check=True)
        for pod, addr in ((BR_A, A6), (BR_B, B6)):
            port = f"p-{pod[-1]}"
            ns.run(["ip", "link", "add", port, "type", "veth", "peer", "eth0", "netns", pod], BR_NODE, check=True)
            ns.run(["ip", "link", "set", port, "master", "br0", "up"], BR_NODE, check=True)
            ns.run(["ip", "addr", "add", f"{addr}/64", "dev", "eth0", "nodad"], pod, check=True)
            ns.run(["ip", "link", "set", "eth0", "up"], pod, check=True)
        ns.run(["sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1"], BR_NODE, check=True)
        yield
    finally:
        delete()


def test_neighbour_discovery_between_bridged_pods_keeps_working(bridged: None) -> None:
    """Pod a is isolated both ways and may only talk TCP/7000 with b: its neighbour advertisements
    cross the bridge's FORWARD hook and must pass, or nothing reaches it over IPv6."""
    ingress = Chain.of(Direction.INGRESS, [Rule(None, (PortMatch(TCP, 7000),))])
    egress = Chain.of(Direction.EGRESS, [Rule("b", (PortMatch(TCP, 7000),))])
    model = NodeModel(
        "bridge",
        sets={"b": frozenset({f"{B6}/128"})},
        chains={ingress.id: ingress, egress.id: egress},
        ingress={A6: ingress.id},
        egress={A6: egress.id},
    )
    IptablesBackend(BR_NODE).apply_snapshot(model)
    with ns.entered(BR_A):
        server = socket.socket(socket.AF_INET6)
    server.bind((A6, 7000))
    server.listen()
    try:
        assert tcp_connects(BR_B, A6, 7000)
        counters = ns.run(["ip6tables-save", "-c"], BR_NODE, check=True).stdout
        nd = [line for line in counters.splitlines() if "--icmpv6-type 136" in line]
        assert nd and not nd[0].startswith("[0:"), "no neighbour advertisement crossed FORWARD"
        assert not tcp_connects(BR_B, A6, 7001, timeout=DENIED_WAIT)  # and the pod stays isolated
    finally:
        server.close()


def tcp_connects(netns: str, dst: str, port: int, timeout: float = ALLOWED_WAIT) -> bool:
    with ns.entered(netns):
        s = socket.socket(socket.AF_INET6)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
