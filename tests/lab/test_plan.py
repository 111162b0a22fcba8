"""Unit tests of the lab's pure parts: manifests, placement, wiring scripts, port choice, output."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from stockade.lab import manifests, netcmds, render
from stockade.lab.objects import node_object, pod_request, running_pod
from stockade.lab.probe import Result, select_ports
from stockade.lab.topology import Plan, PlanError, PodRequest, empty_plan, place, relabel, without

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
    assert objs.skipped == {} and [manifests.key(s) for s in objs.services] == ["x/web"]
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
    assert "TCP/80 over IPv4: 2 of 3 connected" in text
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


def _pods(*names: str, ns: str = "x") -> list[PodRequest]:
    return [PodRequest(ns, n, {}, [("TCP", 80)]) for n in names]


def test_addresses_per_family_follow_the_lab_contract() -> None:
    plan = place(empty_plan("t-", 3, "dual"), _pods("a", "b", "c", "d"))
    assert plan.families == ("ipv4", "ipv6") and plan.ip_family == "dual"
    n1, n2, n3 = plan.nodes
    assert n1.ips == ("10.240.0.11", "fd00:10:240::b") and n3.ips == ("10.240.0.13", "fd00:10:240::d")
    assert n2.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:2::/64")
    assert n2.gateways == ("10.244.2.1", "fd00:10:244:2::1")
    assert plan.external.ips == ("10.239.0.2", "fd00:10:239::2")
    assert plan.external.gateways == ("10.239.0.1", "fd00:10:239::1")
    for pod in plan.pods:  # IPv4 first, the same host number in both families, in the node's ranges
        node = plan.node(pod.node)
        v4, v6 = (ipaddress.ip_address(ip) for ip in pod.ips)
        assert v4.version == 4 and v6.version == 6 and pod.ip == str(v4)
        assert v4 in ipaddress.ip_network(node.pod_cidrs[0]) and v6 in ipaddress.ip_network(node.pod_cidrs[1])
        assert int(v4) & 0xFF == int(v6) & 0xFFFF and pod.ip_of("ipv6") == str(v6)
    assert plan.pod("x/a").ips == ("10.244.1.2", "fd00:10:244:1::2")  # type: ignore[union-attr]
    assert plan.pod("x/d").ips == ("10.244.1.3", "fd00:10:244:1::3")  # type: ignore[union-attr]
    # node 12's range: the node number in hex, as the fabric's host part is
    assert empty_plan("t-", 12, "dual").nodes[11].pod_cidrs[1] == "fd00:10:244:c::/64"
    assert empty_plan("t-", 12, "dual").nodes[11].ips[1] == "fd00:10:240::16"


def test_single_family_labs_have_only_that_family() -> None:
    v6 = place(empty_plan("t-", 2, "ipv6"), _pods("a"))
    assert v6.nodes[0].ips == ("fd00:10:240::b",) and v6.pods[0].ips == ("fd00:10:244:1::2",)
    assert v6.pods[0].ip == "fd00:10:244:1::2" and v6.pods[0].ip_of("ipv4") is None
    assert v6.external.ips == ("fd00:10:239::2",)
    v4 = place(empty_plan("t-", 2), _pods("a"))
    assert v4.families == ("ipv4",) and v4.pods[0].ips == ("10.244.1.2",) and v4.topology == "routed"
    scripts = netcmds.ns_scripts(v4)
    assert not any("fd00:" in line or "::" in line for lines in scripts.values() for line in lines)  # no IPv6
    assert "net/ipv6/conf/all/forwarding" not in netcmds.node_sysctls(v4)
    with pytest.raises(PlanError, match="--ip-family must be one of ipv4, ipv6, dual"):
        empty_plan("t-", 2, "ipv5")
    with pytest.raises(PlanError, match="--topology must be one of routed, bridge"):
        empty_plan("t-", 2, "ipv4", "mesh")


def test_pods_added_later_get_consistent_addresses() -> None:
    plan = place(empty_plan("t-", 2, "dual"), _pods("a", "b", "c"))
    later = place(plan, _pods("d", "e"))
    assert later.pods[:3] == plan.pods  # nobody moves
    used = [p.ips for p in later.pods]
    assert len({ips[0] for ips in used}) == len({ips[1] for ips in used}) == 5
    # a freed host number is reused, in both families at once
    gone = plan.pod("x/b")
    assert gone is not None
    again = place(without(later, {"x/b"}), [PodRequest("x", "f", {}, [], node_name=gone.node)])
    assert again.pod("x/f").ips == gone.ips  # type: ignore[union-attr]
    # a node's range is full once its IPv4 /24 is, whatever IPv6 could still hold
    full = place(empty_plan("t-", 1, "dual"), [PodRequest("x", f"p{i}", {}, []) for i in range(253)])
    assert full.pods[-1].ips == ("10.244.1.254", "fd00:10:244:1::fe")
    with pytest.raises(PlanError, match=re.escape("pod range 10.244.1.0/24, fd00:10:244:1::/64 is full")):
        place(full, _pods("one-more"))


def test_routed_dual_wiring() -> None:
    plan = place(empty_plan("t-", 2, "dual"), _pods("a", "b"))
    scripts = netcmds.ns_scripts(plan)
    a = plan.pod("x/a")
    assert a is not None
    node = plan.node(a.node)
    pod = scripts[a.netns]
    assert "addr add 10.244.1.2/32 dev eth0" in pod and "addr add fd00:10:244:1::2/128 dev eth0 nodad" in pod
    assert "route add fd00:10:244:1::1/128 dev eth0" in pod
    assert "route add ::/0 via fd00:10:244:1::1 dev eth0" in pod
    assert "route add default via 10.244.1.1 dev eth0" in pod
    side = scripts[node.netns]
    assert f"addr add fd00:10:244:1::1/128 dev {a.veth} nodad" in side
    assert f"route add fd00:10:244:1::2/128 dev {a.veth} src fd00:10:244:1::1" in side
    assert "route add fd00:10:244:2::/64 via fd00:10:240::c dev eth0" in side
    assert "addr add fd00:10:240::b/64 dev eth0 nodad" in side
    other = scripts[plan.nodes[1].netns]  # the external host, over IPv6 too, through node 1
    assert "route add fd00:10:239::2/128 via fd00:10:240::b dev eth0" in other
    assert "route add fd00:10:239::2/128 dev ext0 src fd00:10:239::1" in side
    v6 = [line for lines in scripts.values() for line in lines if line.startswith("addr add fd00")]
    assert v6 and all(line.endswith(" nodad") for line in v6)  # DAD delays are not a verdict
    sysctls = netcmds.node_sysctls(plan)
    assert sysctls["net/ipv6/conf/all/forwarding"] == "1" and sysctls["net/ipv4/ip_forward"] == "1"
    assert sysctls["net/ipv6/conf/default/accept_dad"] == "0"
    assert not any("bridge" in key for key in sysctls)  # br_netfilter stays at the kernel's defaults
    # the namespaces exist before the sysctls are set, the links only after
    assert all(line.startswith("netns add") for line in netcmds.root_namespaces(plan))
    assert not any(line.startswith("netns add t-node") for line in netcmds.root_links(plan))


def test_bridge_plan_puts_each_nodes_pods_on_one_bridge() -> None:
    plan = place(empty_plan("t-", 2, "dual", "bridge"), _pods("a", "b", "c"))
    scripts = netcmds.ns_scripts(plan)
    for node in plan.nodes:
        lines = scripts[node.netns]
        add = f"link add cni0 address {netcmds.bridge_mac(node)} type bridge"
        assert add in lines
        gw4, gw6 = node.gateways
        assert f"addr add {gw4}/24 dev cni0" in lines and f"addr add {gw6}/64 dev cni0 nodad" in lines
        assert lines.index(add) < min(i for i, line in enumerate(lines) if "master cni0" in line)
        for pod in (p for p in plan.pods if p.node == node.name):
            assert f"link set {pod.veth} master cni0" in lines
            assert not any(pod.veth in line and line.startswith(("addr", "route")) for line in lines)
            inside = scripts[pod.netns]
            assert f"addr add {pod.ips[0]}/24 dev eth0" in inside
            assert f"addr add {pod.ips[1]}/64 dev eth0 nodad" in inside
            assert f"route add default via {gw4} dev eth0" in inside
            assert not any(line.startswith("route add 10.244") for line in inside)  # the /24 is on-link
    assert len({netcmds.bridge_mac(n) for n in empty_plan("t-", 200).nodes}) == 200
    # pods added to a running lab join their node's bridge too
    more = place(plan, _pods("d"))
    root, added = netcmds.add_pods_scripts(more, more.pods[-1:])
    d = more.pods[-1]
    assert f"link set {d.veth} master cni0" in added[more.node(d.node).netns]
    assert root[0] == f"netns add {d.netns}"
    _, removed = netcmds.remove_pods_scripts(more, [d])
    assert removed[more.node(d.node).netns] == [f"link del {d.veth}"]
    assert "bridge" in render.describe(plan) and "br_netfilter" in render.describe(plan)
    assert "routed" in render.describe(place(empty_plan("t-", 1), []))


def test_links_between_nodes_have_permanent_neighbours_and_pods_settle() -> None:
    plan = place(empty_plan("t-", 3, "dual"), _pods("a", "b"))
    root = netcmds.root_links(plan)
    scripts = netcmds.ns_scripts(plan)
    for node in plan.nodes:
        assert any(f"peer name eth0 address {netcmds.fabric_mac(node)} netns {node.netns}" in line for line in root)
        for other in plan.nodes:
            if other != node:
                for ip in other.ips:
                    want = f"neigh add {ip} lladdr {netcmds.fabric_mac(other)} dev eth0 nud permanent"
                    assert want in scripts[node.netns]
    assert len({netcmds.fabric_mac(n) for n in empty_plan("t-", 200).nodes}) == 200
    ext = plan.external
    assert f"neigh add fd00:10:239::1 lladdr {netcmds.EXTERNAL_GW_MAC} dev eth0 nud permanent" in scripts[ext.netns]
    assert (
        f"neigh add fd00:10:239::2 lladdr {netcmds.EXTERNAL_MAC} dev ext0 nud permanent" in scripts[plan.nodes[0].netns]
    )
    # pods' neighbours stay dynamic (neighbour discovery between bridged pods crosses the rules),
    # so each pod's path to its gateway is settled before the lab says it is up
    assert not any(line.startswith("neigh") for p in plan.pods for line in scripts[p.netns])
    checks = netcmds.settle_checks(plan)
    assert checks == [(f"{p.key} to its gateway", p.netns, plan.node(p.node).gateways[1]) for p in plan.pods]
    later = place(plan, _pods("c"))
    assert netcmds.settle_checks(later, later.pods[-1:]) == [
        ("x/c to its gateway", later.pods[-1].netns, "fd00:10:244:3::1")
    ]
    assert netcmds.settle_checks(place(empty_plan("t-", 3), _pods("a"))) == []  # IPv4: nothing tentative


def test_objects_carry_every_family(tmp_path: Path) -> None:
    objs = _load(tmp_path, CLUSTER)
    plan = place(empty_plan("t-", 2, "dual"), [pod_request(p) for p in objs.pods])
    status = running_pod(objs.pods[0], plan.pods[0], plan)["status"]
    assert status["podIP"] == plan.pods[0].ips[0] and "." in status["podIP"]  # IPv4 first
    assert [x["ip"] for x in status["podIPs"]] == list(plan.pods[0].ips)
    assert [x["ip"] for x in status["hostIPs"]] == ["10.240.0.11", "fd00:10:240::b"]
    node = node_object(plan.nodes[1])
    internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
    assert internal == ["10.240.0.12", "fd00:10:240::c"]
    assert node["spec"]["podCIDRs"] == ["10.244.2.0/24", "fd00:10:244:2::/64"]
    v6 = place(empty_plan("t-", 1, "ipv6"), [pod_request(objs.pods[0])])
    only = running_pod(objs.pods[0], v6.pods[0], v6)["status"]
    assert only["podIP"] == "fd00:10:244:1::2" and only["podIPs"] == [{"ip": "fd00:10:244:1::2"}]


def test_plan_survives_the_state_file() -> None:
    plan = place(empty_plan("t-", 2, "dual", "bridge"), _pods("a", "b"))
    import json

    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again == plan and again.topology == "bridge" and again.pods[0].ips == plan.pods[0].ips


def test_matrix_names_the_family() -> None:
    results = [
        Result("x/a", "x/b", 80, "TCP", True, "ipv4"),
        Result("x/a", "x/b", 80, "TCP", False, "ipv6"),
    ]
    text = render.matrix(results)
    assert "TCP/80 over IPv4: 1 of 1 connected" in text and "TCP/80 over IPv6: 0 of 1 connected" in text
    assert results[1].to_json()["family"] == "ipv6"
