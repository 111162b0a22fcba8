"""deploy/alerts: promtool checks and unit-tests the rules; the PrometheusRule carries the same."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stockade.brain.drops import DropMetrics

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "alerts"
RULES = ALERTS / "stockade-alerts.rules.yaml"
TESTS = ALERTS / "stockade-alerts.test.yaml"
OPERATOR = ALERTS / "prometheusrule.yaml"

promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")


def _run(*args: str) -> str:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@promtool
def test_rules_pass_promtool_check() -> None:
    assert "SUCCESS" in _run("check", "rules", str(RULES))


@promtool
def test_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in _run("test", "rules", str(TESTS))


@promtool
def test_unit_tests_fail_on_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests can fail: with the disconnection rule inverted, promtool reports it."""
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace(
            "expr: max by (node) (stockade_brain_node_agent_connected) == 0",
            "expr: max by (node) (stockade_brain_node_agent_connected) == 1",
        )
    )
    (tmp_path / TESTS.name).write_text(TESTS.read_text())
    proc = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / TESTS.name)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "StockadeAgentDisconnected" in proc.stdout + proc.stderr


@promtool
@pytest.mark.parametrize(
    ("aggregated", "per_brain", "alert"),
    [
        (
            "expr: max by (node) (stockade_brain_node_agent_connected) == 0",
            "expr: stockade_brain_node_agent_connected == 0",
            "StockadeAgentDisconnected",
        ),
        (
            "expr: max by (node) (stockade_brain_node_generation_lag) > 0 unless on (node) max by (node) "
            "(stockade_brain_node_agent_connected) == 0",
            "expr: stockade_brain_node_generation_lag > 0 unless on (node) stockade_brain_node_agent_connected == 0",
            "StockadeNodeGenerationLagging",
        ),
    ],
)
def test_two_brain_tests_fail_without_aggregating_by_node(
    tmp_path: Path, aggregated: str, per_brain: str, alert: str
) -> None:
    """With two brains each node has one series per brain: read one brain's view alone (as the
    rules did) and the two-brain unit test fails (a node served by the other brain looks
    disconnected; a lag seen by the brain that no longer serves it counts)."""
    rules = RULES.read_text()
    assert aggregated in rules
    (tmp_path / RULES.name).write_text(rules.replace(aggregated, per_brain))
    (tmp_path / TESTS.name).write_text(TESTS.read_text())
    proc = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / TESTS.name)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and alert in proc.stdout + proc.stderr


def test_prometheusrule_carries_the_same_rules() -> None:
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(OPERATOR.read_text())
    assert operator["apiVersion"] == "monitoring.coreos.com/v1" and operator["kind"] == "PrometheusRule"
    assert operator["metadata"]["namespace"] == "stockade-system"
    assert operator["spec"] == {"groups": plain["groups"]}


@promtool
def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    spec = yaml.safe_load(OPERATOR.read_text())["spec"]
    extracted = tmp_path / "from-prometheusrule.yaml"
    extracted.write_text(yaml.safe_dump(spec))
    assert "SUCCESS" in _run("check", "rules", str(extracted))


def test_rules_name_the_metrics_the_brain_exports() -> None:
    text = RULES.read_text()
    registry = CollectorRegistry()
    DropMetrics(registry)
    exported = {s.name for m in registry.collect() for s in m.samples}
    for name in ("stockade_brain_blocked_connections_total", "stockade_brain_drop_events_dropped_total"):
        assert name in text
    assert "stockade_brain_drop_events_dropped_total" in exported
    # the labelled counter has no sample until first use; its family is registered
    assert "stockade_brain_blocked_connections" in {m.name for m in registry.collect()}
    for name in (
        "stockade_brain_node_agent_connected",
        "stockade_brain_node_generation_lag",
        "stockade_brain_node_apply_errors_total",
    ):
        assert name in text  # exported by the brain's fan-out (names agreed in issue 6)
