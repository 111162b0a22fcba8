"""The beta API of the seed article: the DefaultDeny namespace annotation and extensions/v1beta1."""

from __future__ import annotations

import copy
from typing import Any

from stockade.brain.engine import Engine

from .harness import apply_deltas, differences, model_allows, model_verdicts, models_of, oracle_verdicts
from .kube import BETA_DENY, namespace, pod, policy
from .spec_oracle import BETA_ANNOTATION, Oracle

Obj = dict[str, Any]

PODS = [
    pod("x", "a", {"pod": "a"}, "10.3.0.1", "node-1", [("http", "TCP", 80)]),
    pod("x", "b", {"pod": "b"}, "10.3.0.2", "node-2"),
    pod("y", "a", {"pod": "a"}, "10.3.1.1", "node-1"),
    pod("y", "b", {"pod": "b"}, "10.3.1.2", "node-2"),
]
X, XB, Y, YB = PODS


def nss(x_annotation: str | None = BETA_DENY) -> list[Obj]:
    x = namespace("x", {"ns": "x"})
    if x_annotation is not None:
        x["metadata"]["annotations"] = {BETA_ANNOTATION: x_annotation}
    return [x, namespace("y", {"ns": "y"})]


def compiled(
    namespaces: list[Obj], policies: list[Obj] | None = None, beta: bool = True
) -> tuple[Engine, dict[str, Any]]:
    eng = Engine(beta_default_deny=beta)
    eng.load(namespaces=namespaces, pods=PODS, policies=policies or [], nodes=[])
    return eng, models_of(eng)


def assert_matches_oracle(models: dict[str, Any], namespaces: list[Obj], policies: list[Obj], beta: bool) -> None:
    oracle = Oracle(namespaces, PODS, policies, beta=beta)
    diff = differences(
        model_verdicts(models, PODS, ["TCP", "UDP"], [80]), oracle_verdicts(oracle, PODS, ["TCP", "UDP"], [80])
    )
    assert not diff, diff


def test_annotation_isolates_ingress_by_default() -> None:
    _, models = compiled(nss())
    assert_matches_oracle(models, nss(), [], beta=True)
    assert not model_allows(models, Y, X, "TCP", 80)
    assert not model_allows(models, XB, X, "TCP", 80)
    assert model_allows(models, X, Y, "TCP", 80)  # egress is not isolated
    assert model_allows(models, X, XB, "UDP", 80) is False  # ... but x/b is ingress-isolated too
    assert model_allows(models, Y, YB, "TCP", 80)


def test_annotation_ignored_when_turned_off() -> None:
    _, models = compiled(nss(), beta=False)
    assert_matches_oracle(models, nss(), [], beta=False)
    assert all(m.ingress == {} and m.egress == {} for m in models.values())


def test_annotation_and_policies_are_a_union() -> None:
    allow = policy(
        "x",
        "from-y",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}],
        },
    )
    _, models = compiled(nss(), [allow])
    assert_matches_oracle(models, nss(), [allow], beta=True)


def test_annotation_added_and_removed_by_deltas() -> None:
    eng, models = compiled(nss(None))
    apply_deltas(models, eng.upsert(nss(BETA_DENY)[0]))
    assert_matches_oracle(models, nss(), [], beta=True)
    assert models == {n: eng.model(n) for n in models}
    apply_deltas(models, eng.upsert(nss(None)[0]))
    assert all(m.ingress == {} for m in models.values())
    fresh, _ = compiled(nss(None))
    assert all(models[n] == fresh.model(n) for n in models)


def test_other_isolation_values_do_not_isolate() -> None:
    for value in ('{"ingress": {"isolation": "None"}}', "{}"):
        eng, models = compiled(nss(value))
        assert all(m.ingress == {} for m in models.values()), value
        assert eng.rejections() == [] or all("Namespace x" in r.object for r in eng.rejections())


def test_malformed_annotation_reported_not_fatal() -> None:
    good = policy("y", "deny-y", {"podSelector": {}})
    for value in ("{not json", '{"ingress": "DefaultDeny"}', "[1, 2]"):
        eng, models = compiled(nss(value), [good])
        rejections = eng.rejections()
        assert len(rejections) == 1, (value, rejections)
        assert rejections[0].object == "Namespace x"
        assert BETA_ANNOTATION in str(rejections[0])
        # Everything else is still enforced.
        assert not model_allows(models, X, Y, "TCP", 80)
        assert model_allows(models, Y, YB, "TCP", 80) is False
        # Fixing it clears the report.
        apply_deltas(models, eng.upsert(nss(BETA_DENY)[0]))
        assert eng.rejections() == []


def test_extensions_v1beta1_reads_as_v1() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": "http"}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.3.1.0/24", "except": ["10.3.1.2/32"]}}]}],
    }
    v1 = policy("x", "p", spec)
    beta = policy("x", "p", copy.deepcopy(spec), api_version="extensions/v1beta1")
    _, m1 = compiled(nss(None), [v1])
    eng, m2 = compiled(nss(None), [beta])
    assert eng.rejections() == []
    assert m1 == m2
    assert any(m.ingress for m in m2.values())
    assert_matches_oracle(m2, nss(None), [beta], beta=True)
