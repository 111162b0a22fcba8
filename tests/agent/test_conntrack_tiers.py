"""Conntrack clean-up with ClusterNetworkPolicy tiers: which deltas walk the table, and real
established connections ended (or kept) in a node netns as Admin rules come and go.

The network namespaces, the hand-written nftables layout and the socket helpers are
test_conntrack's; the Admin tier is added to that layout here (an Admin dispatch map, jumped
before the NetworkPolicy ingress dispatch), as the backends render it.
"""

from __future__ import annotations

import socket
from collections.abc import Collection

import pytest
from test_conntrack import CLIENT, EGRESS_A, INGRESS_B, NODE, SERVER, A, B, passes, sh, sock_in, topology

from stockade.agent import conntrack as ct
from stockade.agent.backends.base import MemoryDataplane
from stockade.agent.conntrack import EntryKey, TrackedFlow, cleanup, flows_to_end, local_addresses, may_forbid
from stockade.agent.metered import MeteredDataplane, local_pods
from stockade.agent.metrics import AgentMetrics
from stockade.model.rules import Action, Chain, Direction, NodeModel, PortMatch, Protocol, Rule, Tier, diff

__all__ = ["topology"]  # the fixture, imported for pytest

TCP = Protocol.TCP
ADMIN, BASELINE = Tier.ADMIN, Tier.BASELINE


def rule(peer: str | None, port: int, action: Action) -> Rule:
    return Rule(peer, (PortMatch(TCP, port),), action)


# B's Admin ingress: deny A on 7100; with the Accept, A may reach 7400 (which B's NetworkPolicy
# chain denies: it allows 7100 from ag_a and 7200, 7300 from anyone).
ADMIN_DENY = Chain.ordered(Direction.INGRESS, ADMIN, [rule("ag_a", 7100, Action.DENY)])
ADMIN_DENY_ACCEPT = Chain.ordered(
    Direction.INGRESS, ADMIN, [rule("ag_a", 7100, Action.DENY), rule("ag_a", 7400, Action.ACCEPT)]
)


def tiered(admin: Chain | None = None, *, ag_a: frozenset[str] = frozenset({f"{A}/32"})) -> NodeModel:
    """B isolated for ingress by its NetworkPolicy chain; A not isolated; ``admin``: B's Admin
    ingress chain."""
    m = NodeModel("node-1", sets={"ag_a": ag_a}, chains={INGRESS_B.id: INGRESS_B}, ingress={B: INGRESS_B.id})
    if admin is not None:
        m.chains[admin.id] = admin
        m.admin_ingress[B] = admin.id
    return m


NP_ONLY = tiered()
WITH_DENY = tiered(ADMIN_DENY)
WITH_ACCEPT = tiered(ADMIN_DENY_ACCEPT)


def flow(src: str, dst: str, dport: int) -> TrackedFlow:
    return TrackedFlow(2, 6, src, 40000, dst, dport, EntryKey(src, dst, 40000, dport))


# -- which deltas walk the table (no kernel) ---------------------------------------------------


def test_tier_dispatch_changes_that_can_forbid_walk_the_table() -> None:
    assert may_forbid(diff(NP_ONLY, WITH_DENY), WITH_DENY)  # a new Admin entry
    assert may_forbid(diff(WITH_ACCEPT, WITH_DENY), WITH_DENY)  # a changed tier chain (Accept gone)
    assert may_forbid(diff(WITH_ACCEPT, NP_ONLY), NP_ONLY)  # Admin entry removed: NP denies again
    assert may_forbid(diff(WITH_DENY, WITH_ACCEPT), WITH_ACCEPT)  # conservative: another chain
    baseline = Chain.ordered(Direction.EGRESS, BASELINE, [rule(None, 53, Action.DENY)])
    open_a = NodeModel("node-1", chains={baseline.id: baseline})
    with_baseline = open_a.copy()
    with_baseline.baseline_egress[A] = baseline.id
    assert may_forbid(diff(open_a, with_baseline), with_baseline)  # a new Baseline entry
    assert not may_forbid(diff(with_baseline, open_a), open_a)  # Baseline gone: only allows more


def test_elements_joining_a_set_forbid_only_through_a_deny_or_an_admin_pass() -> None:
    empty = frozenset[str]()
    before, after = tiered(ADMIN_DENY, ag_a=empty), WITH_DENY
    assert may_forbid(diff(before, after), after)  # A joins the peers the Admin rule denies
    assert not may_forbid(diff(tiered(ag_a=empty), NP_ONLY), NP_ONLY)  # joins a NetworkPolicy Accept
    accept_only = Chain.ordered(Direction.INGRESS, ADMIN, [rule("ag_a", 7400, Action.ACCEPT)])
    assert not may_forbid(diff(tiered(accept_only, ag_a=empty), tiered(accept_only)), tiered(accept_only))
    passing = Chain.ordered(
        Direction.INGRESS, ADMIN, [rule("ag_a", 7400, Action.PASS), rule(None, 7400, Action.ACCEPT)]
    )
    # A matched the Accept; in the Pass's peers it goes on to B's NetworkPolicy chain, which denies
    assert may_forbid(diff(tiered(passing, ag_a=empty), tiered(passing)), tiered(passing))
    assert flows_to_end(tiered(passing, ag_a=empty), {A, B}, [flow(A, B, 7400)]) == []
    assert flows_to_end(tiered(passing), {A, B}, [flow(A, B, 7400)]) == [flow(A, B, 7400)]


def test_the_decision_ends_only_what_the_tiers_forbid() -> None:
    flows = [flow(A, B, 7100), flow(A, B, 7200), flow(A, B, 7400), flow("10.9.9.9", B, 7100)]
    assert flows_to_end(NP_ONLY, {A, B}, flows) == [flow(A, B, 7400), flow("10.9.9.9", B, 7100)]
    assert flows_to_end(WITH_DENY, {A, B}, flows) == [flow(A, B, 7100), flow(A, B, 7400), flow("10.9.9.9", B, 7100)]
    assert flows_to_end(WITH_ACCEPT, {A, B}, flows) == [flow(A, B, 7100), flow("10.9.9.9", B, 7100)]


def test_pods_only_in_a_tier_dispatch_are_judged() -> None:
    baseline = Chain.ordered(Direction.EGRESS, BASELINE, [rule(None, 7200, Action.DENY)])
    m = NodeModel("node-1", chains={baseline.id: baseline}, baseline_egress={A: baseline.id})
    assert local_pods(m) == {A}
    assert flows_to_end(m, local_pods(m), [flow(A, B, 7200), flow(A, B, 7100)]) == [flow(A, B, 7200)]


# -- a pod's own node (no kernel) ------------------------------------------------------------

NODE_IP = "10.79.1.1"  # the node's address on A's link (test_conntrack's topology)
NO_NODE_7500 = Chain.ordered(Direction.EGRESS, ADMIN, [rule("nodes", 7500, Action.DENY)])


def own_node_model() -> NodeModel:
    """A isolated for egress by its NetworkPolicy chain (7100, 7200 to anyone, 7300 to ag_b),
    its Admin egress denying the node on 7500; B isolated for ingress."""
    m = tiered(ag_a=frozenset({f"{NODE_IP}/32"}))
    m.sets.update({"ag_b": frozenset(), "nodes": frozenset({f"{NODE_IP}/32"})})
    m.chains.update({EGRESS_A.id: EGRESS_A, NO_NODE_7500.id: NO_NODE_7500})
    m.egress[A] = EGRESS_A.id
    m.admin_egress[A] = NO_NODE_7500.id
    return m


def test_a_pods_flows_to_its_node_pass_its_network_policy_but_not_the_admin_tier() -> None:
    m, flows = own_node_model(), [flow(A, NODE_IP, 7400), flow(A, NODE_IP, 7500), flow(A, "10.79.9.9", 7400)]
    assert flows_to_end(m, {A, B}, flows, {NODE_IP, "127.0.0.1"}) == [
        flow(A, NODE_IP, 7500),
        flow(A, "10.79.9.9", 7400),
    ]
    assert flows_to_end(m, {A, B}, flows) == flows  # not known as the node's: judged as any address


def test_the_nodes_flows_to_its_pods_are_never_ended() -> None:
    m = tiered(ADMIN_DENY, ag_a=frozenset({f"{NODE_IP}/32"}))  # B: Admin Deny of ag_a on 7100; NP allows 7200, 7300
    flows = [flow(NODE_IP, B, 7100), flow(NODE_IP, B, 7400), flow("10.79.9.9", B, 7400)]
    assert flows_to_end(m, {A, B}, flows, [f"{NODE_IP}/32", "not an address"]) == [flow("10.79.9.9", B, 7400)]
    assert flows_to_end(m, {A, B}, flows, ()) == flows


# -- real connections ------------------------------------------------------------------------

ADMIN_CHAIN = "adm_b"


def kernel_admin(model: NodeModel) -> None:
    """Render B's Admin ingress tier of ``model`` into the test table, as the backends would:
    Deny drops, Accept accepts, no match falls through to the NetworkPolicy dispatch."""
    script = [f"flush chain inet cttest {ADMIN_CHAIN}", "flush map inet cttest admin_ingress"]
    cid = model.admin_ingress.get(B)
    if cid is not None:
        for r in model.chains[cid].rules:
            assert r.peer == "ag_a" and r.ports is not None
            verdict = "drop" if r.action is Action.DENY else "accept"
            script.append(f"add rule inet cttest {ADMIN_CHAIN} ip saddr @ag_a tcp dport {r.ports[0].port} {verdict}")
        script.append(f"add element inet cttest admin_ingress {{ {B} : jump {ADMIN_CHAIN} }}")
    sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin="\n".join(script) + "\n")


@pytest.fixture
def tiers(topology: None) -> None:
    """test_conntrack's layout with A not isolated for egress and an Admin ingress dispatch
    before the NetworkPolicy one (rule 2 of forward is the egress dispatch)."""
    setup = f"""
delete element inet cttest egress_dispatch {{ {A} }}
add map inet cttest admin_ingress {{ type ipv4_addr : verdict; }}
add chain inet cttest {ADMIN_CHAIN}
add rule inet cttest forward index 2 ip daddr vmap @admin_ingress
"""
    sh("ip", "netns", "exec", NODE, "nft", "-f", "-", stdin=setup)


class Ended:
    """The agent's clean-up (`cleanup` in NODE), recording which destination ports it ended."""

    def __init__(self) -> None:
        self.ports: list[list[int]] = []

    def __call__(self, model: NodeModel, pods: Collection[str]) -> int:
        deleted = cleanup(model, pods, netns=NODE).deleted
        self.ports.append(sorted(f.dport for f in deleted))
        return len(deleted)


def connect(port: int) -> tuple[socket.socket, socket.socket]:
    lsn = sock_in(SERVER)
    lsn.bind((B, port))
    lsn.listen()
    client = sock_in(CLIENT)
    client.settimeout(5)
    client.connect((B, port))
    server, _ = lsn.accept()
    lsn.close()
    assert passes(client, server, b"hello", wait=5)
    return client, server


@pytest.mark.root
def test_admin_deny_ends_its_connections_and_a_removed_accept_ends_what_it_covered(tiers: None) -> None:
    ended = Ended()
    dp = MeteredDataplane(MemoryDataplane(), AgentMetrics(), ended)
    kernel_admin(NP_ONLY)
    dp.apply_snapshot(NP_ONLY)
    assert ended.ports == [[]]  # the start-up clean-up: nothing to end yet
    conns = {port: connect(port) for port in (7100, 7200)}  # both allowed by B's NetworkPolicy chain

    # an Admin Deny for A -> B:7100: the rules alone leave the connection running ...
    kernel_admin(WITH_DENY)
    assert passes(*conns[7100], b"still")
    dp.apply_delta(diff(NP_ONLY, WITH_DENY), WITH_DENY)  # ... the agent's clean-up ends it
    assert ended.ports[-1] == [7100]
    client, server = conns[7100]
    assert not passes(client, server, b"after")
    assert not passes(server, client, b"reply")
    assert passes(*conns[7200], b"after")  # not matched by the Deny

    # an Admin Accept over B's NetworkPolicy deny of 7400: a connection is set up and kept
    kernel_admin(WITH_ACCEPT)
    dp.apply_delta(diff(WITH_DENY, WITH_ACCEPT), WITH_ACCEPT)
    assert ended.ports[-1] == []  # another chain: the table is walked, 7200 is still allowed
    conns[7400] = connect(7400)
    dp.apply_snapshot(WITH_ACCEPT)  # a resync to the same model: nothing changes, nothing walks
    assert len(ended.ports) == 3
    assert cleanup(WITH_ACCEPT, local_pods(WITH_ACCEPT), netns=NODE).deleted == []  # a walk keeps it
    assert passes(*conns[7400], b"kept")

    # the Admin entry goes: the NetworkPolicy deny it covered decides again
    kernel_admin(NP_ONLY)
    dp.apply_delta(diff(WITH_ACCEPT, NP_ONLY), NP_ONLY)
    assert ended.ports[-1] == [7400]
    client, server = conns[7400]
    assert not passes(client, server, b"after")
    assert passes(*conns[7200], b"after")
    for pair in conns.values():
        for sock in pair:
            sock.close()


def connect_to_node(port: int) -> tuple[socket.socket, socket.socket]:
    """A's connection to a listener of the node itself, at its address on A's link."""
    lsn = sock_in(NODE)
    lsn.bind((NODE_IP, port))
    lsn.listen()
    client = sock_in(CLIENT)
    client.settimeout(5)
    client.connect((NODE_IP, port))
    server, _ = lsn.accept()
    lsn.close()
    assert passes(client, server, b"hello", wait=5)
    return client, server


@pytest.mark.root
def test_a_connection_to_the_own_node_survives_its_network_policy_not_an_admin_deny(
    topology: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = {port: connect_to_node(port) for port in (7400, 7500)}
    assert {NODE_IP, "10.79.2.1", "127.0.0.1"} <= local_addresses(NODE)
    m = own_node_model()  # A's NetworkPolicy allows neither port; the Admin tier denies 7500
    assert sorted(f.dport for f in cleanup(m, {A, B}, netns=NODE).deleted) == [7500]
    assert passes(*conns[7400], b"kept")  # the node's input path never asks A's NetworkPolicy
    assert cleanup(m, {A, B}, netns=NODE).deleted == []

    def fails(netns: str | None = None) -> set[str]:
        raise OSError("no netlink today")

    monkeypatch.setattr(ct, "local_addresses", fails)  # clean-up goes on, judging the node as any address
    assert sorted(f.dport for f in cleanup(m, {A, B}, netns=NODE).deleted) == [7400]
    for pair in conns.values():
        for sock in pair:
            sock.close()
