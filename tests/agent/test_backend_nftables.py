"""The nftables backend against real namespaces and real packets (see conftest for the topology)."""

from __future__ import annotations

import pytest
from conftest import (
    NODE,
    P1_EGRESS,
    P2_INGRESS,
    Topology,
    case_atomic,
    case_blocked_counts,
    case_delta_changes_what_passes,
    case_drift,
    case_matrix,
    case_sctp,
    policy_model,
)

from stockade.agent.backends import make_backend, names
from stockade.agent.backends.base import ApplyError
from stockade.agent.backends.nft_render import NftConfig, render_snapshot
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import NodeDelta

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def backend(topology: Topology) -> NftablesBackend:
    b = make_backend("nftables", NODE, 100)
    assert isinstance(b, NftablesBackend)
    b.apply_snapshot(policy_model())
    return b


def test_auto_picks_nftables(topology: Topology) -> None:
    assert make_backend("auto", NODE, 100).name == "nftables"


def test_every_rule_kind_allows_and_denies(topology: Topology, backend: NftablesBackend) -> None:
    case_matrix(topology, backend)


def test_sctp_rendered_and_enforced(topology: Topology, backend: NftablesBackend) -> None:
    assert "sctp dport 20099 accept" in render_snapshot(policy_model(), NftConfig())
    case_sctp(topology, backend)


def test_delta_changes_what_passes(topology: Topology, backend: NftablesBackend) -> None:
    case_delta_changes_what_passes(topology, backend)


def test_bad_transaction_raises_and_changes_nothing(topology: Topology, backend: NftablesBackend) -> None:
    model = policy_model()
    bad = NodeDelta("n1", set_added={"web": frozenset({"10.201.3.2/32"})}, removed_chains=frozenset({"in_nosuch"}))
    with pytest.raises(ApplyError, match="No such file"):
        backend.apply_delta(bad, model)
    assert backend.verify(model) == []  # the element add in the same transaction did not happen
    # a set removed that the node never had: its elements cannot be found, so nothing is applied
    unknown = NodeDelta("n1", set_added={"web": frozenset({"10.201.3.2/32"})}, removed_sets=frozenset({"nosuch"}))
    with pytest.raises(ApplyError, match=r"removes address sets \['nosuch'\] that this node does not hold"):
        backend.apply_delta(unknown, model)
    assert backend.verify(model) == []


def test_bad_element_batch_raises_and_changes_nothing(topology: Topology, backend: NftablesBackend) -> None:
    # Element-only deltas go over netlink, not through nft: same all-or-nothing contract.
    model = policy_model()
    missing = NodeDelta(
        "n1",
        set_added={"web": frozenset({"10.201.3.2/32"})},
        set_removed={"web": frozenset({"10.201.9.9/32"})},  # not in the kernel
    )
    with pytest.raises(ApplyError, match="No such file"):
        backend.apply_delta(missing, model)
    assert backend.verify(model) == []


def test_blocked_counts_exact_once_per_connection(topology: Topology, backend: NftablesBackend) -> None:
    case_blocked_counts(topology, backend)


def test_thousand_deltas_are_atomic(topology: Topology, backend: NftablesBackend) -> None:
    case_atomic(topology, backend)
    # and with element-only deltas (the netlink path) in between: chains change every 10th
    case_atomic(topology, backend, 1000, chain_every=10)


def test_restart_applies_nothing(topology: Topology, backend: NftablesBackend) -> None:
    before = backend.read_view()
    assert before is not None
    fresh = NftablesBackend(NODE)
    fresh.apply_snapshot(policy_model())
    assert fresh.transactions == 0
    after = fresh.read_view()
    assert after is not None
    assert after.handles == before.handles and after.denied == before.denied


WEB = "{} . {} . {}".format("{}", *names.nft_tag("web"))  # an element of set web in hosts4


@pytest.mark.parametrize(
    "damage",
    [
        "flush table inet stockade",
        f"delete element inet stockade hosts4 {{ {WEB.format('10.201.1.2')} }}",
        # p3 slipped into set web by hand: it would be allowed to p2
        f"add element inet stockade hosts4 {{ {WEB.format('10.201.3.2')} }}",
        "delete element inet stockade ingress_dispatch { 10.201.3.2 }",
        f"flush chain inet stockade {P2_INGRESS.id}",
        "delete table inet stockade",
        # every host-only set emptied at once
        "flush set inet stockade hosts4",
        # an interval set deleted by hand (its users emptied first, as nft demands)
        f"flush chain inet stockade {P2_INGRESS.id}; flush chain inet stockade {P1_EGRESS.id}; "
        "delete set inet stockade a_blk",
    ],
    ids=["flush-table", "set-element", "extra-element", "dispatch", "chain", "table", "hosts-flushed", "set"],
)
def test_drift_found_and_repaired(topology: Topology, backend: NftablesBackend, damage: str) -> None:
    case_drift(topology, backend, ["nft", damage])
