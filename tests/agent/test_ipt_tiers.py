"""ClusterNetworkPolicy tiers in the iptables + ipset backend: the tier cases of the nftables
backend's tests (`tier_cases`) with real packets in namespaces (IPv4 and dual-stack), the Deny
counted once and logged under its rule, deltas into, within and out of the tier layout, and
drift found and repaired; then the layout as pure renders."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    NODE,
    PODS,
    PODS6,
    Topology,
    policy_model,
    run_matrix,
    settled_count,
    syn_burst,
    udp_burst,
)
from tier_cases import (
    IN,
    OUT,
    P1_ADMIN_OUT,
    P1_BASE_IN,
    P2_ADMIN_IN,
    P3_BASE_OUT,
    PS,
    TCP,
    A,
    D,
    NodeServer,
    move_and_back,
    own_node_round_trip,
    run_own_node,
    run_tiers,
    tcp_outcome,
    tiered_model,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import ipt_readback, ipt_render, ipt_tiers, names
from stockade.agent.backends.iptables import IptablesBackend
from stockade.agent.nflog import NflogReader
from stockade.model import Chain, NodeModel, PortMatch, Rule, Tier, diff

GROUP = 100


@pytest.fixture(scope="module")
def backend(topology: Topology) -> Iterator[IptablesBackend]:
    b = IptablesBackend(NODE, GROUP)
    yield b
    b.apply_snapshot(policy_model())  # what the other modules' tests start from


def ipt(*args: str, family: int = 4) -> None:
    proc = ns.run([ipt_render.tool(family), *args], NODE)
    assert proc.returncode == 0, proc.stderr


def ipset(*args: str) -> None:
    proc = ns.run(["ipset", *args], NODE)
    assert proc.returncode == 0, proc.stderr


def save(family: int = 4) -> str:
    return ns.run([ipt_render.tool(family, "save"), "-t", "filter"], NODE, check=True).stdout


# -- real packets --------------------------------------------------------------------------


@pytest.mark.root
def test_snapshot_enforces_the_tiers(topology: Topology, backend: IptablesBackend) -> None:
    m = tiered_model()
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    assert run_tiers(topology) == []


@pytest.mark.root
def test_dual_stack_enforces_the_tiers(topology: Topology, backend: IptablesBackend) -> None:
    m = tiered_model(dual=True)
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    assert run_tiers(topology, "ipv6") == []
    assert run_tiers(topology, "ipv4") == []


@pytest.mark.root
def test_deny_drops_silently_counted_once_logged_by_rule(topology: Topology, backend: IptablesBackend) -> None:
    m = tiered_model()
    backend.apply_snapshot(m)
    key = f"{P2_ADMIN_IN.id}/1"  # the NFLOG prefix of p2's Admin ingress rule 1, read back

    def denied() -> int:
        return backend.denied_counts().get(key, 0)

    with NflogReader(NODE, GROUP, netns=NODE) as reader:
        first = denied()
        # Admin ingress Deny of what p2's NetworkPolicy allows: silence (a reject would refuse
        # at once), one count through the SYN's retransmit after 1 s
        assert tcp_outcome(topology.netns("p1"), PODS["p2"], 20080, 1.5) == "timeout"
        assert settled_count(denied, first + 1) == first + 1
        events = []
        deadline = time.monotonic() + 15
        while not events and time.monotonic() < deadline:
            events = [e for e in reader.read_batch() if e.chain == P2_ADMIN_IN.id]
            time.sleep(0.05)
        assert {(e.rule, e.dport) for e in events} == {(1, 20080)}
    before = denied()
    syn_burst(topology.netns("p1"), PODS["p2"], 20080, 20, linger=1.5)  # SYNs retransmit after 1 s
    assert settled_count(denied, before + 20) - before == 20
    # Baseline Denies of UDP flows, once per flow: q1 -> p1 by p1's ingress rule 2, p3 -> p1 by
    # p3's egress rule 1 (before p1's ingress is reached)
    for src, k in (("q1", f"{P1_BASE_IN.id}/2"), ("p3", f"{P3_BASE_OUT.id}/1")):
        base_before = backend.denied_counts().get(k, 0)
        udp_burst(topology.netns(src), PODS["p1"], 20054, flows=10, per_flow=3)
        got = settled_count(lambda k=k: backend.denied_counts().get(k, 0), base_before + 10)  # type: ignore[misc]
        assert got - base_before == 10, src
    rules = save()
    assert "REJECT" not in rules
    assert f'--nflog-prefix "{P1_ADMIN_OUT.id}/3"' in rules
    egress_key = f"{P1_ADMIN_OUT.id}/3"
    egress_before = backend.denied_counts().get(egress_key, 0)
    assert tcp_outcome(topology.netns("p1"), PODS["q1"], 20443, 1.5) == "timeout"
    got = settled_count(lambda: backend.denied_counts().get(egress_key, 0), egress_before + 1)
    assert got == egress_before + 1


def count_reads(backend: IptablesBackend) -> list[None]:
    """Record each kernel read-back ``backend`` makes from now on (until ``del backend.read_view``)."""
    reads: list[None] = []
    read = backend.read_view

    def counted() -> ipt_readback.IptView:
        reads.append(None)
        return read()

    backend.read_view = counted  # type: ignore[method-assign]
    return reads


@pytest.mark.root
@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual"])
def test_deltas_into_within_and_out_of_the_tiers(topology: Topology, backend: IptablesBackend, dual: bool) -> None:
    base = policy_model()
    backend.apply_snapshot(base)
    assert backend.verify(base) == []
    reads = count_reads(backend)
    m = tiered_model(dual)
    backend.apply_delta(diff(base, m), m)
    assert reads == [], "a delta is applied as a delta, not through the kernel's read-back"
    assert backend.verify(m) == []
    del backend.read_view  # the counting wrapper
    families = ("ipv4", "ipv6") if dual else ("ipv4",)
    for family in families:
        assert run_tiers(topology, family) == []
    # p1 leaves the Admin egress and the Baseline ingress dispatch, then comes back: without
    # its Admin egress Accept, p1's NetworkPolicy egress denies p1 -> p3 tcp/20443
    without = m.copy()
    for table in (without.admin_egress, without.baseline_ingress):
        for addr in (PODS["p1"], PODS6["p1"]):
            table.pop(addr, None)
    backend.apply_delta(diff(m, without), without)
    assert backend.verify(without) == []
    assert tcp_outcome(topology.netns("p1"), PODS["p3"], 20443, DENIED_WAIT) == "timeout"
    assert tcp_outcome(topology.netns("p3"), PODS["p1"], 20443, ALLOWED_WAIT) == "ok"
    backend.apply_delta(diff(without, m), m)
    assert backend.verify(m) == []
    move_and_back(topology, backend, m)  # p2's Admin ingress to a chain that accepts everything
    # and out: the tier layout goes, the NetworkPolicy rules are as without tiers
    reads = count_reads(backend)
    backend.apply_delta(diff(m, base), base)
    assert reads == []
    del backend.read_view
    assert backend.verify(base) == []
    for f in (4, 6):
        assert ipt_tiers.E_TIERS not in save(f)
    assert run_matrix(topology) == []


@pytest.mark.root
@pytest.mark.parametrize("dual", [False, True])
def test_a_pods_traffic_to_its_own_node_meets_the_tiers(
    topology: Topology, backend: IptablesBackend, dual: bool
) -> None:
    """It reaches INPUT, never FORWARD: the tiers judge it there (the NetworkPolicy tier does
    not: v1 exempts it), by snapshot and by the deltas that take and bring the tiers."""

    def gone() -> bool:
        return all(ipt_tiers.INPUT_CHAIN not in save(f) for f in (4, 6))

    with NodeServer(topology):
        m = own_node_round_trip(topology, backend, dual, gone)
        ipt("-D", "INPUT", "-j", ipt_tiers.INPUT_CHAIN)  # drift: found and repaired
        assert backend.verify(m) == [f"missing INPUT -j {ipt_tiers.INPUT_CHAIN}"]
        backend.repair(m)
        assert backend.verify(m) == []
        assert run_own_node(topology) == []


@pytest.mark.root
def test_a_fresh_backend_reads_the_tier_layout_before_a_delta(topology: Topology, backend: IptablesBackend) -> None:
    """An agent restarted onto a kernel with tiers: its first delta (no snapshot in between)
    reads what the kernel holds (every tier's pod sets, by their names) and applies as a delta."""
    m = tiered_model(dual=True)
    backend.apply_snapshot(m)
    fresh = IptablesBackend(NODE, GROUP)
    moved = m.copy()
    del moved.baseline_egress[PODS["p3"]]  # p3's IPv4 address leaves its Baseline egress
    reads = count_reads(fresh)
    fresh.apply_delta(diff(m, moved), moved)
    assert len(reads) == 1  # what it holds, read once; then a delta
    del fresh.read_view
    assert fresh.verify(moved) == []
    assert udp_ok(topology.netns("p3"), PODS["q1"], 20054, ALLOWED_WAIT)
    assert not udp_ok(topology.netns("p3"), PODS6["q1"], 20054, DENIED_WAIT)
    # with no change the read-back writes nothing
    transactions = fresh.transactions
    fresh.apply_snapshot(moved)
    assert fresh.transactions == transactions


def _pod_set(chain: Chain, family: int = 4) -> str:
    return ipt_render.pod_set(chain.id, chain.direction, family, chain.tier)


WRECKS = {
    "admin-pod-set-element": lambda: ipset("del", _pod_set(P2_ADMIN_IN), PODS["p2"]),
    "admin-bucket-element": lambda: ipset(
        "del", ipt_render.bucket_set(IN, ipt_render.bucket_of(_pod_set(P2_ADMIN_IN)), 4, Tier.ADMIN), PODS["p2"]
    ),
    "extra-baseline-element": lambda: ipset("add", _pod_set(P1_BASE_IN), "10.201.9.9"),
    "tier-chain-flushed": lambda: ipt("-F", names.ipt_chain(P2_ADMIN_IN.id)),
    "egress-next-flushed": lambda: ipt("-F", ipt_tiers.E_NEXT),
    "ingress-tiers-jump-deleted": lambda: ipt("-D", ipt_render.FWD, "-j", ipt_tiers.I_TIERS),
    "ipv6-admin-chain-flushed": lambda: ipt("-F", names.ipt_chain(P1_ADMIN_OUT.id), family=6),
}


@pytest.mark.root
@pytest.mark.parametrize("wreck", sorted(WRECKS))
def test_readback_finds_and_repairs_tier_drift(topology: Topology, backend: IptablesBackend, wreck: str) -> None:
    m = tiered_model(dual=True)
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    WRECKS[wreck]()
    assert backend.verify(m) != [], wreck
    backend.repair(m)
    assert backend.verify(m) == []
    assert run_tiers(topology) == []


# -- pure renders --------------------------------------------------------------------------


def small_model() -> NodeModel:
    """One pod per tier dispatch, so the layout's every chain is in the render."""
    m = NodeModel("n1", sets={"s": frozenset({"10.9.0.0/16", "fd00:9::/64"})})
    admin = Chain.ordered(
        IN,
        Tier.ADMIN,
        [Rule("s", (PortMatch(TCP, 80),), A), Rule(None, (PortMatch(TCP, 81, 90),), PS), Rule(None, None, D)],
    )
    base = Chain.ordered(OUT, Tier.BASELINE, [Rule("s", None, D), Rule(None, (PortMatch(TCP, 53),), PS)])
    netpol = Chain.of(IN, [Rule("s", None)])
    for c in (admin, base, netpol):
        m.chains[c.id] = c
    m.admin_ingress["10.1.0.2"] = admin.id
    m.baseline_egress["10.1.0.2"] = base.id
    m.ingress["10.1.0.3"] = netpol.id
    assert m.check() == []
    return m


def test_the_tier_layout_pinned() -> None:
    m = small_model()
    admin, base, netpol = (
        next(c for c in m.chains.values() if c.tier is t) for t in (Tier.ADMIN, Tier.BASELINE, Tier.NETPOL)
    )
    assert ipt_tiers.fwd_specs(m.chains)[-2:] == ["-j STK-E-TIERS", "-j STK-I-TIERS"]
    chains = ipt_tiers.layout_chains(m.chains)
    ai = ipt_render.bucket_of(_pod_set(admin))
    lo = ipt_render.bucket_of(_pod_set(base))
    ni = ipt_render.bucket_of(ipt_render.pod_set(netpol.id, IN))
    assert chains == {
        "STK-E-TIERS": ["-g STK-E-NEXT"],
        "STK-E-NEXT": [
            "-m addrtype --dst-type LOCAL -g STK-E-LOCAL",  # the pod's own node: no NetworkPolicy
            f"-m set --match-set STK-BLO-{lo:02d} src -j STK-DLO-{lo:02d}",
        ],
        "STK-E-LOCAL": [f"-m set --match-set STK-BLO-{lo:02d} src -j STK-DLO-{lo:02d}"],
        "STK-INPUT": ["-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN", "-j STK-E-TIERS"],
        "STK-I-TIERS": [f"-m set --match-set STK-BAI-{ai:02d} dst -g STK-DAI-{ai:02d}", "-g STK-I-NEXT"],
        "STK-I-NEXT": [f"-m set --match-set STK-BI-{ni:02d} dst -j STK-DI-{ni:02d}"],
        f"STK-DAI-{ai:02d}": [
            f"-m set --match-set {_pod_set(admin)} dst -g {names.ipt_chain(admin.id)}",
            "-g STK-I-NEXT",  # a pod in the bucket but in no pod set: on to the next tier
        ],
        f"STK-DLO-{lo:02d}": [f"-m set --match-set {_pod_set(base)} src -g {names.ipt_chain(base.id)}"],
    }
    a = ipt_render.addr_set("s")
    tail = ipt_render.deny_specs(f"{admin.id}/2", IN, 7, None, 120)
    assert ipt_tiers.chain_specs(admin.id, admin, 7, None, 120) == [
        f"-p tcp -m set --match-set {a} src -m multiport --dports 80 -j RETURN",  # Accept: back past the tier
        "-p tcp -m multiport --dports 81:90 -g STK-I-NEXT",  # Pass: the next tier
        *tail,  # Deny everything: the deny tail under "<chain>/2"
        "-g STK-I-NEXT",  # the end, as a Pass
    ]
    assert tail[1].endswith(f'--nflog-prefix "{admin.id}/2"') and "DROP" in tail[2]
    deny = ipt_render.deny_specs(f"{base.id}/0", OUT, 7, None, 120)
    assert ipt_tiers.chain_specs(base.id, base, 7, None, 120, 6) == [
        *(f"-m set --match-set {ipt_render.addr_set('s', 6)} dst {line}" for line in deny),
        "-p tcp -m multiport --dports 53 -j RETURN",  # a Baseline Pass: allowed
    ]
    assert ipt_tiers.chain_specs(netpol.id, netpol, 7, None, 120) == ipt_render.chain_specs(
        netpol.id, netpol, 7, None, 120
    )


def test_a_model_without_tiers_renders_without_the_layout() -> None:
    m = policy_model()
    assert not ipt_tiers.is_tiered(m.chains) and ipt_tiers.layout_chains(m.chains) == {}
    for f in (4, 6):
        assert ipt_tiers.fwd_specs(m.chains, f) == ipt_render.fwd_specs(m.chains, f)
        assert ipt_render.fwd_specs(m.chains, f)[: len(ipt_render.fwd_head(f))] == ipt_render.fwd_head(f)
    want = ipt_readback.desired(m, 7, None, 120)
    assert not any(n.startswith(("STK-E-", "STK-I-", "STK-DA", "STK-DL")) for n in want.chains[4])


def test_desired_holds_every_tier_dispatch() -> None:
    m = tiered_model(dual=True)
    want = ipt_readback.desired(m, 7, None, 120)
    for tier, direction, table in m.tier_tables():
        for ip, cid in table.items():
            f = 6 if ":" in ip else 4
            name = ipt_render.pod_set(cid, direction, f, tier)
            elem = ipt_render.host(ip, f)
            assert elem in want.pods[name]
            assert elem in want.pods[ipt_render.bucket_set(direction, ipt_render.bucket_of(name), f, tier)]
    # the pod set names tell their dispatch, so a read-back sorts them as pod sets
    assert all(n.startswith(ipt_readback.POD_SET_PREFIXES) for n in want.pods)
    assert not any(n.startswith(ipt_readback.POD_SET_PREFIXES) for n in want.sets)


def test_deny_counts_are_keyed_by_rule() -> None:
    save_text = "\n".join(
        [
            "*filter",
            ":STK-Xa - [0:0]",
            "[0:0] -A STK-Xa -p tcp -j NFLOG --nflog-prefix in_a/0 --nflog-group 7",
            "[3:180] -A STK-Xa -p tcp -m comment --comment deny -j DROP",
            "[0:0] -A STK-Xa -p udp -j NFLOG --nflog-prefix in_a/0 --nflog-group 7",
            "[2:120] -A STK-Xa -p udp -m comment --comment deny -j DROP",
            "[0:0] -A STK-Xa -j NFLOG --nflog-prefix in_a/2 --nflog-group 7",
            "[5:300] -A STK-Xa -m comment --comment deny -j DROP",
            "COMMIT",
        ]
    )
    assert ipt_readback.parse_rules(save_text).denied == {"in_a/0": 5, "in_a/2": 5}
