"""Dual-stack in the engine: every address of a pod, ipBlocks of one family, per-address ownership,
validated pod addresses, and except arithmetic that stays linear."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.brain.engine import Engine
from stockade.brain.engine.objects import parse_pod
from stockade.brain.engine.policy import IPBlockPeer, parse_policy
from stockade.manifests import assign_addresses, build_cluster, node_names
from stockade.manifests.loader import Document
from stockade.model import NodeModel

from .harness import apply_deltas, model_allows, model_egress_allows, models_of
from .kube import namespace, pod, policy

Obj = dict[str, Any]
NSS = [namespace("x", {"ns": "x"}), namespace("y", {"ns": "y"})]
A = pod("x", "a", {"pod": "a"}, ["10.5.0.1", "fd05::1"], "node-1")
B = pod("x", "b", {"pod": "b"}, ["10.5.0.2", "fd05::2"], "node-2")
C6 = pod("y", "c", {"pod": "c"}, ["fd05:1::1"], "node-1")  # IPv6 only
DENY_X = policy("x", "deny", {"podSelector": {}})


def compiled(pods: list[Obj], policies: list[Obj]) -> tuple[Engine, dict[str, NodeModel]]:
    eng = Engine()
    eng.load(namespaces=NSS, pods=pods, policies=policies, nodes=[])
    return eng, models_of(eng)


# ---------------------------------------------------------------- pod addresses


def test_pod_addresses_are_canonical_and_in_order() -> None:
    p = parse_pod(pod("x", "a", {}, ["10.0.0.1", "FD00:0::63"]))
    assert p.ips == ("10.0.0.1", "fd00::63") and p.elems == ("10.0.0.1/32", "fd00::63/128")
    assert p.ip == "10.0.0.1" and p.candidate and not p.problem
    six_first = parse_pod(pod("x", "a", {}, ["fd00::63", "10.0.0.1"]))
    assert six_first.ips == ("fd00::63", "10.0.0.1") and six_first.ip == "fd00::63"
    only_ip = parse_pod({"metadata": {"name": "a"}, "status": {"podIP": "10.0.0.9"}})
    assert only_ip.ips == ("10.0.0.9",)


def _status(**status: Any) -> Obj:
    return {
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "x"},
        "spec": {"nodeName": "node-1"},
        "status": status,
    }


BAD_STATUSES: list[tuple[dict[str, Any], str]] = [
    ({"podIP": "010.001.000.020"}, "status.podIP"),
    ({"podIP": "999.1.1.1"}, "status.podIP"),
    ({"podIP": 167772161}, "not an IP address"),
    ({"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.1"}]}, "is not podIPs[0]"),
    ({"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}, "one address per IP family"),
    ({"podIPs": [{"ip": "fd00::1"}, {"ip": "fd00::2"}]}, "one address per IP family"),
    ({"podIPs": [{"ip": "10.0.0.1"}, {"ip": ["fd00::2"]}]}, "status.podIPs[1].ip"),
    ({"podIPs": ["10.0.0.1"]}, "status.podIPs[0]"),
    ({"podIPs": "10.0.0.1"}, "status.podIPs"),
    ({"podIP": "fe80::1%eth0"}, "zone"),
]


def test_invalid_or_contradictory_addresses_make_no_endpoint_and_say_why() -> None:
    for status, why in BAD_STATUSES:
        bad = _status(phase="Running", **status)
        info = parse_pod(bad)
        assert not info.candidate and info.ips == () and why in info.problem, (status, info.problem)
        eng, models = compiled([A, bad], [DENY_X, policy("y", "deny", {"podSelector": {}})])
        assert not eng.is_endpoint("x", "bad")
        assert eng.pod_info("x", "bad").problem == info.problem  # type: ignore[union-attr]
        assert models["node-1"].check() == []
        assert set(models["node-1"].ingress) == {"10.5.0.1", "fd05::1"}  # the bad pod is in no model
    assert parse_pod({"metadata": {"name": "a"}, "spec": [1], "status": "Running"}).problem


# ---------------------------------------------------------------- compiled models


def test_deny_all_dispatches_every_address_to_one_chain() -> None:
    _, models = compiled([A, B, C6], [DENY_X])
    for p, node in ((A, "node-1"), (B, "node-2")):
        ips = [e["ip"] for e in p["status"]["podIPs"]]
        chains = {models[node].ingress[ip] for ip in ips}
        assert len(chains) == 1, chains
    assert "fd05:1::1" not in models["node-1"].ingress  # namespace y is not isolated
    for version in (4, 6):
        assert not model_allows(models, B, A, "TCP", 80, version)
    assert model_allows(models, A, C6, "TCP", 80, 6)


def test_pod_selector_peers_hold_both_addresses() -> None:
    allow = policy(
        "x",
        "from-b",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
        },
    )
    _, models = compiled([A, B, C6], [DENY_X, allow])
    sets = [elems for elems in models["node-1"].sets.values() if elems]
    assert frozenset({"10.5.0.2/32", "fd05::2/128"}) in sets
    for version in (4, 6):
        assert model_allows(models, B, A, "TCP", 80, version)
        assert not model_allows(models, A, B, "TCP", 80, version)


def test_an_ip_block_of_one_family_never_matches_the_other() -> None:
    v4 = policy(
        "x",
        "v4",
        {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    )
    _, models = compiled([A, B, C6], [DENY_X, v4])
    assert model_allows(models, B, A, "TCP", 80, 4)
    assert not model_allows(models, B, A, "TCP", 80, 6)
    assert not model_allows(models, "fd99::1", A, "TCP", 80)
    v6 = policy(
        "x",
        "v6",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd05::/16", "except": ["fd05::2/128"]}}]}],
        },
    )
    _, models = compiled([A, B, C6], [v6])
    assert model_allows(models, A, C6, "TCP", 80, 6)
    assert not model_allows(models, A, B, "TCP", 80, 6)  # excepted: except applies to pod IPs too
    assert not model_allows(models, A, B, "TCP", 80, 4)  # no IPv4 block at all
    assert model_egress_allows(models, A, "fd05:9::9", "TCP", 80)
    assert not model_egress_allows(models, A, "10.9.9.9", "TCP", 80)


def test_named_ports_through_an_ip_block_resolve_on_the_block_family_only() -> None:
    web = pod("x", "w", {"pod": "w"}, ["10.5.0.3", "fd05::3"], "node-2", [("http", "TCP", 8080)])
    eg = policy(
        "x",
        "eg",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.5.0.0/16"}}], "ports": [{"port": "http"}]}],
        },
    )
    _, models = compiled([A, web], [eg])
    assert model_allows(models, A, web, "TCP", 8080, 4)
    assert not model_allows(models, A, web, "TCP", 8080, 6)
    assert all("fd05::3/128" not in elems for elems in models["node-1"].sets.values())


def test_ip_reuse_is_per_address() -> None:
    # A stale pod still Running holds 10.5.0.1 and fd05::1; a newer pod got 10.5.0.1 only.
    old = pod("x", "old", {"pod": "a"}, ["10.5.0.1", "fd05::1"], "node-1")
    old["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    new = pod("x", "new", {"pod": "b"}, ["10.5.0.1", "fd05::9"], "node-1")
    new["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    only_b = policy(
        "y",
        "from-b",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}]}],
        },
    )
    eng, models = compiled([old, new, C6], [DENY_X, only_b])
    assert eng.pod_by_ip("10.5.0.1") == "x/new" and eng.pod_by_ip("FD05:0::1") == "x/old"
    assert eng.endpoint("x", "old").ips == ("fd05::1",)  # type: ignore[union-attr]
    assert set(models["node-1"].ingress) == {"10.5.0.1", "fd05::1", "fd05::9", "fd05:1::1"}
    elems = {e for s in models["node-1"].sets.values() for e in s}
    assert {"10.5.0.1/32", "fd05::9/128"} <= elems and "fd05::1/128" not in elems
    # The same through deltas: the new pod arrives after the old one, then goes away.
    eng2 = Engine()
    eng2.load(namespaces=NSS, pods=[old, C6], policies=[DENY_X, only_b])
    held = models_of(eng2)
    apply_deltas(held, eng2.upsert(new))
    assert held == models_of(eng2) and held["node-1"] == models["node-1"]
    apply_deltas(held, eng2.delete("Pod", "x", "new"))
    assert eng2.endpoint("x", "old").ips == ("10.5.0.1", "fd05::1")  # type: ignore[union-attr]
    assert held == models_of(eng2)


def test_a_pod_gaining_and_losing_a_family_is_an_exact_delta() -> None:
    a4 = pod("x", "a", {"pod": "a"}, ["10.5.0.1"], "node-1")
    allow = policy(
        "x",
        "from-a",
        {
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}],
        },
    )
    eng = Engine()
    eng.load(namespaces=NSS, pods=[a4, B], policies=[DENY_X, allow])
    deltas = eng.upsert(A)  # now dual-stack
    d1, d2 = deltas["node-1"], deltas["node-2"]
    assert set(d1.ingress_set) == {"fd05::1"} and not d1.ingress_removed
    assert [set(v) for v in d2.set_added.values()] == [{"fd05::1/128"}] and not d2.set_removed
    deltas = eng.upsert(pod("x", "a", {"pod": "a"}, ["fd05::1"], "node-1"))  # IPv6 only
    assert deltas["node-1"].ingress_removed == {"10.5.0.1"} and not deltas["node-1"].ingress_set
    assert [set(v) for v in deltas["node-2"].set_removed.values()] == [{"10.5.0.1/32"}]


# ---------------------------------------------------------------- manifests


def test_manifests_in_dual_stack_deny_all_and_an_ipv4_only_block() -> None:
    docs = [
        Document(namespace("shop"), "n"),
        Document(
            {"kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}}, "spec": {}},
            "p1",
        ),
        Document(
            {"kind": "Pod", "metadata": {"name": "cli", "namespace": "shop", "labels": {"app": "cli"}}, "spec": {}},
            "p2",
        ),
        Document(policy("shop", "deny", {"podSelector": {}}), "d"),
        Document(
            policy(
                "shop",
                "v4",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}],
                },
            ),
            "b",
        ),
    ]
    cluster = build_cluster(docs)
    assign_addresses(cluster.pods, node_names(2), "dual")
    eng = Engine()
    eng.load(cluster.namespaces, cluster.pods, cluster.policies)
    models = models_of(eng)
    by_name = {p["metadata"]["name"]: p for p in cluster.pods}
    for p in cluster.pods:
        ips = [e["ip"] for e in p["status"]["podIPs"]]
        assert [ipaddress.ip_address(ip).version for ip in ips] == [4, 6]
        assert int(ipaddress.ip_address(ips[0])) & 255 == int(ipaddress.ip_address(ips[1])) & 0xFFFF  # same host
        node = p["spec"]["nodeName"]
        assert {ip for ip in ips if ip in models[node].ingress} == set(ips)
        assert len({models[node].ingress[ip] for ip in ips}) == 1
    web, cli = by_name["web"], by_name["cli"]
    assert model_allows(models, cli, web, "TCP", 80, 4)
    assert not model_allows(models, cli, web, "TCP", 80, 6)
    assert not model_allows(models, web, cli, "TCP", 80, 4)


# ---------------------------------------------------------------- except arithmetic


def _reference(cidr: str, excepts: list[str]) -> set[str]:
    nets = [ipaddress.ip_network(cidr)]
    for ex in map(ipaddress.ip_network, excepts):
        nets = [m for n in nets for m in (n.address_exclude(ex) if ex.subnet_of(n) else [] if n.subnet_of(ex) else [n])]  # type: ignore[arg-type]
    return {str(n) for n in nets}


@st.composite
def block(draw: st.DrawFn) -> tuple[str, list[str]]:
    version = draw(st.sampled_from((4, 6)))
    bits = 32 if version == 4 else 128
    plen = draw(st.integers(0, bits - 1))
    base = draw(st.integers(0, 2**bits - 1)) >> (bits - plen) << (bits - plen) if plen else 0
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    net = cls((base, plen))
    excepts = []
    for _ in range(draw(st.integers(0, 6))):
        elen = draw(st.integers(plen + 1, min(bits, plen + 10)))
        off = draw(st.integers(0, 2 ** (elen - plen) - 1)) << (bits - elen)
        excepts.append(str(cls((base + off, elen))))
    return str(net), excepts


@settings(max_examples=300, deadline=None)
@given(block())
def test_except_arithmetic_equals_address_exclusion(b: tuple[str, list[str]]) -> None:
    cidr, excepts = b
    spec = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr, "except": excepts}}]}]}
    rules = parse_policy(policy("x", "p", spec)).ingress
    assert rules is not None and rules[0].peers is not None
    peer = rules[0].peers[0]
    assert isinstance(peer, IPBlockPeer)
    nets = peer.networks()
    assert set(nets) == _reference(cidr, sorted(set(excepts))) and len(nets) == len(set(nets))
    for n in nets[:5]:
        first = str(ipaddress.ip_network(n).network_address)
        assert peer.contains(first)
    for e in excepts:
        assert not peer.contains(str(ipaddress.ip_network(e).network_address))


def test_many_ipv6_excepts_compile_in_one_pass() -> None:
    # issue 11: ::/0 with 1,000 IPv6 excepts took 86 s (quadratic); now one sorted walk.
    excepts = [f"fd00:{i:x}::/64" for i in range(1000)]
    peer = IPBlockPeer("::/0", tuple(excepts))
    nets = peer.networks()
    assert not any(ipaddress.ip_network(n).overlaps(ipaddress.ip_network("fd00:3e7::/64")) for n in nets)
    total = sum(ipaddress.ip_network(n).num_addresses for n in nets)
    assert total == 2**128 - 1000 * 2**64
    assert peer.contains("fd00:3e8::1") and not peer.contains("fd00:5::1") and not peer.contains("10.0.0.1")
