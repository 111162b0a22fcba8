"""Malformed manifests never make the offline tools trace back: a message naming the file, the
document and the field, and exit 2; valid manifests still exit 0. Generated shapes run in
process (many examples); the hostile fixed shapes run the real `stockade` command."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.cli.main import main

SKELETONS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"team": "a"}}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "x", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]}],
        },
        "status": {"podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}], "phase": "Running"},
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cli", "namespace": "x"},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "cli"}},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            },
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http", "protocol": "TCP"}]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["cli"]}]}},
                        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                    ],
                    "ports": [{"port": "http"}, {"port": 80, "endPort": 90, "protocol": "TCP"}],
                }
            ],
            "egress": [{"to": [{"namespaceSelector": {}}]}],
        },
    },
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> list[Any]:
    """The skeletons with one to three subtrees replaced by random JSON (or a key added)."""
    docs: list[Any] = copy.deepcopy(SKELETONS)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(docs)))
        value = draw(json_values)
        if not path:
            docs = [value]
            continue
        parent = docs
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.text(max_size=8))] = value
        else:
            parent[path[-1]] = value
    return docs


# Each offline tool and the exit codes it may give for any input (2: a malformed manifest).
OFFLINE_TOOLS: list[tuple[tuple[str, ...], tuple[int, ...]]] = [
    (("reach",), (0, 2)),
    (("lint",), (0, 1, 2)),
    (("explain", "x/cli-0", "x/web", "--port", "80"), (0, 1, 2, 5)),  # 5: the pod is gone or no endpoint
]


def run_in_process(*argv: str) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(list(argv))
        except SystemExit as e:
            return int(e.code or 0), err.getvalue()
    return 0, err.getvalue()


def test_skeletons_are_valid(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump_all(SKELETONS))
    code, err = run_in_process("reach", "-f", str(f), "-o", "json")
    assert code == 0, err


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],  # too_slow: a busy machine
)
@given(docs=mutated())
def test_mutated_manifests_exit_0_or_2_with_a_message(tmp_path: Path, docs: list[Any]) -> None:
    f = tmp_path / "m.json"
    # JSON, not YAML: every generated value survives as written (YAML would re-type some strings).
    f.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    for argv, codes in OFFLINE_TOOLS:
        code, err = run_in_process(*argv, "-f", str(f), "-o", "json")
        assert code in codes, err
        if code == 2:
            assert err.startswith(f"error: {f}"), err
            assert "document" in err or "invalid YAML" in err, err


def _stockade(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, with its memory capped: a bomb must fail inside the cap, not eat the machine."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


# Nine levels of nine aliases: 9**9 values once expanded.
LAUGHS = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)

HOSTILE: list[tuple[str, bytes | str, str]] = [
    ("billion-laughs", "kind: Pod\nmetadata: {name: p, labels: {x: y}}\nspec:\n" + "  " + LAUGHS.replace("\n", "\n  "),
     "expands to more than"),
    ("laughs-in-labels", "kind: Namespace\nmetadata:\n  name: n\n  labels:\n    " + LAUGHS.replace("\n", "\n    "),
     "expands to more than"),
    ("recursive-alias", "kind: Pod\nmetadata: {name: p}\nspec: &s {containers: [*s]}\n", "refers to itself"),
    ("deep-nesting", "kind: Pod\nmetadata: {name: p}\nspec: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("yaml-syntax", "kind: Pod\nmetadata: {name: a\n", "invalid YAML in document 2 (line"),
    ("binary-junk", bytes(range(256)) * 64, "cannot read"),
    ("tab-junk", "\t\x00\x01kind: [}\n", "invalid YAML"),
    ("scalar-doc", "42\n", "expected a Kubernetes object"),
    ("kind-not-string", "kind: [Pod]\nmetadata: {name: a}\n", "kind: must be a string"),
    ("metadata-list", "kind: Pod\nmetadata: [name, a]\n", "has no metadata.name"),
    ("labels-list", "kind: Namespace\nmetadata: {name: a, labels: [x]}\n", "metadata.labels: must be an object"),
    ("pod-spec-list", "kind: Pod\nmetadata: {name: a}\nspec: [1]\n", "Pod default/a): spec: must be an object"),
    ("pod-status-string", "kind: Pod\nmetadata: {name: a}\nstatus: Running\n", "status: must be an object"),
    ("pod-ip-invalid", "kind: Pod\nmetadata: {name: a}\nstatus: {podIP: 999.1.1.1}\n", "status.podIP"),
    ("pod-ip-leading-zeros", "kind: Pod\nmetadata: {name: a}\nstatus: {podIP: 010.001.000.020}\n", "status.podIP"),
    ("container-port", "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{ports: [{containerPort: http}]}]}\n",
     "spec.containers[0].ports[0].containerPort: must be an integer"),
    ("replicas-huge", "kind: Deployment\nmetadata: {name: a}\nspec: {replicas: 1000000000}\n", "spec.replicas"),
    ("items-not-list", "kind: PodList\nitems: {a: 1}\n", "items: must be a list"),
    ("service-ports", "kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: [80]}]}\n",
     "spec.ports[0].port: must be an integer"),
    ("policy-port", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: foo}\nspec:\n"
     "  ingress: [{ports: [{port: 80}, {port: [1]}]}]\n", "spec.ingress[0].ports[1].port"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "expect"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_manifests_exit_2_naming_the_problem(
    tmp_path: Path, name: str, content: bytes | str, expect: str
) -> None:
    ok = tmp_path / "a.yaml"
    ok.write_text("kind: Namespace\nmetadata: {name: fine}\n")
    bad = tmp_path / "b.yaml"
    bad.write_bytes(
        content if isinstance(content, bytes) else ("kind: Namespace\nmetadata: {name: y}\n---\n" + content).encode()
    )
    for argv, _ in OFFLINE_TOOLS:
        proc = _stockade(*argv, "-f", str(tmp_path))
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: {bad}"), proc.stderr
        assert expect in proc.stderr, proc.stderr
        if not isinstance(content, bytes):
            assert f"{bad}: document 2" in proc.stderr or f"{bad}: invalid YAML in document " in proc.stderr


def test_kubectl_style_message_for_a_policy_field(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    docs = [{"kind": "Namespace", "metadata": {"name": f"n{i}"}} for i in range(2)]
    docs.append(copy.deepcopy(SKELETONS[4]))
    docs[2]["metadata"] = {"name": "foo", "namespace": "default"}
    docs[2]["spec"]["ingress"][0]["ports"][1]["port"] = {"a": 1}
    f.write_text(yaml.safe_dump_all(docs))
    proc = _stockade("reach", "-f", str(f))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {f}: document 3 (NetworkPolicy default/foo): spec.ingress[0].ports[1].port:")


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    with f.open("w") as out:
        out.write("kind: Namespace\nmetadata:\n  name: big\n  annotations:\n")
        for i in range(300_000):
            out.write(f"    k{i}: {'v' * 20}\n")
    proc = _stockade("reach", "-f", str(f))
    assert proc.returncode == 2 and "bytes are refused" in proc.stderr, proc.stderr


def test_valid_manifests_still_exit_0(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text(yaml.safe_dump_all(SKELETONS))
    proc = _stockade("reach", "-f", str(f), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    cells = {(r["from"], r["to"], r["port"]): r["allowed"] for r in json.loads(proc.stdout)["results"]}
    assert cells[("x/cli-0", "x/web", 80)] is True
    lint = _stockade("lint", "-f", str(f), "-o", "json")
    assert lint.returncode == 0 and json.loads(lint.stdout)["rejected"] == [], lint.stderr
    allowed = _stockade("explain", "x/cli-0", "x/web", "--port", "80", "-f", str(f))
    assert allowed.returncode == 0 and allowed.stdout.startswith("ALLOWED"), allowed.stderr
    blocked = _stockade("explain", "x/cli-0", "x/web", "--port", "99", "-f", str(f))  # ports 80-90 and http
    assert blocked.returncode == 1 and blocked.stdout.startswith("BLOCKED"), blocked.stderr
    missing = _stockade("explain", "x/nobody", "x/web", "--port", "80", "-f", str(f))
    assert missing.returncode == 5 and "not found" in missing.stderr, missing.stderr


def _policy_a(name: str, ingress: list[Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": ingress},
    }


PODS_AB = [
    {"kind": "Pod", "metadata": {"name": n, "namespace": "x", "labels": {"app": n}},
     "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}}
    for n in ("a", "b")
]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "expect"),
    [
        (_policy_a("ports-1001", [{"ports": [{"port": p} for p in range(1, 1002)]}]), "over the limit"),
        (_policy_a("rules-10001", [{"ports": [{"port": i % 65535 + 1}]} for i in range(10_001)]), "over the limit"),
    ],
    ids=["1001-ports", "10001-rules"],
)
def test_oversized_policies_are_refused_with_the_limit_named(
    tmp_path: Path, policy: dict[str, Any], expect: str
) -> None:
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump_all([*PODS_AB, policy]))
    for argv, _ in OFFLINE_TOOLS[:2]:
        proc = _stockade(*argv, "-f", str(f))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"error: {f}: document 3 (NetworkPolicy x/{policy['metadata']['name']}): spec.")
        assert expect in proc.stderr, proc.stderr


def test_ipv6_everything_with_1000_excepts_is_judged(tmp_path: Path) -> None:
    excepts = [f"2001:db8:{i:x}::/48" for i in range(1000)]
    f = tmp_path / "v6.yaml"
    f.write_text(
        yaml.safe_dump_all([*PODS_AB, _policy_a("v6", [{"from": [{"ipBlock": {"cidr": "::/0", "except": excepts}}]}])])
    )
    proc = _stockade("reach", "-f", str(f), "-o", "json", "--ip-family", "dual")
    assert proc.returncode == 0, proc.stderr
    cells = {(r["from"], r["to"], r["family"]): r["allowed"] for r in json.loads(proc.stdout)["results"]}
    assert cells[("x/b", "x/a", "ipv4")] is False  # the block is IPv6 only
    assert cells[("x/b", "x/a", "ipv6")] is True  # fd00:10:244:… is outside every except
