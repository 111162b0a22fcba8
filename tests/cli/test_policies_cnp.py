"""`stockade policies` lists ClusterNetworkPolicies beside NetworkPolicies: tier and priority, the
subject's pods, realization on the nodes hosting them, lint's shadowed rules and a refusal, as
`cnp/NAME` (`-o name`: `clusternetworkpolicy/NAME`); cluster-scoped, so `-n` leaves them out.
Through the real CLI and a real brain over real gRPC, the policies put in the lab's API server
(a policy the brain refuses cannot get past that server's validation: tests/admin covers it)."""

from __future__ import annotations

import json
import time
from typing import Any

from cli_brain import READ, Lab, stockade, tls

CNP_API = "policy.networking.k8s.io/v1alpha2"
PROTECT_A = {
    "apiVersion": CNP_API,
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "protect-a", "labels": {"owner": "platform"}},
    "spec": {
        "tier": "Admin",
        "priority": 10,
        "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}},
        "ingress": [
            {"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]},
            {"name": "never", "action": "Accept", "from": [{"namespaces": {}}]},  # shadowed by deny-all
        ],
    },
}
BASELINE = {
    "apiVersion": CNP_API,
    "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "baseline-open"},
    "spec": {
        "tier": "Baseline",
        "priority": 3,
        "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "open"}}},
        "egress": [{"name": "no-egress", "action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}],
    },
}


def _policies(lab: Lab, *args: str) -> str:
    out = stockade("policies", *args, *tls(lab), "--token", READ)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _listed(lab: Lab, *names: str) -> dict[str, dict[str, Any]]:
    """The ClusterNetworkPolicy items of `policies -o json`, once every one of ``names`` is there."""
    deadline = time.monotonic() + 30
    while True:
        items = json.loads(_policies(lab, "-o", "json"))["items"]
        cnps = {p["name"]: p for p in items if p["kind"] == "ClusterNetworkPolicy"}
        if set(names) <= cnps.keys() or time.monotonic() > deadline:
            return cnps
        time.sleep(0.2)


def test_cluster_policies_are_listed_with_tier_subject_and_lint(lab: Lab) -> None:
    lab.put(PROTECT_A)
    lab.put(BASELINE)
    cnps = _listed(lab, "protect-a", "baseline-open")
    a = cnps["protect-a"]
    assert (a["namespace"], a["tier"], a["priority"], a["policyTypes"]) == ("", "Admin", 10, ["Ingress"])
    assert a["selectedPods"] == ["locked/a", "open/a"] and a["nodesNeeded"] == 1
    assert a["rejected"] == "" and a["labels"] == {"owner": "platform"}
    assert [w for w in a["warnings"] if w.startswith("spec.ingress[1]: can never match")], a["warnings"]
    base = cnps["baseline-open"]
    assert (base["tier"], base["priority"], base["policyTypes"]) == ("Baseline", 3, ["Egress"])
    assert base["selectedPods"] == ["open/a", "open/b"]
    # NetworkPolicies say so too
    items = json.loads(_policies(lab, "-o", "json"))["items"]
    assert {p["kind"] for p in items if p["name"] == "deny"} == {"NetworkPolicy"}

    table = _policies(lab).splitlines()
    row = next(line for line in table if line.startswith("cnp/protect-a "))
    assert "Admin 10: Ingress" in row and " 2 " in row and "can never match" in row
    assert any(line.startswith("locked/deny ") for line in table)
    assert set(_policies(lab, "-o", "name").split()) >= {
        "clusternetworkpolicy/protect-a",
        "clusternetworkpolicy/baseline-open",
        "policy/locked/deny",
    }
    # cluster-scoped: one namespace's list has none of them
    assert "cnp/" not in _policies(lab, "-n", "locked")
    assert "cnp/protect-a" in _policies(lab, "-l", "owner=platform")
    assert "cnp/baseline-open" not in _policies(lab, "-l", "owner=platform")
