"""`explain` walks the ClusterNetworkPolicy tiers in words: which policy and rule decided, at which
tier and priority, and what a Pass handed on."""

from __future__ import annotations

import copy
from typing import Any

from engine.kube import namespace, pod, policy  # type: ignore[import-not-found]

from stockade.brain.admin.explain import explain
from stockade.brain.engine import Engine

Obj = dict[str, Any]
X = {"namespaces": {"matchLabels": {"team": "x"}}}
Y = {"namespaces": {"matchLabels": {"team": "y"}}}


def cnp(name: str, tier: str, priority: int, subject: Obj, **rules: Any) -> Obj:
    spec = {"tier": tier, "priority": priority, "subject": subject, **rules}
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


def engine(*cnps: Obj, policies: tuple[Obj, ...] = ()) -> Engine:
    eng = Engine()
    eng.load(
        namespaces=[namespace("a", {"team": "x"}), namespace("b", {"team": "y"})],
        pods=[
            pod("a", "db", {"app": "db"}, "10.0.0.11", "node-1", [("sql", "TCP", 5432)]),
            pod("b", "web", {"app": "web"}, "10.0.0.21", "node-2", [("http", "TCP", 80)]),
        ],
        policies=list(policies),
        cluster_policies=[copy.deepcopy(c) for c in cnps],
    )
    return eng


def test_an_admin_deny_is_named_with_its_tier_priority_and_rule() -> None:
    deny = cnp("protect-db", "Admin", 10, X, ingress=[{"name": "no-outsiders", "action": "Deny", "from": [Y]}])
    ex = explain(engine(deny), "b/web", "a/db", 5432)
    assert not ex.allowed
    text = ex.text()
    assert "blocked at the Admin tier by ClusterNetworkPolicy protect-db (priority 10) rule 'no-outsiders'" in text
    assert "no NetworkPolicy can change it" in text
    side = ex.as_json()["sides"][1]
    assert side["tier"] == "Admin" and side["decidedBy"]["policy"] == "protect-db"
    assert side["decidedBy"]["effect"] == "Deny" and side["passedBy"] == []


def test_a_pass_is_said_and_the_network_policy_decides() -> None:
    passing = cnp("hand-on", "Admin", 1, X, ingress=[{"action": "Pass", "from": [Y]}])
    later = cnp("deny-rest", "Admin", 5, X, ingress=[{"action": "Deny", "from": [Y]}])
    allow = policy("a", "db-from-web", {"podSelector": {}, "policyTypes": ["Ingress"],
                                        "ingress": [{"from": [{"namespaceSelector": {}}]}]})  # fmt: skip
    ex = explain(engine(passing, later, policies=(allow,)), "b/web", "a/db", 5432)
    assert ex.allowed  # the Pass skips deny-rest; the NetworkPolicy allows
    text = ex.text()
    assert "ClusterNetworkPolicy hand-on (priority 1) rule ingress[0] passed it on from the Admin tier" in text
    assert "allowed by a/db-from-web rule ingress[0]" in text
    side = ex.as_json()["sides"][1]
    assert side["tier"] == "NetworkPolicy" and [p["policy"] for p in side["passedBy"]] == ["hand-on"]


def test_the_baseline_decides_only_without_a_network_policy() -> None:
    base = cnp("default-deny", "Baseline", 1000, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [Y]}])
    ex = explain(engine(base), "b/web", "a/db", 5432)
    assert not ex.allowed and "blocked at the Baseline tier by ClusterNetworkPolicy default-deny" in ex.text()
    assert ex.as_json()["sides"][1]["tier"] == "Baseline"


def test_without_cnps_the_json_is_as_before() -> None:
    side = explain(engine(), "b/web", "a/db", 5432).as_json()["sides"][1]
    assert "tier" not in side and "decidedBy" not in side
