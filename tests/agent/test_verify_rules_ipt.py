"""The periodic verify compares what every rule does (iptables + ipset): a rule of a pod chain
replaced one-for-one (``iptables -R``), same count, same deny comment, is drift, and the repair
restores the model (real packets). Each case first proves the tampering opened a connection the
model denies.
"""

from __future__ import annotations

import pytest
from conftest import DENIED_WAIT, NODE, P2_INGRESS, PODS, Topology, policy_model, run_matrix, tcp_ok, udp_ok

from stockade.agent import netns as ns
from stockade.agent.backends import make_backend, names
from stockade.agent.backends.iptables import IptablesBackend

pytestmark = pytest.mark.root

CHAIN = names.ipt_chain(P2_INGRESS.id)


@pytest.fixture(scope="module")
def backend(topology: Topology) -> IptablesBackend:
    b = make_backend("iptables", NODE, 100)
    assert isinstance(b, IptablesBackend)
    b.apply_snapshot(policy_model())
    return b


def rule_number(marker: str) -> tuple[int, str]:
    """(number, spec) of p2's ingress rule (IPv4 copy) whose spec contains ``marker``."""
    specs = [
        line.split(" ", 2)[2]
        for line in ns.run(["iptables", "-S", CHAIN], NODE, check=True).stdout.splitlines()
        if line.startswith("-A ")
    ]
    found = [(i + 1, s) for i, s in enumerate(specs) if marker in s]
    assert len(found) == 1, f"{marker!r} in {specs}"
    return found[0]


# (rule to find by a piece of its spec, a function of that spec giving its replacement, a
# connection the model denies that the replacement lets through)
CASES = {
    "port-changed": ("--dports 20053 ", lambda s: s.replace("20053", "20054"), ("p3", "p2", "udp", 20054)),
    "widened-to-accept": ("--dports 20053 ", lambda s: "-j RETURN", ("p3", "p2", "tcp", 20080)),
    # web's peer rule pointed at the CIDR set blk, which holds q1 (web holds p1 only)
    "set-swapped": (
        "--dports 20080 ",
        lambda s: s.replace(names.ipset_set("web"), names.ipset_set("blk")),
        ("q1", "p2", "tcp", 20080),
    ),
    # the deny tail keeps its comment (what the old read-back looked at)
    "deny-to-accept": ("--comment deny", lambda s: s.replace("-j DROP", "-j RETURN"), ("p3", "p2", "tcp", 20080)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rule_replaced_one_for_one_is_drift_and_repaired(
    topology: Topology, backend: IptablesBackend, case: str
) -> None:
    marker, replace, opened = CASES[case]
    model = policy_model()
    assert backend.verify(model) == []
    number, spec = rule_number(marker)
    new = replace(spec)
    assert new != spec
    ns.run(["iptables", "-R", CHAIN, str(number), *new.split()], NODE, check=True)
    src, dst, proto, port = opened
    fn = tcp_ok if proto == "tcp" else udp_ok
    assert fn(topology.netns(src), PODS[dst], port), "the tampering should have opened a connection the model denies"
    problems = backend.verify(model)
    assert any(p.startswith(f"chain {CHAIN} rule {number} differs") for p in problems), problems
    repairs = backend.repairs
    backend.repair(model)
    assert backend.repairs == repairs + 1
    assert backend.verify(model) == []
    assert not fn(topology.netns(src), PODS[dst], port, DENIED_WAIT)
    assert run_matrix(topology) == []
