"""Address sets of host addresses are hash sets, the others interval sets: real packets through both.

A set's kernel kind follows its content (`nft_render.is_hash`): pod-selector sets hold pod
addresses only and are plain ``ipv4_addr`` / ``ipv6_addr`` hash sets (cheaper to create and fill
than interval sets); a set with a CIDR is an interval set. A delta that would change a set's kind
is one full snapshot; a set of the wrong kind in the kernel is drift, found and repaired.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import (
    DENIED_WAIT,
    NODE,
    P1_EGRESS,
    P2_INGRESS,
    PODS,
    PODS6,
    Topology,
    dual_policy_model,
    run_matrix,
    tcp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend, nft_render
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Chain, Direction, NodeModel, Rule, diff

pytestmark = pytest.mark.root

HASH_SETS = ["a6_p2", "a6_web", "a_p2", "a_web"]  # pod addresses only
INTERVAL_SETS = ["a6_blk", "a_blk"]  # CIDRs


@pytest.fixture(scope="module")
def backend(topology: Topology) -> Iterator[NftablesBackend]:
    b = make_backend("nftables", NODE, 100)
    assert isinstance(b, NftablesBackend)
    b.apply_snapshot(dual_policy_model())
    yield b
    b.close()


@pytest.fixture
def dual(backend: NftablesBackend) -> Iterator[NodeModel]:
    model = dual_policy_model()
    backend.repair(model)
    yield model
    backend.repair(model)


def interval_sets(backend: NftablesBackend) -> list[str]:
    view = backend.read_view()
    assert view is not None
    return sorted(view.interval)


def listed(name: str) -> str:
    return ns.run(["nft", "list", "set", "inet", "stockade", name], NODE, check=True).stdout


def denied(netns: str, dst: str, port: int) -> bool:
    return not tcp_ok(netns, dst, port, DENIED_WAIT)


def test_each_set_has_the_kind_of_its_content(topology: Topology, backend: NftablesBackend, dual: NodeModel) -> None:
    assert interval_sets(backend) == INTERVAL_SETS
    assert "flags interval" not in listed("a_web") and "flags interval" not in listed("a6_p2")
    assert "flags interval" in listed("a_blk") and "flags interval" in listed("a6_blk")
    # hash-set peers (web, p2) and interval-set peers (blk) in both families
    assert run_matrix(topology, "ipv4") == []
    assert run_matrix(topology, "ipv6") == []


def test_hash_set_deltas_by_netlink_and_by_script(
    topology: Topology, backend: NftablesBackend, dual: NodeModel
) -> None:
    p3 = topology.netns("p3")
    assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
    # element-only: netlink, bare keys into the hash sets
    wider = dual.copy()
    wider.sets["web"] = dual.sets["web"] | {f"{PODS['p3']}/32", f"{PODS6['p3']}/128"}
    delta = diff(dual, wider)
    assert nft_render.is_element_only(delta) and not nft_render.kind_changes(delta, wider, set(INTERVAL_SETS), (4, 6))
    before = backend.transactions
    backend.apply_delta(delta, wider)
    assert backend.transactions == before + 1
    assert backend.verify(wider) == [] and interval_sets(backend) == INTERVAL_SETS
    assert tcp_ok(p3, PODS["p2"], 20080) and tcp_ok(p3, PODS6["p2"], 20080)
    # with a new chain: an nft script, removing the hash sets' elements and creating a hash set
    closed = wider.copy()
    closed.sets["web"] = dual.sets["web"]
    closed.sets["p3"] = frozenset({f"{PODS['p3']}/32", f"{PODS6['p3']}/128"})
    only_p3 = Chain.of(Direction.INGRESS, [Rule("p3", None)])
    closed.chains[only_p3.id] = only_p3
    closed.ingress[PODS["p1"]] = closed.ingress[PODS6["p1"]] = only_p3.id
    delta = diff(wider, closed)
    assert not nft_render.is_element_only(delta)
    backend.apply_delta(delta, closed)
    assert backend.transactions == before + 2
    assert backend.verify(closed) == []
    assert interval_sets(backend) == INTERVAL_SETS and "flags interval" not in listed("a6_p3")
    assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
    assert tcp_ok(p3, PODS["p1"], 20443) and tcp_ok(p3, PODS6["p1"], 20443)  # from the new hash set
    assert denied(topology.netns("q1"), PODS6["p1"], 20443)
    backend.apply_delta(diff(closed, dual), dual)
    assert backend.verify(dual) == []


def test_a_cidr_into_a_hash_set_is_one_snapshot(topology: Topology, backend: NftablesBackend, dual: NodeModel) -> None:
    """The delta only changes elements, but a hash set cannot hold a CIDR: the table is replaced
    in one transaction, "web" becomes an interval set in both families. And back. A restarted
    backend learns the kinds in force from the kernel."""
    p3 = topology.netns("p3")
    cidrs = dual.copy()
    cidrs.sets["web"] = dual.sets["web"] | {"10.201.3.0/24", "fd00:201:3::/64"}  # p3's pod ranges
    delta = diff(dual, cidrs)
    assert nft_render.is_element_only(delta)
    fresh = NftablesBackend(NODE)
    try:
        fresh.apply_delta(delta, cidrs)
        assert fresh.transactions == 1
        assert fresh.verify(cidrs) == []
        assert interval_sets(fresh) == ["a6_blk", "a6_web", "a_blk", "a_web"]
        assert tcp_ok(p3, PODS["p2"], 20080) and tcp_ok(p3, PODS6["p2"], 20080)
        # a host added to the interval set now: an element change, no snapshot
        more = cidrs.copy()
        more.sets["web"] = cidrs.sets["web"] | {f"{PODS['q1']}/32"}
        fresh.apply_delta(diff(cidrs, more), more)
        assert fresh.transactions == 2 and fresh.verify(more) == []
        assert tcp_ok(topology.netns("q1"), PODS["p2"], 20080)
        # the CIDRs gone: "web" holds hosts only again, a hash set again (one snapshot)
        fresh.apply_delta(diff(more, dual), dual)
        assert fresh.transactions == 3
        assert fresh.verify(dual) == [] and interval_sets(fresh) == INTERVAL_SETS
        assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
        assert run_matrix(topology, "ipv6") == []
    finally:
        fresh.close()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        # a pod set re-created as an interval set (its users emptied first, as nft demands)
        (
            f"flush chain inet stockade {P2_INGRESS.id}; delete set inet stockade a6_web; "
            f"add set inet stockade a6_web {{ type ipv6_addr; flags interval; elements = {{ {PODS6['p1']}/128 }}; }}",
            "set a6_web is an interval set, expected a hash set",
        ),
        # a CIDR set re-created as a hash set of one of its addresses
        (
            f"flush chain inet stockade {P2_INGRESS.id}; flush chain inet stockade {P1_EGRESS.id}; "
            "delete set inet stockade a_blk; "
            "add set inet stockade a_blk { type ipv4_addr; elements = { 10.202.0.1 }; }",
            "set a_blk is a hash set, expected an interval set",
        ),
    ],
    ids=["pod-set-as-interval", "cidr-set-as-hash"],
)
def test_a_set_of_the_wrong_kind_is_drift_and_repaired(
    topology: Topology, backend: NftablesBackend, dual: NodeModel, damage: str, problem: str
) -> None:
    ns.run(["nft", damage], NODE, check=True)
    assert problem in backend.verify(dual)
    backend.repair(dual)
    assert backend.verify(dual) == [] and interval_sets(backend) == INTERVAL_SETS
    assert run_matrix(topology, "ipv4") == []
    assert run_matrix(topology, "ipv6") == []
