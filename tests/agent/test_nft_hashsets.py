"""Host-only address sets share one hash set per family under their tags; the others are interval
sets of their own: real packets through both.

Where a set lives follows its content (`nft_render.is_hash`): pod-selector sets hold pod
addresses only and are elements ``addr . tag`` of ``hosts4`` / ``hosts6`` (one kernel set per
family, however many address sets: the kernel's set lookups by name stay short); a set with a
CIDR is an interval set of its own. A delta that would move a set is one full snapshot; a set in
the wrong place or form in the kernel, or a tampered hosts set, is drift, found and repaired.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import (
    ALLOWED_WAIT,
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
from stockade.agent.backends import make_backend, names, nft_render
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Chain, Direction, NodeModel, Rule, diff

pytestmark = pytest.mark.root

HOST_ONLY = ["p2", "web"]  # pod addresses only: in the hosts sets
INTERVAL_SETS = ["a6_blk", "a_blk"]  # CIDRs: sets of their own


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


def own_sets(backend: NftablesBackend) -> list[str]:
    view = backend.read_view()
    assert view is not None
    return sorted(view.sets)


def tagged(backend: NftablesBackend, sid: str) -> dict[int, frozenset[str]]:
    """The elements of ``sid`` in each family's hosts set."""
    view = backend.read_view()
    assert view is not None
    tag = names.nft_tag(sid)
    return {v: view.tagged.get((v, tag), frozenset()) for v in (4, 6)}


def elem(addr: str, sid: str) -> str:
    hi, lo = names.nft_tag(sid)
    return f"{addr} . {hi} . {lo}"


def denied(netns: str, dst: str, port: int) -> bool:
    return not tcp_ok(netns, dst, port, DENIED_WAIT)


def test_each_set_lives_where_its_content_says(topology: Topology, backend: NftablesBackend, dual: NodeModel) -> None:
    assert own_sets(backend) == interval_sets(backend) == INTERVAL_SETS
    assert "flags interval" in listed("a_blk") and "flags interval" in listed("a6_blk")
    assert tagged(backend, "web") == {4: frozenset({f"{PODS['p1']}/32"}), 6: frozenset({f"{PODS6['p1']}/128"})}
    assert tagged(backend, "p2") == {4: frozenset({f"{PODS['p2']}/32"}), 6: frozenset({f"{PODS6['p2']}/128"})}
    assert elem(PODS6["p1"], "web") in listed("hosts6") and "flags" not in listed("hosts4")
    # peers in the hosts sets (web, p2) and in sets of their own (blk), both families
    assert run_matrix(topology, "ipv4") == []
    assert run_matrix(topology, "ipv6") == []


def test_host_only_set_deltas_by_netlink_and_by_script(
    topology: Topology, backend: NftablesBackend, dual: NodeModel
) -> None:
    p3 = topology.netns("p3")
    assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
    # element-only: netlink, address . tag keys into the hosts sets
    wider = dual.copy()
    wider.sets["web"] = dual.sets["web"] | {f"{PODS['p3']}/32", f"{PODS6['p3']}/128"}
    delta = diff(dual, wider)
    assert nft_render.is_element_only(delta) and not nft_render.kind_changes(delta, wider, set(INTERVAL_SETS), (4, 6))
    before = backend.transactions
    backend.apply_delta(delta, wider)
    assert backend.transactions == before + 1
    assert backend.verify(wider) == [] and interval_sets(backend) == INTERVAL_SETS
    assert tcp_ok(p3, PODS["p2"], 20080) and tcp_ok(p3, PODS6["p2"], 20080)
    # with a new chain: an nft script, removing elements and adding a new host-only set: its
    # elements under its tag, no kernel set of its own
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
    assert own_sets(backend) == INTERVAL_SETS
    assert tagged(backend, "p3") == {4: frozenset({f"{PODS['p3']}/32"}), 6: frozenset({f"{PODS6['p3']}/128"})}
    assert tagged(backend, "web")[4] == frozenset({f"{PODS['p1']}/32"})
    assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
    assert tcp_ok(p3, PODS["p1"], 20443) and tcp_ok(p3, PODS6["p1"], 20443)  # from the new set's tag
    assert denied(topology.netns("q1"), PODS6["p1"], 20443)
    assert denied(topology.netns("p2"), PODS["p1"], 20443)  # p2 is in other sets, not under p3's tag
    # the set removed again: its elements leave the hosts sets (verify would name any left)
    backend.apply_delta(diff(closed, dual), dual)
    assert backend.verify(dual) == [] and tagged(backend, "p3") == {4: frozenset(), 6: frozenset()}


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
        assert tagged(fresh, "web") == {4: frozenset(), 6: frozenset()}  # moved out of the hosts sets
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
        assert fresh.verify(dual) == [] and interval_sets(fresh) == own_sets(fresh) == INTERVAL_SETS
        assert denied(p3, PODS["p2"], 20080) and denied(p3, PODS6["p2"], 20080)
        assert run_matrix(topology, "ipv6") == []
    finally:
        fresh.close()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        # a pod set in a set of its own, its users emptied (as when the set held a CIDR before)
        (
            f"flush chain inet stockade {P2_INGRESS.id}; "
            f"add set inet stockade a6_web {{ type ipv6_addr; flags interval; elements = {{ {PODS6['p1']}/128 }}; }}",
            "extra set a6_web",
        ),
        # a CIDR set re-created as a hash set of one of its addresses
        (
            f"flush chain inet stockade {P2_INGRESS.id}; flush chain inet stockade {P1_EGRESS.id}; "
            "delete set inet stockade a_blk; "
            "add set inet stockade a_blk { type ipv4_addr; elements = { 10.202.0.1 }; }",
            "set a_blk is a hash set, expected an interval set",
        ),
    ],
    ids=["pod-set-of-its-own", "cidr-set-as-hash"],
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


WEB6 = PODS6["p1"]


@pytest.mark.parametrize(
    ("damage", "problem", "while_damaged"),
    [
        # p1 taken out of "web" by hand: p1 is denied (closed) until repaired
        (
            f"delete element inet stockade hosts6 {{ {elem(WEB6, 'web')} }}",
            "(address set 'web') differs: missing elements ['" + WEB6 + "/128']",
            ("p1", False),
        ),
        # p3 slipped into "web" by hand: allowed, the drift that matters most
        (
            f"add element inet stockade hosts6 {{ {elem(PODS6['p3'], 'web')} }}",
            "(address set 'web') differs: missing elements [], extra ['" + PODS6["p3"] + "/128']",
            ("p3", True),
        ),
        # elements under a tag no set of the model has
        ("add element inet stockade hosts6 { fd00:201:9::9 . 1 . 2 }", "tag 1.2 (no address set)", None),
        # every host-only set of the family emptied at once: their rules name tags with no elements
        ("flush set inet stockade hosts6", "(address set 'p2') differs", ("p1", False)),
        # the hosts set deleted (every rule naming it emptied first, as nft demands): rebuilt whole
        (
            "; ".join(f"flush chain inet stockade {c.id}" for c in (P2_INGRESS, P1_EGRESS))
            + "; delete set inet stockade hosts6",
            "missing hosts6",
            None,
        ),
        # re-created with another key: not ours, rebuilt whole
        (
            "; ".join(f"flush chain inet stockade {c.id}" for c in (P2_INGRESS, P1_EGRESS))
            + "; delete set inet stockade hosts6; add set inet stockade hosts6 { type ipv6_addr; }",
            "missing hosts6",
            None,
        ),
    ],
    ids=["element-removed", "element-added", "unknown-tag", "flushed", "deleted", "other-key"],
)
def test_a_tampered_hosts_set_is_drift_and_repaired(
    topology: Topology,
    backend: NftablesBackend,
    dual: NodeModel,
    damage: str,
    problem: str,
    while_damaged: tuple[str, bool] | None,
) -> None:
    ns.run(["nft", damage], NODE, check=True)
    assert any(problem in p for p in backend.verify(dual)), backend.verify(dual)
    if while_damaged is not None:  # the damage is real: packets see it
        src, passes = while_damaged
        assert tcp_ok(topology.netns(src), PODS6["p2"], 20080, ALLOWED_WAIT if passes else DENIED_WAIT) is passes
    backend.repair(dual)
    assert backend.verify(dual) == []
    assert tcp_ok(topology.netns("p1"), PODS6["p2"], 20080) and denied(topology.netns("p3"), PODS6["p2"], 20080)
    assert run_matrix(topology, "ipv6") == []
