"""A night's export on the embedded runner, through the API: yesterday's answers, sent
after today's live traffic (hours late), are fully counted, and the scores equal a fresh
engine fed the same answers in time order. Each score says how many answers came late
and when its window was last revised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from service_support import CONFIG, NOW, READ, WRITE, auth, event

from schemas import EventDecoder
from streams.engine.engine import Engine, event_seconds

LIVE_START = NOW - timedelta(hours=3)
EXPORT_DAY = datetime.combine((LIVE_START - timedelta(days=1)).date(), datetime.min.time(),
                              UTC)


def live(i: int) -> dict[str, Any]:
    return event(i, occurred_at=(LIVE_START + timedelta(seconds=20 * i)).isoformat(),
                 channel=("chat", "phone")[i % 2])


def exported(i: int) -> dict[str, Any]:
    return event(10_000 + i, occurred_at=(EXPORT_DAY + timedelta(seconds=180 * i))
                 .isoformat(), channel=("email", "sms")[i % 2], value=1 + i % 5)


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/events", json=events, headers=auth(WRITE))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def scores(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/scores?{query}", headers=auth(READ))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_nights_export_is_fully_counted(client: httpx.AsyncClient) -> None:
    today = [live(i) for i in range(400)]  # 20 s apart: 2 h 13 min of live traffic
    night = [exported(i) for i in range(480)]  # every 3 minutes of the day before
    for lo in range(0, len(today), 200):
        await post(client, today[lo:lo + 200])
    for lo in range(0, len(night), 160):
        answer = await post(client, night[lo:lo + 160])
        assert answer["accepted"] == 160, answer
    letters = (await client.get("/v1/dead-letters", headers=auth(READ))).json()
    assert letters["items"] == []

    decoder = EventDecoder()
    oracle = Engine(CONFIG)
    oracle.ingest(sorted((decoder.convert(e) for e in today + night), key=event_seconds))
    label = EXPORT_DAY.date().isoformat()
    for query, family, window, period in (
        (f"family=periodic&window=day&period={label}&scope=channel", "periodic", "day",
         label),
        ("family=continuous&window=7d&scope=channel", "continuous", "7d", None),
        ("family=continuous&window=24h", "continuous", "24h", None),
        ("family=periodic&window=week", "periodic", "week", None),
    ):
        got = await scores(client, query)
        want = oracle.scores(family, window, period=period,  # type: ignore[arg-type]
                             scope=("channel",) if "scope=" in query else None)
        assert [(s["scope"], s["metric"], s["n"]) for s in got] == [
            (s.scope, s.metric, s.score.n) for s in want], query
        assert [s["value"] for s in got] == pytest.approx([s.score.value for s in want])

    day = {s["scope"]["channel"]: s for s in await scores(
        client, f"family=periodic&window=day&period={label}&scope=channel")}
    assert {c: (s["n"], s["late_answers"]) for c, s in day.items()} == {
        "email": (240, 240), "sms": (240, 240)}
    newest = datetime.fromisoformat(max(e["occurred_at"] for e in today))
    assert all(datetime.fromisoformat(s["revised_at"]) == newest for s in day.values())
    hour = await scores(client, "family=continuous&window=1h")
    assert [(s["late_answers"], s["revised_at"]) for s in hour] == [(0, None)]
