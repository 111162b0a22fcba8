"""Unit tests of the lab's pure parts: manifests, placement, wiring scripts, port choice, output."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from stockade.lab import manifests, netcmds, render
from stockade.lab.objects import pod_request, running_pod
from stockade.lab.probe import Result, select_ports
from stockade.lab.topology import PlanError, PodRequest, empty_plan, place, relabel, without

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}, {containerPort: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: y, labels: {app: db}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 5432}]}]
---
apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
"""


def _load(tmp_path: Path, text: str) -> manifests.Objects:
    (tmp_path / "cluster.yaml").write_text(text)
    return manifests.load_files([tmp_path / "cluster.yaml"])


def test_manifests_expand_workloads_and_read_legacy_policies(tmp_path: Path) -> None:
    objs = _load(tmp_path, CLUSTER)
    assert [manifests.key(p) for p in objs.pods] == ["x/web-0", "x/web-1", "x/web-2", "y/pinned"]
    assert objs.pods[0]["metadata"]["labels"] == {"app": "web"}
    assert manifests.container_ports(objs.pods[0]) == [("TCP", 80), ("UDP", 53)]
    assert objs.policies[0]["apiVersion"] == "networking.k8s.io/v1"
    assert objs.skipped == {"Service": 1}
    assert [n["metadata"]["name"] for n in objs.namespaces] == ["x"]  # only what the file declares


def test_manifest_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(manifests.ManifestError, match=r"has no metadata\.name"):
        _load(tmp_path, "kind: Pod\nmetadata: {}\n")
    with pytest.raises(manifests.ManifestError, match=r"cluster\.yaml: invalid YAML"):
        _load(tmp_path, "kind: [")


def test_placement_honours_node_name_and_spreads_the_rest(tmp_path: Path) -> None:
    objs = _load(tmp_path, CLUSTER)
    plan = place(empty_plan("t-", 3), [pod_request(p) for p in objs.pods])
    nodes = {p.key: p.node for p in plan.pods}
    assert nodes == {"x/web-0": "node-1", "x/web-1": "node-2", "x/web-2": "node-3", "y/pinned": "node-2"}
    for pod in plan.pods:  # every pod's IP lies in its node's range, and none is the gateway
        node = plan.node(pod.node)
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(node.pod_cidr)
        assert pod.ip != node.gateway
    assert len({p.ip for p in plan.pods}) == len(plan.pods)
    assert len({p.veth for p in plan.pods}) == len(plan.pods)
    assert all(len(p.veth) <= 15 for p in plan.pods)


def test_placement_is_incremental_and_rejects_unknown_nodes() -> None:
    plan = place(empty_plan("t-", 2), [PodRequest("x", "a", {}, [])])
    plan2 = place(plan, [PodRequest("x", "b", {}, [])])
    assert plan2.pods[0] == plan.pods[0] and plan2.pods[1].node == "node-2"
    plan3 = place(without(plan2, {"x/a"}), [PodRequest("x", "c", {}, [])])
    assert plan3.pod("x/c") is not None and plan3.pod("x/c").ip == plan.pods[0].ip  # type: ignore[union-attr]
    with pytest.raises(PlanError, match="no node 'node-9'"):
        place(plan, [PodRequest("x", "z", {}, [], node_name="node-9")])
    with pytest.raises(PlanError, match="declared twice"):
        place(plan, [PodRequest("x", "a", {}, [])])
    assert relabel(plan, {"x/a": {"k": "v"}}).pods[0].labels == {"k": "v"}


def test_wiring_scripts_connect_every_pod_and_route_every_range() -> None:
    plan = place(empty_plan("t-", 3), [PodRequest("x", n, {}, []) for n in "abcd"])
    root = netcmds.root_script(plan)
    scripts = netcmds.ns_scripts(plan)
    # every namespace the lab makes is created by the root script and named with the prefix
    made = {line.split()[2] for line in root if line.startswith("netns add")}
    assert made == set(scripts) and all(n.startswith("t-") for n in made)
    for node in plan.nodes:
        routes = [line for line in scripts[node.netns] if line.startswith("route add 10.244.")]
        others = {n.pod_cidr for n in plan.nodes if n != node}
        assert {r.split()[2] for r in routes if "via" in r} == others
    for pod in plan.pods:
        assert f"route add default via {plan.node(pod.node).gateway} dev eth0" in scripts[pod.netns]
    ext = [line for n in plan.nodes[1:] for line in scripts[n.netns] if plan.external.ip in line]
    assert all(f"via {plan.nodes[0].ip}" in line for line in ext) and len(ext) == 2


def test_running_pod_carries_its_placement(tmp_path: Path) -> None:
    objs = _load(tmp_path, CLUSTER)
    plan = place(empty_plan("t-", 2), [pod_request(p) for p in objs.pods])
    obj = running_pod(objs.pods[0], plan.pods[0], plan)
    assert obj["spec"]["nodeName"] == "node-1"
    assert obj["status"]["podIP"] == plan.pods[0].ip and obj["status"]["phase"] == "Running"
    assert "status" not in objs.pods[0]  # the manifest itself is untouched


def test_port_selection() -> None:
    declared = [("TCP", 80), ("UDP", 53)]
    assert select_ports(declared, None, None) == (("TCP", 80), ("UDP", 53))
    assert select_ports(declared, None, ["UDP"]) == (("UDP", 53),)
    assert select_ports(declared, [80, 81], None) == (("TCP", 80), ("TCP", 81))
    assert select_ports(declared, [80], ["TCP", "UDP"]) == (("TCP", 80), ("UDP", 80))


def test_matrix_marks_connected_blocked_and_unprobed() -> None:
    results = [
        Result("x/a", "x/b", 80, "TCP", True),
        Result("x/b", "x/a", 80, "TCP", False),
        Result("x/a", "x/a", 80, "TCP", True),
    ]
    text = render.matrix(results)
    assert "TCP/80: 2 of 3 connected" in text
    lines = text.splitlines()
    row_b = next(line for line in lines if line.startswith("x/b"))
    assert "✗" in row_b and "." in row_b
    assert "2 of 3 connections succeeded, 1 blocked" in text
    narrow = render.matrix(results, width=10)
    assert "1=x/b" in narrow and "2=x/a" in narrow


def test_the_lab_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from stockade.lab import lab

    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    with pytest.raises(lab.LabError, match="the lab needs root"):
        lab.require_root()
