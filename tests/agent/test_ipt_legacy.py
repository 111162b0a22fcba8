"""The iptables backend through the iptables-legacy binaries (x_tables, not nf_tables), both
families: the same rules, read back and counted the same way, and nothing in the nft tables."""

from __future__ import annotations

import shutil

import pytest
from conftest import (
    DENIED_WAIT,
    NODE,
    P2_INGRESS,
    PODS,
    PODS6,
    Topology,
    dual_policy_model,
    run_matrix,
    settled_count,
    syn_burst,
    tcp_ok,
    udp_burst,
)

from stockade.agent import netns as ns
from stockade.agent.backends import ipt_render, names
from stockade.agent.backends.iptables import IptablesBackend

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def backend(topology: Topology) -> IptablesBackend:
    missing = [t for t in (ipt_render.tool(f, "restore", "legacy") for f in (4, 6)) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"no {', '.join(missing)} on this machine")
    b = IptablesBackend(NODE, variant="legacy")
    b.apply_snapshot(dual_policy_model())
    return b


def test_legacy_tables_enforce_both_families(topology: Topology, backend: IptablesBackend) -> None:
    assert backend.verify(dual_policy_model()) == []
    for f in (4, 6):
        legacy = ns.run([ipt_render.tool(f, "save", "legacy")], NODE, check=True).stdout
        nft = ns.run([ipt_render.tool(f, "save", "nft")], NODE, check=True).stdout
        assert f":{names.ipt_chain(P2_INGRESS.id)}" in legacy and "STK-" not in nft
    assert run_matrix(topology, "ipv6") == []
    assert run_matrix(topology, "ipv4") == []


def test_legacy_restart_applies_nothing(topology: Topology, backend: IptablesBackend) -> None:
    before = backend.read_view().denied
    fresh = IptablesBackend(NODE, variant="legacy")
    fresh.apply_snapshot(dual_policy_model())
    assert fresh.transactions == 0 and fresh.read_view().denied == before


def test_legacy_counts_exact(topology: Topology, backend: IptablesBackend) -> None:
    before = backend.denied_counts()[P2_INGRESS.id]
    syn_burst(topology.netns("p3"), PODS6["p2"], 20443, 300, linger=1.5)
    syn_burst(topology.netns("p3"), PODS["p2"], 20443, 300, linger=1.5)
    udp_burst(topology.netns("p3"), PODS6["p2"], 20054, flows=100, per_flow=3)
    assert settled_count(lambda: backend.denied_counts()[P2_INGRESS.id], before + 700) - before == 700


@pytest.mark.parametrize("family", [4, 6])
def test_legacy_drift_repaired(topology: Topology, backend: IptablesBackend, family: int) -> None:
    model = dual_policy_model()
    ns.run([ipt_render.tool(family, "", "legacy"), "-F", names.ipt_chain(P2_INGRESS.id)], NODE, check=True)
    assert backend.verify(model) != []
    backend.repair(model)
    assert backend.verify(model) == []
    addr = PODS6 if family == 6 else PODS
    assert tcp_ok(topology.netns("p1"), addr["p2"], 20080)
    assert not tcp_ok(topology.netns("p3"), addr["p2"], 20080, DENIED_WAIT)


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown iptables variant 'nf'"):
        IptablesBackend(NODE, variant="nf")
