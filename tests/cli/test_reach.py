"""`stockade reach` end to end: real files in, the CLI's JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOCK_SHOP = ROOT / "examples" / "sock-shop"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_sock_shop_json_shows_the_published_mistake() -> None:
    proc = run("reach", "-f", str(SOCK_SHOP), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    cells = {(r["from"], r["to"], r["port"], r["protocol"]): r["allowed"] for r in doc["results"]}
    # front-end may reach catalogue, but carts is blocked: cart-access selects name=cart, pods say carts.
    assert cells[("sock-shop/front-end", "sock-shop/catalogue", 80, "TCP")] is True
    assert cells[("sock-shop/front-end", "sock-shop/carts", 80, "TCP")] is False
    assert cells[("sock-shop/orders", "sock-shop/orders-db", 27017, "TCP")] is True
    assert cells[("sock-shop/catalogue", "sock-shop/orders-db", 27017, "TCP")] is False
    assert any("did you mean name=carts" in w for w in doc["warnings"])


def test_table_output_is_a_matrix_with_lint_below() -> None:
    proc = run("reach", "-f", str(SOCK_SHOP), "--ports", "80")
    assert proc.returncode == 0, proc.stderr
    assert "TCP/80" in proc.stdout
    assert "Lint warnings:" in proc.stdout
    assert "[sock-shop]" in proc.stdout


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("kind: Pod\nmetadata: {name: a\n", "invalid YAML"),
        ("kind: Frobnicator\nmetadata: {name: a}\n", "unknown kind 'Frobnicator'"),
        ("- 1\n- 2\n", "expected a Kubernetes object"),
        ("kind: Pod\nmetadata: {}\n", "has no metadata.name"),
    ],
)
def test_bad_input_names_file_and_document(tmp_path: Path, content: str, expect: str) -> None:
    good = tmp_path / "a-good.yaml"
    good.write_text("kind: Namespace\napiVersion: v1\nmetadata: {name: x}\n")
    bad = tmp_path / "b-bad.yaml"
    bad.write_text("kind: Namespace\napiVersion: v1\nmetadata: {name: y}\n---\n" + content)
    proc = run("reach", "-f", str(tmp_path))
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert "b-bad.yaml: document 2" in proc.stderr or ("invalid YAML" in expect and "b-bad.yaml" in proc.stderr)


def test_missing_file_is_an_error() -> None:
    proc = run("reach", "-f", "/nonexistent/policies.yaml")
    assert proc.returncode == 2
    assert "no such file or folder" in proc.stderr


def test_ports_and_protocols_flags(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{protocol: UDP, port: 81}]}]
"""
    )
    proc = run("reach", "-f", str(tmp_path), "--ports", "80,81", "--protocols", "TCP,UDP", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    cells = {(r["from"], r["to"], r["port"], r["protocol"]): r["allowed"] for r in json.loads(proc.stdout)["results"]}
    assert cells[("x/b", "x/a", 81, "UDP")] is True
    assert cells[("x/b", "x/a", 81, "TCP")] is False
    assert cells[("x/b", "x/a", 80, "UDP")] is False
    assert cells[("x/a", "x/b", 80, "TCP")] is True
    assert cells[("x/a", "x/a", 80, "TCP")] is True  # self-traffic is never filtered
    bad = run("reach", "-f", str(tmp_path), "--ports", "99999")
    assert bad.returncode == 2 and "between 1 and 65535" in bad.stderr


DUAL = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {pod: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cli, namespace: x, labels: {pod: cli}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: v4-only, namespace: x}
spec:
  podSelector: {matchLabels: {pod: web}}
  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16}}]}]
"""


def test_dual_stack_pairs_are_judged_per_family(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(DUAL)
    proc = run("reach", "-f", str(tmp_path), "--ip-family", "dual", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    cells = {(r["from"], r["to"], r["family"]): r["allowed"] for r in json.loads(proc.stdout)["results"]}
    # The IPv4 block admits cli's IPv4 address, never its IPv6 one.
    assert cells[("x/cli", "x/web", "ipv4")] is True
    assert cells[("x/cli", "x/web", "ipv6")] is False
    assert cells[("x/web", "x/cli", "ipv6")] is True
    only6 = run("reach", "-f", str(tmp_path), "--ip-family", "dual", "--family", "ipv6", "-o", "json")
    assert {r["family"] for r in json.loads(only6.stdout)["results"]} == {"ipv6"}
    table = run("reach", "-f", str(tmp_path), "--ip-family", "dual")
    assert "TCP/80 IPv4" in table.stdout and "TCP/80 IPv6" in table.stdout
    v6 = run("reach", "-f", str(tmp_path), "--ip-family", "ipv6", "-o", "json")
    assert {(r["from"], r["to"], r["family"], r["allowed"]) for r in json.loads(v6.stdout)["results"]} >= {
        ("x/cli", "x/web", "ipv6", False)
    }
    bad = run("reach", "-f", str(tmp_path), "--ip-family", "ipv5")
    assert bad.returncode == 2 and "--ip-family" in bad.stderr


def test_null_spec_and_status_are_absent_fields(tmp_path: Path) -> None:
    """`spec: null` is an absent spec in YAML as in the API (found by the manifest fuzz test)."""
    f = tmp_path / "pod.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: x, labels: {app: web}}\nspec: null\nstatus: null\n"
    )
    res = run("reach", "-f", str(f))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
