"""The iptables + ipset backend against real namespaces and real packets (iptables-nft 1.8.9 here)."""

from __future__ import annotations

import pytest
from conftest import (
    NODE,
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

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend, names
from stockade.agent.backends.iptables import IptablesBackend

pytestmark = pytest.mark.root

FOREIGN = "OTHER-COMPONENT"


@pytest.fixture(scope="module")
def backend(topology: Topology) -> IptablesBackend:
    # Someone else's chain and FORWARD rule: we must never touch them.
    ns.run(["iptables", "-N", FOREIGN], NODE, check=True)
    ns.run(["iptables", "-A", FOREIGN, "-s", "192.0.2.1", "-j", "DROP"], NODE, check=True)
    ns.run(["iptables", "-A", "FORWARD", "-j", FOREIGN], NODE, check=True)
    b = make_backend("iptables", NODE, 100)
    assert isinstance(b, IptablesBackend)
    b.apply_snapshot(policy_model())
    return b


def foreign_rules() -> str:
    return ns.run(["iptables", "-S", FOREIGN], NODE, check=True).stdout


def test_every_rule_kind_allows_and_denies(topology: Topology, backend: IptablesBackend) -> None:
    case_matrix(topology, backend)


def test_sctp_rendered_and_enforced(topology: Topology, backend: IptablesBackend) -> None:
    case_sctp(topology, backend)


def test_delta_changes_what_passes(topology: Topology, backend: IptablesBackend) -> None:
    case_delta_changes_what_passes(topology, backend)


def test_blocked_counts_exact_once_per_connection(topology: Topology, backend: IptablesBackend) -> None:
    case_blocked_counts(topology, backend)


def test_thousand_deltas_are_atomic(topology: Topology, backend: IptablesBackend) -> None:
    # Three processes per delta (ipset, iptables-restore, ipset): chains change every 10th delta
    # to keep the test short; every delta changes sets and dispatch.
    case_atomic(topology, backend, 1000, chain_every=10)


def test_restart_applies_nothing(topology: Topology, backend: IptablesBackend) -> None:
    before = backend.read_view()
    fresh = IptablesBackend(NODE)
    fresh.apply_snapshot(policy_model())
    assert fresh.transactions == 0
    assert fresh.read_view().denied == before.denied  # counters kept: no chain was rewritten


@pytest.mark.parametrize(
    "damage",
    [
        ["iptables", "-F", "STOCKADE-FWD"],
        ["iptables", "-D", "FORWARD", "-j", "STOCKADE-FWD"],
        ["iptables", "-F", names.ipt_chain(P2_INGRESS.id)],
        ["ipset", "flush", names.ipset_set("web")],
        [
            "sh",
            "-c",
            f"iptables -F {names.ipt_chain(P2_INGRESS.id)} && ipset destroy {names.ipset_set('web')}",
        ],
    ],
    ids=["fwd-chain", "forward-jump", "pod-chain", "set-flushed", "set-destroyed"],
)
def test_drift_found_and_repaired(topology: Topology, backend: IptablesBackend, damage: list[str]) -> None:
    before = foreign_rules()
    case_drift(topology, backend, damage)
    assert foreign_rules() == before


def test_other_chains_untouched(topology: Topology, backend: IptablesBackend) -> None:
    rules = ns.run(["iptables", "-S", "FORWARD"], NODE, check=True).stdout
    assert f"-A FORWARD -j {FOREIGN}" in rules and "-A FORWARD -j STOCKADE-FWD" in rules
    assert "192.0.2.1/32 -j DROP" in foreign_rules()
