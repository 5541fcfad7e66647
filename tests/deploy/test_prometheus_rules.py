"""The shipped Prometheus configuration and rules: promtool's checks and unit tests,
and the conventions the alert path relies on (labels, annotations, runbooks)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from touchstream_stack import PROMETHEUS_DIR, REPO, require, run

RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
SATISFACTION = {"TouchstreamSatisfactionDrop", "TouchstreamBelowTarget", "TouchstreamSlowDrift"}
PIPELINE = {"TouchstreamPipelineStale", "TouchstreamDeadLetterSurge", "TouchstreamDetectionFailing"}


def rules(kind: str) -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if kind in rule]


@pytest.mark.integration
def test_promtool_check_config() -> None:
    checked = run([require("promtool", "prometheus"), "check", "config",
                   str(PROMETHEUS_DIR / "prometheus.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 2 rule files found" in checked.stdout


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    checked = run([require("promtool", "prometheus"), "check", "rules",
                   *map(str, RULES)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    assert {p.name for p in UNIT_TESTS} == {"alerts_test.yml", "recording_test.yml"}
    tested = run([require("promtool", "prometheus"), "test", "rules", *map(str, UNIT_TESTS)])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(UNIT_TESTS)


def test_every_rule_has_unit_tests() -> None:
    """Each recording rule is queried, and each alert expected, in the promtool tests;
    each alert has a case where it fires and one where it does not."""
    tests = [yaml.safe_load(p.read_text()) for p in UNIT_TESTS]
    queried = " ".join(case["expr"] for t in tests for group in t["tests"]
                       for case in group.get("promql_expr_test", []))
    for rule in rules("record"):
        assert rule["record"] in queried, f"{rule['record']} has no promql_expr_test"
    cases = [case for t in tests for group in t["tests"]
             for case in group.get("alert_rule_test", [])]
    for name in {rule["alert"] for rule in rules("alert")}:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{name} never stays quiet"


def test_alerts_carry_routing_labels_and_annotations() -> None:
    names = {rule["alert"] for rule in rules("alert")}
    assert names == SATISFACTION | PIPELINE
    for rule in rules("alert"):
        assert {"severity", "owner"} <= rule["labels"].keys(), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys()
        if rule["alert"] in PIPELINE:
            assert rule["labels"]["owner"] == "platform"
            assert rule["labels"]["severity"] in ("critical", "warning")
        else:  # owner and severity come from the detector's series; job must survive
            assert "$labels.owner" in rule["labels"]["owner"]
            assert "$labels.severity" in rule["labels"]["severity"]
            assert "by (" not in rule["expr"] and "without (instance)" in rule["expr"]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_urls_point_at_sections_of_docs_alerting() -> None:
    doc = (REPO / "docs" / "alerting.md").read_text(encoding="utf-8")
    anchors = {_anchor(line.lstrip("#")) for line in doc.splitlines() if line.startswith("#")}
    prefix = "https://github.com/touchstream/touchstream/blob/main/docs/alerting.md#"
    for rule in rules("alert"):
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(prefix), url
        assert url.removeprefix(prefix) in anchors, f"{url}: no such section"
        assert url.removeprefix(prefix) == rule["alert"].lower()
