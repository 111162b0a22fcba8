"""Issue 13 item 3 in the lab: certificates renewed on disk while the brain and the agents run.

The lab's brain and agents read the `stockade certs init` directory under the lab's state dir
(``certs/``); the test replaces files there as cert-manager's Secret volume would (atomic
renames) while policies change, and checks with real packets that the changes still reach the
nodes, with ``ssl`` which certificate a new handshake gets, and with the /metrics of both sides
which certificate is in use.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from stockade.lab import brains
from stockade.tls import CertPair, issue_brain_cert, issue_node_cert, make_ca

from .lab_ops import agent_metrics, brains_metrics, enforced, lab_state, poll
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
metadata: {name: b, namespace: y, labels: {pod: b}}
spec:
  nodeName: node-2
  containers: [{name: c, ports: [{containerPort: 81}]}]
"""
DENY_B = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-deny, namespace: y}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress]}
"""
ALLOW_A_TO_B = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]
    ports: [{protocol: TCP, port: 81}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("certs-lab"), "st-crt-")  # ports by STOCKADE_TEST_SLOT
    for var in ("STOCKADE_BRAIN", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CERT", "STOCKADE_KEY"):
        lab.env.pop(var, None)
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "2", "--cluster", lab.write("cluster.yaml", CLUSTER), timeout=120)
        if not enforced(lab_state(lab)):
            pytest.skip("this build has no brain and agents: no certificates to renew")
        yield lab
    finally:
        lab.run("down", check=False)


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _install(pair: CertPair, stem: Path) -> None:
    _replace(stem.with_name(stem.name + ".crt"), pair.cert)
    _replace(stem.with_name(stem.name + ".key"), pair.key)


def _served_serial(port: int, certs: Path) -> int:
    """What a new handshake with the brain's sync port gets (verified against ca.crt)."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "nodes" / "node-1.crt"), str(certs / "nodes" / "node-1.key"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _gauge(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _a_reaches_b(lab: Lab) -> bool:
    # patient (the default is 1 s): an open connection must not read blocked on a busy machine
    results = lab.json("probe", "--from", "x/a", "--to", "y/b", "--timeout", "3")["results"]
    assert results, "the probe found no flow from x/a to y/b"
    return all(r["connected"] for r in results)


def test_renewals_reach_brain_and_agents_without_restarts(lab: Lab) -> None:
    st = lab_state(lab)
    certs = lab.dir / "certs"
    # Every brain reads the same certificate files: each must serve what was renewed.
    ports = [b.port(st, "grpc") for b in brains.of(st)]
    assert len(ports) == 2, "the lab runs two brains by default"
    names = {b.name for b in brains.of(st)}
    pids = {name: pid for name, (pid, _) in st.processes.items() if name in names or name.startswith("agent-")}
    ca = CertPair((certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes())
    assert _a_reaches_b(lab)
    assert {_served_serial(port, certs) for port in ports} == {_serial((certs / "brain.crt").read_bytes())}

    # 1. The brain's certificate renewed (a new key, the same CA), then a policy change.
    brain = issue_brain_cert(ca, ["localhost", "127.0.0.1"], days=2)
    _install(brain, certs / "brain")
    assert {_served_serial(port, certs) for port in ports} == {_serial(brain.cert)}
    lab.run("apply", "-f", lab.write("deny.yaml", DENY_B), "--wait", timeout=90)
    assert not _a_reaches_b(lab)  # the agents that kept their streams got the change
    for name, text in brains_metrics(st).items():
        expiry = _gauge(text, "stockade_brain_certificate_expiry_seconds")
        assert [labels["serial"] for labels, _ in expiry] == [f"{_serial(brain.cert):x}"], name
        assert 86400 < expiry[0][1] <= 2 * 86400
    for node in ("node-1", "node-2"):
        assert _gauge(agent_metrics(st, node), "stockade_agent_certificate_renewals") == [({}, 0.0)]

    # 2. node-2's client certificate renewed: its agent reconnects with it, then follows a change.
    node2 = issue_node_cert(ca, "node-2", days=2)
    _install(node2, certs / "nodes" / "node-2")
    renewals = poll(
        lambda: _gauge(agent_metrics(st, "node-2"), "stockade_agent_certificate_renewals"),
        lambda g: g == [({}, 1.0)],
        timeout=30,
    )
    assert renewals == [({}, 1.0)]
    ((_, left),) = _gauge(agent_metrics(st, "node-2"), "stockade_agent_certificate_expiry_seconds")
    assert 86400 < left <= 2 * 86400
    lab.run("apply", "-f", lab.write("allow.yaml", ALLOW_A_TO_B), "--wait", timeout=90)
    assert _a_reaches_b(lab)

    # 3. CA rotation: trust old + new, move the brain to the new CA; agents on old-CA
    # certificates keep working through the bundle.
    new_ca = make_ca("stockade-ca-2", days=30)
    _replace(certs / "ca.crt", ca.cert + new_ca.cert)
    brain2 = issue_brain_cert(new_ca, ["localhost", "127.0.0.1"], days=2)
    _install(brain2, certs / "brain")
    assert {_served_serial(port, certs) for port in ports} == {_serial(brain2.cert)}
    poll(
        lambda: [_gauge(agent_metrics(st, n), "stockade_agent_certificate_renewals") for n in ("node-1", "node-2")],
        lambda g: g == [[({}, 1.0)], [({}, 2.0)]],  # each agent reconnected for the new bundle
        timeout=30,
    )
    lab.run("delete", "-f", lab.write("gone.yaml", ALLOW_A_TO_B), "--wait", timeout=90)
    assert not _a_reaches_b(lab)

    # Nothing restarted: the same processes throughout.
    after = lab_state(lab)
    assert {name: pid for name, (pid, _) in after.processes.items() if name in pids} == pids
