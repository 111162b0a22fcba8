"""What the alerts tell an operator holds: every command an annotation names is a real `stockade`
command line, and every alert's runbook_url is a section of the README."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from .cli_flags import parse
from .render import DEPLOY, REPO

RULES = DEPLOY / "alerts" / "stockade-alerts.rules.yaml"
RUNBOOK_BASE = "https://github.com/stockade/stockade/blob/main/README.md#"
# What the alert templates expand to, for parsing the commands they name.
SAMPLE_LABELS = {"namespace": "prod", "node": "node-a", "reason": "too_old"}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    found = [r for g in groups for r in g["rules"] if "alert" in r]
    assert len(found) >= 6
    return found


def expand(template: str) -> str:
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: SAMPLE_LABELS[m.group(1)], template)


def named_commands(text: str) -> list[list[str]]:
    """Every `stockade …` in backquotes, as argv after the program name."""
    return [shlex.split(cmd)[1:] for cmd in re.findall(r"`(stockade(?: [^`]*)?)`", text)]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation out, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_anchors() -> set[str]:
    text = re.sub(r"^```.*?^```", "", (REPO / "README.md").read_text(), flags=re.S | re.M)
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_annotations_name_only_real_commands() -> None:
    from stockade.brain.drops.flows import FIELDS
    from stockade.cli.main import build_parser

    cli = build_parser()
    seen = 0
    for alert in alerts():
        for text in alert["annotations"].values():
            for argv in named_commands(expand(text)):
                args = parse(cli, argv)  # the real parser: an unknown command or flag fails here
                seen += 1
                for field in getattr(args, "by", "").split(",") if argv[:2] == ["drops", "top"] else ():
                    assert field in FIELDS, f"{alert['alert']}: `--by {field}` is no field of a flow"
    assert seen >= 2  # the blocked-connections alert names where to look


def test_the_command_check_can_fail() -> None:
    from stockade.cli.main import build_parser

    (argv,) = named_commands("See `stockade top` for the flows.")  # the command the alert once named
    with pytest.raises(AssertionError, match="rejects"):
        parse(build_parser(), argv)


def test_every_alert_links_its_runbook_in_the_readme() -> None:
    anchors = readme_anchors()
    for alert in alerts():
        url = alert["annotations"].get("runbook_url", "")
        assert url == RUNBOOK_BASE + alert["alert"].lower(), f"{alert['alert']}: runbook_url {url!r}"
        anchor = url.removeprefix(RUNBOOK_BASE)
        assert anchor in anchors, f"{alert['alert']}: README.md has no heading `#### {alert['alert']}`"


def test_anchors_follow_github() -> None:
    assert github_anchor("Without the Prometheus Operator") == "without-the-prometheus-operator"
    assert github_anchor("`stockade brain`") == "stockade-brain"
    assert (
        github_anchor("Admin commands (`stockade nodes`, `policies`, …)") == "admin-commands-stockade-nodes-policies-"
    )
    assert github_anchor("StockadeAgentDisconnected") == "stockadeagentdisconnected"
    assert "verify" in readme_anchors()
