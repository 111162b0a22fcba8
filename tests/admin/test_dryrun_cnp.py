"""dry-run with ClusterNetworkPolicies: the cluster's tiers decide before and after the change (a
NetworkPolicy cannot open what an Admin Deny keeps shut), a ClusterNetworkPolicy can be the
change itself, and lint's warnings on it are reported."""

from __future__ import annotations

from typing import Any

from stockade.brain.admin.dryrun import dry_run

Obj = dict[str, Any]
CNP_API = "policy.networking.k8s.io/v1alpha2"


def _ns(name: str) -> Obj:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _pod(ns: str, name: str, ip: str) -> Obj:
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"pod": name}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip},
    }


def _np(name: str, ingress: list[Obj]) -> Obj:
    spec = {"podSelector": {"matchLabels": {"pod": "web"}}, "policyTypes": ["Ingress"], "ingress": ingress}
    return {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": name}, "spec": spec}


def _cnp(name: str, priority: int, ingress: list[Obj]) -> Obj:
    subject = {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "web"}}}}
    spec = {"tier": "Admin", "priority": priority, "subject": subject, "ingress": ingress}
    return {"apiVersion": CNP_API, "kind": "ClusterNetworkPolicy", "metadata": {"name": name}, "spec": spec}


FROM_Y = [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]
CLUSTER = [
    _ns("x"),
    _ns("y"),
    _pod("x", "web", "10.244.1.2"),
    _pod("x", "cli", "10.244.1.3"),
    _pod("y", "cli", "10.244.1.4"),
    _np("nothing-in", []),  # x/web isolated for ingress
    _cnp("keep-y-out", 10, [{"name": "no-y", "action": "Deny", "from": FROM_Y}]),
]


def test_a_network_policy_cannot_open_what_an_admin_deny_keeps_shut() -> None:
    result = dry_run(CLUSTER, [_np("from-anywhere", [{}])])
    # x/cli -> x/web opens; y/cli -> x/web stays shut by the Admin tier (without the cluster's
    # CNPs the dry-run would have listed it as opened)
    assert [c[:2] for c in result.opened] == [("x/cli", "x/web")]
    assert result.closed == [] and result.rejected == []


def test_a_cluster_network_policy_as_the_change() -> None:
    allow = [{"name": "from-anywhere", "action": "Accept", "from": [{"namespaces": {}}]}]
    shadowed = [*allow, {"name": "y-too", "action": "Accept", "from": FROM_Y}]  # never reached
    result = dry_run(CLUSTER, [_cnp("let-all-in", 5, shadowed)])
    # priority 5 comes before keep-y-out (10): its Accept opens x/web to both clients
    assert sorted(c[:2] for c in result.opened) == [("x/cli", "x/web"), ("y/cli", "x/web")]
    assert any(w.startswith("ClusterNetworkPolicy let-all-in") and "can never match" in w for w in result.warnings), (
        result.warnings
    )
    # and the existing Admin Deny replaced by one with a later priority changes nothing
    assert dry_run(CLUSTER, [_cnp("keep-y-out", 900, [{"action": "Deny", "from": FROM_Y}])]).opened == []
