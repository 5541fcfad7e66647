"""The alert path end to end, with real components: ``touchstream serve`` receives a
week of steady chat and phone CSAT and then a bad hour in chat; Prometheus (shipped
rules) scrapes it, Alertmanager (shipped routing and inhibition) pages a webhook.

The page carries the drop's attribution (what explains it: chat) in its annotations.

Also: every PromQL expression of the rules and the dashboard runs against that
Prometheus without error, and the score panels have data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from touchstream_stack import (
    GRAFANA_DIR,
    Notification,
    Stack,
    dashboard_expressions,
    poll,
    recovery_events,
    rule_expressions,
    substitute,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DROP = "TouchstreamSatisfactionDrop"


def _drop_alerts(n: Notification, status: str, scope: str = "channel=chat"
                 ) -> list[dict[str, Any]]:
    return [a for a in n.alerts if a["labels"].get("alertname") == DROP
            and a["labels"].get("scope") == scope and a["status"] == status]


def test_prometheus_scrapes_the_service_and_every_rule_is_healthy(stack: Stack) -> None:
    def scraped() -> bool | None:
        answer = stack.query('up{job="touchstream"}')
        values = [float(r["value"][1]) for r in answer["data"]["result"]]
        return True if values == [1.0] else None

    poll("Prometheus to scrape the service", scraped, 30, diagnostics=stack.logs)

    def evaluated() -> list[dict[str, Any]] | None:
        found = stack.rules()
        done = all(r["health"] != "unknown" for r in found)
        return found if found and done else None

    found = poll("every rule to be evaluated", evaluated, 30, diagnostics=stack.logs)
    assert len(found) == len(rule_expressions())
    bad = [(r["name"], r["health"], r.get("lastError")) for r in found if r["health"] != "ok"]
    assert not bad, bad


def test_every_rule_expression_runs(stack: Stack) -> None:
    for where, expr in rule_expressions().items():
        answer = stack.query(expr)
        assert answer["status"] == "success", (where, answer)


def test_every_dashboard_expression_runs_and_score_panels_have_data(stack: Stack) -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "touchstream.json").read_text())
    expressions = dashboard_expressions(dashboard)
    scores = {w: e for w, e in expressions.items() if "touchstream_score" in e}
    assert len(scores) >= 10

    def ready() -> bool | None:
        return True if all(stack.query(substitute(e))["data"]["result"]
                           for e in scores.values()) else None

    poll("every score query to return data", ready, 30, diagnostics=stack.logs)
    for where, expr in expressions.items():
        answer = stack.query(substitute(expr))
        assert answer["status"] == "success", (where, substitute(expr), answer)
    # The chat score in the table is the bad last hour's: 12 satisfied of 60.
    chat = stack.query('touchstream_score{metric="csat", window="1h", scope="channel", '
                       'channel="chat"}')["data"]["result"]
    assert [round(float(r["value"][1]), 3) for r in chat] == [0.2]


def test_drop_pages_its_owner_is_inhibited_by_a_stale_pipeline_and_resolves(
        stack: Stack) -> None:
    # 1. The detector sees the drop (GET /v1/alerts) ...
    def firing() -> list[dict[str, Any]] | None:
        found = [a for a in stack.alerts(state="firing") if a["rule"] == "csat-drop-1h"]
        return found or None

    alerts = poll("the detector to fire the drop", firing, 30, diagnostics=stack.logs)
    assert [a["scope"] for a in alerts] == [{"channel": "chat"}]
    assert alerts[0]["evidence"]["window_n"] == 60

    # 2. ... and the page arrives: to the pager, routed by severity, with the owner.
    page = stack.notification(lambda n: n.receiver == "pager" and bool(_drop_alerts(n, "firing")),
                              "paging TouchstreamSatisfactionDrop for chat")
    labels = _drop_alerts(page, "firing")[0]["labels"]
    assert labels["owner"] == "support"
    assert labels["severity"] == "critical"
    assert labels["job"] == "touchstream"
    assert labels["metric"] == "csat"
    assert page.payload["groupLabels"] == {"alertname": DROP, "owner": "support",
                                           "scope": "channel=chat"}
    annotations = _drop_alerts(page, "firing")[0]["annotations"]
    assert annotations["runbook_url"].endswith("docs/alerting.md#touchstreamsatisfactiondrop")
    # The page says what explains the drop: the planted cause, chat, leads it.
    attribution = annotations["attribution"]
    assert "channel=chat" in attribution and " of the drop; " in attribution, attribution
    assert "effect" in attribution and "not attributed" not in attribution, attribution
    assert f"Attribution: {attribution}." in annotations["description"]
    detector = stack.alerts(state="firing")
    (chat,) = [a for a in detector if a["rule"] == "csat-drop-1h"]
    assert chat["attribution_summary"] and chat["explained_by"] is None
    # The owner's own receiver gets it too (the pager route continues).
    stack.notification(lambda n: n.receiver == "support" and bool(_drop_alerts(n, "firing")),
                       "to the support receiver")

    # 3. The below-target alert of the same scope is inhibited by the drop.
    def inhibited(**labels: str) -> bool | None:
        found = stack.am_alerts(**labels)
        return True if found and all(a["status"]["state"] == "suppressed"
                                     and a["status"]["inhibitedBy"] for a in found) else None

    poll("the drop to inhibit chat's below-target alert",
         lambda: inhibited(alertname="TouchstreamBelowTarget", scope="channel=chat"), 30,
         diagnostics=stack.logs)

    # 4. A stale pipeline of the same job silences the drop.
    stale = {"alertname": "TouchstreamPipelineStale", "job": "touchstream",
             "cause": "scoreboard_stale", "owner": "platform", "severity": "critical"}
    stack.am_post(stale, annotations={"summary": "stale pipeline (sent by the test)"})
    poll("the stale pipeline to inhibit the drop",
         lambda: inhibited(alertname=DROP, scope="channel=chat"), 15, diagnostics=stack.logs)
    stack.notification(lambda n: n.receiver == "platform-pager", "paging the platform team")
    stack.am_post(stale, resolved=True)

    def active() -> bool | None:
        found = stack.am_alerts(alertname=DROP, scope="channel=chat")
        return True if found and found[0]["status"]["state"] == "active" else None

    poll("the drop to be active again", active, 15, diagnostics=stack.logs)

    # 5. Chat recovers: the detector resolves the alert, and the page resolves.
    stack.post_events(recovery_events(datetime.now(UTC)))
    stack.notification(lambda n: n.receiver == "pager" and bool(_drop_alerts(n, "resolved")),
                       "resolving the chat page")
    assert not [a for a in stack.alerts() if a["state"] != "resolved"
                and a["rule"] == "csat-drop-1h"]

    # Healthy phone paged nobody, at any point.
    phone = [n.summary() for n in stack.webhook.notifications
             if any("channel=phone" in a["labels"].get("scope", "") for a in n.alerts)]
    assert not phone, phone
