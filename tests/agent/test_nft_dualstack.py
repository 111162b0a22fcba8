"""The nftables backend enforces both families: real IPv4 and IPv6 packets through one table.

Before dual-stack, the forward chain dispatched on ``ip saddr``/``ip daddr`` only and IPv6
elements were skipped, so every new IPv6 connection to or from an isolated pod hit the chain's
``policy accept``. `test_before_dual_stack_ipv6_bypassed_deny_all` loads that old rendering
(checked in as data) and shows the bypass, then shows the current rendering closing it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    NODE,
    NODE2,
    P1_EGRESS,
    P2_INGRESS,
    PODS,
    PODS6,
    P,
    Topology,
    case_atomic,
    dual_policy_model,
    policy_model,
    raise_fd_limit,
    run_matrix,
    settled_count,
    syn_burst,
    tcp_ok,
    udp_burst,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend, names, nft_render
from stockade.agent.backends.elements import ElementError
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Chain, Direction, NodeModel, PortMatch, Rule, diff
from stockade.model import Protocol as L4

pytestmark = pytest.mark.root

OLD_RENDERING = Path(__file__).parent / "data" / "nft_before_dualstack.nft"


@pytest.fixture(scope="module")
def backend(topology: Topology) -> NftablesBackend:
    b = make_backend("nftables", NODE, 100)
    assert isinstance(b, NftablesBackend)
    b.apply_snapshot(dual_policy_model())
    return b


@pytest.fixture
def dual(backend: NftablesBackend) -> Iterator[NodeModel]:
    """The dual-stack model in the kernel before and after each test (whatever the test did)."""
    model = dual_policy_model()
    backend.repair(model)
    yield model
    backend.repair(model)


def denied(netns: str, dst: str, port: int) -> bool:
    return not tcp_ok(netns, dst, port, DENIED_WAIT)


# -- the bug, before and after ----------------------------------------------------------------


def deny_all_model() -> NodeModel:
    """Pod p2 isolated in both directions with no rule, under both of its addresses."""
    m = NodeModel("n1")
    deny_in, deny_out = Chain.of(Direction.INGRESS, []), Chain.of(Direction.EGRESS, [])
    m.chains = {deny_in.id: deny_in, deny_out.id: deny_out}
    for addr in (PODS["p2"], PODS6["p2"]):
        m.ingress[addr] = deny_in.id
        m.egress[addr] = deny_out.id
    return m


def test_before_dual_stack_ipv6_bypassed_deny_all(topology: Topology, backend: NftablesBackend) -> None:
    q1, p2 = topology.netns("q1"), topology.netns("p2")
    model = deny_all_model()
    try:
        # The old renderer's output for this very model, under today's chain ids (content
        # digests, since widened: the old text names each direction's one chain by its old id).
        old = OLD_RENDERING.read_text()
        for cid in model.chains:
            old = re.sub(rf"\b{cid.split('_')[0]}_[0-9a-f]{{12}}\b", names.nft_chain(cid), old)
        assert all(f"jump {names.nft_chain(c)}" in old for c in model.chains)
        ns.run(["nft", "-f", "-"], NODE, input=old, check=True)
        assert denied(q1, PODS["p2"], 20080) and denied(p2, PODS["q1"], 20080)  # IPv4: enforced
        assert tcp_ok(q1, PODS6["p2"], 20080), "the old rendering should let IPv6 in (the bug)"
        assert tcp_ok(p2, PODS6["q1"], 20080), "the old rendering should let IPv6 out (the bug)"
        assert any("ingress_dispatch6" in p for p in backend.verify(model))  # read-back sees the gap

        backend.apply_snapshot(model)
        assert backend.verify(model) == []
        for src, dst in (("q1", "p2"), ("p2", "q1")):
            for addrs in (PODS, PODS6):
                assert denied(topology.netns(src), addrs[dst], 20080), f"{src} -> {addrs[dst]} passed"
                assert not udp_ok(topology.netns(src), addrs[dst], 20053, DENIED_WAIT)
    finally:
        backend.apply_snapshot(dual_policy_model())


# -- enforcement over both families ---------------------------------------------------------


def test_every_rule_kind_over_both_families(topology: Topology, backend: NftablesBackend, dual: NodeModel) -> None:
    assert backend.verify(dual) == []
    assert run_matrix(topology, "ipv4") == []
    assert run_matrix(topology, "ipv6") == []


def test_restart_onto_dual_stack_state_applies_nothing(backend: NftablesBackend, dual: NodeModel) -> None:
    before = backend.read_view()
    assert before is not None and PODS6["p2"] in before.ingress
    fresh = NftablesBackend(NODE)
    fresh.apply_snapshot(dual)
    assert fresh.transactions == 0  # the IPv6 parts read back exactly as rendered
    after = fresh.read_view()
    assert after is not None and after.handles == before.handles


def test_an_element_of_one_family_never_matches_the_other(topology: Topology, backend: NftablesBackend) -> None:
    # "web" keeps p1's IPv6 address only: p1 reaches p2:20080 over IPv6, no longer over IPv4.
    model = dual_policy_model()
    v6_only = model.copy()
    v6_only.sets["web"] = frozenset({f"{PODS6['p1']}/128"})
    try:
        backend.apply_delta(diff(model, v6_only), v6_only)  # element-only: the netlink path
        assert backend.verify(v6_only) == []
        assert tcp_ok(topology.netns("p1"), PODS6["p2"], 20080)
        assert denied(topology.netns("p1"), PODS["p2"], 20080)
    finally:
        backend.repair(model)


def test_deltas_over_both_families(topology: Topology, backend: NftablesBackend, dual: NodeModel) -> None:
    p3, q1 = topology.netns("p3"), topology.netns("q1")
    # element-only (netlink): p3's IPv6 address joins "web"; its IPv4 address does not
    wider = dual.copy()
    wider.sets["web"] = dual.sets["web"] | {f"{PODS6['p3']}/128"}
    backend.apply_delta(diff(dual, wider), wider)
    assert tcp_ok(p3, PODS6["p2"], 20080)
    assert denied(p3, PODS["p2"], 20080)
    # a new chain (nft script path): p3's IPv6 address moves to a chain that allows nothing,
    # its IPv4 address stays on the allow-all one; p2's IPv6 address leaves ingress isolation
    closed = wider.copy()
    deny_all = Chain.of(Direction.INGRESS, [])
    closed.chains[deny_all.id] = deny_all
    closed.ingress[PODS6["p3"]] = deny_all.id
    del closed.ingress[PODS6["p2"]]
    backend.apply_delta(diff(wider, closed), closed)
    assert backend.verify(closed) == []
    assert not udp_ok(q1, PODS6["p3"], 20054, DENIED_WAIT)
    assert udp_ok(q1, PODS["p3"], 20054)
    assert tcp_ok(q1, PODS6["p2"], 20080)  # not isolated over IPv6 any more
    assert denied(q1, PODS["p2"], 20080)  # still isolated over IPv4
    # element-only upsert of an IPv6 dispatch entry (the map refuses to overwrite: delete + add)
    back = closed.copy()
    back.ingress[PODS6["p3"]] = dual.ingress[PODS6["p3"]]
    delta = diff(closed, back)
    assert nft_render.is_element_only(delta)
    backend.apply_delta(delta, back)
    assert udp_ok(q1, PODS6["p3"], 20054)
    backend.apply_delta(diff(back, dual), dual)
    assert backend.verify(dual) == []
    assert denied(p3, PODS6["p2"], 20080)
    assert not udp_ok(q1, PODS6["p2"], 20054, DENIED_WAIT)


def test_ipv6_denials_count_exactly_once_per_connection(topology: Topology, backend: NftablesBackend) -> None:
    raise_fd_limit()

    def denied() -> int:
        return backend.denied_counts()[P2_INGRESS.id]

    before = denied()
    syn_burst(topology.netns("p3"), PODS6["p2"], 20443, 1000, linger=1.5)  # SYNs retransmit after 1 s
    after_tcp = settled_count(denied, before + 1000)
    assert after_tcp - before == 1000
    udp_burst(topology.netns("p3"), PODS6["p2"], 20054, flows=300, per_flow=3)
    assert settled_count(denied, after_tcp + 300) - after_tcp == 300


def test_refused_element_changes_nothing(backend: NftablesBackend, dual: NodeModel) -> None:
    chain = dual.ingress[PODS["p2"]]
    for bad in (
        diff(dual, _with(dual, sets={"web": dual.sets["web"] | {"fd00:201::zz/128"}})),  # netlink path
        diff(dual, _with(dual, sets={"new": frozenset({"10.201.1.2/33"})})),  # script path
        diff(dual, _with(dual, ingress={"fd00:201:1::/64": chain})),
    ):
        with pytest.raises(ElementError, match=r"neither an IPv4 nor an IPv6|prefix length|not a pod IP"):
            backend.apply_delta(bad, dual)
        assert backend.verify(dual) == []


def _with(
    m: NodeModel, sets: dict[str, frozenset[str]] | None = None, ingress: dict[str, str] | None = None
) -> NodeModel:
    out = m.copy()
    out.sets |= sets or {}
    out.ingress |= ingress or {}
    return out


# -- the layout follows the model: no IPv6 side without an IPv6 pod address ------------------


def _ipv6_sets(backend: NftablesBackend) -> list[str]:
    """The IPv6 side of the address sets: own ``a6_`` sets, and ``hosts6/<set>`` for each set of
    `dual_policy_model` with elements under its tag in ``hosts6``."""
    view = backend.read_view()
    assert view is not None
    tags = {names.nft_tag(sid): sid for sid in dual_policy_model().sets}
    shared = [f"hosts6/{tags.get(tag, tag)}" for v, tag in view.tagged if v == 6]
    return sorted([name for name in view.sets if name.startswith("a6_")] + shared)


IPV6_SETS = ["a6_blk", "hosts6/p2", "hosts6/web"]


def test_first_ipv6_pod_switches_the_layout_in_one_transaction(
    topology: Topology, backend: NftablesBackend, dual: NodeModel
) -> None:
    """An IPv4-only model renders no IPv6 twins or ``ip6`` peer rules. The delta that makes its
    pods dual-stack only changes elements, yet it must not go out as element changes (the IPv6
    addresses would land in chains without IPv6 rules): it is one full snapshot, and the new
    IPv6 addresses are enforced, allowed and denied, at once. And back."""
    p1, p3, q1 = topology.netns("p1"), topology.netns("p3"), topology.netns("q1")
    ipv4 = policy_model()  # its "blk" holds an IPv6 CIDR: checked, not loaded
    backend.apply_snapshot(ipv4)
    assert backend.verify(ipv4) == [] and _ipv6_sets(backend) == []
    assert tcp_ok(p3, PODS6["p2"], 20080)  # p2 is not isolated over IPv6 in this model
    assert run_matrix(topology, "ipv4") == []

    fresh = NftablesBackend(NODE)  # a restarted agent: the layout in force is read back
    delta = diff(ipv4, dual)
    assert nft_render.is_element_only(delta)
    fresh.apply_delta(delta, dual)
    assert fresh.transactions == 1
    assert fresh.verify(dual) == []
    assert _ipv6_sets(fresh) == IPV6_SETS
    assert tcp_ok(p1, PODS6["p2"], 20080)  # allowed by p2's IPv6 rule from "web"
    assert denied(p3, PODS6["p2"], 20080)
    assert denied(p1, PODS6["p3"], 20443)  # p1's IPv6 egress is enforced too
    assert run_matrix(topology, "ipv6") == []

    # the last IPv6 pod address gone: back to the IPv4 layout, again one snapshot
    fresh.apply_delta(diff(dual, ipv4), ipv4)
    assert fresh.transactions == 2
    assert fresh.verify(ipv4) == [] and _ipv6_sets(fresh) == []
    assert tcp_ok(p3, PODS6["p2"], 20080) and tcp_ok(q1, PODS6["p2"], 20511)
    assert run_matrix(topology, "ipv4") == []
    fresh.close()


def test_repair_moves_a_table_to_the_models_layout(backend: NftablesBackend, dual: NodeModel) -> None:
    """A kernel holding the IPv4 layout for a dual-stack model (or the reverse) is drift that
    verify names and repair fixes in one transaction."""
    ipv4 = policy_model()
    backend.apply_snapshot(ipv4)
    problems = backend.verify(dual)
    web6 = "set hosts6 tag {}.{} (address set 'web') differs".format(*names.nft_tag("web"))
    assert "missing set a6_blk" in problems and any(p.startswith(web6) for p in problems)
    assert any(f"chain {P2_INGRESS.id} has" in p for p in problems)
    backend.repair(dual)
    assert backend.verify(dual) == [] and _ipv6_sets(backend) == IPV6_SETS
    assert "extra set a6_blk" in backend.verify(ipv4) and any(p.startswith(web6) for p in backend.verify(ipv4))
    backend.repair(ipv4)
    assert backend.verify(ipv4) == [] and _ipv6_sets(backend) == []


def test_port_chains_come_and_go_with_the_chains_that_jump_to_them(
    topology: Topology, backend: NftablesBackend, dual: NodeModel
) -> None:
    """An ingress peer rule with several ports names its set once per family and jumps to a
    shared chain of port lines; deltas create it with the first chain that needs it and delete
    it with the last; drift in it is found and repaired."""
    p1, p3 = topology.netns("p1"), topology.netns("p3")
    multi = Chain.of(
        Direction.INGRESS, [*P2_INGRESS.rules, Rule("web", (PortMatch(L4.TCP, 20443), PortMatch(L4.UDP, 20054)))]
    )
    wider = dual.copy()
    wider.chains[multi.id] = multi
    for addr in (PODS["p2"], PODS6["p2"]):
        wider.ingress[addr] = multi.id
    backend.apply_delta(diff(dual, wider), wider)
    assert backend.verify(wider) == []
    view = backend.read_view()
    assert view is not None and len(view.ports) == 1
    for addrs in (PODS, PODS6):
        assert tcp_ok(p1, addrs["p2"], 20443) and udp_ok(p1, addrs["p2"], 20054)  # web, either port
        assert denied(p3, addrs["p2"], 20443) and not udp_ok(p3, addrs["p2"], 20054, DENIED_WAIT)
        assert denied(p1, addrs["p2"], 20511)  # a port of neither line: on to the deny tail
        assert tcp_ok(p1, addrs["p2"], 20080)  # the rules after the jump still apply
    (port_chain,) = view.ports
    ns.run(["nft", "flush", "chain", "inet", "stockade", port_chain], NODE, check=True)
    assert f"chain {port_chain} has 0 rules, expected 2" in backend.verify(wider)
    assert denied(p1, PODS6["p2"], 20443)  # an emptied port chain denies: fails closed
    backend.repair(wider)
    assert backend.verify(wider) == [] and tcp_ok(p1, PODS6["p2"], 20443)
    backend.apply_delta(diff(wider, dual), dual)  # the last chain jumping to it goes: so does it
    view = backend.read_view()
    assert view is not None and view.ports == {} and backend.verify(dual) == []
    assert denied(p1, PODS6["p2"], 20443)


# -- atomic deltas, IPv6 clients --------------------------------------------------------------


def dual_churn(base: NodeModel, count: int, chain_every: int) -> Iterator[NodeModel]:
    """`conftest.churn_models` over both families: sets, chains and dispatch entries of pods
    that do not exist, and one CIDR of ``blk`` per family, come and go."""
    for i in range(count):
        m = base.copy()
        m.sets[f"churn{i % 3}"] = frozenset(
            {f"10.209.{i % 7}.{j}/32" for j in range(1 + i % 5)}
            | {f"fd00:209:{i % 7:x}::{j + 1:x}/128" for j in range(1 + i % 4)}
        )
        k = i // chain_every
        chain = Chain.of(Direction.INGRESS, [Rule(f"churn{k % 3}", (PortMatch(L4.TCP, 1000 + k % 4),))])
        m.sets.setdefault(f"churn{k % 3}", frozenset())
        m.chains[chain.id] = chain
        m.ingress[f"10.208.0.{k % 11 + 1}"] = chain.id
        m.ingress[f"fd00:208::{k % 11 + 1:x}"] = chain.id
        if i % 2:
            m.sets["blk"] = base.sets["blk"] | {"10.203.0.0/16", "fd00:203::/48"}
        yield m


@pytest.mark.parametrize("chain_every", [1, 10], ids=["chains-each-delta", "mostly-netlink"])
def test_thousand_deltas_are_atomic_for_ipv6_clients(
    topology: Topology, backend: NftablesBackend, dual: NodeModel, chain_every: int
) -> None:
    """`conftest.case_atomic` over IPv6, with deltas that change both families' sets and dispatch."""
    case_atomic(topology, backend, 1000, model=dual, churn=dual_churn(dual, 1000, chain_every), dst=PODS6["p2"])


# -- drift of the IPv6 parts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        "delete element inet stockade hosts6 {{ {} . {} . {} }}".format(PODS6["p1"], *names.nft_tag("web")),
        f"delete element inet stockade ingress_dispatch6 {{ {PODS6['p2']} }}",
        f"delete element inet stockade egress_dispatch6 {{ {PODS6['p1']} }}",
        "flush set inet stockade a6_blk",
        "add element inet stockade hosts6 {{ {} . {} . {} }}".format(PODS6["p3"], *names.nft_tag("web")),
        # the forward chain without its IPv6 dispatch: rebuilt whole
        "flush chain inet stockade forward; add rule inet stockade forward ct state established,related accept; "
        "add rule inet stockade forward ip saddr vmap @egress_dispatch; "
        "add rule inet stockade forward ip daddr vmap @ingress_dispatch",
        # the IPv6 twin of a set deleted by hand (its users emptied first, as nft demands)
        f"flush chain inet stockade {P2_INGRESS.id}; flush chain inet stockade {P1_EGRESS.id}; "
        "delete set inet stockade a6_blk",
    ],
    ids=["set-element", "ingress-dispatch", "egress-dispatch", "set-flushed", "extra-element", "forward", "set"],
)
def test_ipv6_drift_found_and_repaired(
    topology: Topology, backend: NftablesBackend, dual: NodeModel, damage: str
) -> None:
    ns.run(["nft", damage], NODE, check=True)
    assert backend.verify(dual) != []
    repairs = backend.repairs
    backend.repair(dual)
    assert backend.repairs == repairs + 1
    assert backend.verify(dual) == []
    assert tcp_ok(topology.netns("p1"), PODS6["p2"], 20080)
    assert denied(topology.netns("p3"), PODS6["p2"], 20080)
    assert denied(topology.netns("p1"), PODS6["p3"], 20443)  # p1's IPv6 egress is enforced again


# -- ICMPv6 the network needs -----------------------------------------------------------------

IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24  # linux/in6.h
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14  # linux/in.h


def path_mtu(netns: str, dst: str, port: int, size: int, deadline: float = 15.0) -> int:
    """Send ``size``-byte datagrams that may not be fragmented to ``dst`` until the kernel lowers
    the path MTU (a "packet too big" / "fragmentation needed" came back) or ``deadline`` passes."""
    with ns.entered(netns):
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    level, opts = (
        (socket.IPPROTO_IPV6, (IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU))
        if ":" in dst
        else (socket.IPPROTO_IP, (IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU))
    )
    try:
        s.setsockopt(level, opts[0], opts[1])
        s.connect((dst, port))
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                s.send(b"x" * size)
            except OSError:  # EMSGSIZE: the lowered path MTU is known
                pass
            mtu = s.getsockopt(level, opts[2])
            if mtu < 1500:
                return int(mtu)
            time.sleep(0.2)
        return int(s.getsockopt(level, opts[2]))
    finally:
        s.close()


@pytest.mark.parametrize("family", ["ipv6", "ipv4"])
def test_packet_too_big_reaches_an_isolated_pod(
    topology: Topology, backend: NftablesBackend, dual: NodeModel, family: str
) -> None:
    """p2 is isolated for ingress and allows no ICMP. Its datagram to q1 meets a 1280-byte link
    beyond this node (node 2 -> q1); node 2's "packet too big" crosses this node's forward hook
    as `related` to p2's flow and reaches p2, which lowers its path MTU."""
    p2 = topology.netns("p2")
    dst = (PODS6 if family == "ipv6" else PODS)["q1"]
    before = backend.denied_counts()[P2_INGRESS.id]
    ns.run(["ip", "link", "set", "v-q1", "mtu", "1280"], NODE2, check=True)
    try:
        assert path_mtu(p2, dst, 20054, 1400) == 1280
    finally:
        ns.run(["ip", "link", "set", "v-q1", "mtu", "1500"], NODE2, check=True)
        ns.run(["ip", "-6" if family == "ipv6" else "-4", "route", "flush", "cache"], p2)
    assert backend.denied_counts()[P2_INGRESS.id] == before  # nothing of it was denied


# Pods on a Linux bridge (as the bridge CNI plugin wires them): with br_netfilter, bridged
# frames cross the node's inet forward hook, neighbour discovery included.
BR_NODE, BR_A, BR_B = f"{P}ndn", f"{P}nda", f"{P}ndb"
BR_IPS = {BR_A: ("10.203.0.2", "fd00:203::2"), BR_B: ("10.203.0.3", "fd00:203::3")}


@pytest.fixture(scope="module")
def bridge() -> Iterator[NftablesBackend]:
    def delete() -> None:
        for name in (BR_NODE, BR_A, BR_B):
            ns.run(["ip", "netns", "del", name])

    delete()
    try:
        for name in (BR_NODE, BR_A, BR_B):
            ns.run(["ip", "netns", "add", name], check=True)
            ns.run(["ip", "link", "set", "lo", "up"], name, check=True)
        node = BR_NODE
        ns.run(["ip", "link", "add", "br0", "type", "bridge"], node, check=True)
        ns.run(["ip", "link", "set", "br0", "up"], node, check=True)
        for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            ns.run(["sysctl", "-qw", f"net.bridge.{key}=1"], node, check=True)
        for pod, (v4, v6) in BR_IPS.items():
            host_if = f"br-{pod[-1]}"
            ns.run(
                ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod], node, check=True
            )
            ns.run(["ip", "link", "set", host_if, "master", "br0", "up"], node, check=True)
            ns.run(["ip", "addr", "add", f"{v4}/24", "dev", "eth0"], pod, check=True)
            ns.run(["ip", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad"], pod, check=True)
            ns.run(["ip", "link", "set", "eth0", "up"], pod, check=True)
        b = NftablesBackend(node)
        yield b
        b.close()
    finally:
        delete()


def neighbour_state(netns: str, addr: str, deadline: float = 15.0) -> str:
    """Send one datagram to ``addr`` (starting neighbour discovery) and wait until its entry
    leaves INCOMPLETE: resolved, or FAILED once the solicitations went unanswered (~3 s)."""
    with ns.entered(netns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (addr, 9))
    finally:
        s.close()
    state = "none"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        out = ns.run(["ip", "-6", "neigh", "show", addr, "dev", "eth0"], netns).stdout.split()
        state = out[-1] if out else "none"
        if state not in ("INCOMPLETE", "none"):
            return state
        time.sleep(0.2)
    return state


def test_neighbour_discovery_works_for_an_isolated_pod_on_a_bridge(bridge: NftablesBackend) -> None:
    a, (b_v4, b_v6) = BR_A, BR_IPS[BR_B]
    model = NodeModel("br")
    deny_in, deny_out = Chain.of(Direction.INGRESS, []), Chain.of(Direction.EGRESS, [])
    model.chains = {deny_in.id: deny_in, deny_out.id: deny_out}
    for addr in BR_IPS[a]:
        model.ingress[addr] = deny_in.id
        model.egress[addr] = deny_out.id
    bridge.apply_snapshot(model)
    # the bridge really is filtered: the isolated pod reaches nothing over either family
    assert not udp_ok(a, b_v4, 9, DENIED_WAIT) and not udp_ok(a, b_v6, 9, DENIED_WAIT)
    ns.run(["ip", "-6", "neigh", "flush", "dev", "eth0"], a, check=True)
    assert neighbour_state(a, b_v6) in ("REACHABLE", "STALE", "DELAY", "PROBE")
    assert bridge.denied_counts()[deny_out.id] > 0  # the datagrams themselves were denied

    # Control: without the ND rule the same resolution fails (so the test above can fail).
    view = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", "forward"], BR_NODE, check=True).stdout
    handle = next(line.split("# handle ")[1] for line in view.splitlines() if "icmpv6 type" in line)
    ns.run(["nft", "delete", "rule", "inet", "stockade", "forward", "handle", handle], BR_NODE, check=True)
    assert any("chain forward has" in p for p in bridge.verify(model))
    ns.run(["ip", "-6", "neigh", "flush", "dev", "eth0"], a, check=True)
    assert neighbour_state(a, b_v6) == "FAILED"
    bridge.repair(model)
    assert bridge.verify(model) == []
    ns.run(["ip", "-6", "neigh", "flush", "dev", "eth0"], a, check=True)
    assert neighbour_state(a, b_v6) in ("REACHABLE", "STALE", "DELAY", "PROBE")


def test_gateway_resolution_from_an_isolated_pod_on_a_routed_node(topology: Topology, dual: NodeModel) -> None:
    """On a routed node ND with the gateway never crosses forward: it works with the pod isolated
    in both directions, and its allowed traffic still flows."""
    p1 = topology.netns("p1")  # isolated for egress
    gw6 = PODS6["p1"].rsplit(":", 1)[0] + ":1"
    ns.run(["ip", "-6", "neigh", "flush", "dev", "eth0"], p1, check=True)
    assert tcp_ok(p1, PODS6["p2"], 20080, ALLOWED_WAIT * 2)
    assert neighbour_state(p1, gw6) in ("REACHABLE", "STALE", "DELAY", "PROBE")
