"""ClusterNetworkPolicy compiled by the engine: the models' verdicts (`evaluate.decide`) against
the independent tier oracle, for random CNP + NetworkPolicy mixes, and deltas against a full
recompute as objects come, change and go."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.brain.engine import Engine
from stockade.model import Action, Direction, NodeModel, Protocol, Tier
from stockade.model.evaluate import decide

from .cnp_oracle import CNPOracle, node_addresses
from .cnp_strategies import cluster_network_policy, tiered_cluster
from .harness import apply_deltas, models_of
from .kube import namespace, pod, policy
from .spec_oracle import is_endpoint, key_of, pod_ips
from .strategies import CHECK_PORTS, EXTERNALS, PROTOCOLS
from .test_cnp_oracle import ALL_NS, NAMESPACES, NODES, cnp, r, to

Obj = dict[str, Any]
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load(c: Mapping[str, Any], beta: bool = True) -> Engine:
    eng = Engine(beta_default_deny=beta)
    eng.load(
        namespaces=copy.deepcopy(c.get("namespaces", [])),
        pods=copy.deepcopy(c.get("pods", [])),
        policies=copy.deepcopy(c.get("policies", [])),
        nodes=copy.deepcopy(c.get("nodes", [])),
        cluster_policies=copy.deepcopy(c.get("cnps", [])),
    )
    return eng


def oracle_of(c: Mapping[str, Any], beta: bool = True) -> CNPOracle:
    return CNPOracle(c["namespaces"], c["pods"], c.get("nodes", []), c.get("policies", []), c.get("cnps", []), beta)


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


class ModelJudge:
    """A connection judged by the compiled models, as the dataplanes would: the source pod's
    egress on its node, the destination pod's ingress on its node; an address no endpoint pod
    holds is not filtered; a pod reaching itself never leaves it. A peer at an address of the
    pod's own node is judged as the dataplane's input path does (`decide`'s ``own_node``)."""

    def __init__(self, models: Mapping[str, NodeModel], oracle: CNPOracle) -> None:
        self.models = models
        self.oracle = oracle

    def _model(self, pod: Obj) -> NodeModel:
        node = pod["spec"].get("nodeName") or ""
        return self.models.get(node) or NodeModel(node)

    def allowed(self, src_ip: str, dst_ip: str, protocol: str, port: int) -> bool:
        src, dst = self.oracle.endpoint_at(src_ip), self.oracle.endpoint_at(dst_ip)
        if src is not None and dst is not None and key_of(src) == key_of(dst):
            return True
        proto = Protocol(protocol)
        if src is not None:
            own = dst_ip in self.oracle.own_node_ips(src)
            if not decide(self._model(src), Direction.EGRESS, src_ip, dst_ip, proto, port, own).allowed:
                return False
        if dst is None:
            return True
        own = src_ip in self.oracle.own_node_ips(dst)
        return decide(self._model(dst), Direction.INGRESS, dst_ip, src_ip, proto, port, own).allowed


def universe(c: Mapping[str, Any]) -> list[str]:
    """Every address worth probing: pods' (host-network pods' are their node's), nodes', outside."""
    ips: list[str] = []
    for p in c["pods"]:
        ips += pod_ips(p)
    for n in c.get("nodes", []):
        ips += node_addresses(n)
    ips += EXTERNALS
    return sorted(set(ips))


def disagreements(c: Mapping[str, Any], models: Mapping[str, NodeModel], limit: int = 10) -> list[str]:
    oracle = oracle_of(c)
    judge = ModelJudge(models, oracle)
    ips = universe(c)
    out = []
    for src in ips:
        for dst in ips:
            if src == dst or _family(src) != _family(dst):
                continue
            if oracle.endpoint_at(src) is None and oracle.endpoint_at(dst) is None:
                continue  # nothing of ours on either end
            for proto in PROTOCOLS:
                for port in CHECK_PORTS:
                    want = oracle.allowed(src, dst, proto, port)
                    if judge.allowed(src, dst, proto, port) != want:
                        out.append(f"{src} -> {dst} {proto}/{port}: oracle says {'allow' if want else 'deny'}")
                        if len(out) >= limit:
                            return out
    return out


@SETTINGS
@given(tiered_cluster())
def test_compiled_tiers_agree_with_the_oracle(c: dict[str, Any]) -> None:
    eng = load(c)
    for node in eng.nodes():
        assert eng.model(node).check() == []
    found = disagreements(c, models_of(eng))
    assert not found, "compiled models disagree with the tier oracle:\n" + "\n".join(found)


def _kind_key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


@SETTINGS
@given(tiered_cluster(max_pods=5), st.data())
def test_incremental_equals_full_recompute(c: dict[str, Any], data: st.DataObject) -> None:
    """Objects applied one at a time (then CNPs changed and deleted): the deltas rebuild exactly
    the models a cold load computes, and those agree with the oracle."""
    eng = Engine()
    models: dict[str, NodeModel] = {}
    order = [*c["nodes"], *c["namespaces"], *c["cnps"], *c["policies"], *c["pods"]]
    order = data.draw(st.permutations(order))
    for obj in order:
        apply_deltas(models, eng.upsert(copy.deepcopy(obj)))
    assert {n: m for n, m in models.items() if m != NodeModel(n)} == {
        n: m for n, m in models_of(load(c)).items() if m != NodeModel(n)
    }
    # Change one CNP, delete another: still what a cold load of the result computes.
    cnps = list(c["cnps"])
    if cnps:
        changed = data.draw(cluster_network_policy(cnps[0]["metadata"]["name"]))
        apply_deltas(models, eng.upsert(copy.deepcopy(changed)))
        cnps[0] = changed
        gone = cnps.pop()
        apply_deltas(models, eng.delete("ClusterNetworkPolicy", None, gone["metadata"]["name"]))
        after = {**c, "cnps": cnps}
        assert {n: m for n, m in models.items() if m != NodeModel(n)} == {
            n: m for n, m in models_of(load(after)).items() if m != NodeModel(n)
        }
        found = disagreements(after, models)
        assert not found, "\n".join(found)


# ------------------------------------------------------------------ worked cases

A1 = pod("a", "a1", {"app": "web"}, "10.0.0.11", "node-1", [("web", "TCP", 80)])
A2 = pod("a", "a2", {"app": "db"}, "10.0.0.12", "node-1", [("web", "TCP", 80)])
B1 = pod("b", "b1", {"app": "web"}, "10.0.0.21", "node-2", [("web", "TCP", 80)])


def np_policy(ns: str, name: str, labels: dict[str, str], ingress: list[Obj]) -> Obj:
    spec = {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"], "ingress": ingress}
    return policy(ns, name, spec)


def world(*cnps: Obj, policies: Iterable[Obj] = ()) -> dict[str, Any]:
    return {
        "namespaces": NAMESPACES,
        "pods": [A1, A2, B1],
        "nodes": NODES,
        "policies": list(policies),
        "cnps": list(cnps),
    }


def test_an_admin_deny_is_a_deny_rule_in_an_admin_chain_of_the_subjects_node() -> None:
    eng = load(world(cnp("deny-b", subject={"namespaces": {"matchLabels": {"team": "x"}}}, ingress=[r("Deny")])))
    m = eng.model("node-1")
    cid = m.admin_ingress["10.0.0.11"]
    chain = m.chains[cid]
    assert chain.tier is Tier.ADMIN and [rule.action for rule in chain.rules] == [Action.DENY]
    origin = eng.rule_origin("node-1", cid, 0)
    assert origin is not None and (origin.policy, origin.tier, origin.rule) == ("deny-b", "Admin", 0)
    assert eng.model("node-2").admin_ingress == {}  # b1 is not a subject: nothing on its node


def test_no_baseline_chain_where_a_network_policy_isolates() -> None:
    np = np_policy("a", "only-web", {"app": "web"}, [{}])
    base = cnp("base", tier="Baseline", ingress=[r("Deny")])
    m = load(world(base, policies=[np])).model("node-1")
    assert "10.0.0.11" in m.ingress and "10.0.0.11" not in m.baseline_ingress  # the NP decides
    assert "10.0.0.12" in m.baseline_ingress and "10.0.0.12" not in m.ingress


def test_a_refused_cnp_is_reported_alone_and_the_rest_is_enforced() -> None:
    bad = cnp("bad", priority=1001, ingress=[r("Deny")])
    good = cnp("good", subject={"namespaces": {"matchLabels": {"team": "x"}}}, ingress=[r("Deny")])
    eng = load(world(bad, good))
    assert [str(x) for x in eng.rejections()] == [
        "ClusterNetworkPolicy bad: spec.priority: " + next(x.message for x in eng.rejections())
    ]
    assert "10.0.0.11" in eng.model("node-1").admin_ingress


def test_nodes_peers_follow_node_labels_and_addresses() -> None:
    peer = {"nodes": {"matchLabels": {"role": "worker"}}}
    eng = load(world(cnp("no-nodes", subject={"namespaces": {}}, egress=[to("Deny", peer)])))
    m = eng.model("node-1")
    sid = m.chains[m.admin_egress["10.0.0.11"]].rules[0].peer
    assert sid is not None and m.sets[sid] == {"192.168.0.1/32", "192.168.0.2/32"}
    moved = copy.deepcopy(NODES[1])
    moved["metadata"]["labels"]["role"] = "edge"
    deltas = eng.upsert(moved)
    assert deltas["node-1"].set_removed == {sid: frozenset({"192.168.0.2/32"})}
    assert eng.model("node-1").sets[sid] == {"192.168.0.1/32"}


def test_namespace_relabel_moves_the_subject() -> None:
    c = world(cnp("x-only", subject={"namespaces": {"matchLabels": {"team": "x"}}}, ingress=[r("Deny")]))
    eng = load(c)
    assert "10.0.0.21" not in eng.model("node-2").admin_ingress
    eng.upsert(namespace("b", {"team": "x"}))
    assert "10.0.0.21" in eng.model("node-2").admin_ingress
    eng.upsert(namespace("b", {"team": "y"}))
    assert eng.model("node-2").admin_ingress == {}


def test_unchanged_network_policy_chains_keep_their_ids() -> None:
    """A model without CNPs is what it was before tiers existed (chain ids included)."""
    np = np_policy("a", "only-web", {"app": "web"}, [{"from": [{"podSelector": {}}]}])
    m = load(world(policies=[np])).model("node-1")
    assert not m.has_tiers()
    assert all(c.tier is Tier.NETPOL for c in m.chains.values())


def test_egress_named_ports_resolve_at_the_destination() -> None:
    every_pod = {"pods": {"namespaceSelector": {}, "podSelector": {}}}
    rule = to("Deny", every_pod, protocols=[{"destinationNamedPort": "web"}])
    c = world(cnp("no-web", subject={"namespaces": {"matchLabels": {"team": "y"}}}, egress=[rule]))
    eng = load(c)
    judge = ModelJudge(models_of(eng), oracle_of(c))
    assert not judge.allowed("10.0.0.21", "10.0.0.11", "TCP", 80)
    assert judge.allowed("10.0.0.21", "10.0.0.11", "TCP", 81)
    assert not disagreements(c, models_of(eng))


def test_every_pass_and_accept_path_against_the_oracle() -> None:
    x = {"namespaces": {"matchLabels": {"team": "x"}}}
    c = world(
        cnp("pass-x", priority=1, ingress=[r("Pass", x)]),
        cnp("deny-all", priority=2, ingress=[r("Deny", ALL_NS)]),
        cnp("base-accept", tier="Baseline", ingress=[r("Accept", x)]),
        cnp("base-deny", tier="Baseline", priority=9, ingress=[r("Deny")]),
        policies=[np_policy("a", "db", {"app": "db"}, [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}])],
    )
    eng = load(c)
    assert not disagreements(c, models_of(eng))
    assert is_endpoint(A1)


def test_a_pods_own_node_passes_its_network_policy_but_not_the_admin_tier() -> None:
    """An egress deny-all NetworkPolicy leaves a pod its own node (a host-network pod there) and
    nothing else; an Admin Deny naming the nodes stops that too."""
    on_1 = pod("b", "hn1", {"app": "agent"}, "192.168.0.1", "node-1", [("web", "TCP", 80)], host_network=True)
    on_2 = pod("b", "hn2", {"app": "agent"}, "192.168.0.2", "node-2", [("web", "TCP", 80)], host_network=True)
    no_egress = policy("a", "no-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    c = {**world(policies=[no_egress]), "pods": [A1, A2, B1, on_1, on_2]}
    eng = load(c)
    judge = ModelJudge(models_of(eng), oracle_of(c))
    assert judge.allowed("10.0.0.11", "192.168.0.1", "TCP", 80)  # a1 on node-1: its own node
    assert not judge.allowed("10.0.0.11", "192.168.0.2", "TCP", 80)  # another node: the NP's rules
    m = eng.model("node-1")
    mine = decide(m, Direction.EGRESS, "10.0.0.11", "192.168.0.1", Protocol.TCP, 80, own_node=True)
    assert (mine.allowed, mine.isolated, mine.own_node, mine.tier, mine.matched) == (True, True, True, Tier.NETPOL, ())
    assert decide(m, Direction.EGRESS, "10.0.0.11", "192.168.0.1", Protocol.TCP, 80) == replace(
        mine, allowed=False, own_node=False
    )  # the default path: the rules, which allow nothing
    assert not disagreements(c, models_of(eng))

    denied = {**c, "cnps": [cnp("no-nodes", subject={"namespaces": {}}, egress=[to("Deny", {"nodes": {}})])]}
    eng = load(denied)
    judge = ModelJudge(models_of(eng), oracle_of(denied))
    assert not judge.allowed("10.0.0.11", "192.168.0.1", "TCP", 80)
    verdict = decide(eng.model("node-1"), Direction.EGRESS, "10.0.0.11", "192.168.0.1", Protocol.TCP, 80, True)
    assert not verdict.allowed and verdict.tier is Tier.ADMIN and not verdict.own_node
    assert not disagreements(denied, models_of(eng))


# ------------------------------------------------------------------ lint


def _lint(*cnps: Obj) -> list[str]:
    return [str(w) for w in load(world(*cnps)).lint()]


def test_lint_finds_a_rule_an_earlier_rule_of_the_tier_decides() -> None:
    x = {"namespaces": {"matchLabels": {"team": "x"}}}
    web = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}
    early = cnp("early", priority=1, subject=x, ingress=[r("Deny", ALL_NS)])
    late = cnp("late", priority=2, subject=x, ingress=[{"name": "web-in", "action": "Accept", "from": [web]}])
    found = _lint(early, late)
    assert any(
        w.startswith("ClusterNetworkPolicy late: spec.ingress[0]: can never match: ClusterNetworkPolicy early")
        for w in found
    ), found
    # Narrower first: nothing shadowed.
    narrow = cnp("early", priority=1, subject=x, ingress=[{"action": "Deny", "from": [web], "protocols": [
        {"tcp": {"destinationPort": {"number": 80}}}]}])  # fmt: skip
    assert not load(world(narrow, late)).rejections()
    assert not [w for w in _lint(narrow, late) if "can never match" in w]


def test_lint_names_same_priority_overlaps() -> None:
    a = cnp("a-first", priority=7, ingress=[r("Deny")])
    b = cnp("b-second", priority=7, ingress=[r("Accept")])
    found = [w for w in _lint(a, b) if "same Admin priority" in w]
    assert len(found) == 1 and found[0].startswith("ClusterNetworkPolicy b-second: spec.priority:")
    assert "runs a-first first" in found[0]
    other = cnp("b-second", tier="Baseline", priority=7, ingress=[r("Accept")])
    assert not [w for w in _lint(a, other) if "same" in w]
