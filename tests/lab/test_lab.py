"""The lab end to end, as root: real namespaces, veths, routes, pod servers and probes."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from stockade.lab import netcmds, netio, procs, state
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
    assert data["external"]["ip"]

    # No policy: every pod and the external host reach every declared port of every pod.
    results = lab.json("probe")["results"]
    assert len(results) == 4 * (2 + 2 + 2)  # 4 sources; each destination declares 2 ports
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
    to_c = lab.json("probe", "--to", "y/c")["results"]
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
