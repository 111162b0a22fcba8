"""deploy/dashboards/stockade.json: a Grafana dashboard whose every query parses (promtool) and
names only metrics that a live brain and a live agent export (a lab: real brain and agents),
with brain and agent names kept apart so a sum over both never counts one thing twice."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "dashboards" / "stockade.json"
RULES = DEPLOY / "alerts" / "stockade-alerts.rules.yaml"
METRIC = re.compile(r"\b((?:stockade|process|python)_[a-z0-9_]+)\b")
# What a sample name adds to its family's name, by family type.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def queries() -> list[str]:
    out: list[str] = []

    def walk(panels: list[dict[str, object]]) -> None:
        for p in panels:
            out.extend(str(t["expr"]) for t in p.get("targets", []) or [])  # type: ignore[union-attr]
            walk(p.get("panels", []) or [])  # type: ignore[arg-type]

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def names_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


def exported(text: str) -> set[str]:
    """Every name a query may use for this exposition: families and their samples' names."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, ()))
        names.update(s.name for s in fam.samples)
    return names


def families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def test_dashboard_is_grafana_json_with_queries() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "stockade" and dash["schemaVersion"] >= 36
    exprs = queries()
    assert len(exprs) >= 20
    # every panel reads the datasource variable, so it imports into any Grafana
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource"}
    assert all("$__" not in e for e in exprs)  # plain PromQL: promtool and Prometheus read it as is


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"q:{i}", "expr": e} for i, e in enumerate(queries())]}]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[str, str]]:
    """The /metrics of a real brain and a real agent: a two-node lab."""
    from lab.lab_ops import agent_metrics, brain_metrics, enforced, lab_state, make_lab
    from lab.labenv import Lab

    tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip())
    lab: Lab = make_lab(tmp, "st-dash-", (27600, 27699))
    lab.run("down", check=False)
    try:
        lab.run("up", "--nodes", "2", timeout=180)
        st = lab_state(lab)
        assert enforced(st), "the lab started no brain and agents"
        assert st.plan is not None
        yield brain_metrics(st), agent_metrics(st, st.plan.nodes[0].name)
    finally:
        lab.run("down", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.root
@pytest.mark.slow
def test_every_query_names_a_metric_the_brain_or_an_agent_exports(live: tuple[str, str]) -> None:
    brain, agent = (exported(t) for t in live)
    used = names_in(queries())
    missing = sorted(n for n in used if n not in brain | agent)
    assert not missing, f"the dashboard queries metrics nothing exports: {missing}"
    assert sorted(n for n in used if n.startswith("stockade_brain_") and n not in brain) == []
    assert sorted(n for n in used if n.startswith("stockade_agent_") and n not in agent) == []
    # the alert rules too
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    rules_missing = sorted(n for n in names_in(exprs) if n not in brain)
    assert not rules_missing, f"the alert rules read metrics the brain does not export: {rules_missing}"
    # The check can fail: the names before the split are no longer exported by either.
    assert not {"stockade_blocked_connections_total", "stockade_agent_connected"} & (brain | agent)


@pytest.mark.root
@pytest.mark.slow
def test_brain_and_agent_never_share_a_name(live: tuple[str, str]) -> None:
    brain, agent = (families(t) for t in live)
    ours_b = {n for n in brain if n.startswith("stockade_")}
    ours_a = {n for n in agent if n.startswith("stockade_")}
    assert ours_b and all(n.startswith("stockade_brain_") for n in ours_b), sorted(ours_b)
    assert ours_a and all(n.startswith("stockade_agent_") for n in ours_a), sorted(ours_a)
    assert not ours_b & ours_a
    assert "stockade_brain_sync_agents_connected" in brain  # the fan-out's collector is registered
    assert "stockade_agent_brain_connected" in agent  # and the agent's sync collector
    for text in live:  # both measure their process
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["process_resident_memory_bytes"].samples[0].value > 1e6
