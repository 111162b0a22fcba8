"""Host-network pods in the lab's plan: their node's addresses and namespace, nothing of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.lab import lab as labcmd
from stockade.lab import manifests, netcmds
from stockade.lab.objects import pod_request, running_pod
from stockade.lab.state import LabState
from stockade.lab.topology import Plan, PlanError, PodRequest, empty_plan, place, relabel, without

CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: mon, labels: {app: exporter}}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 9100}, {containerPort: 9101, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 80}]}]
"""


def _host(name: str, node: str | None = "node-2", ports: list[tuple[str, int]] | None = None) -> PodRequest:
    return PodRequest("mon", name, {}, ports if ports is not None else [("TCP", 9100)], node, host_network=True)


def _ordinary(name: str, node: str | None = "node-2") -> PodRequest:
    return PodRequest("x", name, {}, [("TCP", 80)], node)


def test_a_host_network_pod_has_its_nodes_addresses_and_namespace() -> None:
    plan = place(empty_plan("t-", 2, "dual"), [_host("h"), _ordinary("a")])
    h, a = plan.pods
    node = plan.node("node-2")
    assert h.host_network and not a.host_network
    assert h.ips == node.ips == ("10.240.0.12", "fd00:10:240::c") and h.ip == node.ip
    assert h.netns == node.netns and h.veth == ""
    assert a.ips == ("10.244.2.2", "fd00:10:244:2::2")  # the host-network pod took no host number


def test_host_network_pods_are_placed_like_the_others() -> None:
    plan = place(empty_plan("t-", 2), [_host("h", None), _ordinary("a", None), _ordinary("b", None)])
    assert [(p.key, p.node) for p in plan.pods] == [("mon/h", "node-1"), ("x/a", "node-2"), ("x/b", "node-1")]
    assert plan.pod("mon/h").netns == plan.node("node-1").netns  # type: ignore[union-attr]
    assert plan.pod("x/b").ip == "10.244.1.2"  # type: ignore[union-attr]
    # a later pod on that node still gets the lowest free number: none is held by the host-network pod
    later = place(without(plan, {"x/b"}), [_ordinary("c", "node-1")])
    assert later.pod("x/c").ip == "10.244.1.2"  # type: ignore[union-attr]


def test_two_host_network_pods_cannot_share_a_port_on_one_node() -> None:
    plan = place(empty_plan("t-", 2), [_host("h1")])
    with pytest.raises(PlanError, match=r"host-network pods mon/h1 and mon/h2 both declare TCP/9100 on node-2"):
        place(plan, [_host("h2")])
    with pytest.raises(PlanError, match=r"mon/h2 and mon/h3 both declare UDP/53 on node-1"):
        place(plan, [_host("h2", "node-1", [("UDP", 53)]), _host("h3", "node-1", [("UDP", 53)])])
    # other protocols, other nodes and ordinary pods are no conflict
    ok = place(plan, [_host("h2", "node-2", [("UDP", 9100)]), _host("h3", "node-1"), _ordinary("a")])
    assert len(ok.pods) == 4
    assert len(place(without(plan, {"mon/h1"}), [_host("h2")]).pods) == 1  # freed by deletion


@pytest.mark.parametrize("topology", ["routed", "bridge"])
def test_host_network_pods_get_no_wiring_and_their_removal_leaves_the_node_alone(topology: str) -> None:
    plan = place(empty_plan("t-", 2, "dual", topology), [_host("h"), _ordinary("a")])
    h, a = plan.pods
    node = plan.node("node-2")
    alone = without(plan, {"mon/h"})  # the same lab without the host-network pod is wired the same
    assert netcmds.root_script(plan) == netcmds.root_script(alone)
    assert netcmds.ns_scripts(plan) == netcmds.ns_scripts(alone)
    added_root, added = netcmds.add_pods_scripts(plan, [h])
    assert added_root == [] and added == {}
    gone_root, gone = netcmds.remove_pods_scripts(plan, [h, a])
    assert gone_root == [f"netns del {a.netns}"] and gone == {node.netns: [f"link del {a.veth}"]}
    assert netcmds.settle_checks(plan) == [("x/a to its gateway", a.netns, "fd00:10:244:2::1")]
    assert netcmds.wired(plan.pods) == [a]


def test_the_api_shows_the_pod_on_its_nodes_addresses(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CLUSTER)
    objs = manifests.load_files([tmp_path / "c.yaml"])
    requests = [pod_request(p) for p in objs.pods]
    assert [r.host_network for r in requests] == [True, False]
    plan = place(empty_plan("t-", 2, "dual"), requests)
    obj = running_pod(objs.pods[0], plan.pods[0], plan)
    assert obj["spec"]["hostNetwork"] is True and obj["spec"]["nodeName"] == "node-2"
    status = obj["status"]
    assert status["podIP"] == status["hostIP"] == "10.240.0.12"
    assert status["podIPs"] == status["hostIPs"] == [{"ip": "10.240.0.12"}, {"ip": "fd00:10:240::c"}]
    assert "hostNetwork" not in running_pod(objs.pods[1], plan.pods[1], plan)["spec"]


def test_host_network_survives_the_state_file_and_relabelling() -> None:
    plan = place(empty_plan("t-", 2, "ipv4", "bridge"), [_host("h"), _ordinary("a")])
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan and again.pods[0].host_network and not again.pods[1].host_network
    relabelled = relabel(plan, {"mon/h": {"k": "v"}}).pods[0]
    assert relabelled.host_network and relabelled.labels == {"k": "v"} and relabelled.ips == plan.pods[0].ips
    old = plan.to_json()  # a state file written before host-network pods: every pod is an ordinary one
    for p in old["pods"]:
        del p["host_network"]
    assert not any(p.host_network for p in Plan.from_json(old).pods)


def test_a_host_network_pod_cannot_take_the_labs_own_ports_on_the_nodes() -> None:
    st = LabState(token="t", prefix="t-", plan=empty_plan("t-", 2), ports={"agent_http": 24510}, relays=[24503])
    labcmd._check_node_ports(st, [_host("h", ports=[("UDP", 24510), ("TCP", 9100)]), _ordinary("a")])
    with pytest.raises(labcmd.LabError, match=r"mon/h declares TCP/24503, which the lab uses on every node"):
        labcmd._check_node_ports(st, [_host("h", ports=[("TCP", 24503)])])
    with pytest.raises(labcmd.LabError, match=r"TCP/24510, .*the agents' HTTP"):
        labcmd._check_node_ports(st, [_host("h", ports=[("TCP", 24510)])])
