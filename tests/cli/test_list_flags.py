"""kubectl's list conventions on `policies`, `nodes` and `drops top` (issue 14, item 2): -n/-A,
-l selectors on the objects' labels, -o table|wide|json|yaml|name, --no-headers and --watch,
through the real CLI and a real brain over real gRPC."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

import pytest
import yaml
from cli_brain import ENV_PATH, READ, Lab, stockade, tls

from stockade.cli import exits
from stockade.cli.listing import parse_selector, selected


def _run(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    out = stockade(*args, *tls(lab), "--token", READ)
    assert out.returncode == 0, out.stderr
    return out


def test_selectors_read_as_kubectl_reads_them() -> None:
    labels = {"app": "web", "tier": "front", "env": "prod"}
    for sel, want in (
        ("app=web", True),
        ("app==web,tier=front", True),
        ("app!=web", False),
        ("missing!=x", True),  # != holds where the label is absent, as in kubectl
        ("env in (prod, staging)", True),
        ("env notin (prod),app=web", False),
        ("tier", True),
        ("!tier", False),
        ("!legacy,app in (web)", True),
    ):
        assert selected(parse_selector(sel), labels) is want, sel
    for bad in ("app=web=x", "in (a)", "app in a,b", "=x", ""):
        with pytest.raises(exits.CliError) as e:
            parse_selector(bad)
        assert e.value.code == exits.USAGE, bad


def test_policies_by_namespace_and_label(lab: Lab) -> None:
    assert _run(lab, "policies", "-o", "name").stdout.split() == ["policy/locked/deny", "policy/open/none"]
    assert _run(lab, "policies", "-A", "-o", "name").stdout.split() == ["policy/locked/deny", "policy/open/none"]
    assert _run(lab, "policies", "-n", "open", "-o", "name").stdout.split() == ["policy/open/none"]
    assert _run(lab, "policies", "-l", "team=sec", "-o", "name").stdout.split() == ["policy/locked/deny"]
    assert _run(lab, "policies", "-l", "team in (sec,net),!tier", "-o", "name").stdout.split() == ["policy/open/none"]
    assert _run(lab, "policies", "-l", "team=nobody").stdout.strip() == "No policies."
    assert _run(lab, "policies", "-l", "team=nobody", "--no-headers").stdout == ""
    doc = json.loads(_run(lab, "policies", "-l", "team=sec", "-o", "json").stdout)
    assert [p["name"] for p in doc["items"]] == ["deny"] and doc["items"][0]["labels"]["team"] == "sec"
    assert yaml.safe_load(_run(lab, "policies", "-n", "locked", "-o", "yaml").stdout) == doc
    bad = stockade("policies", "-n", "open", "-A", *tls(lab), "--token", READ)
    assert bad.returncode == 2 and "cannot go together" in bad.stderr
    bad = stockade("policies", "-l", "app in x", *tls(lab), "--token", READ)
    assert bad.returncode == 2 and "label requirement" in bad.stderr


def test_policies_table_wide_and_no_headers(lab: Lab) -> None:
    table = _run(lab, "policies").stdout.splitlines()
    assert table[0].split() == ["POLICY", "TYPES", "PODS", "REALIZED", "WARNINGS"]
    assert table[1].split()[:3] == ["locked/deny", "Ingress", "2"]
    wide = _run(lab, "policies", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["PENDING", "ON", "LABELS"]
    assert wide[1].split()[-1] == "team=sec,tier=base"
    rows = _run(lab, "policies", "--no-headers").stdout.splitlines()
    assert rows == table[1:]


def test_nodes_by_label_wide_name_and_no_headers(lab: Lab) -> None:
    assert _run(lab, "nodes", "-o", "name").stdout.split() == ["node/node-1", "node/node-2"]
    assert _run(lab, "nodes", "-l", "zone=b", "-o", "name").stdout.split() == ["node/node-2"]
    assert _run(lab, "nodes", "-l", "!gpu", "-o", "name").stdout.split() == ["node/node-1"]
    table = _run(lab, "nodes").stdout.splitlines()
    assert table[0].split()[:2] == ["NODE", "CONNECTED"] and table[-1].startswith("(")  # the view note
    rows = _run(lab, "nodes", "--no-headers").stdout.splitlines()
    assert [r.split()[0] for r in rows] == ["node-1", "node-2"]  # rows only: no header, no note
    wide = _run(lab, "nodes", "-o", "wide", "-l", "zone=a").stdout.splitlines()
    assert wide[0].split()[-3:] == ["AGENT", "PROTOCOL", "LABELS"] and wide[1].split()[-1] == "zone=a"
    doc = json.loads(_run(lab, "nodes", "-l", "zone=a", "-o", "json").stdout)
    assert [n["name"] for n in doc["items"]] == ["node-1"] and doc["items"][0]["labels"] == {"zone": "a"}
    assert stockade("nodes", "-n", "x", *tls(lab), "--token", READ).returncode == 2  # cluster-scoped


def test_drops_top_no_headers(lab: Lab) -> None:
    out = _run(lab, "drops", "top").stdout
    assert "No blocked connections in the last 15m." in out
    assert _run(lab, "drops", "top", "--no-headers").stdout == ""
    assert stockade("drops", "top", "-o", "name", *tls(lab), "--token", READ).returncode == 2


def _lines(proc: subprocess.Popen[str]) -> Queue[str]:
    q: Queue[str] = Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return q


def _until(q: Queue[str], want: str, deadline: float) -> list[str]:
    seen = []
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.5)
        except Empty:
            continue
        seen.append(line)
        if line == want:
            return seen
    raise AssertionError(f"{want!r} never printed; got {seen}")


def test_watch_lists_again_when_the_answer_changes(lab: Lab) -> None:
    argv = ["policies", "--watch", "--watch-interval", "0.3", "-o", "name", "-n", "open", *tls(lab), "--token", READ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockade.cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": ENV_PATH, "PATH": "/usr/bin:/bin", "STOCKADE_LAB_DIR": "/nonexistent"},
    )
    try:
        q = _lines(proc)
        assert _until(q, "policy/open/none", time.monotonic() + 60) == ["policy/open/none"]
        time.sleep(1.5)  # several looks at an unchanged answer: nothing printed again
        assert q.empty()
        lab.put(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "watched", "namespace": "open"},
                "spec": {"podSelector": {"matchLabels": {"app": "nothing"}}, "policyTypes": ["Ingress"]},
            }
        )
        assert _until(q, "policy/open/watched", time.monotonic() + 60)[-2:] == [
            "policy/open/none",
            "policy/open/watched",
        ]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            proc.kill()
            proc.wait(10)
