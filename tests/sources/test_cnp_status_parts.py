"""The pure parts of stockade.brain.cnp_status: what a real Engine says of each
ClusterNetworkPolicy (the nodes its subject's pods are on, the refused field), the conditions
made of it, and the merge into what is stored (other types kept, transition times kept)."""

from __future__ import annotations

from typing import Any

from stockade.brain.cnp_status import Condition, PolicyState, conditions, merged, states
from stockade.brain.engine import Engine
from stockade.brain.fanout.status import PolicyRealization

Obj = dict[str, Any]


def pod(ns: str, name: str, node: str, ip: str, app: str, phase: str = "Running") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}, "uid": f"u-{name}"},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def cnp(name: str, subject: Obj, priority: int = 10) -> Obj:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name, "uid": f"u-{name}", "generation": 3},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": subject,
            "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }


def engine_with(*policies: Obj) -> tuple[Engine, dict[tuple[str, str, str], Obj]]:
    engine = Engine()
    held: dict[tuple[str, str, str], Obj] = {}
    objs: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "a"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b", "labels": {"team": "b"}}},
        *({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}"}} for i in (1, 2, 3)),
        pod("a", "web", "node-1", "10.1.0.1", "web"),
        pod("a", "db", "node-2", "10.1.0.2", "db"),
        pod("a", "done", "node-3", "10.1.0.3", "web", phase="Succeeded"),  # no endpoint: needs nothing
        pod("b", "web", "node-3", "10.1.0.4", "web"),
        *policies,
    ]
    for obj in objs:
        engine.upsert(obj)
        meta = obj["metadata"]
        held[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return engine, held


def test_states_name_the_subjects_nodes_and_the_refused_field() -> None:
    team_a = {"namespaces": {"matchLabels": {"team": "a"}}}
    web_anywhere = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}
    engine, held = engine_with(
        cnp("team-a", team_a),
        cnp("web", web_anywhere),
        cnp("bad", team_a, priority=1001),
        cnp("nobody", {"namespaces": {"matchLabels": {"team": "z"}}}),
    )
    got = {s.name: s for s in states(engine, held.get)}
    assert got["team-a"] == PolicyState("team-a", "u-team-a", 3, None, frozenset({"node-1", "node-2"}))
    assert got["web"].nodes == {"node-1", "node-3"}  # b/web on node-3; not a/done (not running)
    assert got["nobody"].nodes == frozenset()
    bad = got["bad"]
    assert bad.nodes == frozenset() and bad.refused is not None
    assert bad.refused.startswith("spec.priority: "), bad.refused

    # A pod moving in changes the nodes; one the watch no longer holds is not reported.
    engine.upsert(pod("a", "late", "node-3", "10.1.0.9", "db"))
    del held[("ClusterNetworkPolicy", "", "web")]
    got = {s.name: s for s in states(engine, held.get)}
    assert got["team-a"].nodes == {"node-1", "node-2", "node-3"} and "web" not in got


def state(refused: str | None = None) -> PolicyState:
    return PolicyState("p", "u", 2, refused, frozenset({"n1", "n2"}))


def test_conditions() -> None:
    acc, real = conditions(state(), PolicyRealization("/p", 2, 2, ()))
    assert (acc.status, acc.reason) == ("True", "Accepted")
    assert real == Condition(
        "Realized", "True", "Realized", "realized on 2 of 2 nodes (those hosting the pods its subject selects)"
    )
    _, real = conditions(state(), PolicyRealization("/p", 12, 0, tuple(f"n{i:02}" for i in range(12))))
    assert real.status == "False" and real.reason == "Pending"
    assert real.message.endswith("not yet on n00, n01, n02, n03, n04, n05, n06, n07, n08, n09 and 2 more")
    _, real = conditions(state(), PolicyRealization("/p", 0, 0, ()))
    assert (real.status, real.reason) == ("True", "NoSubjects")
    acc, real = conditions(state("spec.priority: must be at most 1000"), None)
    assert acc == Condition("Accepted", "False", "Invalid", "not enforced: spec.priority: must be at most 1000")
    assert (real.status, real.reason) == ("False", "NotAccepted")


def test_merge_keeps_other_types_and_unchanged_transition_times() -> None:
    theirs = {"type": "example.com/Programmed", "status": "True", "reason": "Done", "message": "x"}
    stored = [
        theirs,
        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "m", "lastTransitionTime": "T0"},
        {"type": "Realized", "status": "False", "reason": "Pending", "message": "m", "lastTransitionTime": "T0"},
    ]
    wanted = conditions(state(), PolicyRealization("/p", 2, 2, ()))
    out = merged(stored, wanted, 2, "T1")
    assert out[0] is theirs
    assert {c["type"]: c["lastTransitionTime"] for c in out[1:]} == {"Accepted": "T0", "Realized": "T1"}
    assert all(c["observedGeneration"] == 2 for c in out[1:])
    assert [c["type"] for c in merged(None, wanted, 1, "T1")] == ["Accepted", "Realized"]
