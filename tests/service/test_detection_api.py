"""GET /v1/detection: each watched series' sequential evidence and time to decision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import ADMIN, CONFIG, auth

from service.app import create_app
from service.settings import Settings
from streams.detection import DetectionConfig, DropRule
from streams.embedded import EmbeddedRunner

DETECTION = DetectionConfig(drops=(DropRule(
    name="csat-seq", metric="csat", test="sequential", scopes=((), ("channel",), ("segment",)),
    horizon="1d", baseline=("prior", "2d")),))
NOW = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) - timedelta(hours=2)


def csat(i: int, at: datetime, value: int, channel: str) -> dict[str, Any]:
    return {"event_id": f"e-{i}", "occurred_at": at.isoformat(), "customer_id": f"c-{i % 97}",
            "touchpoint": "support", "channel": channel, "segment": "enterprise",
            "kind": "csat", "value": value}


def traffic() -> list[dict[str, Any]]:
    """Three days of chat and phone CSAT at 85% top-2-box, then chat at 40% for 90 min."""
    events, i = [], 0
    for hour in range(72, 0, -1):
        for k in range(20):
            at = NOW - timedelta(hours=hour) + timedelta(minutes=3 * k)
            for channel in ("chat", "phone"):
                events.append(csat(i, at, 5 if k % 20 < 17 else 2, channel))
                i += 1
    for k in range(90):
        at = NOW + timedelta(minutes=k)
        events.append(csat(i, at, 4 if k % 5 < 2 else 1, "chat"))
        events.append(csat(i + 1, at, 5 if k % 20 < 17 else 2, "phone"))
        i += 2
    return events


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, api_keys=SecretStr(f"boss:admin+read+write:{ADMIN}"))
    async with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as runner:
        app = create_app(settings, runner, CONFIG, CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t", headers=auth(ADMIN)) as c:
            events = traffic()
            for start in range(0, len(events), 1000):
                body = (await c.post("/v1/events",
                                     json={"events": events[start:start + 1000]})).json()
                assert body["rejected"] == 0, body["results"][:3]
            yield c


async def test_each_series_shows_its_evidence_and_time_to_decision(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/v1/detection")).json()
    items = body["items"]
    by_scope = {tuple(sorted(i["scope"].items())): i for i in items}
    chat, phone = by_scope[(("channel", "chat"),)], by_scope[(("channel", "phone"),)]
    # closest to paging first: the chat drop holds, decided now
    assert items[0] is not None and items[0]["scope"] in ({"channel": "chat"}, {})
    assert chat["tested"] and chat["holds"] and chat["evidence"] >= 1.0
    assert chat["llr"] >= chat["threshold"] > 0 and chat["decision_hours"] == 0.0
    assert chat["shift"] > 0 and chat["change_n"] > 0 and 900 <= chat["baseline_n"] <= 960
    # answered 5 or 2 only: no middle to test a destination against, the top-only test
    assert chat["destination"] == "rest"
    change = datetime.fromisoformat(chat["change_start"])
    assert abs(change - NOW) <= timedelta(minutes=30)
    assert chat["per_hour"] > 10 and chat["false_page_days"] >= 30
    # the steady channel: tested, far from its threshold, nothing decided
    assert phone["tested"] and not phone["holds"] and phone["evidence"] < 0.5
    assert phone["decision_hours"] is None or phone["decision_hours"] > 0
    # every answer is enterprise: that series repeats overall, and says so
    copy = by_scope[(("segment", "enterprise"),)]
    assert copy["tested"] is False and "copy" in copy["reason"]
    # the alert the detector opened is on the series the state says holds
    firing = (await client.get("/v1/alerts?state=firing")).json()["items"]
    assert {"channel": "chat"} in [a["scope"] for a in firing]
    assert {"channel": "phone"} not in [a["scope"] for a in firing]
    # filters
    held = (await client.get("/v1/detection?holds=true")).json()["items"]
    assert {"channel": "chat"} in [i["scope"] for i in held] and all(i["holds"] for i in held)
    assert (await client.get("/v1/detection?rule=nope")).json()["total"] == 0
    assert (await client.get("/v1/detection", headers={"Authorization": "Bearer x"})
            ).status_code == 401
