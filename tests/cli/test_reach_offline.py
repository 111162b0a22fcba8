"""Issue 14 item 5: `reach`'s JSON pinned byte for byte, class-based verdicts equal to every
pair's, `-f -` (standard input) for reach, lint and explain, and pod addressing that scales."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.brain.admin.reachability import reach
from stockade.cli.offline import compile_checked, read_manifests
from stockade.cli.reach_classes import Classes
from stockade.manifests import bounded_yaml

DATA = Path(__file__).resolve().parent / "data" / "reach_pin"
CLUSTER = DATA / "cluster.yaml"
SOCK_SHOP = Path(__file__).resolve().parents[2] / "examples" / "sock-shop"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args], input=stdin, capture_output=True, timeout=300
    )


# The golden files are the output of the per-pair implementation this replaced, for the same input.
@pytest.mark.parametrize(
    ("golden", "flags"),
    [
        ("default.json", ["-o", "json"]),
        ("ports.json", ["--ports", "80,5432", "--protocols", "TCP,UDP", "-o", "json"]),
        ("dual.json", ["--ip-family", "dual", "--nodes", "2", "-o", "json"]),
        ("v6.json", ["--ip-family", "dual", "--family", "ipv6", "--nodes", "1", "-o", "json"]),
        ("default.txt", []),
    ],
)
def test_reach_output_is_pinned(golden: str, flags: list[str]) -> None:
    proc = run("reach", "-f", str(CLUSTER), *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (DATA / golden).read_bytes()


def _generated(pods_per_app: int) -> list[dict[str, Any]]:
    """Namespaces with labels, apps over several tiers, and policies of every peer kind."""
    objs: list[dict[str, Any]] = []
    for n in range(3):
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"n{n}", "labels": {"t": str(n)}}})
    for a in range(6):
        tier = ("web", "api", "db")[a % 3]
        ports: list[dict[str, Any]] = [{"containerPort": 8000 + a % 3, "name": "svc"}]
        objs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"a{a}", "namespace": f"n{a % 3}"},
                "spec": {
                    "replicas": pods_per_app,
                    "selector": {"matchLabels": {"app": f"a{a}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"a{a}", "tier": tier}},
                        "spec": {"containers": [{"name": "c", "image": "x", "ports": ports}]},
                    },
                },
            }
        )
    for n in range(3):
        spec = {
            "podSelector": {"matchLabels": {"tier": ("web", "api", "db")[n]}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}], "ports": [{"port": "svc"}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"t": str((n + 1) % 3)}}}]},
                {"from": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.0/25"]}}]},
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10:244:1::/64"}}, {"podSelector": {}}]}],
        }
        objs.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"p{n}", "namespace": f"n{n}"},
                "spec": spec,
            }
        )
    return objs


@pytest.mark.parametrize(("nodes", "family"), [(1, "ipv4"), (3, "ipv4"), (2, "dual"), (4, "ipv6")])
def test_classes_give_every_pairs_verdict(tmp_path: Path, nodes: int, family: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump_all(_generated(7)))
    engine = compile_checked([str(path)], nodes=nodes, ip_family=family)
    classes = Classes(engine)
    assert len(classes.members) < len(classes.pods)  # classes are shared, not one per pod
    assert classes.probes() == reach(engine)
    assert classes.probes([8000, 8002], None) == reach(engine, [8000, 8002])
    assert Classes(engine, [6]).probes() == reach(engine, families=[6])


def test_reach_reads_standard_input() -> None:
    from_file = run("reach", "-f", str(CLUSTER), "-o", "json")
    from_stdin = run("reach", "-f", "-", "-o", "json", stdin=CLUSTER.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout
    # stdin and files together: the objects of both, in the order named
    both = run("reach", "-f", str(SOCK_SHOP), "-f", "-", "-o", "json", stdin=CLUSTER.read_bytes())
    keys = {r["to"] for r in json.loads(both.stdout)["results"]}
    assert "shop/db-0" in keys and "sock-shop/carts" in keys


def test_lint_and_explain_read_standard_input() -> None:
    text = CLUSTER.read_bytes()
    lint = run("lint", "-f", "-", "-o", "json", stdin=text)
    assert lint.returncode == 0, lint.stderr
    assert json.loads(lint.stdout) == json.loads(run("lint", "-f", str(CLUSTER), "-o", "json").stdout)
    allowed = run("explain", "-f", "-", "shop/web-0", "shop/db-1", "--port", "5432", stdin=text)
    assert allowed.returncode == 0, allowed.stderr
    blocked = run("explain", "-f", "-", "shop/db-0", "ops/probe", "--port", "9090", stdin=text)
    assert blocked.returncode == 1, blocked.stderr


def test_standard_input_errors_name_it_and_exit_2() -> None:
    bad = run("lint", "-f", "-", stdin=b"kind: Pod\nmetadata: {}\n")
    assert bad.returncode == 2
    assert b"-: document 1: Pod has no metadata.name" in bad.stderr
    assert b"Traceback" not in bad.stderr
    broken = run("reach", "-f", "-", stdin=b"kind: Pod\nmetadata: {name: [\n")
    assert broken.returncode == 2 and b"-: invalid YAML" in broken.stderr
    twice = run("reach", "-f", "-", "-f", "-", stdin=CLUSTER.read_bytes())
    assert twice.returncode == 2 and b"standard input can be named once" in twice.stderr
    huge = run("lint", "-f", "-", stdin=b"#" * (bounded_yaml.MAX_BYTES + 1))
    assert huge.returncode == 2 and b"refused" in huge.stderr


def _deployment(replicas: int, name: str = "big") -> bytes:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "scale"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "big"}},
                "template": {
                    "metadata": {"labels": {"app": "big"}},
                    "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]},
                },
            },
        }
    ).encode()


@pytest.mark.parametrize("nodes", [3, 400])
def test_two_thousand_pods_fit_on_any_number_of_nodes(tmp_path: Path, nodes: int) -> None:
    """Once a node's /24 is full (or past the 255th node) pods take addresses from a spill pool."""
    manifest = _deployment(1000, "a") + b"---\n" + _deployment(1000, "b")  # 1,000 replicas at most each
    args = ["explain", "-f", "-", "--nodes", str(nodes), "scale/a-0", "scale/b-999", "--port", "80"]
    proc = run(*args, stdin=manifest)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    path = tmp_path / "big.yaml"
    path.write_bytes(manifest)
    ips = [ip for p in compile_checked([str(path)], nodes=nodes).pods() for ip in p.ips]
    assert len(ips) == len(set(ips)) == 2000


def test_standard_input_documents_are_named_dash() -> None:
    docs = read_manifests(["-"], stdin=io.BytesIO(_deployment(2)))
    assert [d.source for d in docs] == ["-: document 1"]


def test_reach_beyond_one_nodes_range() -> None:
    """300 pods on one node: more than its /24 holds; every pair is still judged."""
    proc = run("reach", "-f", "-", "--nodes", "1", "-o", "json", stdin=_deployment(300))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 300 * 300
    assert all(r["allowed"] for r in results)  # no policy: everything is allowed
