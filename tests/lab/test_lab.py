"""The lab end to end, as root: real namespaces, veths, routes, pod servers and probes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from typing import Any

import pytest

from stockade.lab import kubeapi, netcmds, netio, nsenter, procs, state
from stockade.lab.config import LabConfig
from stockade.lab.state import LabState
from stockade.lab.topology import PodRequest, empty_plan, place

from .labenv import Lab

pytestmark = pytest.mark.root

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: x}
spec:
  replicas: 2
  template:
    metadata: {labels: {pod: a}}
    spec:
      containers:
      - name: c
        ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec:
  nodeName: node-2
  containers:
  - name: c
    ports: [{containerPort: 81}, {containerPort: 81, protocol: UDP}]
"""

MORE = """
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {pod: c}}
spec:
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b, role: db}}
spec:
  nodeName: node-2
  containers:
  - name: c
    ports: [{containerPort: 81}, {containerPort: 81, protocol: UDP}]
"""


# For probes whose every cell must connect: they end as soon as all have, so a patient timeout
# costs nothing, and an open connection that takes over the default 1 s on a busy machine (the
# first packets of a new lab wait for neighbour discovery too) is not read as blocked.
OPEN = ("--timeout", "10")


def _by_key(pods: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {f"{p['namespace']}/{p['name']}": p for p in pods}


def test_up_pods_probe_apply_delete_down(lab: Lab) -> None:
    cluster = lab.write("cluster.yaml", CLUSTER)
    out = lab.run("up", "--nodes", "2", "--cluster", cluster).stdout
    assert "lab ready" in out and "y/b" in out

    again = lab.run("up", "--nodes", "2", check=False)
    assert again.returncode == 1 and "a lab already exists" in again.stderr

    data = lab.json("pods")
    pods = _by_key(data["pods"])
    assert set(pods) == {"x/a-0", "x/a-1", "y/b"}
    assert pods["y/b"]["node"] == "node-2" and pods["x/a-0"]["labels"] == {"pod": "a"}
    assert {pods["x/a-0"]["node"], pods["x/a-1"]["node"]} == {"node-1", "node-2"}
    for p in pods.values():
        index = str(p["node"]).split("-")[1]
        assert ipaddress.ip_address(str(p["ip"])) in ipaddress.ip_network(f"10.244.{index}.0/24")
        assert p["ips"] == [p["ip"]]  # an IPv4 lab: one address each
    assert data["external"]["ip"] == "10.239.0.2" and data["ipFamilies"] == ["ipv4"]
    assert data["topology"] == "routed"

    # No policy: every pod and the external host reach every declared port of every pod.
    results = lab.json("probe", *OPEN)["results"]
    assert len(results) == 4 * (2 + 2 + 2)  # 4 sources; each destination declares 2 ports
    assert {r["family"] for r in results} == {"ipv4"}
    assert {r["from"] for r in results} == {"x/a-0", "x/a-1", "y/b", "external"}
    assert all(r["connected"] for r in results), [r for r in results if not r["connected"]]
    # An undeclared port answers nothing, so the probe can fail.
    closed = lab.json("probe", "--ports", "9", "--protocols", "TCP,UDP")["results"]
    assert closed and not any(r["connected"] for r in closed)

    # apply: a new pod is wired and served; a changed label is recorded.
    out = lab.run("apply", "-f", lab.write("more.yaml", MORE)).stdout
    assert "pod/y/c created" in out and "pod/y/b configured" in out
    pods = _by_key(lab.json("pods")["pods"])
    assert pods["y/b"]["labels"] == {"pod": "b", "role": "db"} and "y/c" in pods
    to_c = lab.json("probe", "--to", "y/c", *OPEN)["results"]
    assert len(to_c) == 5 and all(r["connected"] for r in to_c)

    # delete: the pod and its namespace go.
    gone = lab.run("delete", "-f", lab.write("gone.yaml", "kind: Pod\nmetadata: {name: c, namespace: y}\n"))
    assert "pod/y/c deleted" in gone.stdout
    assert "y/c" not in _by_key(lab.json("pods")["pods"])
    assert f"{lab.prefix}pod.y.c" not in lab.namespaces()

    st = state.load(lab.dir / "state.json")
    assert st is not None
    pids = [pid for pid, _ in st.processes.values()]
    assert pids and all(procs.alive(p) for p in pids)
    lab.run("down")
    assert lab.namespaces() == []
    assert not any(procs.alive(p) for p in pids)
    assert procs.marked(st.token) == []
    assert not lab.dir.exists()


def test_down_removes_a_half_built_crashed_lab(lab: Lab) -> None:
    cfg = LabConfig(lab.dir, lab.prefix, None)
    plan = place(empty_plan(lab.prefix, 2), [PodRequest("x", n, {}, [("TCP", 80)]) for n in "ab"])
    st = LabState(token="half-built-test", prefix=lab.prefix, plan=plan)
    lab.dir.mkdir(parents=True)
    (lab.dir / "token").write_text(st.token)
    state.save(cfg.state_file, st)
    netio.run_batch(netcmds.root_script(plan))  # namespaces and links made, never configured
    daemon = procs.spawn(lab.dir, st.token, "labd", procs.python_argv("stockade.lab.labd", "--dir", str(lab.dir)))
    procs.wait_until(lambda: (lab.dir / "labd.ready").exists(), "labd", 20, daemon)
    stray = subprocess.Popen(
        ["ip", "netns", "exec", plan.pods[0].netns, sys.executable, "-c", "import time; time.sleep(60)"]
    )
    cfg.state_file.write_text("{ crashed mid-write")  # and the state file is damaged

    res = lab.run("down")
    assert "damaged" in res.stdout
    stray.wait(timeout=5)
    assert lab.namespaces() == []
    assert not procs.alive(daemon)
    assert not lab.dir.exists()
    assert lab.run("down").stdout.strip() == "no lab found: nothing to remove"


def test_lab_commands_without_a_lab_say_so(lab: Lab) -> None:
    res = lab.run("probe", check=False)
    assert res.returncode == 1 and "no lab is running" in res.stderr


def _ip(netns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_dual_stack_lab_on_bridges(lab: Lab) -> None:
    cluster = lab.write("cluster.yaml", CLUSTER)
    out = lab.run("up", "--nodes", "2", "--cluster", cluster, "--ip-family", "dual", "--topology", "bridge").stdout
    assert "lab ready" in out and "topology: bridge" in out and "IPv4, IPv6" in out
    status = lab.run("status").stdout
    assert "topology: bridge" in status and "br_netfilter" in status
    assert json.loads(lab.run("status", "-o", "json").stdout)["topology"] == "bridge"

    data = lab.json("pods")
    assert data["ipFamilies"] == ["ipv4", "ipv6"] and data["topology"] == "bridge"
    assert data["external"]["ips"] == ["10.239.0.2", "fd00:10:239::2"]
    pods = _by_key(data["pods"])
    for p in pods.values():  # IPv4 first, then IPv6 with the same host number, in the node's ranges
        index = int(str(p["node"]).split("-")[1])
        v4, v6 = map(ipaddress.ip_address, p["ips"])  # type: ignore[call-overload]
        assert p["ip"] == str(v4) and v4 in ipaddress.ip_network(f"10.244.{index}.0/24")
        assert v6 in ipaddress.ip_network(f"fd00:10:244:{index:x}::/64") and int(v6) & 0xFF == int(v4) & 0xFF

    # The lab's API server serves them the same way (podIP, podIPs; an InternalIP per family).
    st = state.load(lab.dir / "state.json")
    assert st is not None and st.plan is not None
    api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
    served = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o["status"] for o in api.list("Pod")}
    for key, p in pods.items():
        assert served[key]["podIP"] == p["ip"] and [x["ip"] for x in served[key]["podIPs"]] == p["ips"]
    node2 = next(n for n in api.list("Node") if n["metadata"]["name"] == "node-2")
    assert [a["address"] for a in node2["status"]["addresses"] if a["type"] == "InternalIP"] == [
        "10.240.0.12",
        "fd00:10:240::c",
    ]

    # The pods of a node are ports of its bridge, which holds the gateways; a pod reaches a pod
    # of its own node on-link (across the bridge), one of another node through its gateway.
    for node in st.plan.nodes:
        ports = {str(link["ifname"]) for link in _ip(node.netns, "link", "show", "master", "cni0")}
        assert ports == {p.veth for p in st.plan.pods if p.node == node.name}
    a0, a1 = st.plan.pod("x/a-0"), st.plan.pod("x/a-1")
    b = st.plan.pod("y/b")
    assert a0 is not None and a1 is not None and b is not None
    same, other = (a1, a0) if a1.node == b.node else (a0, a1)
    for i in range(2):
        (to_same,) = _ip(b.netns, "route", "get", same.ips[i])
        (to_other,) = _ip(b.netns, "route", "get", other.ips[i])
        assert "gateway" not in to_same and to_other["gateway"] == st.plan.node(b.node).gateways[i]
    for node in st.plan.nodes:  # the lab leaves br_netfilter's switches as the kernel set them
        for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            with nsenter.netns(node.netns), open(f"/proc/sys/net/bridge/{key}") as f:
                assert f.read().strip() == "1"

    # Every pod and the external host reach every declared port over both families.
    results = lab.json("probe", *OPEN)["results"]
    assert len(results) == 2 * 4 * (2 + 2 + 2)
    assert {r["family"] for r in results} == {"ipv4", "ipv6"}
    assert all(r["connected"] for r in results), [r for r in results if not r["connected"]]
    only6 = lab.json("probe", "--family", "ipv6", "--to", "y/b")["results"]
    assert len(only6) == 4 * 2 and {r["family"] for r in only6} == {"ipv6"}
    assert "over IPv6" in lab.run("probe", "--family", "ipv6", "--to", "y/b").stdout

    # A pod added later joins its node's bridge and is served over both families; delete removes it.
    lab.run("apply", "-f", lab.write("more.yaml", MORE))
    c = _by_key(lab.json("pods")["pods"])["y/c"]
    assert isinstance(c["ips"], list) and len(c["ips"]) == 2
    to_c = lab.json("probe", "--to", "y/c", *OPEN)["results"]
    assert len(to_c) == 2 * 5 and all(r["connected"] for r in to_c), to_c
    lab.run("delete", "-f", lab.write("gone.yaml", "kind: Pod\nmetadata: {name: c, namespace: y}\n"))
    assert f"{lab.prefix}pod.y.c" not in lab.namespaces()
    node_c = st.plan.node(str(c["node"])).netns
    assert len(_ip(node_c, "link", "show", "master", "cni0")) == len([p for p in st.plan.pods if p.node == c["node"]])
    # The bridge keeps its address when a port goes: the pods beside y/c still reach everyone.
    after = lab.json("probe", "--from", ",".join(p.key for p in st.plan.pods if p.node == c["node"]), *OPEN)["results"]
    assert after and all(r["connected"] for r in after), [r for r in after if not r["connected"]]
    lab.run("down")
    assert lab.namespaces() == []


def test_ipv6_only_lab(lab: Lab) -> None:
    lab.run("up", "--nodes", "2", "--cluster", lab.write("cluster.yaml", CLUSTER), "--ip-family", "ipv6")
    data = lab.json("pods")
    assert all(p["ips"] == [p["ip"]] and ":" in p["ip"] for p in data["pods"])
    assert data["external"]["ips"] == ["fd00:10:239::2"]
    results = lab.json("probe", *OPEN)["results"]
    assert len(results) == 4 * 6 and {r["family"] for r in results} == {"ipv6"}
    assert all(r["connected"] for r in results), [r for r in results if not r["connected"]]
    wrong = lab.run("probe", "--family", "ipv4", check=False)
    assert wrong.returncode == 1 and "this lab has no ipv4 addresses" in wrong.stderr
