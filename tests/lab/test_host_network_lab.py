"""A host-network pod in a real lab: served in its node's namespace at its node's addresses, reached
from pods of its own node and of another one, reaching them, and shown so by the lab's API server.
A second one on that node declaring the same port is refused; deleting one leaves its node alone."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stockade.lab import kubeapi, nsenter, state

from .labenv import Lab

pytestmark = pytest.mark.root

CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: mon, labels: {app: exporter}}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 9100}, {containerPort: 9101, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: near, namespace: x}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: x}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 80}]}]
"""

CLASH = """
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: mon}
spec:
  nodeName: node-2
  hostNetwork: true
  containers: [{name: c, ports: [{containerPort: 9100}]}]
"""

NODE2 = ["10.240.0.12", "fd00:10:240::c"]
OPEN = ("--timeout", "10")  # every cell must connect: a patient bound costs nothing


def _cells(results: list[dict[str, object]]) -> set[tuple[object, ...]]:
    return {(r["from"], r["to"], r["protocol"], r["port"], r["family"], r["connected"]) for r in results}


def test_a_host_network_pod_in_a_real_lab(tmp_path: Path) -> None:
    lab = Lab(tmp_path, "st-lab-hostnet-")
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "2", "--ip-family", "dual", "--cluster", lab.write("c.yaml", CLUSTER))
        st = state.load(lab.dir / "state.json")
        assert st is not None and st.plan is not None
        node2 = st.plan.node("node-2").netns
        made = set(lab.namespaces())
        assert f"{lab.prefix}pod.mon.exporter" not in made and node2 in made

        pods = {f"{p['namespace']}/{p['name']}": p for p in lab.json("pods")["pods"]}
        assert pods["mon/exporter"]["ips"] == NODE2 and pods["mon/exporter"]["hostNetwork"] is True
        assert pods["x/near"]["hostNetwork"] is False and "(hostNetwork)" in lab.run("pods").stdout
        api = kubeapi.Client(f"http://127.0.0.1:{st.ports['apiserver']}")
        served = next(o for o in api.list("Pod") if o["metadata"]["name"] == "exporter")
        assert served["spec"]["hostNetwork"] is True and served["spec"]["nodeName"] == "node-2"
        assert served["status"]["podIP"] == served["status"]["hostIP"] == NODE2[0]
        assert [x["ip"] for x in served["status"]["podIPs"]] == [x["ip"] for x in served["status"]["hostIPs"]] == NODE2

        # Dialled at node-2's addresses, in both families, from a pod of node-1, one of node-2,
        # the external host and itself (its node's namespace); and it reaches both pods.
        to_it = lab.json("probe", "--to", "mon/exporter", *OPEN)["results"]
        want = {
            (src, "mon/exporter", proto, port, fam, True)
            for src in ("x/far", "x/near", "external", "mon/exporter")
            for proto, port in (("TCP", 9100), ("UDP", 9101))
            for fam in ("ipv4", "ipv6")
        }
        assert _cells(to_it) == want
        from_it = lab.json("probe", "--from", "mon/exporter", "--to", "x", *OPEN)["results"]
        assert _cells(from_it) == {
            ("mon/exporter", dst, "TCP", 80, fam, True) for dst in ("x/far", "x/near") for fam in ("ipv4", "ipv6")
        }

        # The kubelet's host-port conflict: refused, nothing built.
        clash = lab.run("apply", "-f", lab.write("clash.yaml", CLASH), check=False)
        assert clash.returncode == 1
        assert "host-network pods mon/exporter and mon/other both declare TCP/9100 on node-2" in clash.stderr
        again = state.load(lab.dir / "state.json")
        assert again is not None and again.plan is not None and again.plan.pod("mon/other") is None
        assert set(lab.namespaces()) == made

        # Deleting it closes its ports and leaves its node's namespace (and the pods behind it) alone.
        lab.run("delete", "-f", lab.write("gone.yaml", "kind: Pod\nmetadata: {name: exporter, namespace: mon}\n"))
        assert set(lab.namespaces()) == made
        after = lab.json("probe", "--from", "x/far", "--to", "x/near", *OPEN)["results"]
        assert after and all(r["connected"] for r in after)
        far = st.plan.pod("x/far")
        assert far is not None
        with nsenter.socket_in(far.netns, socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            with pytest.raises(ConnectionRefusedError):  # node-2 answers, but nothing listens there now
                s.connect((NODE2[0], 9100))
    finally:
        lab.run("down", check=False)
    assert lab.namespaces() == []
