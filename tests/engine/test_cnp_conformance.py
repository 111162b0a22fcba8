"""The upstream ClusterNetworkPolicy conformance suite, every probe, against the tier oracle."""

from __future__ import annotations

from typing import Any

import pytest

from .cnp_conformance import Replay, load
from .cnp_oracle import CNPOracle

DATA = load()
TESTS = {t["name"]: t for t in DATA["tests"]}


def oracle(replay: Replay) -> CNPOracle:
    return CNPOracle(
        namespaces=replay.kind("Namespace"),
        pods=replay.kind("Pod"),
        nodes=replay.kind("Node"),
        policies=replay.kind("NetworkPolicy"),
        cnps=replay.kind("ClusterNetworkPolicy"),
    )


def test_the_data_holds_the_whole_suite() -> None:
    """Every ConformanceTest of conformance/tests/*.go, and every PokeServer call (counted in the Go files)."""
    assert len(TESTS) == 24
    probes = {name: sum(1 for _ in Replay(DATA, t).run()) for name, t in TESTS.items()}
    assert sum(probes.values()) == 301
    assert all(n > 0 for n in probes.values())
    experimental = sorted(n for n, t in TESTS.items() if t["channel"] == "experimental")
    assert experimental == [
        "CNPAdminTierEgressNamedPort",
        "CNPAdminTierEgressNodePeers",
        "CNPAdminTierIngressNamedPort",
        "CNPBaselineTierEgressNamedPort",
        "CNPBaselineTierEgressNodePeers",
        "CNPBaselineTierIngressNamedPort",
    ]


@pytest.mark.parametrize("name", sorted(TESTS))
def test_conformance(name: str) -> None:
    replay = Replay(DATA, TESTS[name])
    wrong: list[str] = []
    for probe in replay.run():
        o = oracle(replay)
        assert not o.rejected, f"{probe}: the suite's policies must all be valid: {o.rejected}"
        src, dst = replay.pod(probe.src), replay.pod(probe.dst)
        out, into = o.decide(src, dst["status"]["podIP"], probe.protocol, probe.port)
        if (out.allowed and into.allowed) != probe.connect:
            wrong.append(f"{probe}: oracle says egress {out}, ingress {into}")
    assert not wrong, "\n".join(wrong)


def test_every_tier_decides_somewhere() -> None:
    """The suite exercises each tier, each action and each fall-through (a guard that the replay
    reaches what it should, not only verdicts that happen to agree)."""
    seen: set[tuple[str, bool]] = set()
    passes = 0
    for t in TESTS.values():
        replay = Replay(DATA, t)
        for probe in replay.run():
            src, dst = replay.pod(probe.src), replay.pod(probe.dst)
            decisions: Any = oracle(replay).decide(src, dst["status"]["podIP"], probe.protocol, probe.port)
            for d in decisions:
                seen.add((d.tier, d.allowed))
                passes += bool(d.passed)
    for tier in ("Admin", "Baseline"):
        assert (tier, True) in seen and (tier, False) in seen
    assert ("NetworkPolicy", True) in seen and ("default", True) in seen
    assert ("not a subject", True) in seen  # the host-network server's side
    assert passes > 0
