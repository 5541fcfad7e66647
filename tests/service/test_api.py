"""Every endpoint as a caller uses it: auth, bad input, answers that match the engine."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_support import ADMIN, NOW, READ, WRITE, auth, event

from service.app import create_app
from service.metrics import read_scoreboard
from service.routes import events as events_route
from service.settings import Settings, parse_api_keys
from streams.runner import EventOutcome


async def post(client: httpx.AsyncClient, events: Any, key: str = WRITE) -> httpx.Response:
    return await client.post("/v1/events", json=events, headers=auth(key))


# -- auth -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_open_endpoints_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200


@pytest.mark.parametrize("path", ["/v1/scores", "/v1/pulses", "/v1/customers/c",
                                  "/v1/journeys/j", "/v1/dead-letters", "/v1/scores/journeys"])
async def test_reads_need_a_valid_key(client: httpx.AsyncClient, path: str) -> None:
    missing = await client.get(path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await client.get(path, headers=auth("not-a-key-0123456789"))
    assert wrong.status_code == 401
    ok = await client.get(path, headers={"X-API-Key": READ})
    assert ok.status_code in (200, 404)


async def test_scopes_are_enforced(client: httpx.AsyncClient) -> None:
    denied = await post(client, [event(1)], key=READ)
    assert denied.status_code == 403
    assert "write" in denied.json()["detail"]
    pulse = {"name": "p", "start": NOW.isoformat(), "end": (NOW + timedelta(1)).isoformat(),
             "baseline_start": (NOW - timedelta(7)).isoformat(),
             "baseline_end": NOW.isoformat()}
    assert (await client.post("/v1/pulses", json=pulse, headers=auth(WRITE))).status_code == 403
    assert (await client.post("/v1/pulses", json=pulse, headers=auth(ADMIN))).status_code == 201


def test_keys_are_parsed_hashed_and_placeholders_refused() -> None:
    (key,) = parse_api_keys("ops:read+write:a-long-enough-secret-value")
    assert key.scopes == {"read", "write"}
    assert b"a-long-enough" not in key.digest
    with pytest.raises(ValueError, match="unknown scope"):
        parse_api_keys("ops:root:a-long-enough-secret-value")
    with pytest.raises(ValueError, match="outside development"):
        Settings(environment="production", api_keys="ops:read:changeme")
    with pytest.raises(ValueError, match="outside development"):
        Settings(environment="production")


# -- ingestion ------------------------------------------------------------------------

async def test_batch_outcomes_in_order_with_reasons(client: httpx.AsyncClient) -> None:
    batch = [event(1), event(2, value=9), event(1), {"kind": "nps"}, event(3, comment="Þökk ☕")]
    response = await post(client, {"events": batch})
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 2)
    statuses = [(r["index"], r["status"], r["field"]) for r in body["results"]]
    assert statuses == [(0, "accepted", None), (1, "rejected", "value"),
                        (2, "duplicate", None), (3, "rejected", "value"),
                        (4, "accepted", None)]
    assert body["results"][1]["reason"] == "Expected `int` <= 5"
    again = await post(client, [event(1)])
    assert again.json()["results"][0]["status"] == "duplicate"
    letters = (await client.get("/v1/dead-letters", headers=auth(READ))).json()["items"]
    assert {(d["field"], d["reason"]) for d in letters} >= {("value", "Expected `int` <= 5")}


async def test_a_rejected_event_lists_every_problem(client: httpx.AsyncClient) -> None:
    broken = event(20, value=9, occurred_at="yesterday", segment="")
    del broken["customer_id"]
    response = await post(client, [event(21), broken, {"kind": "stars", "value": 1}])
    assert response.status_code == 200
    accepted, rejected, unknown = response.json()["results"]
    assert "problems" not in accepted
    assert (rejected["status"], rejected["field"], rejected["reason"]) == (
        "rejected", "value", "Expected `int` <= 5")
    assert rejected["problems"] == [
        {"field": "value", "reason": "Expected `int` <= 5"},
        {"field": "occurred_at", "reason": "Invalid RFC3339 encoded datetime"},
        {"field": "customer_id", "reason": "is required"},
        {"field": "segment", "reason": "Expected `str` of length >= 1"},
    ]
    assert [(p["field"], p["reason"]) for p in unknown["problems"]] == [
        ("kind", "unknown kind (expected one of csat, nps, ces, rating, outcome, sentiment)"),
        *[(f, "is required") for f in ("event_id", "occurred_at", "customer_id",
                                       "touchpoint", "channel")]]
    one = (await post(client, event(22, value="4"))).json()["results"][0]
    assert one["problems"] == [{"field": "value", "reason": "Expected `int`, got `str`"}]
    # dead letters keep the first problem, as before
    letters = (await client.get("/v1/dead-letters", headers=auth(READ))).json()["items"]
    assert ("value", "Expected `int` <= 5") in {(d["field"], d["reason"]) for d in letters}


def test_the_runners_first_problem_leads_even_on_another_clock() -> None:
    # a runner on another clock (or other limits) rejected an event this route's
    # decoder would accept, or for another time: its own problem stays first
    future = event(30, occurred_at=(NOW + timedelta(hours=3)).isoformat())
    outcome = EventOutcome(0, "rejected", "evt-30", "occurred_at", "is far away")
    assert events_route._problems(future, outcome) == [
        {"field": "occurred_at", "reason": "is far away"}]
    late_and_bad = {**future, "value": 9}
    outcome = EventOutcome(0, "rejected", "evt-30", "value", "Expected `int` <= 5")
    assert [p["field"] for p in events_route._problems(late_and_bad, outcome)] == [
        "value", "occurred_at"]
    odd = EventOutcome(0, "rejected", "evt-30", "event_id", "is odd")
    first, second, third = events_route._problems(late_and_bad, odd)
    assert (first, second) == ({"field": "event_id", "reason": "is odd"},
                               {"field": "value", "reason": "Expected `int` <= 5"})
    assert third["field"] == "occurred_at" and "in the future" in third["reason"]


async def test_the_answer_to_events_is_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    answer = spec["paths"]["/v1/events"]["post"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventsAnswer"}
    result = spec["components"]["schemas"]["EventResult"]["properties"]
    assert result["problems"]["items"] == {"$ref": "#/components/schemas/EventProblem"}
    assert "every problem" in result["problems"]["description"]
    assert set(spec["components"]["schemas"]["EventProblem"]["required"]) == {"field",
                                                                             "reason"}


async def test_single_event_and_bare_array_bodies(client: httpx.AsyncClient) -> None:
    assert (await post(client, event(10))).json()["accepted"] == 1
    assert (await post(client, [event(11), event(12)])).json()["accepted"] == 2


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 400, "$"),
    (b'"a string"', 400, "$"),
    (b'{"events": 5}', 400, "events"),
])
async def test_malformed_bodies(client: httpx.AsyncClient, body: bytes, status: int,
                                field: str) -> None:
    response = await client.post("/v1/events", content=body,
                                 headers={**auth(WRITE), "content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["detail"]["field"] == field


async def test_size_caps(client: httpx.AsyncClient) -> None:
    too_many = await post(client, [event(i) for i in range(501)])
    assert too_many.status_code == 413
    assert "at most 500" in too_many.json()["detail"]["reason"]
    huge = await post(client, [event(1, comment="x" * 3000) for _ in range(100)])
    assert huge.status_code == 413


# -- reads ----------------------------------------------------------------------------

async def test_scores_match_the_engine_with_targets_and_paging(
    client: httpx.AsyncClient, runner: Any
) -> None:
    await post(client, [event(i) for i in range(40)]
               + [event(100 + i, channel="phone", segment="smb", value=4) for i in range(10)])
    overall = (await client.get("/v1/scores", headers=auth(READ))).json()
    (score,) = overall["items"]
    assert score["scope"] == {} and score["metric"] == "csat"
    assert score["n"] == 50
    assert score["value"] == pytest.approx((30 + 10) / 50)
    assert score["low"] < score["value"] < score["high"]
    assert (score["target"], score["gap"]) == (0.8, pytest.approx(0.0))
    assert score["window"]["name"] == "1h" and score["latest_event_at"].endswith("Z")
    chat = (await client.get("/v1/scores?channel=chat&segment=enterprise",
                             headers=auth(READ))).json()["items"]
    assert [(s["scope"], s["n"], s["target"]) for s in chat] == [
        ({"channel": "chat", "segment": "enterprise"}, 40, 0.9)]
    page1 = (await client.get("/v1/scores?scope=channel&limit=1", headers=auth(READ))).json()
    assert (page1["total"], page1["next_offset"]) == (2, 1)
    page2 = (await client.get("/v1/scores?scope=channel&limit=1&offset=1",
                              headers=auth(READ))).json()
    assert page2["next_offset"] is None
    assert {page1["items"][0]["scope"]["channel"], page2["items"][0]["scope"]["channel"]} == \
        {"chat", "phone"}
    daily = (await client.get("/v1/scores?family=periodic&window=day",
                              headers=auth(READ))).json()["items"]
    assert daily[0]["window"]["label"] == NOW.date().isoformat() or daily[0]["n"] == 50


@pytest.mark.parametrize(("query", "needle"), [
    ("window=3h", "unknown continuous window"),
    ("scope=owner", "no configured scope"),
    ("touchpoint=x", "no configured scope"),
])
async def test_bad_score_queries_say_why(client: httpx.AsyncClient, query: str,
                                         needle: str) -> None:
    response = await client.get(f"/v1/scores?{query}", headers=auth(READ))
    assert response.status_code == 404
    assert needle in response.json()["detail"]


async def test_journeys_and_customers(client: httpx.AsyncClient) -> None:
    journey = [
        event(1, journey_id="j1", journey_type="upgrade", stage="recognize", channel="web"),
        event(2, journey_id="j1", journey_type="upgrade", stage="request", channel="chat"),
        event(3, journey_id="j1", journey_type="upgrade", stage="respond", channel="phone",
              journey_end=True, value=5),
    ]
    await post(client, journey)
    found = (await client.get("/v1/journeys/j1", headers=auth(READ))).json()
    assert found["channels"] == ["web", "chat", "phone"] and found["open"] is False
    assert found["stage_reached"] == "respond"
    assert found["ended_at"].endswith("Z")
    bands = (await client.get("/v1/scores/journeys?journey_type=upgrade",
                              headers=auth(READ))).json()
    assert bands["by_channel_count"]["3"]["n"] == 1
    assert (await client.get("/v1/journeys/nope", headers=auth(READ))).status_code == 404
    customer = (await client.get("/v1/customers/cus-1", headers=auth(READ))).json()
    assert customer["signals"] >= 1 and customer["at_risk"] is False
    assert (await client.get("/v1/customers/nobody", headers=auth(READ))).status_code == 404


async def test_pulse_lifecycle(client: httpx.AsyncClient) -> None:
    body = {"pulse_id": "chat-after-pricing", "name": "Chat after the pricing change",
            "filter": {"channel": ["chat"]},
            "start": NOW.isoformat(), "end": (NOW + timedelta(days=14)).isoformat(),
            "baseline_start": (NOW - timedelta(days=14)).isoformat(),
            "baseline_end": NOW.isoformat()}
    created = await client.post("/v1/pulses", json=body, headers=auth(ADMIN))
    assert created.status_code == 201
    assert created.json()["state"] == "running"
    clash = await client.post("/v1/pulses", json=body, headers=auth(ADMIN))
    assert clash.status_code == 409
    await post(client, [event(i) for i in range(5)]
               + [event(50, channel="phone"),
                  event(60, occurred_at=(NOW - timedelta(minutes=30)).isoformat())])
    got = (await client.get("/v1/pulses/chat-after-pricing", headers=auth(READ))).json()
    (result,) = got["results"]
    assert (result["study"]["n"], result["baseline"]["n"]) == (5, 1)
    # The same study as a window of /v1/scores: filter as scope, baseline as previous.
    scores = (await client.get("/v1/scores?family=pulse&window=chat-after-pricing",
                               headers=auth(READ))).json()
    (item,) = scores["items"]
    assert item["scope"] == {"channel": "chat"} and item["metric"] == result["metric"]
    assert (item["n"], item["previous"]["n"]) == (5, 1)
    assert item["value"] == result["study"]["value"]
    assert item["change"] == pytest.approx(result["difference"])
    assert item["window"]["family"] == "pulse" and item["window"]["label"] == body["name"]
    assert item["target"] is not None and item["gap"] == pytest.approx(
        item["value"] - item["target"])
    missing = await client.get("/v1/scores?family=pulse&window=nope", headers=auth(READ))
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    filtered = await client.get("/v1/scores?family=pulse&window=chat-after-pricing"
                                "&channel=chat", headers=auth(READ))
    assert filtered.status_code == 422 and filtered.json()["detail"][0]["field"] == "channel"
    ended = await client.delete("/v1/pulses/chat-after-pricing", headers=auth(ADMIN))
    assert ended.json()["state"] == "ended"
    assert (await client.delete("/v1/pulses/nope", headers=auth(ADMIN))).status_code == 404
    listed = (await client.get("/v1/pulses?state=ended", headers=auth(READ))).json()
    assert [p["pulse_id"] for p in listed["items"]] == ["chat-after-pricing"]


async def test_invalid_pulse_names_the_field(client: httpx.AsyncClient) -> None:
    body = {"name": "x", "start": NOW.isoformat(), "end": NOW.isoformat(),
            "baseline_start": NOW.isoformat(), "baseline_end": NOW.isoformat()}
    bad = await client.post("/v1/pulses", json=body, headers=auth(ADMIN))
    assert bad.status_code == 422
    body2 = {**body, "end": (NOW + timedelta(1)).isoformat(),
             "baseline_start": (NOW - timedelta(1)).isoformat(), "filter": {"colour": ["x"]}}
    bad2 = await client.post("/v1/pulses", json=body2, headers=auth(ADMIN))
    assert bad2.status_code == 422
    assert bad2.json()["detail"][0]["field"] == "filter.colour"


# -- metrics --------------------------------------------------------------------------

async def metric_samples(client: httpx.AsyncClient, app: Any, runner: Any) -> dict[str, Any]:
    app.state.metrics.board = await runner.read(
        lambda engine: read_scoreboard(engine, app.state.settings.metrics_windows))
    text = (await client.get("/metrics")).text
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_metrics_export_scores_with_bounded_labels(
    client: httpx.AsyncClient, app: Any, runner: Any
) -> None:
    await post(client, [event(i) for i in range(20)])
    families = await metric_samples(client, app, runner)
    scores = [s for s in families["touchstream_score"].samples
              if s.labels["window"] == "1h" and s.labels["scope"] == "overall"]
    assert [s.value for s in scores] == [pytest.approx(15 / 20)]
    assert set(scores[0].labels) == {"metric", "window", "scope", "channel", "segment"}
    events = {s.labels["outcome"]: s.value for s in families["touchstream_events"].samples
              if s.name == "touchstream_events_total"}
    assert events["accepted"] == 20
    before = sum(len(f.samples) for f in families.values())
    await post(client, [event(1000 + i, customer_id=f"new-{i}") for i in range(300)])
    after = sum(len(f.samples) for f in (await metric_samples(client, app, runner)).values())
    assert after == before  # 300 new customers, not one new series


async def test_metrics_can_require_a_key(settings: Settings, runner: Any) -> None:
    private = settings.model_copy(update={"public_metrics": False})
    app = create_app(private, runner, runner.config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=auth(READ))).status_code == 200


async def test_concurrent_writers_lose_nothing(client: httpx.AsyncClient) -> None:
    batches = [[event(i, event_id=f"writer-{b}-{i}") for i in range(50)] for b in range(8)]
    responses = await asyncio.gather(*(post(client, b) for b in batches))
    assert sum(r.json()["accepted"] for r in responses) == 400
    overall = (await client.get("/v1/scores?window=24h", headers=auth(READ))).json()
    assert overall["items"][0]["n"] == 400


def test_settings_come_from_a_toml_file_under_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "touchstream.toml"
    config.write_text('port = 9191\nmax_batch = 77\nmetrics_windows = ["continuous:1h"]\n',
                      encoding="utf-8")
    monkeypatch.setenv("TOUCHSTREAM_CONFIG", str(config))
    monkeypatch.setenv("TOUCHSTREAM_MAX_BATCH", "88")
    settings = Settings()
    assert (settings.port, settings.max_batch) == (9191, 88)  # the environment wins
    assert settings.metrics_windows == ("continuous:1h",)
    monkeypatch.setenv("TOUCHSTREAM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="is not a file"):
        Settings()


async def test_past_periods_and_score_series(client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    sent = [event(i, event_id=f"hist-{i}", occurred_at=(now - timedelta(minutes=170 - i)
                                                       ).isoformat())
            for i in range(0, 160, 4)]
    assert (await post(client, sent)).json()["accepted"] == len(sent)
    read = auth(READ)
    current = (await client.get("/v1/scores", params={
        "family": "periodic", "window": "day", "metric": "csat"}, headers=read)).json()
    label = current["items"][0]["window"]["label"]
    named = (await client.get("/v1/scores", params={
        "family": "periodic", "window": "day", "metric": "csat", "period": label},
        headers=read)).json()

    def timeless(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in i.items() if k != "computed_at"} for i in items]

    assert timeless(named["items"]) == timeless(current["items"])
    # the current day's answers (the events span 170 minutes: around midnight, two days)
    assert named["items"][0]["n"] == sum(e["occurred_at"][:10] == label for e in sent)
    bad = await client.get("/v1/scores", params={"family": "periodic", "window": "month",
                                                 "period": "last month"}, headers=read)
    assert bad.status_code == 404 and "2026-11" in bad.json()["detail"]

    answer = await client.get("/v1/scores/series", params={
        "step": "1h", "metric": "csat", "since": (now - timedelta(hours=4)).isoformat()},
        headers=read)
    assert answer.status_code == 200, answer.text
    (series,) = answer.json()["items"]
    points = series["points"]
    assert sum(p["n"] for p in points) == len(sent)
    hours = Counter(datetime.fromisoformat(e["occurred_at"]).replace(minute=0, second=0)
                    for e in sent)
    for point in points:
        start = datetime.fromisoformat(point["start"].replace("Z", "+00:00"))
        assert point["n"] == hours.get(start, 0)
        assert (point["value"] is None) == (point["n"] == 0)
    unknown = await client.get("/v1/scores/series", params={"step": "2h"}, headers=read)
    assert unknown.status_code == 404 and "known: 1m, 1h" in unknown.json()["detail"]
    assert (await client.get("/v1/scores/series")).status_code == 401


async def test_backfill_over_http(client: httpx.AsyncClient) -> None:
    """``POST /v1/events?mode=backfill``: history past the lateness horizon counts in
    its calendar month; live, the same answers would be late."""
    read = auth(READ)
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=70)
    history = [event(i, event_id=f"bf-{i}", occurred_at=(old + timedelta(minutes=i)
                                                         ).isoformat()) for i in range(12)]
    live = await post(client, [event(0, event_id="bf-live")])
    assert live.json()["mode"] == "live"
    refused = (await post(client, history[:2])).json()
    assert refused["late"] == 2 and "lateness horizon" in refused["results"][0]["reason"]
    answer = await client.post("/v1/events", params={"mode": "backfill"}, json=history,
                               headers=auth(WRITE))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["mode"], body["accepted"], body["late"]) == ("backfill", 12, 0)
    month = old.strftime("%Y-%m")
    scores = (await client.get("/v1/scores", params={
        "family": "periodic", "window": "month", "metric": "csat", "period": month},
        headers=read)).json()
    assert scores["items"][0]["n"] == 12 + (1 if month == now.strftime("%Y-%m") else 0)
    again = (await client.post("/v1/events", params={"mode": "backfill"}, json=history,
                               headers=auth(WRITE))).json()
    assert again["duplicates"] == 12
    bad = await client.post("/v1/events", params={"mode": "history"}, json=history,
                            headers=auth(WRITE))
    assert bad.status_code == 422
