"""Upstream Kubernetes' NetworkPolicy e2e cases (test/e2e/network/netpol), on the compiled models.

Each test writes its expected 9x9 reachability matrix explicitly (as upstream does), then checks
every pod pair on ports 80 and 81 over TCP, UDP and SCTP against it, three ways: the spec
oracle, the node models built from the engine's deltas, and a fresh full recompute.
"""

from __future__ import annotations

from typing import Any

from .kube import policy
from .upstream import Cluster, Reach, ip, reach

Obj = dict[str, Any]
ALL_OPEN = reach(True)


def pol(name: str, spec: Obj, ns: str = "x") -> Obj:
    return policy(ns, name, spec)


def sel(**labels: str) -> Obj:
    return {"matchLabels": labels}


def expr(key: str, op: str, *values: str) -> Obj:
    e: Obj = {"key": key, "operator": op}
    if values:
        e["values"] = list(values)
    return {"matchExpressions": [e]}


POD_A = sel(pod="a")


def only(proto: str, port: int, when: Reach, otherwise: Reach) -> Any:
    return lambda pr, po: when if (pr, po) == (proto, port) else otherwise


# ------------------------------------------------------------------ default deny


def test_default_deny_ingress() -> None:
    c = Cluster(pol("deny", {"podSelector": {}}))
    c.check(reach(True).expect("*", "x/*", False))


def test_default_deny_all() -> None:
    c = Cluster(pol("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    c.check(reach(True).expect("*", "x/*", False).expect("x/*", "*", False))


def test_default_deny_egress_of_a_namespace() -> None:
    c = Cluster(pol("deny", {"podSelector": {}, "policyTypes": ["Egress"]}))
    c.check(reach(True).expect("x/*", "*", False))


def test_deny_egress_by_pod_selector() -> None:
    c = Cluster(pol("deny", {"podSelector": POD_A, "policyTypes": ["Egress"]}))
    c.check(reach(True).expect("x/a", "*", False))


# ------------------------------------------------------------------ namespaces


def test_allow_from_same_namespace_only() -> None:
    c = Cluster(pol("same", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}))
    c.check(reach(True).expect("*", "x/*", False).expect("x/*", "x/*", True))


def test_allow_from_all_namespaces() -> None:
    c = Cluster(pol("all", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    c.check(ALL_OPEN)


def test_allow_from_another_namespace_by_namespace_selector() -> None:
    c = Cluster(pol("from-y", {"podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": sel(ns="y")}]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True))


def test_namespace_selector_match_expressions() -> None:
    c = Cluster(
        pol("ns-expr", {"podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": expr("ns", "In", "y")}]}]})
    )
    c.check(reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True))


def test_default_namespace_label_match_labels() -> None:
    peer = {"namespaceSelector": sel(**{"kubernetes.io/metadata.name": "y"})}
    c = Cluster(pol("by-name", {"podSelector": POD_A, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True))


def test_default_namespace_label_match_expressions() -> None:
    peer = {"namespaceSelector": expr("kubernetes.io/metadata.name", "NotIn", "y")}
    c = Cluster(pol("not-y", {"podSelector": POD_A, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("y/*", "x/a", False))


def test_deny_ingress_from_other_namespaces_by_not_in() -> None:
    peer = {"namespaceSelector": expr("ns", "NotIn", "y", "z")}
    c = Cluster(pol("deny-others", {"podSelector": {}, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("y/*", "x/*", False).expect("z/*", "x/*", False))


# ------------------------------------------------------------------ pod selectors


def test_allow_from_pod_in_same_namespace_by_pod_selector() -> None:
    c = Cluster(pol("from-b", {"podSelector": POD_A, "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("x/b", "x/a", True))


def test_allow_all_ingress_to_a_target() -> None:
    c = Cluster(pol("deny", {"podSelector": {}}), pol("allow-a", {"podSelector": POD_A, "ingress": [{}]}))
    c.check(reach(True).expect("*", "x/*", False).expect("*", "x/a", True))


def test_pod_selector_match_expressions() -> None:
    c = Cluster(pol("expr", {"podSelector": POD_A, "ingress": [{"from": [{"podSelector": expr("pod", "In", "b")}]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("x/b", "x/a", True))


def test_pod_selector_exists_and_does_not_exist() -> None:
    c = Cluster(
        pol(
            "exists",
            {
                "podSelector": expr("pod", "Exists"),
                "ingress": [{"from": [{"podSelector": expr("pod", "DoesNotExist")}]}],
            },
        )
    )
    c.check(reach(True).expect("*", "x/*", False))


def test_pod_selector_or_namespace_selector() -> None:
    peers = [{"namespaceSelector": expr("ns", "NotIn", "x")}, {"podSelector": sel(pod="b")}]
    c = Cluster(pol("or", {"podSelector": POD_A, "ingress": [{"from": peers}]}))
    c.check(reach(True).expect("x/c", "x/a", False))


def test_pod_selector_and_namespace_selector() -> None:
    peer = {"namespaceSelector": expr("ns", "NotIn", "x"), "podSelector": sel(pod="b")}
    c = Cluster(pol("and", {"podSelector": POD_A, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("y/b", "x/a", True).expect("z/b", "x/a", True))


def test_multiple_pod_selectors_and_namespace_selectors() -> None:
    peer = {"namespaceSelector": expr("ns", "NotIn", "x"), "podSelector": expr("pod", "In", "b", "c")}
    c = Cluster(pol("multi", {"podSelector": POD_A, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("[yz]/[bc]", "x/a", True))


def test_any_pod_selectors() -> None:
    peers = [{"podSelector": sel(pod="b")}, {"podSelector": sel(pod="c")}]
    c = Cluster(pol("any", {"podSelector": POD_A, "ingress": [{"from": peers}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("x/[bc]", "x/a", True))


def test_pod_in_another_namespace_by_pod_and_namespace_selector() -> None:
    peer = {"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="a")}
    c = Cluster(pol("y-a", {"podSelector": POD_A, "ingress": [{"from": [peer]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("y/a", "x/a", True))


# ------------------------------------------------------------------ ports and protocols


def test_ports() -> None:
    rule = {"from": [{"namespaceSelector": sel(ns="y")}], "ports": [{"port": 81, "protocol": "TCP"}]}
    c = Cluster(pol("port-81", {"podSelector": POD_A, "ingress": [rule]}))
    closed = reach(True).expect("*", "x/a", False)
    c.check(only("TCP", 81, reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True), closed))


def test_any_port_on_a_specific_protocol() -> None:
    c = Cluster(pol("tcp", {"podSelector": POD_A, "ingress": [{"ports": [{"protocol": "TCP"}]}]}))
    closed = reach(True).expect("*", "x/a", False)
    c.check(lambda pr, po: ALL_OPEN if pr == "TCP" else closed)


def test_port_range_with_end_port() -> None:
    rule = {"ports": [{"protocol": "UDP", "port": 79, "endPort": 80}]}
    c = Cluster(pol("range", {"podSelector": POD_A, "ingress": [rule]}))
    c.check(only("UDP", 80, ALL_OPEN, reach(True).expect("*", "x/a", False)))


def test_sctp_is_not_tcp() -> None:
    c = Cluster(pol("sctp", {"podSelector": POD_A, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]}))
    c.check(only("SCTP", 80, ALL_OPEN, reach(True).expect("*", "x/a", False)))


def test_policy_allowing_sctp_isolates_the_pod_for_tcp_and_udp() -> None:
    c = Cluster(pol("sctp-all", {"podSelector": POD_A, "ingress": [{"ports": [{"protocol": "SCTP"}]}]}))
    closed = reach(True).expect("*", "x/a", False)
    c.check(lambda pr, po: ALL_OPEN if pr == "SCTP" else closed)


def test_tcp_denied_when_only_udp_allowed() -> None:
    c = Cluster(pol("udp", {"podSelector": POD_A, "ingress": [{"ports": [{"protocol": "UDP", "port": 81}]}]}))
    c.check(only("UDP", 81, ALL_OPEN, reach(True).expect("*", "x/a", False)))


def test_named_port_ingress() -> None:
    c = Cluster(pol("named", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}))
    c.check(only("TCP", 80, ALL_OPEN, reach(True).expect("*", "x/*", False)))


def test_named_port_ingress_from_a_namespace() -> None:
    rule = {"from": [{"namespaceSelector": sel(ns="y")}], "ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}
    c = Cluster(pol("named-y", {"podSelector": {}, "ingress": [rule]}))
    closed = reach(True).expect("*", "x/*", False)
    c.check(only("UDP", 80, reach(True).expect("*", "x/*", False).expect("y/*", "x/*", True), closed))


def test_named_port_with_the_wrong_protocol_matches_nothing() -> None:
    # serve-80-udp is declared UDP; asking for it over TCP names no port of any pod.
    c = Cluster(pol("wrong", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-udp"}]}]}))
    c.check(reach(True).expect("*", "x/*", False))


def test_named_port_egress() -> None:
    # An egress section with rules and no policyTypes: the pods are isolated both ways.
    rule = {"ports": [{"port": "serve-81-sctp", "protocol": "SCTP"}]}
    c = Cluster(pol("named-out", {"podSelector": {}, "egress": [rule]}))
    inbound_closed = reach(True).expect("*", "x/*", False)
    c.check(only("SCTP", 81, inbound_closed, reach(True).expect("*", "x/*", False).expect("x/*", "*", False)))


def test_named_port_egress_resolves_per_destination() -> None:
    # Only y/b (recreated) declares a port "web" (81): egress by that name reaches y/b:81 alone.
    c = Cluster(pol("named-out", {"podSelector": POD_A, "egress": [{"ports": [{"port": "web"}]}]}))
    yb = c.get("Pod", "y/b")
    c.delete("Pod", "y", "b")
    container = {**yb["spec"]["containers"][0], "ports": [{"name": "web", "protocol": "TCP", "containerPort": 81}]}
    c.upsert({**yb, "spec": {**yb["spec"], "containers": [container]}})
    closed = reach(True).expect("x/a", "*", False).expect("*", "x/a", False)
    c.check(
        only(
            "TCP",
            81,
            reach(True).expect("x/a", "*", False).expect("*", "x/a", False).expect("x/a", "y/b", True),
            closed,
        )
    )


# ------------------------------------------------------------------ several policies


def test_stacked_policies_with_overlapping_pod_selectors() -> None:
    from_y = [{"namespaceSelector": sel(ns="y")}]
    c = Cluster(pol("p81", {"podSelector": POD_A, "ingress": [{"from": from_y, "ports": [{"port": 81}]}]}))
    opened = reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True)
    closed = reach(True).expect("*", "x/a", False)
    c.check(only("TCP", 81, opened, closed), protocols=["TCP"])
    c.upsert(
        pol("p80", {"podSelector": expr("pod", "In", "a", "b"), "ingress": [{"from": from_y, "ports": [{"port": 80}]}]})
    )
    tables = {
        ("TCP", 81): reach(True).expect("*", "x/[ab]", False).expect("y/*", "x/a", True),
        ("TCP", 80): reach(True).expect("*", "x/[ab]", False).expect("y/*", "x/[ab]", True),
    }
    c.check(lambda pr, po: tables.get((pr, po), reach(True).expect("*", "x/[ab]", False)))


def test_ingress_allow_all_takes_precedence() -> None:
    c = Cluster(pol("p80", {"podSelector": POD_A, "ingress": [{"ports": [{"port": 80}]}]}))
    c.check(only("TCP", 80, ALL_OPEN, reach(True).expect("*", "x/a", False)))
    c.upsert(pol("allow-all", {"podSelector": POD_A, "ingress": [{}]}))
    c.check(ALL_OPEN)


def test_egress_allow_all_takes_precedence() -> None:
    c = Cluster(pol("p80", {"podSelector": POD_A, "egress": [{"ports": [{"port": 80}]}]}))
    closed = reach(True).expect("x/a", "*", False).expect("*", "x/a", False)
    c.check(only("TCP", 80, reach(True).expect("*", "x/a", False).expect("x/a", "x/a", True), closed))
    c.upsert(pol("allow-all", {"podSelector": POD_A, "egress": [{}], "ingress": [{}]}))
    c.check(ALL_OPEN)


def test_allow_all_policy() -> None:
    c = Cluster(pol("deny", {"podSelector": {}}), pol("allow-all", {"podSelector": {}, "ingress": [{}]}))
    c.check(ALL_OPEN)


def test_stop_enforcing_after_delete() -> None:
    c = Cluster(pol("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
    c.check(reach(True).expect("*", "x/*", False).expect("x/*", "*", False))
    c.delete("NetworkPolicy", "x", "deny")
    c.check(ALL_OPEN)


def test_egress_denied_on_the_client_even_if_the_server_allows() -> None:
    c = Cluster(
        pol("deny-out", {"podSelector": POD_A, "policyTypes": ["Egress"]}),
        pol("allow-in", {"podSelector": {}, "ingress": [{}]}, ns="y"),
    )
    c.check(reach(True).expect("x/a", "*", False))


def test_ingress_and_egress_together() -> None:
    spec = {
        "podSelector": POD_A,
        "ingress": [{"from": [{"podSelector": sel(pod="b")}]}],
        "egress": [{"to": [{"podSelector": sel(pod="b")}]}],
    }
    c = Cluster(pol("both", spec))
    c.check(
        reach(True)
        .expect("*", "x/a", False)
        .expect("x/a", "*", False)
        .expect("x/b", "x/a", True)
        .expect("x/a", "x/b", True)
    )


def test_ingress_and_egress_are_independent() -> None:
    c = Cluster(
        pol("deny-out", {"podSelector": POD_A, "policyTypes": ["Egress"], "ingress": [{"from": []}]}),
        pol("open-in", {"podSelector": POD_A, "ingress": [{}]}),
    )
    c.check(reach(True).expect("x/a", "*", False))
    c.delete("NetworkPolicy", "x", "open-in")
    # Still egress-only: the ingress section of an Egress-only policy does nothing.
    c.check(reach(True).expect("x/a", "*", False))
    c.upsert(pol("deny-in", {"podSelector": POD_A, "policyTypes": ["Ingress"]}))
    c.check(reach(True).expect("x/a", "*", False).expect("*", "x/a", False))


def test_egress_to_another_namespace_by_pod_and_namespace_selector() -> None:
    peer = {"namespaceSelector": sel(ns="y"), "podSelector": sel(pod="a")}
    c = Cluster(pol("to-y-a", {"podSelector": POD_A, "egress": [{"to": [peer]}]}))
    c.check(reach(True).expect("x/a", "*", False).expect("*", "x/a", False).expect("x/a", "y/a", True))


# ------------------------------------------------------------------ ipBlock


def test_egress_to_a_cidr() -> None:
    block = {"ipBlock": {"cidr": f"{ip('y/b')}/32"}}
    c = Cluster(pol("cidr", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"to": [block]}]}))
    c.check(reach(True).expect("x/a", "*", False).expect("x/a", "y/b", True))


def test_egress_cidr_with_except() -> None:
    block = {"ipBlock": {"cidr": "10.1.0.0/16", "except": [f"{ip('y/b')}/32", "10.1.3.0/24"]}}
    c = Cluster(pol("except", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"to": [block]}]}))
    c.check(reach(True).expect("x/a", "y/b", False).expect("x/a", "z/*", False))


def test_ip_in_cidr_and_except_of_different_policies_is_allowed() -> None:
    deny_b = {"ipBlock": {"cidr": "10.1.0.0/16", "except": [f"{ip('y/b')}/32"]}}
    c = Cluster(pol("except", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"to": [deny_b]}]}))
    c.check(reach(True).expect("x/a", "y/b", False))
    allow_b = {"ipBlock": {"cidr": f"{ip('y/b')}/32"}}
    c.upsert(pol("allow-b", {"podSelector": POD_A, "policyTypes": ["Egress"], "egress": [{"to": [allow_b]}]}))
    c.check(ALL_OPEN)


def test_ip_in_cidr_and_except_of_different_peers_is_allowed() -> None:
    peers = [
        {"ipBlock": {"cidr": "10.1.2.0/24", "except": [f"{ip('y/b')}/32"]}},
        {"ipBlock": {"cidr": "10.1.2.8/29"}},  # holds y/b (.12) again
    ]
    c = Cluster(pol("peers", {"podSelector": POD_A, "ingress": [{"from": peers}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True))


def test_ingress_ip_block_applies_to_pod_ips() -> None:
    block = {"ipBlock": {"cidr": "10.1.0.0/22", "except": ["10.1.1.0/24"]}}
    c = Cluster(pol("in-cidr", {"podSelector": {}, "ingress": [{"from": [block]}]}))
    c.check(reach(True).expect("x/*", "x/*", False))


# ------------------------------------------------------------------ updates


def test_updated_policy() -> None:
    c = Cluster(pol("p", {"podSelector": POD_A, "ingress": [{"from": [{"podSelector": sel(pod="b")}]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("x/b", "x/a", True))
    c.upsert(pol("p", {"podSelector": POD_A, "ingress": [{"from": [{"podSelector": sel(pod="c")}]}]}))
    c.check(reach(True).expect("*", "x/a", False).expect("x/c", "x/a", True))


def test_ingress_from_updated_namespace() -> None:
    c = Cluster(pol("p", {"podSelector": POD_A, "ingress": [{"from": [{"namespaceSelector": sel(ns2="updated")}]}]}))
    c.check(reach(True).expect("*", "x/a", False))
    c.relabel("Namespace", "y", {"ns": "y", "ns2": "updated"})
    c.check(reach(True).expect("*", "x/a", False).expect("y/*", "x/a", True))
    c.relabel("Namespace", "y", {"ns": "y"})
    c.check(reach(True).expect("*", "x/a", False))


def test_ingress_from_updated_pod() -> None:
    c = Cluster(pol("p", {"podSelector": POD_A, "ingress": [{"from": [{"podSelector": sel(pod="b", hot="yes")}]}]}))
    c.check(reach(True).expect("*", "x/a", False))
    c.relabel("Pod", "x/b", {"pod": "b", "hot": "yes"})
    c.check(reach(True).expect("*", "x/a", False).expect("x/b", "x/a", True))


def test_deny_ingress_to_updated_pod() -> None:
    c = Cluster(pol("p", {"podSelector": sel(target="isolated"), "policyTypes": ["Ingress"]}))
    c.check(ALL_OPEN)
    c.relabel("Pod", "x/a", {"pod": "a", "target": "isolated"})
    c.check(reach(True).expect("*", "x/a", False))
    c.relabel("Pod", "x/a", {"pod": "a"})
    c.check(ALL_OPEN)
