"""The tier oracle, clause by clause of the API reference, and properties of random CNP mixes."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings

from .cnp_oracle import CNPOracle, Decision
from .cnp_strategies import labelled_node, tiered_cluster
from .kube import namespace, pod, policy
from .spec_oracle import Oracle, family, is_endpoint, pod_ip, pod_ips, shared_families

Obj = dict[str, Any]
WEB = [("web", "TCP", 80)]
A1 = pod("a", "a1", {"app": "web"}, "10.0.0.11", "n1", WEB)
A2 = pod("a", "a2", {"app": "db"}, ["10.0.0.12", "fd00::12"], "n1", WEB)
B1 = pod("b", "b1", {"app": "web"}, ["10.0.0.21", "fd00::21"], "n2", WEB)
HOST = pod("b", "h1", {"app": "web"}, "192.168.0.2", "n2", WEB, host_network=True)
NAMESPACES = [namespace("a", {"team": "x"}), namespace("b", {"team": "y"})]
NODES = [
    {**labelled_node(name, {"role": "worker"}), "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    for name, ip in (("node-1", "192.168.0.1"), ("node-2", "192.168.0.2"))
]
ALL_NS: Obj = {"namespaces": {}}


def cnp(name: str, tier: str = "Admin", priority: int = 5, subject: Obj | None = None, **rules: Any) -> Obj:
    spec: Obj = {"tier": tier, "priority": priority, "subject": subject or ALL_NS, **rules}
    api = "policy.networking.k8s.io/v1alpha2"
    return {"apiVersion": api, "kind": "ClusterNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def r(action: str, *peers: Obj, key: str = "from", **extra: Any) -> Obj:
    return {"action": action, key: list(peers) or [ALL_NS], **extra}


def to(action: str, *peers: Obj, **extra: Any) -> Obj:
    return r(action, *peers, key="to", **extra)


def tcp(port: int) -> Obj:
    return {"tcp": {"destinationPort": {"number": port}}}


def ns(name: str) -> Obj:
    return {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def world(*cnps: Obj, policies: tuple[Obj, ...] = ()) -> CNPOracle:
    return CNPOracle(NAMESPACES, [A1, A2, B1, HOST], NODES, list(policies), list(cnps))


DENY_INGRESS_V1 = policy("a", "deny", {"podSelector": {}})
ALLOW_INGRESS_V1 = policy("a", "allow", {"podSelector": {}, "ingress": [{}]})


def test_no_policy_allows() -> None:
    assert world().decide(B1, A1, "TCP", 80)[1].tier == "default"
    assert world().allowed(B1, A1, "TCP", 80)


def test_admin_decides_before_network_policy() -> None:
    assert not world(cnp("deny", ingress=[r("Deny")]), policies=(ALLOW_INGRESS_V1,)).allowed(B1, A1, "TCP", 80)
    assert world(cnp("accept", ingress=[r("Accept")]), policies=(DENY_INGRESS_V1,)).allowed(B1, A1, "TCP", 80)


def test_network_policy_is_final_for_the_pods_it_selects() -> None:
    baseline = cnp("b", "Baseline", ingress=[r("Accept")], egress=[to("Deny")])
    w = world(baseline, policies=(DENY_INGRESS_V1,))
    egress, ingress = w.decide(B1, A1, "TCP", 80)
    assert ingress.tier == "NetworkPolicy" and not ingress.allowed  # the Baseline Accept never runs
    assert egress.tier == "Baseline" and not egress.allowed  # b1 is not selected for egress by v1


def test_baseline_decides_what_no_one_else_did() -> None:
    w = world(cnp("b", "Baseline", ingress=[r("Deny", ns("b"))]))
    assert not w.allowed(B1, A1, "TCP", 80)
    assert w.allowed(A2, A1, "TCP", 80)  # no rule matches: allowed


def test_rules_run_in_written_order() -> None:
    assert world(cnp("p", ingress=[r("Accept"), r("Deny")])).allowed(B1, A1, "TCP", 80)
    assert not world(cnp("p", ingress=[r("Deny"), r("Accept")])).allowed(B1, A1, "TCP", 80)


def test_priority_then_name() -> None:
    """Lower priority first; equal priorities by name, whatever order the policies come in."""
    deny, accept = cnp("b-deny", priority=5, ingress=[r("Deny")]), cnp("a-accept", priority=5, ingress=[r("Accept")])
    assert world(deny, accept).allowed(B1, A1, "TCP", 80)
    assert world(accept, deny).allowed(B1, A1, "TCP", 80)
    assert not world(cnp("z-deny", priority=4, ingress=[r("Deny")]), accept).allowed(B1, A1, "TCP", 80)
    assert world(cnp("c", priority=6, ingress=[r("Accept")]), cnp("b", priority=1000, ingress=[r("Deny")])).allowed(
        B1, A1, "TCP", 80
    )


def test_pass_skips_the_rest_of_the_tier() -> None:
    passing = cnp("pass", priority=1, ingress=[r("Pass", ns("b")), r("Deny")])
    later = cnp("later", priority=2, ingress=[r("Deny")])
    _, ingress = world(passing, later).decide(B1, A1, "TCP", 80)
    assert ingress.allowed and ingress.tier == "default" and ingress.passed == ("pass[0]",)
    w = world(passing, later, policies=(DENY_INGRESS_V1,))
    assert w.decide(B1, A1, "TCP", 80)[1].tier == "NetworkPolicy"
    w = world(passing, later, cnp("base", "Baseline", ingress=[r("Deny")]))
    assert w.decide(B1, A1, "TCP", 80)[1] == Decision(False, "Baseline", "base", 0, ("pass[0]",))
    # A Pass in the Baseline tier hands on to the default: allow.
    assert world(cnp("base", "Baseline", ingress=[r("Pass"), r("Deny")])).allowed(B1, A1, "TCP", 80)


def test_egress_accept_leaves_ingress_to_the_destination() -> None:
    w = world(cnp("out", egress=[to("Accept")]), cnp("in", "Baseline", ingress=[r("Deny")]))
    egress, ingress = w.decide(B1, A1, "TCP", 80)
    assert egress.allowed and egress.tier == "Admin"
    assert not ingress.allowed and not w.allowed(B1, A1, "TCP", 80)


def test_protocols() -> None:
    rng = {"udp": {"destinationPort": {"range": {"start": 50, "end": 60}}}}
    w = world(cnp("p", ingress=[r("Deny", protocols=[tcp(80), rng])]))
    assert not w.allowed(B1, A1, "TCP", 80)
    assert w.allowed(B1, A1, "TCP", 81) and w.allowed(B1, A1, "UDP", 80) and w.allowed(B1, A1, "SCTP", 80)
    assert not w.allowed(B1, A1, "UDP", 50) and not w.allowed(B1, A1, "UDP", 60) and w.allowed(B1, A1, "UDP", 61)


def test_named_ports_resolve_on_the_destination_pod() -> None:
    w = world(cnp("p", egress=[to("Deny", ALL_NS, protocols=[{"destinationNamedPort": "web"}])]))
    assert not w.allowed(B1, A1, "TCP", 80)
    assert w.allowed(B1, A1, "TCP", 81) and w.allowed(B1, A1, "UDP", 80)
    w = world(cnp("p", ingress=[r("Deny", protocols=[{"destinationNamedPort": "dns"}])]))
    assert w.allowed(B1, A1, "TCP", 80)  # a1 has no port named dns


def test_networks_match_pod_traffic_of_their_family_only() -> None:
    w = world(cnp("p", egress=[to("Deny", {"networks": ["0.0.0.0/0"]})]))
    assert not w.allowed(B1, A1, "TCP", 80)
    assert not w.allowed(B1, "10.0.0.12", "TCP", 80)
    assert w.allowed(B1, "fd00::12", "TCP", 80)  # the IPv6 connection to a2
    assert not w.allowed(B1, "203.0.113.9", "TCP", 80)  # nobody's address


def test_nodes_peers_match_node_addresses_and_host_network_pods() -> None:
    w = world(cnp("p", egress=[to("Deny", {"nodes": {"matchLabels": {"role": "worker"}}})]))
    assert not w.allowed(A1, HOST, "TCP", 80)
    assert not w.allowed(A1, "192.168.0.1", "TCP", 22)
    assert w.allowed(A1, B1, "TCP", 80)  # a pod's address is not its node's
    assert world(cnp("p", egress=[to("Deny", {"nodes": {"matchLabels": {"role": "db"}}})])).allowed(A1, HOST, "TCP", 80)


def test_host_network_pods_are_never_subjects_nor_pod_peers() -> None:
    w = world(cnp("p", ingress=[r("Deny")], egress=[to("Deny", ALL_NS)]))
    egress, ingress = w.decide(HOST, A1, "TCP", 80)
    assert egress.tier == "not a subject" and ingress.allowed  # a namespaces peer never matches a host pod
    assert w.decide(A1, HOST, "TCP", 80) == (w.decide(A1, HOST, "TCP", 80)[0], w.decide(HOST, A1, "TCP", 80)[0])
    assert w.allowed(A1, HOST, "TCP", 80)  # a1's egress Deny is to namespaces' pods: not a host pod


def test_subject_pods_and_namespaces() -> None:
    team_x, db = {"matchLabels": {"team": "x"}}, {"matchLabels": {"app": "db"}}
    subject = {"pods": {"namespaceSelector": team_x, "podSelector": db}}
    w = world(cnp("p", subject=subject, ingress=[r("Deny")]))
    assert not w.allowed(B1, A2, "TCP", 80) and w.allowed(B1, A1, "TCP", 80)
    w = world(cnp("p", subject={"pods": {"podSelector": {"matchLabels": {"app": "web"}}}}, ingress=[r("Deny")]))
    assert not w.allowed(A2, A1, "TCP", 80) and not w.allowed(A2, B1, "TCP", 80)


def test_a_pod_reaching_itself_is_exempt() -> None:
    w = world(cnp("p", ingress=[r("Deny")], egress=[to("Deny", {"networks": ["0.0.0.0/0", "::/0"]})]))
    assert w.allowed(A2, A2, "TCP", 80) and w.allowed(A2, "fd00::12", "TCP", 80)
    assert w.decide(A2, A2, "TCP", 80)[0].tier == "self"
    assert not w.allowed(A2, A1, "TCP", 80)


def test_unknown_peers_fail_closed() -> None:
    unknown: Obj = {"everything": {}}
    w = world(cnp("p", ingress=[r("Accept", unknown, ns("b")), r("Deny", ns("b"))]))
    assert not w.allowed(B1, A1, "TCP", 80)  # the Accept rule matches nothing, not even its b peer
    w = world(cnp("p", ingress=[r("Deny", unknown, protocols=[tcp(443)])]))
    assert not w.allowed(B1, A1, "TCP", 80) and not w.allowed(A2, A1, "UDP", 53)  # Deny all
    w = world(cnp("p", egress=[to("Pass", ns("b"), unknown)]), policies=(ALLOW_INGRESS_V1,))
    assert not w.allowed(A1, B1, "TCP", 80) and not w.allowed(A1, A2, "TCP", 80)  # Pass too: Deny all
    w = world(cnp("p", ingress=[r("Deny", ns("b"), protocols=[{"icmp": {}}])]))
    assert not w.allowed(A2, A1, "TCP", 80)  # an unknown protocol entry too


def test_a_bad_policy_is_left_out_alone() -> None:
    bad = cnp("bad", priority=2000, ingress=[r("Deny")])
    w = world(bad, cnp("good", ingress=[r("Deny", ns("b"))]))
    assert set(w.rejected) == {"bad"} and w.rejected["bad"].field == "spec.priority"
    assert w.allowed(A2, A1, "TCP", 80) and not w.allowed(B1, A1, "TCP", 80)


# ------------------------------------------------------------------ properties

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def of(c: dict[str, Any], cnps: list[Obj] | None = None) -> CNPOracle:
    return CNPOracle(c["namespaces"], c["pods"], c["nodes"], c["policies"], c["cnps"] if cnps is None else cnps)


# What the random rules' ports (53, 80, 81 and ranges above them) tell apart, per protocol.
CHECKS = (("TCP", 80), ("TCP", 82), ("UDP", 53), ("UDP", 81), ("SCTP", 80))


def verdicts(o: CNPOracle, pods: list[Obj], sources: str = "any") -> dict[tuple[int, int, str, str, int], bool]:
    """Every pod pair (source any pod with an address, or ``sources="endpoints"``; destination an
    endpoint or host-network pod), on each family they share, for each of `CHECKS`."""
    out = {}
    for i, src in enumerate(pods):
        if not pod_ips(src) or (sources == "endpoints" and not is_endpoint(src)):
            continue
        for j, dst in enumerate(pods):
            if not (is_endpoint(dst) or dst["spec"].get("hostNetwork")):
                continue
            for ip in pod_ips(dst):
                if any(family(a) == family(ip) for a in pod_ips(src)):
                    for proto, port in CHECKS:
                        out[(i, j, ip, proto, port)] = o.allowed(src, ip, proto, port)
    return out


@SETTINGS
@given(tiered_cluster(max_cnps=0))
def test_without_cnps_the_tiers_are_network_policy(c: dict[str, Any]) -> None:
    o, v1 = of(c), Oracle(c["namespaces"], c["pods"], c["policies"])
    endpoints = [p for p in c["pods"] if is_endpoint(p)]
    for src in endpoints:
        for dst in endpoints:
            for version in shared_families(src, dst):
                ip = pod_ip(dst, version)
                assert ip is not None
                for proto, port in CHECKS:
                    assert o.allowed(src, ip, proto, port) == v1.allowed(src, dst, proto, port, version)


@SETTINGS
@given(tiered_cluster())
def test_the_order_policies_come_in_does_not_matter(c: dict[str, Any]) -> None:
    assert verdicts(of(c), c["pods"]) == verdicts(of(c, list(reversed(c["cnps"]))), c["pods"])


@SETTINGS
@given(tiered_cluster())
def test_an_admin_pass_of_everything_first_hands_all_to_network_policy(c: dict[str, Any]) -> None:
    everything = [ALL_NS, {"networks": ["0.0.0.0/0", "::/0"]}, {"nodes": {}}]
    first = cnp("0-pass", priority=0, ingress=[r("Pass")], egress=[to("Pass", *everything)])
    without_admin = [p for p in c["cnps"] if p["spec"]["tier"] != "Admin"]
    # (a name sorting first, at priority 0: it runs before any other policy of priority 0). Only
    # pods can be passed on ingress (namespaces and pods peers), so only pods are the sources.
    before = verdicts(of(c, [first, *c["cnps"]]), c["pods"], sources="endpoints")
    assert before == verdicts(of(c, without_admin), c["pods"], sources="endpoints")


@SETTINGS
@given(tiered_cluster())
def test_an_admin_deny_of_everything_first_denies_all_but_self(c: dict[str, Any]) -> None:
    first = cnp("0-deny", priority=0, egress=[to("Deny", {"networks": ["0.0.0.0/0", "::/0"]})])
    o = of(c, [first, *c["cnps"]])
    # (a host-network source's traffic is judged at its destination only)
    for (i, j, _ip, _proto, _port), allowed in verdicts(o, c["pods"], sources="endpoints").items():
        assert allowed == (i == j)


@SETTINGS
@given(tiered_cluster())
def test_network_policy_is_final_where_it_isolates(c: dict[str, Any]) -> None:
    """Without the Admin tier, a direction v1 isolates is v1's verdict whatever the Baseline says."""
    o = of(c, [p for p in c["cnps"] if p["spec"]["tier"] == "Baseline"])
    v1 = o.v1
    endpoints = [p for p in c["pods"] if is_endpoint(p)]
    for src in endpoints:
        for dst in endpoints:
            if src is dst or not (v1.egress_isolated(src) and v1.ingress_isolated(dst)):
                continue
            for version in shared_families(src, dst):
                ip = pod_ip(dst, version)
                assert ip is not None
                assert o.allowed(src, ip, "TCP", 80) == v1.allowed(src, dst, "TCP", 80, version)


@SETTINGS
@given(tiered_cluster())
def test_a_refused_policy_changes_nothing(c: dict[str, Any]) -> None:
    bad = cnp("0-bad", priority=0, ingress=[r("Deny")], egress=[to("Deny", {"networks": ["0.0.0.0/0", "::/0"]})])
    bad["spec"]["egress"][0]["protocols"] = [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]
    o = of(c, [copy.deepcopy(bad), *c["cnps"]])
    assert "0-bad" in o.rejected
    assert verdicts(o, c["pods"]) == verdicts(of(c), c["pods"])


# ------------------------------------------------------------------ a pod's own node

C1 = pod("a", "c1", {"app": "web"}, "10.0.0.31", "node-1", WEB)
ON_NODE_1 = pod("b", "hn1", {"app": "agent"}, "192.168.0.1", "node-1", WEB, host_network=True)
ON_NODE_2 = pod("b", "hn2", {"app": "agent"}, "192.168.0.2", "node-2", WEB, host_network=True)
NO_EGRESS_V1 = policy("a", "no-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
NO_INGRESS_V1 = policy("a", "no-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})


def own_node_world(*cnps: Obj, policies: tuple[Obj, ...] = (NO_EGRESS_V1,)) -> CNPOracle:
    return CNPOracle(NAMESPACES, [C1, ON_NODE_1, ON_NODE_2], NODES, list(policies), list(cnps))


def test_network_policy_does_not_filter_a_pods_egress_to_its_own_node() -> None:
    w = own_node_world()
    assert w.own_node_ips(C1) == {"192.168.0.1"}
    assert w.decide(C1, ON_NODE_1, "TCP", 80)[0] == Decision(True, "NetworkPolicy")  # deny-all egress: exempt
    assert w.allowed(C1, "192.168.0.1", "TCP", 22)  # the node itself
    assert w.decide(C1, ON_NODE_2, "TCP", 80)[0] == Decision(False, "NetworkPolicy")  # another node: the rules


def test_the_tiers_do_filter_a_pods_egress_to_its_own_node() -> None:
    deny = cnp("no-nodes", egress=[to("Deny", {"nodes": {}})])
    assert own_node_world(deny).decide(C1, ON_NODE_1, "TCP", 80)[0] == Decision(False, "Admin", "no-nodes", 0)
    base = cnp("base", tier="Baseline", egress=[to("Deny", {"networks": ["192.168.0.0/24"]})])
    assert own_node_world(base).decide(C1, ON_NODE_1, "TCP", 80)[0].allowed  # the NetworkPolicy tier is final
    assert own_node_world(base, policies=()).decide(C1, ON_NODE_1, "TCP", 80)[0] == Decision(
        False, "Baseline", "base", 0
    )


def test_ingress_from_a_pods_own_node_is_never_filtered() -> None:
    x = {"namespaces": {"matchLabels": {"team": "x"}}}
    w = own_node_world(cnp("no-in", subject=x, ingress=[r("Deny")]), policies=(NO_INGRESS_V1,))
    assert w.decide(ON_NODE_1, C1, "TCP", 80)[1] == Decision(True, "own node")
    assert w.decide("192.168.0.1", C1, "TCP", 80)[1] == Decision(True, "own node")
    assert not w.decide(ON_NODE_2, C1, "TCP", 80)[1].allowed
