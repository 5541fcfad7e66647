"""The shipped Alertmanager configuration: amtool's check, the routing tree, and
inhibition in a real Alertmanager (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from touchstream_stack import (
    ALERTMANAGER_DIR,
    Process,
    Stack,
    WebhookEcho,
    alertmanager_config,
    free_port,
    poll,
    require,
    run,
)

pytestmark = pytest.mark.integration

CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"


def test_amtool_check_config() -> None:
    checked = run([require("amtool", "prometheus-alertmanager"), "check-config", str(CONFIG)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 inhibit rules" in checked.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    # A critical satisfaction alert pages, and reaches the owning team's channel too.
    ({"alertname": "TouchstreamSatisfactionDrop", "owner": "support", "severity": "critical",
      "scope": "channel=chat"}, "pager,support"),
    ({"alertname": "TouchstreamSatisfactionDrop", "owner": "digital", "severity": "warning",
      "scope": "channel=app"}, "digital"),
    ({"alertname": "TouchstreamBelowTarget", "owner": "customer_experience",
      "severity": "warning", "scope": "segment=enterprise"}, "customer-experience"),
    # Owners without a route: the default receiver (after the pager when critical).
    ({"alertname": "TouchstreamSlowDrift", "owner": "cabin", "severity": "warning",
      "scope": "overall"}, "satisfaction-default"),
    ({"alertname": "TouchstreamSatisfactionDrop", "owner": "unassigned",
      "severity": "critical", "scope": "overall"}, "pager,satisfaction-default"),
    # Pipeline alerts: the platform team, paged when critical, never the satisfaction pager.
    ({"alertname": "TouchstreamPipelineStale", "owner": "platform", "severity": "critical",
      "cause": "no_events", "job": "touchstream"}, "platform-pager"),
    ({"alertname": "TouchstreamDeadLetterSurge", "owner": "platform", "severity": "warning",
      "job": "touchstream"}, "platform"),
    ({"alertname": "TouchstreamDetectionFailing", "owner": "platform", "severity": "critical",
      "job": "touchstream"}, "platform-pager"),
])
def test_routes(labels: dict[str, str], receivers: str) -> None:
    tested = run([require("amtool", "prometheus-alertmanager"), "config", "routes", "test",
                  f"--config.file={CONFIG}", f"--verify.receivers={receivers}",
                  *(f"{k}={v}" for k, v in labels.items())])
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Stack]:
    """Only Alertmanager (shipped config, webhooks to a local receiver)."""
    binary = require("prometheus-alertmanager", "prometheus-alertmanager")
    webhook = WebhookEcho().start()
    port = free_port()
    stack = Stack(tmp_path, webhook, alertmanager=f"http://127.0.0.1:{port}")
    try:
        (tmp_path / "alertmanager.yml").write_text(
            json.dumps(alertmanager_config(webhook.url)))
        process = Process("alertmanager", [
            binary, f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=", "--log.level=debug"], tmp_path / "alertmanager.log")
        stack.processes.append(process.start())
        process.wait_ready(f"{stack.alertmanager}/-/ready")
        yield stack
    finally:
        for process in stack.processes:
            process.stop()
        webhook.stop()


def _state(stack: Stack, **labels: str) -> tuple[str, list[str]] | None:
    found = stack.am_alerts(**labels)
    if len(found) != 1:
        return None
    return found[0]["status"]["state"], found[0]["status"]["inhibitedBy"]


def test_inhibition(alertmanager: Stack) -> None:
    """A stale pipeline silences the satisfaction alerts of its own job only; a drop
    silences the below-target and drift alerts of its own metric and scope only."""
    drop = {"alertname": "TouchstreamSatisfactionDrop", "job": "touchstream",
            "metric": "csat", "scope": "channel=chat", "owner": "support",
            "severity": "critical"}
    other_job = {**drop, "job": "touchstream-eu"}
    target_same = {**drop, "alertname": "TouchstreamBelowTarget", "severity": "warning"}
    target_other = {**target_same, "scope": "channel=phone"}
    drift_nps = {**drop, "alertname": "TouchstreamSlowDrift", "metric": "nps",
                 "severity": "warning"}
    for labels in (drop, other_job, target_same, target_other, drift_nps):
        alertmanager.am_post(labels)

    def settled(labels: dict[str, str], state: str) -> bool | None:
        found = _state(alertmanager, **labels)
        return True if found is not None and found[0] == state else None

    poll("the drop to inhibit the same scope's below-target alert",
         lambda: settled(target_same, "suppressed"), 15, diagnostics=alertmanager.logs)
    for labels in (drop, other_job, target_other, drift_nps):
        poll(f"{labels['alertname']} {labels['scope']} {labels['job']} to stay active",
             lambda labels=labels: settled(labels, "active"), 15,
             diagnostics=alertmanager.logs)

    stale = {"alertname": "TouchstreamPipelineStale", "job": "touchstream",
             "cause": "scoreboard_stale", "owner": "platform", "severity": "critical"}
    alertmanager.am_post(stale)
    poll("the stale pipeline to inhibit the drop of its job",
         lambda: settled(drop, "suppressed"), 15, diagnostics=alertmanager.logs)
    assert _state(alertmanager, **other_job) == ("active", [])
    alertmanager.notification(
        lambda n: n.receiver == "platform-pager" and n.payload["status"] == "firing",
        "to platform-pager for the stale pipeline", timeout=15)

    alertmanager.am_post(stale, resolved=True)
    poll("the drop to be active again once the pipeline recovers",
         lambda: settled(drop, "active"), 15, diagnostics=alertmanager.logs)
    assert httpx.get(f"{alertmanager.alertmanager}/-/healthy", timeout=5).status_code == 200
