"""Malformed policies are rejected alone, with a message naming the field; the rest is enforced."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.brain.engine import Engine

from .harness import apply_deltas, model_allows, models_of
from .kube import namespace, pod, policy

Obj = dict[str, Any]

NSS = [namespace("shop"), namespace("other")]
WEB = pod("shop", "web", {"app": "web"}, "10.2.0.1", "node-1", [("http", "TCP", 80)])
DB = pod("shop", "db", {"app": "db"}, "10.2.0.2", "node-2")
CLIENT = pod("other", "client", {"app": "client"}, "10.2.1.1", "node-1")
PODS = [WEB, DB, CLIENT]
# The good policy: db accepts only web.
GOOD = policy(
    "shop",
    "db-from-web",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
)


def bad_policy(rule: Obj, direction: str = "ingress", types: list[str] | None = None) -> Obj:
    """A policy on web that, if it were accepted, would cut web off from the client."""
    spec: Obj = {"podSelector": {"matchLabels": {"app": "web"}}, direction: [rule]}
    if types is not None:
        spec["policyTypes"] = types
    return policy("shop", "bad", spec)


CASES = [
    ("bad cidr", bad_policy({"from": [{"ipBlock": {"cidr": "10.2.0.0/33"}}]}), "spec.ingress[0].from[0].ipBlock.cidr"),
    ("not a cidr", bad_policy({"from": [{"ipBlock": {"cidr": "ten.two/8"}}]}), "spec.ingress[0].from[0].ipBlock.cidr"),
    (
        "except outside cidr",
        bad_policy({"to": [{"ipBlock": {"cidr": "10.2.0.0/24", "except": ["10.3.0.0/24"]}}]}, "egress"),
        "spec.egress[0].to[0].ipBlock.except[0]",
    ),
    ("port zero", bad_policy({"ports": [{"port": 0}]}), "spec.ingress[0].ports[0].port"),
    ("port too high", bad_policy({"ports": [{"protocol": "UDP", "port": 65536}]}), "spec.ingress[0].ports[0].port"),
    ("endPort below port", bad_policy({"ports": [{"port": 90, "endPort": 80}]}), "spec.ingress[0].ports[0].endPort"),
    (
        "unknown operator",
        bad_policy(
            {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["x"]}]}}]}
        ),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
    ),
    (
        "unknown operator in the policy's own selector",
        policy(
            "shop", "bad", {"podSelector": {"matchExpressions": [{"key": "app", "operator": "in", "values": ["web"]}]}}
        ),
        "spec.podSelector.matchExpressions[0].operator",
    ),
    (
        # The API server validates every section, whatever policyTypes says.
        "invalid ingress section of an Egress-only policy",
        bad_policy({"ports": [{"port": 0}]}, "ingress", types=["Egress"]),
        "spec.ingress[0].ports[0].port",
    ),
    (
        "invalid egress section of an Ingress-only policy",
        bad_policy(
            {"to": [{"ipBlock": {"cidr": "10.2.0.0/24", "except": ["10.2.9.0/24"]}}]}, "egress", types=["Ingress"]
        ),
        "spec.egress[0].to[0].ipBlock.except[0]",
    ),
]


def _assert_rejected_alone(eng: Engine, models: dict[str, Any], field: str) -> None:
    rejections = eng.rejections()
    assert [r.object for r in rejections] == ["NetworkPolicy shop/bad"], rejections
    (r,) = rejections
    assert r.field == field
    assert r.message and field in str(r)
    # The bad policy does nothing; the good one is still enforced.
    assert model_allows(models, CLIENT, WEB, "TCP", 80)
    assert model_allows(models, WEB, CLIENT, "TCP", 80)
    assert model_allows(models, WEB, DB, "TCP", 5432)
    assert not model_allows(models, CLIENT, DB, "TCP", 5432)


@pytest.mark.parametrize(("case", "bad", "field"), CASES, ids=[c[0] for c in CASES])
def test_rejected_alone_on_load(case: str, bad: Obj, field: str) -> None:
    eng = Engine()
    eng.load(namespaces=NSS, pods=PODS, policies=[GOOD, bad], nodes=[])
    _assert_rejected_alone(eng, models_of(eng), field)


@pytest.mark.parametrize(("case", "bad", "field"), CASES, ids=[c[0] for c in CASES])
def test_rejected_alone_on_upsert_and_cleared_on_delete(case: str, bad: Obj, field: str) -> None:
    eng = Engine()
    eng.load(namespaces=NSS, pods=PODS, policies=[GOOD], nodes=[])
    models = models_of(eng)
    apply_deltas(models, eng.upsert(bad))
    _assert_rejected_alone(eng, models, field)
    apply_deltas(models, eng.delete("NetworkPolicy", "shop", "bad"))
    assert eng.rejections() == []
    assert not model_allows(models, CLIENT, DB, "TCP", 5432)


def test_fixing_a_rejected_policy_enforces_it() -> None:
    eng = Engine()
    eng.load(namespaces=NSS, pods=PODS, policies=[GOOD, bad_policy({"ports": [{"port": 0}]})], nodes=[])
    models = models_of(eng)
    assert model_allows(models, CLIENT, WEB, "TCP", 80)
    apply_deltas(models, eng.upsert(bad_policy({"ports": [{"port": 81}]})))
    assert eng.rejections() == []
    assert not model_allows(models, CLIENT, WEB, "TCP", 80)
    assert model_allows(models, CLIENT, WEB, "TCP", 81)
    assert not model_allows(models, CLIENT, DB, "TCP", 5432)


def test_several_defects_in_several_policies_each_rejected() -> None:
    bad2 = policy("other", "bad2", {"podSelector": {}, "egress": [{"ports": [{"port": 80, "endPort": 79}]}]})
    eng = Engine()
    eng.load(namespaces=NSS, pods=PODS, policies=[GOOD, CASES[0][1], bad2], nodes=[])
    assert sorted(r.object for r in eng.rejections()) == ["NetworkPolicy other/bad2", "NetworkPolicy shop/bad"]
    models = models_of(eng)
    assert model_allows(models, CLIENT, WEB, "TCP", 80)
    assert not model_allows(models, CLIENT, DB, "TCP", 80)
