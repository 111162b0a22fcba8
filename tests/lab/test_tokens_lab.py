"""Issue 13 item 1 in the lab: agents prove their node with their pod's ServiceAccount token.

The lab creates each node's agent pod in its API server (``stockade-system/stockade-agent-<node>``)
and writes the pod's token from the API's TokenRequest; its brain runs ``--agent-auth both``
(TokenReview, and the client certificate must name the same node). The test reads the pods with
the real kubectl, then gives node-2's agent node-1's token and makes it reconnect (a renewed
client certificate): the brain refuses it (PERMISSION_DENIED) and node-2 shows disconnected;
with its own token back it reconnects and follows policy changes again. Nodes join with the
startup taint ``stockade.io/agent-not-ready:NoSchedule``; the brain lifts it once each node's agent
enforces (item 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.lab import procs
from stockade.tls import CertPair, issue_node_cert

from .lab_ops import cli, enforced, lab_state, poll
from .labenv import Lab

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  nodeName: node-1
  containers: [{name: c, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 81}]}]
"""
DENY_B = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-deny, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("tokens-lab"), "st-tok-")
    for var in ("STOCKADE_BRAIN", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CERT", "STOCKADE_KEY"):
        lab.env.pop(var, None)
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "2", "--cluster", lab.write("cluster.yaml", CLUSTER), timeout=120)
        if not enforced(lab_state(lab)):
            pytest.skip("this build has no brain and agents")
        yield lab
    finally:
        lab.run("down", check=False)


def nodes(lab: Lab) -> dict[str, Any]:
    out = cli(lab, "nodes", "-o", "json")
    assert out.returncode == 0, out.stderr
    return {n["name"]: n for n in json.loads(out.stdout)["items"]}


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def renew_cert(lab: Lab, node: str) -> None:
    """A new client certificate for ``node``: its agent reconnects at once to use it."""
    certs = lab.dir / "certs"
    ca = CertPair((certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes())
    pair = issue_node_cert(ca, node, days=2)
    _replace(certs / "nodes" / f"{node}.crt", pair.cert)
    _replace(certs / "nodes" / f"{node}.key", pair.key)


def test_agents_pods_and_tokens_prove_their_nodes(lab: Lab) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for this test"
    listed = subprocess.run(
        [kubectl, "--kubeconfig", str(lab.dir / "kubeconfig"), "get", "pods", "-n", "stockade-system", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pods = {p["metadata"]["name"]: p for p in json.loads(listed.stdout)["items"]}
    assert {n: p["spec"]["nodeName"] for n, p in pods.items()} == {
        "stockade-agent-node-1": "node-1",
        "stockade-agent-node-2": "node-2",
    }
    status = nodes(lab)
    assert status["node-1"]["connected"] and status["node-2"]["connected"]


def test_a_token_of_another_node_is_refused_then_its_own_works(lab: Lab) -> None:
    tokens = lab.dir / "tokens"
    own = (tokens / "node-2").read_bytes()
    log = procs.log_path(lab.dir, "agent-node-2")
    before = log.read_text(errors="replace").count("PERMISSION_DENIED")
    _replace(tokens / "node-2", (tokens / "node-1").read_bytes())
    renew_cert(lab, "node-2")
    poll(lambda: log.read_text(errors="replace"), lambda t: t.count("PERMISSION_DENIED") > before, timeout=60)
    assert "token is node 'node-1'" in log.read_text(errors="replace")
    assert poll(lambda: nodes(lab)["node-2"]["connected"], lambda c: c is False, timeout=30) is False
    assert nodes(lab)["node-1"]["connected"]  # the other node is untouched

    _replace(tokens / "node-2", own)
    assert poll(lambda: nodes(lab)["node-2"]["connected"], lambda c: c is True, timeout=60) is True
    lab.run("apply", "-f", lab.write("deny.yaml", DENY_B), "--wait", timeout=90)
    # `stockade nodes` may ask the other brain, which hears node-2's ack through Redis a moment
    # after the one `--wait` asked: awaited, not read once
    st = poll(lambda: nodes(lab)["node-2"], lambda n: n["appliedGeneration"] == n["desiredGeneration"], timeout=60)
    assert st["appliedGeneration"] == st["desiredGeneration"] > 0


def test_nodes_join_tainted_and_the_brain_lifts_the_taint_once_their_agent_enforces(lab: Lab) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for this test"

    def node_taints() -> dict[str, list[str]]:
        out = subprocess.run(
            [kubectl, "--kubeconfig", str(lab.dir / "kubeconfig"), "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        items = json.loads(out.stdout)["items"]
        return {n["metadata"]["name"]: [t["key"] for t in n["spec"].get("taints") or []] for n in items}

    # lab up waited for every node's first generation: the taints come off right after it
    assert poll(node_taints, lambda t: t == {"node-1": [], "node-2": []}, timeout=30) == {"node-1": [], "node-2": []}
    registered = json.loads((lab.dir / "cluster.json").read_text())["items"]  # what the API server started with
    joined = {o["metadata"]["name"]: [t["key"] for t in o["spec"]["taints"]] for o in registered if o["kind"] == "Node"}
    assert joined == {"node-1": ["stockade.io/agent-not-ready"], "node-2": ["stockade.io/agent-not-ready"]}
