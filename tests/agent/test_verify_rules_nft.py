"""The periodic verify compares what every rule does (nftables): a rule replaced one-for-one,
same rule count, same deny comment, is drift, and the repair restores the model (real packets).

Each case first proves with a real connection that the tampering opened something the model
denies, so a verify that calls it in sync would leave a real hole.
"""

from __future__ import annotations

import pytest
from conftest import (
    DENIED_WAIT,
    NODE,
    P2_INGRESS,
    PODS,
    Topology,
    policy_model,
    run_matrix,
    tcp_ok,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend, names
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Chain, Direction, PortMatch, Protocol, Rule

pytestmark = pytest.mark.root

CHAIN = names.nft_chain(P2_INGRESS.id)


@pytest.fixture(scope="module")
def backend(topology: Topology) -> NftablesBackend:
    b = make_backend("nftables", NODE, 100)
    assert isinstance(b, NftablesBackend)
    b.apply_snapshot(policy_model())
    return b


def handle_of(marker: str) -> str:
    """The handle of p2's ingress rule whose listing contains ``marker``."""
    listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", CHAIN], NODE, check=True).stdout
    lines = [line for line in listing.splitlines() if marker in line and "# handle " in line]
    assert len(lines) == 1, f"{marker!r} in {listing}"
    return lines[0].rsplit("# handle ", 1)[1].strip()


def web_tag() -> str:
    return f"offset {names.nft_tag('web')[1]}"  # the listing prints the tag's words: the second will do


# (rule to find by a piece of its listing, what replaces it, a connection the model denies that
# the replacement lets through: (source pod, destination pod, protocol, port))
CASES = {
    "port-changed": ("udp dport 20053 accept", "udp dport 20054 accept", ("p3", "p2", "udp", 20054)),
    "widened-to-accept": ("udp dport 20053 accept", "accept", ("p3", "p2", "tcp", 20080)),
    # web's peer rule pointed at the CIDR set blk, which holds q1 (web holds p1 only)
    "set-swapped": ("tcp dport 20080 accept", "ip saddr @a_blk tcp dport 20080 accept", ("q1", "p2", "tcp", 20080)),
    # the deny tail keeps its counter and its comment (what the old read-back looked at)
    "deny-to-accept": ("comment", 'counter accept comment "deny g100 r0"', ("p3", "p2", "tcp", 20080)),
}


def connects(topology: Topology, src: str, dst: str, proto: str, port: int) -> bool:
    fn = tcp_ok if proto == "tcp" else udp_ok
    return fn(topology.netns(src), PODS[dst], port)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rule_replaced_one_for_one_is_drift_and_repaired(
    topology: Topology, backend: NftablesBackend, case: str
) -> None:
    marker, replacement, opened = CASES[case]
    model = policy_model()
    assert backend.verify(model) == []
    marker = marker if case != "set-swapped" else f"{web_tag()} @hosts4 {marker}"
    handle = handle_of(marker)
    ns.run(["nft", "replace", "rule", "inet", "stockade", CHAIN, "handle", handle, replacement], NODE, check=True)
    assert connects(topology, *opened), "the tampering should have opened a connection the model denies"
    problems = backend.verify(model)
    assert any(p.startswith(f"chain {CHAIN} rule ") and "differs" in p for p in problems), problems
    repairs = backend.repairs
    backend.repair(model)
    assert backend.repairs == repairs + 1
    assert backend.verify(model) == []
    src, dst, proto, port = opened
    fn = tcp_ok if proto == "tcp" else udp_ok
    assert not fn(topology.netns(src), PODS[dst], port, DENIED_WAIT)
    assert run_matrix(topology) == []


def test_port_chain_rule_replaced_is_drift(topology: Topology, backend: NftablesBackend) -> None:
    """A shared port chain (a peer rule with several port lines) keeps its rule count when one
    line is replaced: still drift, repaired."""
    model = policy_model()
    wide = Chain.of(Direction.INGRESS, [Rule("web", (PortMatch(Protocol.TCP, 20080), PortMatch(Protocol.UDP, 20053)))])
    model.chains = {**model.chains, wide.id: wide}
    model.ingress = {**model.ingress, PODS["p2"]: wide.id}
    backend.apply_snapshot(model)
    try:
        assert backend.verify(model) == []
        assert not udp_ok(topology.netns("p1"), PODS["p2"], 20054, DENIED_WAIT)
        view = backend.read_view()
        assert view is not None and len(view.ports) == 1
        port_chain = next(iter(view.ports))
        listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", port_chain], NODE, check=True).stdout
        line = next(ln for ln in listing.splitlines() if "udp dport 20053" in ln)
        handle = line.rsplit("# handle ", 1)[1].strip()
        ns.run(["nft", "replace", "rule", "inet", "stockade", port_chain, "handle", handle, "accept"], NODE, check=True)
        assert udp_ok(topology.netns("p1"), PODS["p2"], 20054)
        problems = backend.verify(model)
        assert any(p.startswith(f"chain {port_chain} rule ") and "differs" in p for p in problems), problems
        backend.repair(model)
        assert backend.verify(model) == []
        assert not udp_ok(topology.netns("p1"), PODS["p2"], 20054, DENIED_WAIT)
        assert udp_ok(topology.netns("p1"), PODS["p2"], 20053)
        assert tcp_ok(topology.netns("p1"), PODS["p2"], 20080)
    finally:
        backend.apply_snapshot(policy_model())
    assert run_matrix(topology) == []


@pytest.mark.parametrize(
    ("chain", "marker"),
    [("forward", "ct state established,related accept"), ("once_in", "add @seen_in { ip saddr")],
    ids=["forward-established-to-accept", "once-to-accept"],
)
def test_fixed_chain_rule_replaced_is_drift(
    topology: Topology, backend: NftablesBackend, chain: str, marker: str
) -> None:
    """The forward and once chains are the same on every node: their rules are compared with how
    this kernel shows a freshly rendered copy (`NftablesBackend.fixed_reference`)."""
    model = policy_model()
    assert backend.verify(model) == []
    listing = ns.run(["nft", "-a", "list", "chain", "inet", "stockade", chain], NODE, check=True).stdout
    line = next(ln for ln in listing.splitlines() if marker in ln and "# handle " in ln)
    handle = line.rsplit("# handle ", 1)[1].strip()
    ns.run(["nft", "replace", "rule", "inet", "stockade", chain, "handle", handle, "accept"], NODE, check=True)
    assert tcp_ok(topology.netns("p3"), PODS["p2"], 20080), "the tampering should have opened p3 -> p2"
    problems = backend.verify(model)
    assert any(p.startswith(f"chain {chain} rule ") and "differs" in p for p in problems), problems
    backend.repair(model)
    assert backend.verify(model) == []
    assert not tcp_ok(topology.netns("p3"), PODS["p2"], 20080, DENIED_WAIT)
    assert run_matrix(topology) == []


def test_no_scratch_table_left(topology: Topology, backend: NftablesBackend) -> None:
    assert backend.fixed_reference() is not None
    tables = ns.run(["nft", "list", "tables"], NODE, check=True).stdout
    assert "stockade_ref" not in tables
