"""Self-test of the naive spec evaluator on hand-made cases, each one clause of the API reference."""

from __future__ import annotations

from typing import Any

import pytest

from .kube import namespace, pod, policy
from .spec_oracle import Oracle, problems, selector_matches

NSS = [namespace("a", {"team": "red"}), namespace("b", {"team": "blue"}), namespace("c")]
WEB = pod("a", "web", {"app": "web", "tier": "front"}, "10.0.0.1", ports=[("http", "TCP", 8080), ("dns", "UDP", 53)])
DB = pod("a", "db", {"app": "db"}, "10.0.0.2", ports=[("http", "TCP", 9090)])
CLI_B = pod("b", "cli", {"app": "cli"}, "10.0.1.1")
WEB_B = pod("b", "web", {"app": "web"}, "10.0.1.2")
CLI_C = pod("c", "cli", {"app": "cli"}, "10.0.2.1")
PODS = [WEB, DB, CLI_B, WEB_B, CLI_C]


def oracle(*specs: tuple[str, dict[str, Any]], nss: list[dict[str, Any]] = NSS, beta: bool = True) -> Oracle:
    pols = [policy(ns, f"p{i}", spec) for i, (ns, spec) in enumerate(specs)]
    return Oracle(namespaces=nss, pods=PODS, policies=pols, beta=beta)


def test_no_policy_allows_everything() -> None:
    o = oracle()
    assert all(o.allowed(s, d, "TCP", 80) for s in PODS for d in PODS)


def test_empty_policy_isolates_ingress_only() -> None:
    o = oracle(("a", {"podSelector": {}}))
    assert not o.allowed(CLI_B, WEB, "TCP", 80)
    assert not o.allowed(DB, WEB, "UDP", 53)
    assert o.allowed(WEB, CLI_B, "TCP", 80)  # egress not isolated
    assert o.allowed(WEB, WEB, "TCP", 80)  # self
    assert o.allowed(CLI_B, WEB_B, "TCP", 80)  # other namespace untouched


def test_policy_types_defaulting() -> None:
    # An egress section with rules adds Egress; an empty egress list does not.
    o = oracle(("a", {"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{"to": [{"podSelector": {}}]}]}))
    assert not o.allowed(WEB, CLI_B, "TCP", 80)
    assert o.allowed(WEB, DB, "TCP", 80)
    assert not o.allowed(DB, WEB, "TCP", 80)  # ingress isolated too, with no rules
    o = oracle(("a", {"podSelector": {"matchLabels": {"app": "web"}}, "egress": []}))
    assert o.allowed(WEB, CLI_B, "TCP", 80)
    o = oracle(("a", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not o.allowed(WEB, DB, "TCP", 80)
    assert o.allowed(CLI_B, WEB, "TCP", 80)
    o = oracle(("a", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 80)  # ingress section ignored without the type


def test_absent_and_empty_from_and_ports_mean_all() -> None:
    rules: list[dict[str, Any]] = [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}]
    for rule in rules:
        o = oracle(("a", {"podSelector": {}, "ingress": [rule]}))
        assert o.allowed(CLI_C, WEB, "SCTP", 7), rule
    o = oracle(("a", {"podSelector": {}, "ingress": []}))
    assert not o.allowed(CLI_C, WEB, "TCP", 80)


def test_pod_selector_is_policy_namespace_only() -> None:
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}))
    assert o.allowed(WEB, DB, "TCP", 80)
    assert not o.allowed(WEB_B, DB, "TCP", 80)


def test_namespace_selector_and_and_or() -> None:
    both = {
        "namespaceSelector": {"matchLabels": {"team": "blue"}},
        "podSelector": {"matchLabels": {"app": "cli"}},
    }
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [both]}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 80)
    assert not o.allowed(WEB_B, WEB, "TCP", 80)
    assert not o.allowed(CLI_C, WEB, "TCP", 80)
    either = [
        {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
        {"podSelector": {"matchLabels": {"app": "db"}}},
    ]
    o = oracle(("a", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": either}]}))
    assert o.allowed(WEB_B, WEB, "TCP", 80)
    assert o.allowed(DB, WEB, "TCP", 80)
    assert not o.allowed(CLI_C, WEB, "TCP", 80)
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert all(o.allowed(s, WEB, "TCP", 80) for s in PODS)


def test_default_namespace_label() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "c"}}}
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [peer]}]}))
    assert o.allowed(CLI_C, WEB, "TCP", 80)
    assert not o.allowed(CLI_B, WEB, "TCP", 80)


@pytest.mark.parametrize(
    ("expr", "labels", "expected"),
    [
        ({"key": "app", "operator": "In", "values": ["web", "db"]}, {"app": "db"}, True),
        ({"key": "app", "operator": "In", "values": ["web"]}, {}, False),
        ({"key": "app", "operator": "NotIn", "values": ["web"]}, {}, True),
        ({"key": "app", "operator": "NotIn", "values": ["web"]}, {"app": "web"}, False),
        ({"key": "app", "operator": "Exists"}, {"app": ""}, True),
        ({"key": "app", "operator": "Exists"}, {"x": "app"}, False),
        ({"key": "app", "operator": "DoesNotExist"}, {"x": "1"}, True),
        ({"key": "app", "operator": "DoesNotExist"}, {"app": "1"}, False),
    ],
)
def test_match_expressions(expr: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert selector_matches({"matchExpressions": [expr]}, labels) is expected


def test_match_labels_and_expressions_are_anded() -> None:
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}
    assert selector_matches(sel, {"app": "web", "tier": "x"})
    assert not selector_matches(sel, {"app": "web"})
    assert selector_matches({}, {})


def test_ports_protocols_and_ranges() -> None:
    o = oracle(("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP"}]}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 80)
    assert not o.allowed(CLI_B, WEB, "TCP", 81)
    assert not o.allowed(CLI_B, WEB, "SCTP", 80)
    assert o.allowed(CLI_B, WEB, "UDP", 1234)
    o = oracle(("a", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80, "endPort": 90}]}]}))
    assert o.allowed(CLI_B, WEB, "SCTP", 90)
    assert o.allowed(CLI_B, WEB, "SCTP", 80)
    assert not o.allowed(CLI_B, WEB, "SCTP", 91)
    assert not o.allowed(CLI_B, WEB, "TCP", 85)


def test_named_ports_resolve_per_destination_and_protocol() -> None:
    o = oracle(("a", {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 8080)
    assert not o.allowed(CLI_B, WEB, "TCP", 9090)
    assert o.allowed(CLI_B, DB, "TCP", 9090)
    o = oracle(("a", {"podSelector": {}, "ingress": [{"ports": [{"port": "dns"}]}]}))
    assert not o.allowed(CLI_B, WEB, "TCP", 53)  # dns is declared UDP; policy port defaults to TCP
    o = oracle(("a", {"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}))
    assert o.allowed(CLI_B, WEB, "UDP", 53)
    # Egress: the name resolves against the destination pod.
    o = oracle(("b", {"podSelector": {}, "egress": [{"ports": [{"port": "http"}]}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 8080)
    assert not o.allowed(CLI_B, WEB, "TCP", 9090)
    assert o.allowed(CLI_B, DB, "TCP", 9090)
    assert not o.allowed(CLI_B, WEB_B, "TCP", 8080)  # WEB_B declares no ports


def test_ip_block_and_except_apply_to_pods_and_externals() -> None:
    block = {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [block]}]}))
    assert o.allowed(DB, WEB, "TCP", 80)
    assert not o.allowed(CLI_B, WEB, "TCP", 80)
    assert o.allowed(CLI_C, WEB, "TCP", 80)
    assert o.allowed("10.0.200.7", WEB, "TCP", 80)
    assert not o.allowed("192.168.1.1", WEB, "TCP", 80)
    # An IP excepted by one peer but included by another is allowed (union of peers).
    other = {"ipBlock": {"cidr": "10.0.1.1/32"}}
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [block, other]}]}))
    assert o.allowed(CLI_B, WEB, "TCP", 80)
    assert not o.allowed(WEB_B, WEB, "TCP", 80)


def test_external_source_never_matches_selectors() -> None:
    o = oracle(("a", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert not o.allowed("192.168.9.9", WEB, "TCP", 80)
    assert o.allowed("192.168.9.9", CLI_B, "TCP", 80)


def test_union_of_policies_and_egress_ingress_both_needed() -> None:
    o = oracle(
        ("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
        ("a", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": 81}]}]}),
        ("b", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 81}]}]}),
    )
    assert o.allowed(CLI_C, WEB, "TCP", 81)
    assert not o.allowed(CLI_C, DB, "TCP", 81)
    assert not o.allowed(CLI_B, WEB, "TCP", 80)  # ingress allows, egress does not
    assert o.allowed(CLI_B, WEB, "TCP", 81)


def test_beta_annotation() -> None:
    nss = [namespace("a", {"team": "red"}, beta_deny=True), namespace("b", {"team": "blue"}), namespace("c")]
    assert not oracle(nss=nss).allowed(CLI_B, WEB, "TCP", 80)
    assert oracle(nss=nss).allowed(WEB, CLI_B, "TCP", 80)
    assert oracle(nss=nss, beta=False).allowed(CLI_B, WEB, "TCP", 80)
    allow = ("a", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
    o = oracle(allow, nss=nss)
    assert o.allowed(CLI_B, WEB, "TCP", 80)
    assert not o.allowed(CLI_B, DB, "TCP", 80)
    bad = namespace("a")
    bad["metadata"]["annotations"] = {"net.beta.kubernetes.io/network-policy": "{not json"}
    assert oracle(nss=[bad, *NSS[1:]]).allowed(CLI_B, WEB, "TCP", 80)


def test_non_endpoints_are_never_peers() -> None:
    done = pod("b", "done", {"app": "cli"}, "10.0.1.9", phase="Succeeded")
    host = pod("b", "host", {"app": "cli"}, "10.0.1.8", host_network=True)
    pol = policy("a", "p", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    o = Oracle(NSS, [*PODS, done, host], [pol])
    assert not o.peer_matches({"namespaceSelector": {}}, "a", "10.0.1.9", done)
    assert not o.peer_matches({"namespaceSelector": {}}, "a", "10.0.1.8", host)
    assert o.peer_matches({"namespaceSelector": {}}, "a", "10.0.1.1", CLI_B)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]}, "spec.ingress[0].from[0].ipBlock.cidr"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
            "spec.egress[0].to[0].ipBlock.except[0]",
        ),
        ({"ingress": [{"ports": [{"port": 0}]}]}, "spec.ingress[0].ports[0].port"),
        ({"ingress": [{"ports": [{"port": 65536}]}]}, "spec.ingress[0].ports[0].port"),
        ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "spec.ingress[0].ports[0].endPort"),
        ({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "spec.ingress[0].ports[0].endPort"),
        ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol"),
        (
            {"ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}]},
            "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
        ),
    ],
)
def test_problems_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert problems(policy("a", "bad", {"podSelector": {}, **spec})) == [field]


def test_invalid_policy_is_ignored_alone() -> None:
    bad = ("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]})
    o = oracle(bad)
    assert o.allowed(CLI_B, WEB, "TCP", 80)  # the bad one isolates nothing
    o = oracle(bad, ("a", {"podSelector": {"matchLabels": {"app": "db"}}}))
    assert not o.allowed(CLI_B, DB, "TCP", 80)


def test_dual_stack_pairs_are_judged_per_family() -> None:
    web = pod("a", "web", {"app": "web"}, ["10.0.0.1", "fd00::1"])
    cli = pod("b", "cli", {"app": "cli"}, ["10.0.1.1", "fd00:1::1"])
    six = pod("b", "six", {"app": "cli"}, ["fd00:1::2"])
    v4 = policy("a", "v4", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    o = Oracle(NSS, [web, cli, six], [v4])
    assert o.allowed(cli, web, "TCP", 80, 4)
    assert not o.allowed(cli, web, "TCP", 80, 6)  # an IPv4 block never holds an IPv6 address
    assert not o.allowed(six, web, "TCP", 80)  # the only family they share is IPv6
    sel = policy("a", "sel", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    o = Oracle(NSS, [web, cli, six], [sel])
    assert o.allowed(cli, web, "TCP", 80, 6) and o.allowed(six, web, "TCP", 80, 6)
    v6 = policy(
        "a",
        "v6",
        {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/16", "except": ["fd00:1::2/128"]}}]}]},
    )
    o = Oracle(NSS, [web, cli, six], [v6])
    assert o.allowed(cli, web, "TCP", 80, 6) and not o.allowed(six, web, "TCP", 80, 6)
    assert not o.allowed(cli, web, "TCP", 80, 4)


def test_unusable_pod_addresses_make_no_endpoint() -> None:
    from .spec_oracle import is_endpoint

    for status in (
        {"podIP": "010.001.000.020"},
        {"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.1"}]},
        {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]},
    ):
        p = pod("a", "x", {}, None)
        p["status"].update(status)
        assert not is_endpoint(p), status
    assert is_endpoint(pod("a", "x", {}, ["fd00::1", "10.0.0.1"]))
