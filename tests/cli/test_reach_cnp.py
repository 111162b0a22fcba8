"""`stockade reach` with ClusterNetworkPolicies: the upstream conformance suite, every probe, judged
offline by reach's own code (manifests written to a file, compiled, classes, the JSON it prints),
and through the CLI itself for the parts a script reads (hostNetwork entries, exit codes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine.cnp_conformance import Replay, load  # type: ignore[import-not-found]

from stockade.brain.admin.reachability import reach
from stockade.cli.commands.reach import write_json
from stockade.cli.offline import compile_checked
from stockade.cli.reach_classes import Classes
from stockade.model import Protocol

DATA = load()
TESTS = {t["name"]: t for t in DATA["tests"]}


def _judged(path: Path, port: int, protocol: str) -> dict[tuple[str, str], dict[str, Any]]:
    """reach's JSON for the manifests at ``path``, by (from, to)."""
    engine = compile_checked([str(path)])
    out = io.BytesIO()
    write_json(Classes(engine), [port], [Protocol(protocol)], [], [str(r) for r in engine.rejections()], out)
    doc = json.loads(out.getvalue())
    assert doc["rejected"] == []
    return {(e["from"], e["to"]): e for e in doc["results"]}


@pytest.mark.parametrize("name", sorted(TESTS))
def test_conformance_through_reach(name: str, tmp_path: Path) -> None:
    replay = Replay(DATA, TESTS[name])
    wrong: list[str] = []
    cache: dict[tuple[str, int, str], dict[tuple[str, str], dict[str, Any]]] = {}
    for i, probe in enumerate(replay.run()):
        text = yaml.safe_dump_all(replay.objects)
        key = (text, probe.port, probe.protocol)
        if key not in cache:
            f = tmp_path / f"state-{i}.yaml"
            f.write_text(text)
            cache[key] = _judged(f, probe.port, probe.protocol)
        entry = cache[key][(probe.src, probe.dst)]
        host = replay.pod(probe.src)["spec"].get("hostNetwork") or replay.pod(probe.dst)["spec"].get("hostNetwork")
        assert entry.get("hostNetwork", False) is bool(host), entry
        if entry["allowed"] != probe.connect:
            wrong.append(f"{probe}: reach says {'allowed' if entry['allowed'] else 'blocked'}")
    assert not wrong, "\n".join(wrong)


def test_classes_and_pairs_agree_with_cnps(tmp_path: Path) -> None:
    """The class shortcut gives the verdict of judging every pair, host-network pods included."""
    replay = Replay(DATA, TESTS["CNPAdminTierEgressNodePeers"])
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump_all(replay.objects))
    engine = compile_checked([str(f)])
    ports, protos = [80, 53, 34345, 34347], [Protocol.TCP, Protocol.UDP]
    assert Classes(engine).probes(ports, protos) == reach(engine, ports, protos, host_network=True)
    assert any(p.host_network for p in reach(engine, ports, protos, host_network=True))
    assert not any(p.host_network for p in reach(engine, ports, protos))  # dry-run's: endpoints only


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args], capture_output=True, text=True, timeout=300
    )


def test_the_cli_reads_cnps_and_marks_host_network_pods(tmp_path: Path) -> None:
    replay = Replay(DATA, TESTS["CNPAdminTierEgressNodePeers"])
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump_all(replay.objects))
    done = run("reach", "-f", str(f), "--ports", "34345", "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    centaur = "network-policy-conformance-forbidden-forrest/centaur-0"
    to_host = [e for e in doc["results"] if e["to"] == centaur]
    assert to_host and all(e["hostNetwork"] is True for e in to_host)
    plain = [e for e in doc["results"] if "centaur" not in e["from"] + e["to"]]
    assert plain and all("hostNetwork" not in e for e in plain)


def test_a_bad_cnp_is_a_manifest_error_naming_the_field(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "too-late"},
        "spec": {"tier": "Admin", "priority": 1001, "subject": {"namespaces": {}}},
    }
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    done = run("reach", "-f", str(f))
    assert done.returncode == 2
    assert "ClusterNetworkPolicy too-late" in done.stderr and "spec.priority" in done.stderr
