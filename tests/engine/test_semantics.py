"""Corner cases of the spec, each as a small explicit cluster checked against the oracle and by hand."""

from __future__ import annotations

from typing import Any

from stockade.brain.engine import Engine
from stockade.model import NodeModel

from .harness import apply_deltas, differences, model_allows, model_verdicts, models_of, oracle_verdicts, verdicts
from .kube import namespace, pod, policy
from .spec_oracle import Oracle, is_endpoint

Obj = dict[str, Any]

NSS = [namespace("x", {"ns": "x"}), namespace("y", {"ns": "y"})]
A = pod("x", "a", {"pod": "a"}, "10.5.0.1", "node-1")
B = pod("x", "b", {"pod": "b"}, "10.5.0.2", "node-2")
C = pod("y", "c", {"pod": "c"}, "10.5.1.1", "node-1")


def compiled(pods: list[Obj], policies: list[Obj]) -> tuple[Engine, dict[str, NodeModel]]:
    eng = Engine()
    eng.load(namespaces=NSS, pods=pods, policies=policies, nodes=[])
    return eng, models_of(eng)


def assert_oracle(models: dict[str, NodeModel], pods: list[Obj], policies: list[Obj]) -> None:
    eps = [p for p in pods if is_endpoint(p)]
    oracle = Oracle(NSS, pods, policies)
    diff = differences(model_verdicts(models, eps, ["TCP"], [80]), oracle_verdicts(oracle, eps, ["TCP"], [80]))
    assert not diff, diff


def test_empty_policy_types_defaults_like_absent() -> None:
    # `policyTypes: []` is defaulted by the API server exactly like an absent field
    # (`len(spec.policyTypes) == 0`): the policy isolates its pods for ingress.
    pol = policy("x", "deny", {"podSelector": {}, "policyTypes": []})
    _, models = compiled([A, B, C], [pol])
    assert not model_allows(models, C, A, "TCP", 80)
    assert model_allows(models, A, C, "TCP", 80)


def test_empty_egress_list_does_not_isolate_egress() -> None:
    pol = policy("x", "p", {"podSelector": {}, "egress": [], "ingress": [{}]})
    _, models = compiled([A, B, C], [pol])
    assert all(m.egress == {} for m in models.values())
    assert model_allows(models, A, C, "UDP", 53)


def test_egress_section_alone_isolates_both_ways() -> None:
    pol = policy("x", "p", {"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{"to": [{"podSelector": {}}]}]})
    _, models = compiled([A, B, C], [pol])
    assert model_allows(models, A, B, "TCP", 80)
    assert not model_allows(models, A, C, "TCP", 80)
    assert not model_allows(models, B, A, "TCP", 80)
    assert_oracle(models, [A, B, C], [pol])


def test_non_endpoints_are_not_in_any_model() -> None:
    host = pod("y", "host", {"pod": "c"}, "10.5.9.1", "node-1", host_network=True)
    bare = pod("y", "bare", {"pod": "c"}, None, "node-1")
    done = pod("y", "done", {"pod": "c"}, "10.5.9.2", "node-1", phase="Failed")
    pol = policy("x", "p", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    deny_y = policy("y", "deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    _, models = compiled([A, B, C, host, bare, done], [pol, deny_y])
    for m in models.values():
        elements = {e for s in m.sets.values() for e in s}
        assert not {"10.5.9.1/32", "10.5.9.2/32"} & elements
        assert not {"10.5.9.1", "10.5.9.2"} & (m.ingress.keys() | m.egress.keys())
    assert_oracle(models, [A, B, C, host, bare, done], [pol, deny_y])


def test_ip_reused_by_a_new_pod_after_a_finished_one() -> None:
    """weave#2632: an IP that moves from a finished pod to a new one belongs to the new one."""
    allow_a = policy(
        "y",
        "from-a",
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]}],
        },
    )
    deny_x = policy("x", "deny", {"podSelector": {"matchLabels": {"pod": "new"}}})
    old = pod("x", "old", {"pod": "a"}, "10.5.0.9", "node-1")
    new = pod("x", "new", {"pod": "new"}, "10.5.0.9", "node-2")
    eng, models = compiled([A, B, C, old], [allow_a, deny_x])
    assert model_allows(models, old, C, "TCP", 80)
    finished = {**old, "status": {**old["status"], "phase": "Succeeded"}}
    apply_deltas(models, eng.upsert(finished))
    apply_deltas(models, eng.upsert(new))  # the old pod still exists, finished, with the same IP
    # The IP is the new pod's: not allowed as "pod=a", and isolated as "pod=new" on node-2.
    assert not model_allows(models, new, C, "TCP", 80)
    assert not model_allows(models, A, new, "TCP", 80)
    assert eng.pod_by_ip("10.5.0.9") == "x/new"
    for step in (
        lambda: eng.upsert({**finished, "metadata": {**finished["metadata"], "labels": {"pod": "a", "v": "2"}}}),
        lambda: eng.delete("Pod", "x", "old"),
    ):
        apply_deltas(models, step())
        assert not model_allows(models, new, C, "TCP", 80)
        assert not model_allows(models, A, new, "TCP", 80)
        assert "10.5.0.9" in models["node-2"].ingress
        assert eng.pod_by_ip("10.5.0.9") == "x/new"
    _, full = compiled([A, B, C, new], [allow_a, deny_x])
    for n in set(models) | set(full):
        assert models.get(n, NodeModel(n)) == full.get(n, NodeModel(n)), n


def test_external_sources_meet_ingress_ip_blocks_only() -> None:
    pol = policy(
        "x",
        "ext",
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.7.0/24"]}}],
                    "ports": [{"port": 80}],
                },
                {"from": [{"namespaceSelector": {}}]},
            ],
        },
    )
    _, models = compiled([A, B, C], [pol])
    sources: list[Obj | str] = ["192.168.1.1", "192.168.7.7", "172.16.0.1", C]
    oracle = Oracle(NSS, [A, B, C], [pol])
    got = verdicts(lambda s, d, pr, po, v: model_allows(models, s, d, pr, po, v), sources, [A, B], ["TCP"], [80, 81])
    want = verdicts(oracle.allowed, sources, [A, B], ["TCP"], [80, 81])
    assert got == want
    assert got[("192.168.1.1", "x/a", "TCP", 80, 4)] and not got[("192.168.1.1", "x/a", "TCP", 81, 4)]
    assert not got[("192.168.7.7", "x/a", "TCP", 80, 4)]
    assert got[("y/c", "x/b", "TCP", 81, 4)]


def test_nodes_lists_node_objects_and_the_nodes_pods_name() -> None:
    # engine_api.md: nodes() = Node objects plus nodeNames that pods name, policies or not.
    eng = Engine()
    eng.load(namespaces=NSS, pods=[A, B, C], policies=[], nodes=[{"kind": "Node", "metadata": {"name": "node-9"}}])
    assert set(eng.nodes()) == {"node-1", "node-2", "node-9"}


def test_unknown_deletes_and_repeated_upserts_change_nothing() -> None:
    pol = policy("x", "deny", {"podSelector": {}})
    eng, _ = compiled([A, B, C], [pol])
    assert eng.delete("Pod", "x", "nope") == {}
    assert eng.delete("NetworkPolicy", "x", "nope") == {}
    assert eng.delete("Namespace", None, "nope") == {}
    assert eng.delete("Node", None, "nope") == {}
    for obj in (A, pol, NSS[0]):
        assert eng.upsert(obj) == {}
