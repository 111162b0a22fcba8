"""The tier cases both backends' tier tests run (test_nft_tiers, test_ipt_tiers): Admin and
Baseline chains (Accept, Deny, Pass) around `conftest.policy_model`'s NetworkPolicy chains, the
attempts they change and the clients that make them (fresh source ports: a denied 5-tuple is
remembered, never reuse one)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable

from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    PODS,
    PODS6,
    SERVER,
    TCP,
    UDP,
    Topology,
    _bound,
    dual_policy_model,
    fresh_ports,
    policy_model,
)

from stockade.agent.backends.base import Dataplane
from stockade.model import Action, Chain, Direction, NodeModel, PortMatch, Rule, Tier, diff
from stockade.model import Protocol as L4
from stockade.model.evaluate import decide

A, D, PS = Action.ACCEPT, Action.DENY, Action.PASS
IN, OUT = Direction.INGRESS, Direction.EGRESS


def ports(*specs: tuple[L4, int] | tuple[L4, int, int] | L4) -> tuple[PortMatch, ...]:
    out = []
    for spec in specs:
        if isinstance(spec, L4):
            out.append(PortMatch(spec))
        else:
            out.append(PortMatch(*spec))
    return tuple(out)


# p2's Admin ingress: order matters (r0 before r1, r2 before r3).
P2_ADMIN_IN = Chain.ordered(
    IN,
    Tier.ADMIN,
    [
        Rule("p3", ports((TCP, 20080)), A),  # beats p2's NetworkPolicy, which denies p3
        Rule(None, ports((TCP, 20080)), D),  # beats the NetworkPolicy's allow of p1 (web)
        Rule("blk", ports((TCP, 20505)), PS),  # hands q1 to the NetworkPolicy (which allows)
        Rule(None, ports((TCP, 20500, 20510)), D),  # the rest of the range: denied, though NP allows
    ],
)
# p1's Admin egress.
P1_ADMIN_OUT = Chain.ordered(
    OUT,
    Tier.ADMIN,
    [
        Rule("p3", ports((TCP, 20443)), A),  # beats p1's NetworkPolicy egress, which denies it
        Rule("p2", ports((TCP, 20443)), A),  # allowed out, but p2's ingress denies it
        Rule(None, ports((TCP, 20080)), PS),  # to the NetworkPolicy (any peer, tcp/20080)
        Rule("blk", ports((TCP, 20443)), D),  # beats the NetworkPolicy's allow of blk
        Rule(None, ports((TCP, 20080)), D),  # never reached for tcp/20080: the Pass came first
    ],
)
# p1's Baseline ingress (p1 has no NetworkPolicy ingress).
P1_BASE_IN = Chain.ordered(
    IN,
    Tier.BASELINE,
    [
        Rule("p3", ports((TCP, 20505)), A),
        Rule(None, ports((UDP, 20053)), PS),
        Rule(None, None, D),
    ],
)
# p3's Baseline egress (p3 has no NetworkPolicy egress).
P3_BASE_OUT = Chain.ordered(
    OUT,
    Tier.BASELINE,
    [Rule("p2", ports(UDP), A), Rule(None, ports((UDP, 20054)), D)],
)
TIER_CHAINS = (P2_ADMIN_IN, P1_ADMIN_OUT, P1_BASE_IN, P3_BASE_OUT)


def tiered_model(dual: bool = False) -> NodeModel:
    """`policy_model` (or its dual-stack twin) with the tier chains above dispatched."""
    m = dual_policy_model() if dual else policy_model()
    m.sets["p3"] = frozenset({"10.201.3.2/32", *([f"{PODS6['p3']}/128"] if dual else [])})
    for chain in TIER_CHAINS:
        m.chains[chain.id] = chain
    for pod, table, chain in (
        ("p2", m.admin_ingress, P2_ADMIN_IN),
        ("p1", m.admin_egress, P1_ADMIN_OUT),
        ("p1", m.baseline_ingress, P1_BASE_IN),
        ("p3", m.baseline_egress, P3_BASE_OUT),
    ):
        table[PODS[pod]] = chain.id
        if dual:
            table[PODS6[pod]] = chain.id
    assert m.check() == []
    return m


# (source, destination, protocol, port, allowed?): what the tiers change against `MATRIX`.
TIER_MATRIX: list[tuple[str, str, str, int, bool]] = [
    ("p3", "p2", "tcp", 20080, True),  # Admin ingress Accept beats the NetworkPolicy's deny
    ("p1", "p2", "tcp", 20080, False),  # Admin ingress Deny beats the NetworkPolicy's allow
    ("q1", "p2", "tcp", 20505, True),  # Admin Pass: the NetworkPolicy allows
    ("q1", "p2", "tcp", 20506, False),  # the next Admin rule denies what the NetworkPolicy allows
    ("q1", "p2", "tcp", 20080, False),  # Admin Deny (no NetworkPolicy allow either)
    ("p3", "p2", "udp", 20053, True),  # no Admin match: the NetworkPolicy allows
    ("p1", "p3", "tcp", 20443, True),  # Admin egress Accept beats the NetworkPolicy egress deny
    ("p1", "q1", "tcp", 20443, False),  # Admin egress Deny beats the NetworkPolicy egress allow
    ("p1", "p2", "tcp", 20443, False),  # Admin egress Accept, then p2's ingress denies
    ("p1", "p3", "tcp", 20080, True),  # Admin egress Pass, the NetworkPolicy allows (r4 not reached)
    ("p1", "q1", "udp", 20053, True),  # no Admin egress match (its end): the NetworkPolicy allows
    ("p1", "p3", "udp", 20053, False),  # no Admin egress match, the NetworkPolicy denies
    ("p1", "p2", "udp", 20054, True),  # both NetworkPolicies allow (web udp, p2 udp)
    ("p3", "p1", "tcp", 20505, True),  # Baseline Accept
    ("q1", "p1", "tcp", 20505, False),  # Baseline Deny (match-all), p1 has no NetworkPolicy
    ("p3", "p1", "udp", 20053, True),  # Baseline Pass: allowed
    ("p3", "p1", "udp", 20054, False),
    ("p3", "p1", "tcp", 20443, False),  # allowed without tiers (MATRIX)
    ("p3", "q1", "udp", 20054, False),  # Baseline egress Deny
    ("p3", "q1", "udp", 20053, True),  # no Baseline egress match: allowed
    ("p3", "p2", "tcp", 20080, True),  # Baseline egress no match, then p2's Admin ingress Accept
    ("p3", "p2", "udp", 20054, False),  # Baseline egress Accept (p2), then p2's NetworkPolicy denies
]
NODE1 = ("p1", "p2", "p3")


def reference(model: NodeModel, src: str, dst: str, proto: str, port: int, family: str) -> bool:
    """`decide` for both directions that node 1 enforces (q1 is on the other node)."""
    addrs = PODS6 if family == "ipv6" else PODS
    l4 = L4.TCP if proto == "tcp" else L4.UDP
    ok = True
    if src in NODE1:
        ok &= decide(model, OUT, addrs[src], addrs[dst], l4, port).allowed
    if dst in NODE1:
        ok &= decide(model, IN, addrs[dst], addrs[src], l4, port).allowed
    return ok


# -- clients on fresh source ports (a denied 5-tuple is remembered: never reuse one) --------


def _client(netns: str, kind: int, dst: str) -> socket.socket:
    return _bound(netns, kind, dst, fresh_ports(1)[0])


def tcp_outcome(netns: str, dst: str, port: int, timeout: float) -> str:
    """ "ok", "refused" (a reset or ICMP error came back) or "timeout" (silence)."""
    s = _client(netns, socket.SOCK_STREAM, dst)
    s.settimeout(timeout)
    try:
        s.connect((dst, port))
        s.settimeout(max(timeout, ALLOWED_WAIT))
        return "ok" if s.recv(2) == b"ok" else "closed"
    except TimeoutError:
        return "timeout"
    except OSError:
        return "refused"
    finally:
        s.close()


def udp_ok(netns: str, dst: str, port: int, timeout: float) -> bool:
    s = _client(netns, socket.SOCK_DGRAM, dst)
    s.settimeout(timeout)
    try:
        s.sendto(b"hi", (dst, port))
        return s.recv(16) == b"ok"
    except OSError:
        return False
    finally:
        s.close()


def attempt(topo: Topology, src: str, dst: str, proto: str, port: int, expect: bool, family: str) -> bool:
    addr = (topo.pods6 if family == "ipv6" else topo.pods)[dst]
    wait = ALLOWED_WAIT if expect else DENIED_WAIT
    if proto == "tcp":
        return tcp_outcome(topo.netns(src), addr, port, wait) == "ok"
    return udp_ok(topo.netns(src), addr, port, wait)


def run_tiers(topo: Topology, family: str = "ipv4") -> list[str]:
    """The rows of `TIER_MATRIX` whose real attempt disagrees (an allowed one gets retries:
    the machine may be busy; a denied one once, answered at once were it wrongly allowed)."""
    wrong = []
    for src, dst, proto, port, allowed in TIER_MATRIX:
        tries = 3 if allowed else 1
        got = any(attempt(topo, src, dst, proto, port, allowed, family) for _ in range(tries))
        if got != allowed:
            wrong.append(f"{family} {src}->{dst} {proto}/{port}: {'allowed' if got else 'denied'}, expected not")
    return wrong


def move_and_back(topo: Topology, backend: Dataplane, m: NodeModel) -> None:
    """Deltas replacing a tier dispatch entry: p2's Admin ingress to a chain that accepts
    everything (what it opened is open, even what p2's NetworkPolicy denies), and back."""
    open_all = Chain.ordered(IN, Tier.ADMIN, [Rule(None, None, A)])
    moved = m.copy()
    moved.chains[open_all.id] = open_all
    moved.admin_ingress[PODS["p2"]] = open_all.id
    backend.apply_delta(diff(m, moved), moved)
    assert backend.verify(moved) == []
    assert tcp_outcome(topo.netns("p1"), PODS["p2"], 20080, ALLOWED_WAIT) == "ok"
    assert tcp_outcome(topo.netns("q1"), PODS["p2"], 20511, ALLOWED_WAIT) == "ok"  # NP would deny
    backend.apply_delta(diff(moved, m), m)
    assert backend.verify(m) == []
    assert tcp_outcome(topo.netns("p1"), PODS["p2"], 20080, DENIED_WAIT) == "timeout"


# -- a pod's traffic to its own node (the input hook, not forward) -------------------------

NODE_IP, NODE_IP6 = "10.201.100.1", "fd00:201:100::1"  # node 1's own address on its link
OWN_TCP, OWN_UDP = (20601, 20602, 20603, 20604), (20605,)  # served by node 1 itself


def own_node_model(dual: bool = False) -> NodeModel:
    """`tiered_model` whose tier egress chains also name node 1's own address: p1 (a
    NetworkPolicy isolates its egress) an Admin Deny and a Pass, p3 (none does) a Baseline Deny,
    p2 an Admin Deny of everything to the node."""
    m = tiered_model(dual)
    m.sets["node"] = frozenset({f"{NODE_IP}/32", *([f"{NODE_IP6}/128"] if dual else [])})
    p1 = Chain.ordered(
        OUT,
        Tier.ADMIN,
        [
            Rule("node", ports((TCP, 20601), (UDP, 20605)), D),
            Rule("node", ports((TCP, 20602)), PS),
            *P1_ADMIN_OUT.rules,
        ],
    )
    p3 = Chain.ordered(OUT, Tier.BASELINE, [*P3_BASE_OUT.rules, Rule("node", ports((TCP, 20604)), D)])
    p2 = Chain.ordered(OUT, Tier.ADMIN, [Rule("node", None, D)])
    for old in (P1_ADMIN_OUT, P3_BASE_OUT):
        del m.chains[old.id]
    for pod, table, chain in (("p1", m.admin_egress, p1), ("p3", m.baseline_egress, p3), ("p2", m.admin_egress, p2)):
        m.chains[chain.id] = chain
        for addrs in (PODS, PODS6) if dual else (PODS,):
            table[addrs[pod]] = chain.id
    assert m.check() == []
    return m


# (source pod, protocol, port, allowed?) to node 1's own address.
OWN_MATRIX: list[tuple[str, str, int, bool]] = [
    ("p1", "tcp", 20601, False),  # Admin Deny of its own node
    ("p1", "udp", 20605, False),
    ("p1", "tcp", 20602, True),  # Admin Pass: its NetworkPolicy does not filter its own node
    ("p1", "tcp", 20603, True),  # no Admin match: likewise, though that policy allows no node
    ("p3", "tcp", 20604, False),  # Baseline Deny (no NetworkPolicy isolates p3's egress)
    ("p3", "tcp", 20603, True),
    ("p2", "tcp", 20603, False),  # Admin Deny of everything to the node
    ("q1", "tcp", 20603, True),  # a pod of node 2: not node 1's to judge (node 2 has no rules)
]


def own_node_reference(model: NodeModel, src: str, proto: str, port: int, family: str) -> bool:
    """`decide` for a pod of node 1 reaching node 1 (``own_node``); q1's node has no rules."""
    if src not in NODE1:
        return True
    addrs, node = (PODS6, NODE_IP6) if family == "ipv6" else (PODS, NODE_IP)
    l4 = L4.TCP if proto == "tcp" else L4.UDP
    return decide(model, OUT, addrs[src], node, l4, port, own_node=True).allowed


def _csv(ports: tuple[int, ...]) -> str:
    return ",".join(map(str, ports))


class NodeServer:
    """Echo servers in node 1's own namespace (a host-network pod's), on `OWN_TCP`/`OWN_UDP`."""

    def __init__(self, topo: Topology) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.node, sys.executable, "-c", SERVER, _csv(OWN_TCP), _csv(OWN_UDP)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def __enter__(self) -> NodeServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.proc.kill()
        self.proc.wait()


def run_own_node(topo: Topology, family: str = "ipv4") -> list[str]:
    """The rows of `OWN_MATRIX` whose real attempt (a pod to node 1's own address) disagrees;
    then node 1 itself reaching p2, whose tiers deny every connection of p2's to the node and
    every ingress on tcp/20080: traffic from the node is not filtered, nor are its replies."""
    node = NODE_IP6 if family == "ipv6" else NODE_IP
    wrong = []
    for src, proto, port, allowed in OWN_MATRIX:
        wait = ALLOWED_WAIT if allowed else DENIED_WAIT
        tries = 3 if allowed else 1
        if proto == "tcp":
            got = any(tcp_outcome(topo.netns(src), node, port, wait) == "ok" for _ in range(tries))
        else:
            got = any(udp_ok(topo.netns(src), node, port, wait) for _ in range(tries))
        if got != allowed:
            wrong.append(f"{family} {src}->node {proto}/{port}: {'allowed' if got else 'denied'}, expected not")
    p2 = (topo.pods6 if family == "ipv6" else topo.pods)["p2"]
    if not any(tcp_outcome(topo.node, p2, 20080, ALLOWED_WAIT) == "ok" for _ in range(3)):
        wrong.append(f"{family} node->p2 tcp/20080: denied, expected allowed (the node's own traffic)")
    return wrong


def own_node_round_trip(topo: Topology, backend: Dataplane, dual: bool, tiers_gone: Callable[[], bool]) -> NodeModel:
    """`own_node_model` by snapshot, then out of the tiers and back by deltas, `run_own_node`
    before and after (``tiers_gone``: the backend's own objects for that path are gone, read
    from the kernel); the model, for a backend's own further checks."""
    m = own_node_model(dual)
    families = ("ipv4", "ipv6") if dual else ("ipv4",)
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    for family in families:
        assert run_own_node(topo, family) == []
    base = dual_policy_model() if dual else policy_model()
    backend.apply_delta(diff(m, base), base)  # the own-node path goes with the tiers
    assert backend.verify(base) == []
    assert tiers_gone()
    backend.apply_delta(diff(base, m), m)  # and comes back in the same transaction
    assert backend.verify(m) == []
    for family in families:
        assert run_own_node(topo, family) == []
    return m
