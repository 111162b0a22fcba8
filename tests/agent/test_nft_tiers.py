"""ClusterNetworkPolicy tiers in the nftables backend: Admin and Baseline chains (Accept, Deny,
Pass) around the NetworkPolicy ones, against real packets in namespaces (see conftest for the
topology) and as pure renders. Every expectation is checked against the model's reference,
`stockade.model.evaluate.decide`, before the packets are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ALLOWED_WAIT,
    DENIED_WAIT,
    NODE,
    PODS,
    PODS6,
    TCP,
    UDP,
    Topology,
    dual_policy_model,
    policy_model,
    run_matrix,
    settled_count,
    syn_burst,
    udp_burst,
)
from tier_cases import (
    OWN_MATRIX,
    P1_ADMIN_OUT,
    P1_BASE_IN,
    P2_ADMIN_IN,
    P3_BASE_OUT,
    TIER_MATRIX,
    NodeServer,
    move_and_back,
    own_node_model,
    own_node_reference,
    own_node_round_trip,
    ports,
    reference,
    run_tiers,
    tcp_outcome,
    tiered_model,
    udp_ok,
)

from stockade.agent import netns as ns
from stockade.agent.backends import names, nft_chains, nft_readback, nft_render
from stockade.agent.backends.nftables import NftablesBackend
from stockade.model import Action, Chain, Direction, NodeModel, Rule, Tier, diff

CFG = nft_render.NftConfig()
ROOT = Path(__file__).resolve().parents[2]
RENDER = "services/node-agent/stockade/agent/backends/nft_render.py"

A, D, PS = Action.ACCEPT, Action.DENY, Action.PASS
IN, OUT = Direction.INGRESS, Direction.EGRESS


def test_expectations_agree_with_the_reference() -> None:
    for dual, family in ((False, "ipv4"), (True, "ipv4"), (True, "ipv6")):
        m = tiered_model(dual)
        for src, dst, proto, port, allowed in TIER_MATRIX:
            assert reference(m, src, dst, proto, port, family) is allowed, (family, src, dst, proto, port)


def test_own_node_expectations_agree_with_the_reference() -> None:
    for dual, family in ((False, "ipv4"), (True, "ipv4"), (True, "ipv6")):
        m = own_node_model(dual)
        for src, proto, port, allowed in OWN_MATRIX:
            assert own_node_reference(m, src, proto, port, family) is allowed, (family, src, proto, port)


def nft(*args: str) -> None:
    proc = ns.run(["nft", *args], NODE)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def backend(topology: Topology) -> Iterator[NftablesBackend]:
    b = NftablesBackend(NODE)
    yield b
    b.apply_snapshot(policy_model())  # what the other modules' tests start from
    b.close()


# -- real packets --------------------------------------------------------------------------


@pytest.mark.root
def test_snapshot_enforces_the_tiers(topology: Topology, backend: NftablesBackend) -> None:
    m = tiered_model()
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    assert run_tiers(topology) == []


@pytest.mark.root
def test_deny_drops_silently_counted_once_logged_by_rule(topology: Topology, backend: NftablesBackend) -> None:
    m = tiered_model()
    backend.apply_snapshot(m)
    key = f"{P2_ADMIN_IN.id}/1"  # the kernel's NFLOG prefix of that rule, read back

    def denied() -> int:
        return backend.denied_counts().get(key, 0)

    first = denied()
    # Admin ingress Deny (rule 1 of p2's chain) of what p2's NetworkPolicy allows: no answer
    # (a reject would refuse at once), one count through the SYN's retransmit after 1 s.
    assert tcp_outcome(topology.netns("p1"), PODS["p2"], 20080, 1.5) == "timeout"
    assert settled_count(denied, first + 1) == first + 1
    before = denied()
    syn_burst(topology.netns("p1"), PODS["p2"], 20080, 20, linger=1.5)  # SYNs retransmit after 1 s
    assert settled_count(denied, before + 20) - before == 20
    # Baseline Denies of UDP flows, once per flow: q1 -> p1 by p1's ingress rule 2, p3 -> p1 by
    # p3's egress rule 1 (before p1's ingress is reached)
    for src, key in (("q1", f"{P1_BASE_IN.id}/2"), ("p3", f"{P3_BASE_OUT.id}/1")):
        base_before = backend.denied_counts().get(key, 0)
        udp_burst(topology.netns(src), PODS["p1"], 20054, flows=10, per_flow=3)
        got = settled_count(lambda key=key: backend.denied_counts().get(key, 0), base_before + 10)  # type: ignore[misc]
        assert got - base_before == 10, src
    # the egress Deny too, and it is logged to the NFLOG group under its rule
    egress = ns.run(["nft", "list", "chain", "inet", "stockade", names.nft_chain(P1_ADMIN_OUT.id)], NODE)
    assert f'prefix "{P1_ADMIN_OUT.id}/3" group {CFG.nflog_group}' in egress.stdout
    assert "reject" not in egress.stdout
    egress_key = f"{P1_ADMIN_OUT.id}/3"
    egress_before = backend.denied_counts().get(egress_key, 0)
    assert tcp_outcome(topology.netns("p1"), PODS["q1"], 20443, 1.5) == "timeout"
    got = settled_count(lambda: backend.denied_counts().get(egress_key, 0), egress_before + 1)
    assert got == egress_before + 1


@pytest.mark.root
def test_ipv6_enforces_the_tiers(topology: Topology, backend: NftablesBackend) -> None:
    m = tiered_model(dual=True)
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    assert run_tiers(topology, "ipv6") == []
    assert run_tiers(topology, "ipv4") == []


@pytest.mark.root
@pytest.mark.parametrize("start", ["empty", "netpol"])
def test_delta_onto_a_table_without_tiers(topology: Topology, backend: NftablesBackend, start: str) -> None:
    base = NodeModel("n1") if start == "empty" else policy_model()
    backend.apply_snapshot(base)
    table = _table_handle(backend)
    transactions = backend.transactions
    m = tiered_model()
    backend.apply_delta(diff(base, m), m)
    # one transaction, and no snapshot: the table (its counters, its seen sets) stays
    assert backend.transactions == transactions + 1 and _table_handle(backend) == table
    assert backend.verify(m) == []
    assert run_tiers(topology) == []
    # and back: the tier objects go, the table is as without tiers
    backend.apply_delta(diff(m, policy_model()), policy_model())
    assert backend.transactions == transactions + 2 and _table_handle(backend) == table
    assert backend.verify(policy_model()) == []
    view = backend.read_view()
    assert view is not None and not (view.fixed & nft_readback.TIER_FIXED)
    assert run_matrix(topology) == []


@pytest.mark.root
@pytest.mark.parametrize("dual", [False, True])
def test_a_pods_traffic_to_its_own_node_meets_the_tiers(
    topology: Topology, backend: NftablesBackend, dual: bool
) -> None:
    """It reaches the input hook, never forward: the tiers judge it there (the NetworkPolicy
    tier does not: v1 exempts it), by snapshot and by the delta that brings the tiers."""

    def gone() -> bool:
        view = backend.read_view()
        return view is not None and nft_render.INPUT not in view.fixed

    with NodeServer(topology):
        own_node_round_trip(topology, backend, dual, gone)


def _table_handle(backend: NftablesBackend) -> int:
    view = backend.read_view()
    assert view is not None
    return view.handles["table"]


def seed_model(dual: bool = False) -> NodeModel:
    """`policy_model` with one tier chain, for a pod that does not exist: the table has the tier
    objects, so a delta to `tiered_model` goes through `render_delta` (no snapshot)."""
    m = dual_policy_model() if dual else policy_model()
    seed = Chain.ordered(IN, Tier.BASELINE, [Rule(None, None, D)])
    m.chains[seed.id] = seed
    m.baseline_ingress["10.208.0.9"] = seed.id
    return m


@pytest.mark.root
@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual"])
def test_deltas_within_a_table_with_tiers(topology: Topology, backend: NftablesBackend, dual: bool) -> None:
    seed = seed_model(dual)
    backend.apply_snapshot(seed)
    transactions = backend.transactions
    m = tiered_model(dual)
    m.chains.update(seed.chains)
    m.baseline_ingress.update(seed.baseline_ingress)
    script = nft_render.render_delta(
        diff(seed, m), m, CFG, set(seed.ingress), set(seed.egress), nft_render.layout(m), had_tiers={}
    )
    assert "delete table" not in script and "goto " in script
    backend.apply_delta(diff(seed, m), m)
    assert backend.transactions == transactions + 1
    assert backend.verify(m) == []
    families = ("ipv4", "ipv6") if dual else ("ipv4",)
    for family in families:
        assert run_tiers(topology, family) == []
    # element-only deltas (the netlink batch): p1 leaves the Admin egress and the Baseline
    # ingress dispatch, then comes back (a goto entry: an Admin egress Accept must skip the
    # NetworkPolicy egress, which denies p1 -> p3 tcp/20443)
    without = m.copy()
    for table in (without.admin_egress, without.baseline_ingress):
        for addr in (PODS["p1"], PODS6["p1"]):
            table.pop(addr, None)
    delta = diff(m, without)
    assert nft_render.is_element_only(delta)
    backend.apply_delta(delta, without)
    assert backend.verify(without) == []
    assert tcp_outcome(topology.netns("p1"), PODS["p3"], 20443, DENIED_WAIT) == "timeout"
    assert tcp_outcome(topology.netns("p3"), PODS["p1"], 20443, ALLOWED_WAIT) == "ok"
    backend.apply_delta(diff(without, m), m)
    assert backend.verify(m) == []
    for family in families:
        assert run_tiers(topology, family) == []
    move_and_back(topology, backend, m)  # p2's Admin ingress to a chain that accepts everything


WRECKS = {
    "admin-map-element": "delete element inet stockade admin_ingress_dispatch {{ 10.201.2.2 }}",
    "goto-made-jump": "delete element inet stockade admin_egress_dispatch {{ 10.201.1.2 }}; "
    "add element inet stockade admin_egress_dispatch {{ 10.201.1.2 : jump {p1_admin} }}",
    "extra-baseline-element": "add element inet stockade baseline_ingress_dispatch {{ 10.201.9.9 : jump {p1_base} }}",
    "tier-chain-flushed": "flush chain inet stockade {p2_admin}",
    "egress-tiers-flushed": "flush chain inet stockade egress_tiers",
}


@pytest.mark.root
@pytest.mark.parametrize("wreck", sorted(WRECKS))
def test_readback_finds_and_repairs_tier_drift(topology: Topology, backend: NftablesBackend, wreck: str) -> None:
    m = tiered_model()
    backend.apply_snapshot(m)
    assert backend.verify(m) == []
    damage = WRECKS[wreck].format(
        p1_admin=names.nft_chain(P1_ADMIN_OUT.id),
        p1_base=names.nft_chain(P1_BASE_IN.id),
        p2_admin=names.nft_chain(P2_ADMIN_IN.id),
    )
    nft(damage)
    problems = backend.verify(m)
    assert problems, wreck
    backend.repair(m)
    assert backend.verify(m) == []
    assert run_tiers(topology) == []


@pytest.mark.root
def test_chain_rewrite_of_tier_chains(topology: Topology, backend: NftablesBackend) -> None:
    """The tamper path rewrites named chains: the tier chains and the fixed egress ones too."""
    m = tiered_model()
    backend.apply_snapshot(m)
    p1_admin = names.nft_chain(P1_ADMIN_OUT.id)
    nft(f"flush chain inet stockade {p1_admin}; flush chain inet stockade {nft_render.EGRESS_AFTER_ADMIN}")
    assert backend.verify(m) != []
    rewrite = backend.chain_repair(m, [p1_admin, nft_render.EGRESS_AFTER_ADMIN, nft_render.FORWARD])
    assert rewrite is not None
    rewrite()
    assert backend.verify(m) == []
    assert run_tiers(topology) == []
    assert nft_chains.rewrite_chains(policy_model(), CFG, [nft_render.EGRESS_TIERS]) is None


@pytest.mark.root
def test_restart_onto_a_table_with_tiers_applies_nothing(topology: Topology, backend: NftablesBackend) -> None:
    m = tiered_model(dual=True)
    backend.apply_snapshot(m)
    fresh, other = NftablesBackend(NODE), NftablesBackend(NODE)
    try:
        fresh.apply_snapshot(m)
        assert fresh.transactions == 0
        # a first delta reads the tier maps back (no snapshot, no refused overwrite)
        moved = m.copy()
        del moved.baseline_egress[PODS["p3"]]
        moved.admin_ingress[PODS["p2"]] = P2_ADMIN_IN.id  # unchanged
        moved.admin_egress[PODS6["p1"]] = P1_ADMIN_OUT.id  # unchanged
        other.apply_delta(diff(m, moved), moved)
        assert other.verify(moved) == []
        handles = other.read_view()
        assert handles is not None and "chain egress_tiers" in handles.handles
        # p3's IPv4 address left the Baseline egress dispatch, its IPv6 one did not
        assert udp_ok(topology.netns("p3"), PODS["q1"], 20054, ALLOWED_WAIT)
        assert not udp_ok(topology.netns("p3"), PODS6["q1"], 20054, DENIED_WAIT)
    finally:
        fresh.close()
        other.close()


# -- pure renders --------------------------------------------------------------------------


# What the renderer made before tiers existed (commit 3c9cf8f), for the models below: written by
# that commit's nft_render.py, kept as data so the comparison needs no git history.
UNTIERED = Path(__file__).parent / "data" / "nft_untiered.json"


def test_a_model_without_tiers_renders_as_before() -> None:
    before = json.loads(UNTIERED.read_text())
    assert before["forward_rules"] == nft_render.FORWARD_RULES
    for case in before["cases"]:
        cfg = nft_render.NftConfig(log_rate=case["log_rate"], nflog_group=case["nflog_group"])
        models = (policy_model(), dual_policy_model(), NodeModel("n1"))
        assert [nft_render.render_snapshot(m, cfg) for m in models] == case["snapshots"]
        assert [nft_render.expected_rule_counts(m, cfg) for m in models] == case["rule_counts"]
        old, new = policy_model(), policy_model()
        extra = Chain.of(IN, [Rule("web", ports((TCP, 1), (TCP, 2)))])
        new.chains[extra.id] = extra
        new.ingress["10.201.1.2"] = extra.id
        del new.ingress[PODS["p3"]]
        new.sets["web"] = frozenset({"10.201.1.2/32", "10.201.3.2/32"})
        d = diff(old, new)
        args = (set(old.ingress), set(old.egress))
        assert nft_render.render_delta(d, new, cfg, *args) == case["delta"]
        ops = [[verb, name, list(items)] for verb, name, items in nft_render.element_ops(d, new, *args)]
        assert ops == case["element_ops"]


def test_tier_chain_lines_pinned() -> None:
    chain = Chain.ordered(
        IN, Tier.ADMIN, [Rule(None, ports((TCP, 80)), A), Rule(None, ports(UDP), PS), Rule(None, None, D)]
    )
    assert nft_render.chain_lines(chain.id, chain, CFG) == [
        "tcp dport 80 accept",
        "meta l4proto udp return",
        "jump once_in",
        f'log group 100 prefix "{chain.id}/2" counter drop comment "deny g100 r0"',
    ]
    out = Chain.ordered(OUT, Tier.ADMIN, [Rule(None, ports((TCP, 80)), A), Rule(None, ports(UDP), PS)])
    assert nft_render.chain_lines(out.id, out, CFG) == [
        "tcp dport 80 return",
        "meta l4proto udp goto egress_after_admin",
        "goto egress_after_admin",
    ]
    base = Chain.ordered(OUT, Tier.BASELINE, [Rule(None, ports(UDP), PS), Rule(None, ports((TCP, 80)), D)])
    rated = nft_render.NftConfig(log_rate=3)
    assert nft_render.chain_lines(base.id, base, rated) == [
        "meta l4proto udp return",
        "tcp dport 80 jump once_out",
        f'tcp dport 80 limit rate 3/second burst 3 packets log group 100 prefix "{base.id}/1"',
        'tcp dport 80 counter drop comment "deny g100 r3"',
    ]


def test_tier_rules_with_peers_per_family_and_inline_ports() -> None:
    m = tiered_model(dual=True)
    lines = nft_render.chain_lines(P2_ADMIN_IN.id, P2_ADMIN_IN, CFG, (4, 6), m.sets)
    # the Deny and the Pass keep their port lines inline (a return in a port chain would come
    # back here), the Accept with one port line names its peer once per family
    assert not any("jump p_" in line for line in lines)
    assert sum("@hosts6" in line for line in lines) == 1 and sum("@a6_blk" in line for line in lines) == 1
    multi = Chain.ordered(
        IN, Tier.ADMIN, [Rule("p3", ports((TCP, 1), (TCP, 2)), A), Rule("p3", ports((TCP, 3), (TCP, 4)), PS)]
    )
    got = nft_render.chain_lines(multi.id, multi, CFG, (4,), m.sets)
    assert got[0].endswith("jump " + nft_render.port_chain(multi.rules[0], IN)[0])  # type: ignore[index]
    assert nft_render.port_chain(multi.rules[1], IN) is None
    assert list(nft_render.port_chains([multi])) == [nft_render.port_chain(multi.rules[0], IN)[0]]  # type: ignore[index]


def test_snapshot_with_tiers_has_the_tier_objects() -> None:
    text = nft_render.render_snapshot(tiered_model(), CFG)
    for name in nft_render.TIER_MAPS:
        assert f"map {name} " in text
    assert f"{PODS['p1']} : goto {names.nft_chain(P1_ADMIN_OUT.id)}" in text
    assert f"{PODS['p2']} : jump {names.nft_chain(P2_ADMIN_IN.id)}" in text
    forward = text[text.index("chain forward {") :]
    order = [
        "jump egress_tiers",
        "ip daddr vmap @admin_ingress_dispatch",
        "ip daddr vmap @ingress_dispatch",
        "ip daddr vmap @baseline_ingress_dispatch",
    ]
    assert [forward.index(x) for x in order] == sorted(forward.index(x) for x in order)
    assert "ip saddr vmap @egress_dispatch" not in forward


def test_delta_and_element_ops_of_tier_maps() -> None:
    seed, m = seed_model(), tiered_model()
    m.chains.update(seed.chains)
    m.baseline_ingress.update(seed.baseline_ingress)
    text = nft_render.render_delta(diff(seed, m), m, CFG, set(seed.ingress), set(seed.egress))
    admin_chain = names.nft_chain(P1_ADMIN_OUT.id)
    assert f"add element inet stockade admin_egress_dispatch {{ {PODS['p1']} : goto {admin_chain} }}" in text
    # the chain comes before the entry naming it
    assert text.index(f"add chain inet stockade {admin_chain}") < text.index("admin_egress_dispatch")
    moved = m.copy()
    moved.admin_egress[PODS["p1"]] = P1_ADMIN_OUT.id
    moved.baseline_egress.pop(PODS["p3"])
    moved.admin_ingress[PODS["p3"]] = P2_ADMIN_IN.id
    d = diff(m, moved)
    had = {(t, dr): set(table) for t, dr, table in m.tier_tables()}
    ops = nft_render.element_ops(d, moved, set(m.ingress), set(m.egress), had_tiers=had)
    assert ops == [
        ("add", "admin_ingress_dispatch", [f"{PODS['p3']} : {names.nft_chain(P2_ADMIN_IN.id)}"]),
        ("delete", "baseline_egress_dispatch", [PODS["p3"]]),
    ]
    # a replaced entry is deleted first
    swap = m.copy()
    swap.admin_ingress[PODS["p2"]] = P1_BASE_IN.id  # (tier mismatch is the model's concern)
    ops = nft_render.element_ops(diff(m, swap), swap, set(m.ingress), set(m.egress), had_tiers=had)
    assert [op[:2] for op in ops] == [("delete", "admin_ingress_dispatch"), ("add", "admin_ingress_dispatch")]


def test_desired_and_counts_know_the_tier_objects() -> None:
    m = tiered_model()
    want = nft_readback.desired(m, CFG)
    assert want.tiered
    assert want.dispatch(OUT, Tier.ADMIN) == {PODS["p1"]: f"goto {names.nft_chain(P1_ADMIN_OUT.id)}"}
    assert not want.no_deny  # every tier chain here has a Deny rule
    open_all = Chain.ordered(IN, Tier.BASELINE, [Rule(None, ports(UDP), A)])
    accepting = m.copy()
    accepting.chains[open_all.id] = open_all
    assert nft_readback.desired(accepting, CFG).no_deny == {names.nft_chain(open_all.id)}
    counts = nft_render.expected_rule_counts(m, CFG)
    assert counts[names.nft_chain(P1_ADMIN_OUT.id)] == len(
        nft_render.chain_lines(P1_ADMIN_OUT.id, P1_ADMIN_OUT, CFG, nft_render.layout(m), m.sets)
    )
    assert not nft_readback.desired(policy_model(), CFG).tiered
    empty = nft_readback.KernelView()
    assert "missing egress_tiers" in nft_readback.structure_problems(empty, None, True)
    assert "missing egress_tiers" not in nft_readback.structure_problems(empty, None, False)


def test_delta_that_brings_or_takes_the_tiers() -> None:
    base, m = policy_model(), tiered_model()
    args = (set(base.ingress), set(base.egress), nft_render.IPV4_ONLY)
    text = nft_render.render_delta(diff(base, m), m, CFG, *args, tiers=(False, True))
    assert "delete table" not in text
    admin_chain = names.nft_chain(P1_ADMIN_OUT.id)
    order = [
        "add map inet stockade admin_egress_dispatch { type ipv4_addr : verdict; }",
        f"add chain inet stockade {nft_render.EGRESS_AFTER_ADMIN}",
        f"add chain inet stockade {nft_render.EGRESS_TIERS}",
        f"add chain inet stockade {admin_chain}",
        "add element inet stockade admin_egress_dispatch",
        "flush chain inet stockade forward",
        "add rule inet stockade forward jump egress_tiers",
    ]
    assert [text.index(x) for x in order] == sorted(text.index(x) for x in order)
    back = nft_render.render_delta(
        diff(m, base), base, CFG, set(m.ingress), set(m.egress), nft_render.IPV4_ONLY,
        had_tiers={(t, d): set(table) for t, d, table in m.tier_tables()}, tiers=(True, False), gone=m.sets,
    )  # fmt: skip
    order = [
        "delete element inet stockade admin_egress_dispatch",
        "flush chain inet stockade forward",
        "add rule inet stockade forward ip saddr vmap @egress_dispatch",
        f"delete chain inet stockade {nft_render.EGRESS_TIERS}",
        f"delete chain inet stockade {admin_chain}",
        f"delete chain inet stockade {nft_render.EGRESS_AFTER_ADMIN}",
        "delete map inet stockade admin_egress_dispatch",
    ]
    assert [back.index(x) for x in order] == sorted(back.index(x) for x in order)
    # unchanged (or unknown): no tier objects touched
    same = nft_render.render_delta(diff(base, m), m, CFG, *args)
    assert "add map" not in same and "flush chain inet stockade forward" not in same
