"""Policies judge Service traffic after kube-proxy's DNAT, on both backends, with real packets
through the lab's ClusterIPs (`stockade lab probe --via-service`): the backend pod and its
container port are what count, never the ClusterIP or the Service port, as in a real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from .lab_ops import enforced, lab_state
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
spec:
  containers: [{name: c, ports: [{containerPort: 9}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: x, labels: {app: other}}
spec:
  containers: [{name: c, ports: [{containerPort: 9}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
"""


def pol(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": spec,
    }


WEB = {"matchLabels": {"app": "web"}}
CLIENT = {"matchLabels": {"app": "client"}}


def cases(web_ips: list[str]) -> dict[str, tuple[list[dict[str, Any]], dict[str, bool]]]:
    """name -> (policies, {source: connects to web's ClusterIP:80})."""
    return {
        # The policy names the container port (8080); the client dials the Service port (80).
        "container-port-admits-the-service-port": (
            [
                pol(
                    "p",
                    {"podSelector": WEB, "ingress": [{"from": [{"podSelector": CLIENT}], "ports": [{"port": 8080}]}]},
                )
            ],
            {"x/client": True, "x/other": False},
        ),
        # A named container port works the same way.
        "named-container-port": (
            [pol("p", {"podSelector": WEB, "ingress": [{"ports": [{"port": "http"}]}]})],
            {"x/client": True, "x/other": True},
        ),
        # The Service's port is not what the backend receives: a policy naming it admits nothing.
        "service-port-admits-nothing": (
            [pol("p", {"podSelector": WEB, "ingress": [{"ports": [{"port": 80}]}]})],
            {"x/client": False, "x/other": False},
        ),
        "deny-on-the-backend": (
            [pol("p", {"podSelector": WEB, "policyTypes": ["Ingress"]})],
            {"x/client": False, "x/other": False},
        ),
        # Egress to a Service is judged on the backend pod: its IPs admit the ClusterIP connection ...
        "egress-to-the-backend-pods": (
            [
                pol(
                    "p",
                    {
                        "podSelector": CLIENT,
                        "policyTypes": ["Egress"],
                        "egress": [
                            {"to": [{"ipBlock": {"cidr": f"{ip}/32"}} for ip in web_ips], "ports": [{"port": 8080}]}
                        ],
                    },
                )
            ],
            {"x/client": True, "x/other": True},
        ),
        # ... and the Service CIDR does not (the packet's destination is the pod by then).
        "egress-to-the-service-cidr": (
            [
                pol(
                    "p",
                    {
                        "podSelector": CLIENT,
                        "policyTypes": ["Egress"],
                        "egress": [{"to": [{"ipBlock": {"cidr": "10.96.0.0/16"}}]}],
                    },
                )
            ],
            {"x/client": False, "x/other": True},
        ),
    }


@pytest.fixture(scope="module", params=["nftables", "iptables"])
def svclab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp(f"svc-{request.param}"), f"st-svc{request.param[:3]}-")
    lab.run("down", check=False)
    lab.run("up", "--nodes", "3", "--backend", request.param, "--cluster", lab.write("c.yaml", CLUSTER), timeout=120)
    if not enforced(lab_state(lab)):
        lab.run("down", check=False)
        pytest.fail("this lab has no brain and agents: nothing to enforce")
    yield lab
    lab.run("down", check=False)


def through_web(lab: Lab) -> dict[str, bool]:
    # patient (the default is 1 s): an open connection must not read blocked on a busy machine
    doc = lab.json("probe", "--via-service", "--from", "x/client,x/other", "--to", "x/web", "--timeout", "3")
    out = {}
    for r in doc["results"]:
        assert r["service"] == "x/web" and r["via"] == "ClusterIP" and r["address"].startswith("10.96.")
        assert (r["protocol"], r["port"], r["family"]) == ("TCP", 80, "ipv4")
        out[r["from"]] = r["connected"]
    return out


def test_policies_judge_service_traffic_after_dnat(svclab: Lab) -> None:
    st = lab_state(svclab)
    assert st.plan is not None
    web_ips = [p.ip for p in st.plan.pods if p.name.startswith("web-")]
    assert through_web(svclab) == {"x/client": True, "x/other": True}  # no policy yet
    failures = []
    for name, (policies, expected) in cases(web_ips).items():
        path = svclab.write(f"{name}.yaml", yaml.safe_dump_all(policies))
        svclab.run("apply", "--wait", "-f", path)
        try:
            got = through_web(svclab)
            if got != expected:
                failures.append(f"{name}: {got} != {expected}")
        finally:
            svclab.run("delete", "--wait", "-f", path)
    assert not failures, failures


def test_probe_via_service_reports_node_ports_from_outside(svclab: Lab) -> None:
    doc = svclab.json("probe", "--via-service", "--from", "external", "--timeout", "10")  # all open: ends at once
    st = lab_state(svclab)
    assert st.plan is not None
    rows = {(r["node"], r["address"], r["port"], r["service_port"]): r["connected"] for r in doc["results"]}
    assert rows == {(n.name, n.ip, 30080, 80): True for n in st.plan.nodes}
    assert {r["via"] for r in doc["results"]} == {"NodePort"}
