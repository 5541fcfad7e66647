"""Alerts and follow-ups through the API: a real drop becomes a firing alert with evidence."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from service_support import ADMIN, CONFIG, auth

from service.app import create_app
from service.metrics import read_alerts, read_scoreboard
from service.settings import Settings
from streams.detection import DetectionConfig, Detector, DropRule, FollowUpRule
from streams.embedded import EmbeddedRunner

DETECTION = DetectionConfig(
    drops=(DropRule(name="csat-drop", metric="csat", scopes=(("channel",),), hold_seconds=0,
                    min_n_window=50, min_n_baseline=100, severity="critical",
                    owner="support"),),
    followups=(FollowUpRule(name="key-detractors", condition="very_dissatisfied",
                            segments=("enterprise",), owner="account-team"),),
)
NOW = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) - timedelta(hours=1)


def csat(i: int, at: datetime, value: int, channel: str = "chat") -> dict[str, Any]:
    return {"event_id": f"e-{i}", "occurred_at": at.isoformat(), "customer_id": f"c-{i % 97}",
            "touchpoint": "support", "channel": channel, "segment": "enterprise",
            "kind": "csat", "value": value}


def drop_traffic() -> list[dict[str, Any]]:
    """Three days of good chat CSAT (85% top-2-box), then an hour at 40%."""
    events, i = [], 0
    for hour in range(72, 0, -1):
        for k in range(20):
            at = NOW - timedelta(hours=hour) + timedelta(minutes=3 * k)
            events.append(csat(i, at, 5 if k % 20 < 17 else 2))
            events.append(csat(i + 1, at, 5 if k % 20 < 17 else 2, channel="phone"))
            i += 2
    for k in range(120):
        at = NOW + timedelta(seconds=30 * k)
        events.append(csat(i, at, 4 if k % 5 < 2 else 1))
        events.append(csat(i + 1, at, 5 if k % 20 < 17 else 2, channel="phone"))
        i += 2
    return events


@pytest.fixture
async def alert_client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(data_dir=tmp_path, api_keys=SecretStr(f"boss:admin+read+write:{ADMIN}"))
    async with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as runner:
        app = create_app(settings, runner, CONFIG, CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t", headers=auth(ADMIN)) as client:
            events = drop_traffic()
            for start in range(0, len(events), 1000):
                body = (await client.post("/v1/events",
                                          json={"events": events[start:start + 1000]})).json()
                assert body["rejected"] == 0, body["results"][:3]
            yield client, app


async def test_a_real_drop_fires_with_evidence_and_owner(
    alert_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, _ = alert_client
    listed = (await client.get("/v1/alerts?state=firing")).json()
    assert [(a["rule"], a["scope"], a["owner"], a["severity"]) for a in listed["items"]] == [
        ("csat-drop", {"channel": "chat"}, "support", "critical")]
    alert = (await client.get(f"/v1/alerts/{listed['items'][0]['id']}")).json()
    evidence = alert["evidence"]
    assert evidence["window_n"] >= 50 and evidence["baseline_n"] >= 100
    assert evidence["window_score"] == pytest.approx(0.4, abs=0.05)
    assert evidence["baseline_score"] == pytest.approx(0.85, abs=0.02)
    assert evidence["q"] < 0.05
    # What explains it: the one line for a page, and the decomposition behind it.
    assert alert["attribution_summary"], alert
    assert alert["attribution_summary"] == evidence["attribution_summary"]
    assert "explains" in alert["attribution_summary"]
    assert "of the drop" in alert["attribution_summary"]
    assert evidence["attribution"]["lead"]["channel"] == "chat"
    assert alert["explained_by"] is None
    assert (await client.get("/v1/alerts/nope")).status_code == 404
    assert (await client.get("/v1/alerts?owner=nobody")).json()["items"] == []


async def test_very_dissatisfied_key_customers_become_followups(
    alert_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, _ = alert_client
    body = (await client.get("/v1/followups?status=open&limit=5")).json()
    assert body["total"] > 0
    first = body["items"][0]
    assert first["owner"] == "account-team" and first["segment"] == "enterprise"
    assert first["status"] == "open"


async def test_alerts_are_exported_to_prometheus(
    alert_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, app = alert_client
    runner = app.state.runner
    board = await runner.read(lambda e: read_scoreboard(e, ("continuous:1h",)))
    await runner.read_detector(lambda d: read_alerts(d, board))
    app.state.metrics.board = board
    text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (active,) = families["touchstream_alert_active"].samples
    assert active.labels == {"rule": "csat-drop", "kind": "drop", "metric": "csat",
                             "scope": "channel=chat", "owner": "support",
                             "severity": "critical", "state": "firing"}
    changes = {s.labels["state"]: s.value for s in families["touchstream_alert_changes"].samples
               if s.name.endswith("_total")}
    assert changes["firing"] >= 1
    # The attribution of the drop: its lead cell (inside chat), the share and the effect.
    (ratio,) = families["touchstream_alert_attribution_ratio"].samples
    assert {k: ratio.labels[k] for k in ("rule", "metric", "scope")} == {
        "rule": "csat-drop", "metric": "csat", "scope": "channel=chat"}
    assert "channel=chat" in ratio.labels["lead"]
    assert ratio.labels["effect"] in {"rate", "mix", "rate+mix", "spread", "journey"}
    assert 0.0 < ratio.value
    # Nothing else fires, so nothing explains it: the explained gauge is empty.
    assert families["touchstream_alert_explained"].samples == []


async def test_followups_are_assigned_and_closed_with_who_and_a_note(
    alert_client: tuple[httpx.AsyncClient, Any]
) -> None:
    client, app = alert_client
    opened = (await client.get("/v1/followups?status=open&limit=1000")).json()
    first = opened["items"][0]["id"]
    assigned = await client.post(f"/v1/followups/{first}/assign",
                                 json={"assignee": "Þórdís Ólafsdóttir", "note": "call back"})
    assert assigned.status_code == 200, assigned.text
    body = assigned.json()
    assert (body["status"], body["assignee"], body["note"], body["updated_by"]) == (
        "open", "Þórdís Ólafsdóttir", "call back", "boss")
    closed = (await client.post(f"/v1/followups/{first}/close",
                                json={"note": "refunded; تم الحل"})).json()
    assert (closed["status"], closed["note"], closed["updated_by"]) == (
        "closed", "refunded; تم الحل", "boss")
    assert closed["closed_at"] is not None and closed["assignee"] == "Þórdís Ólafsdóttir"
    # Closing again changes nothing; assigning a closed one is a conflict.
    again = await client.post(f"/v1/followups/{first}/close", json={"note": "again"})
    assert again.status_code == 200 and again.json()["note"] == "refunded; تم الحل"
    conflict = await client.post(f"/v1/followups/{first}/assign", json={"assignee": "x"})
    assert conflict.status_code == 409
    assert (await client.post("/v1/followups/nope/close", json={"note": "x"})).status_code == 404
    assert (await client.post(f"/v1/followups/{first}/close", json={})).status_code == 422
    after = (await client.get("/v1/followups?status=open&limit=1000")).json()
    assert after["total"] == opened["total"] - 1
    # The open-follow-ups gauge counts it out.
    runner = app.state.runner
    board = await runner.read(lambda e: read_scoreboard(e, ("continuous:1h",)))
    await runner.read_detector(lambda d: read_alerts(d, board))
    assert board.followups_open == opened["total"] - 1


async def test_a_closed_followup_stays_closed_after_a_crash_and_a_restart(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys=SecretStr(f"boss:admin+read+write:{ADMIN}"))
    events = drop_traffic()[-400:]
    runner = EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION)
    runner.open()
    app = create_app(settings, runner, CONFIG, CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t", headers=auth(ADMIN)) as client:
        await client.post("/v1/events", json={"events": events})
        items = (await client.get("/v1/followups?limit=1000")).json()["items"]
        target = items[1]["id"]
        await client.post(f"/v1/followups/{target}/assign", json={"assignee": "ann"})
        await client.post(f"/v1/followups/{target}/close", json={"note": "done"})
    assert runner.stats()["snapshots"] == 0
    # A crash: no final snapshot (the log is replayed); the lock goes with the process.
    runner._release()
    del runner, app, client
    gc.collect()

    def seen(detector: Detector) -> tuple[Any, ...] | None:
        found = detector.followups.get(target)
        return None if found is None else (found.status, found.assignee, found.note,
                                           found.updated_by)

    want = ("closed", "ann", "done", "boss")
    async with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as again:
        assert await again.read_detector(seen) == want
    async with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as again:  # snapshot
        assert await again.read_detector(seen) == want
