"""A catalogue of hostile inputs, each with the outcome it must get.

Every input goes through the real HTTP path (app over an embedded runner on a temp
dir); the raw-bytes ones also go through ``EventDecoder.decode``, the entry point the
Kafka worker and file replay use. A rejected event must come back with the field and a
reason, be counted on /metrics, and be kept in /v1/dead-letters with its original
payload; a body that holds no event at all (not JSON, invalid UTF-8, ...) is refused
with 400, the field and the reason, and counted. Afterwards the service must still
accept and score a good event.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from faults_support import (
    NOW,
    READ,
    auth,
    event,
    metrics,
    outcome_count,
    post_raw,
    still_serving,
)

from schemas import EventDecoder, EventError
from streams.deadletters import payload_bytes, split_body
from streams.embedded import DB_NAME, EmbeddedRunner

MB = 1024 * 1024


def _raw_event(**replace: bytes) -> bytes:
    """A valid event as JSON bytes with some values replaced by raw JSON text."""
    text = orjson.dumps(event(1, **{key: f"@{key}@" for key in replace}))
    for key, raw in replace.items():
        text = text.replace(f'"@{key}@"'.encode(), raw)
    return text


# -- events that parse as JSON but are not acceptable: rejected, one by one -----------

def _without(key: str) -> dict[str, Any]:
    e = event(1)
    del e[key]
    return e


REJECTED: list[tuple[str, Any, str, str]] = [
    # (case, the event, field, reason substring)
    ("wrong type: value as string", event(1, value="5"), "value", "Expected `int`, got `str`"),
    ("wrong type: value as bool", event(1, value=True), "value", "got `bool`"),
    ("wrong type: value null", event(1, value=None), "value", "got `null`"),
    ("wrong type: time as epoch", event(1, occurred_at=1767225600), "occurred_at",
     "Expected `datetime`"),
    ("off the scale: csat 6", event(1, value=6), "value", "<= 5"),
    ("off the scale: csat 0", event(1, value=0), "value", ">= 1"),
    ("off the scale: nps -1", event(1, kind="nps", value=-1), "value", ">= 0"),
    ("off the scale: sentiment 1.5", event(1, kind="sentiment", value=1.5), "value",
     "<= 1.0"),
    ("off the scale: rating beyond declared scale",
     event(1, kind="rating", value=11, scale_max=10), "value", "off the declared scale"),
    ("rating na_code inside the scale", event(1, kind="rating", value=3, na_code=3),
     "na_code", "inside the scale"),
    ("unknown kind", event(1, kind="mood"), "kind", "unknown kind"),
    ("missing kind", _without("kind"), "kind", "is required"),
    ("missing event_id", _without("event_id"), "event_id", "is required"),
    ("empty event_id", event(1, event_id=""), "event_id", "length >= 1"),
    ("event_id over 128 chars", event(1, event_id="x" * 129), "event_id", "length <= 128"),
    ("missing customer_id", _without("customer_id"), "customer_id", "is required"),
    ("empty customer_id", event(1, customer_id=""), "customer_id", "length >= 1"),
    ("empty dimension value", event(1, channel=""), "channel", "length >= 1"),
    ("dimension value over 64 chars", event(1, channel="c" * 65), "channel", "length <= 64"),
    ("1 MB comment", event(1, comment="é" * (MB // 2)), "comment", "length <= 4000"),
    ("time without a zone", event(1, occurred_at="2026-01-05T10:00:00"), "occurred_at",
     "timezone"),
    ("time far in the future", event(1, occurred_at=(NOW + timedelta(days=400)).isoformat()),
     "occurred_at", "in the future"),
    ("time decades old", event(1, occurred_at="1990-06-01T00:00:00Z"), "occurred_at",
     "older than"),
    ("year 0", event(1, occurred_at="0000-01-01T00:00:00Z"), "occurred_at", "RFC3339"),
    ("year 9999", event(1, occurred_at="9999-12-31T23:59:59Z"), "occurred_at",
     "in the future"),
    ("not a date at all", event(1, occurred_at="yesterday"), "occurred_at", "RFC3339"),
    ("nested object where a string is expected", event(1, channel={"name": "chat"}),
     "channel", "got `object`"),
    ("array where a string is expected", event(1, customer_id=["a", "b"]), "customer_id",
     "got `array`"),
    ("unknown schema version", event(1, schema_version="2"), "schema_version",
     "unknown schema version"),
    ("stage outside the enum", event(1, stage="delight"), "stage", "Invalid enum value"),
    ("array instead of an event", [1, 2], "$", "Expected `object`, got `array`"),
    ("number instead of an event", 42, "$", "Expected `object`, got `int`"),
    ("string instead of an event", "csat 5", "$", "Expected `object`, got `str`"),
]


@pytest.mark.parametrize(("item", "field", "reason"), [c[1:] for c in REJECTED],
                         ids=[c[0] for c in REJECTED])
async def test_rejected_with_reason_counted_and_dead_lettered(
    client: httpx.AsyncClient, app: Any, runner: EmbeddedRunner, item: Any, field: str,
    reason: str,
) -> None:
    before = await outcome_count(client, app, runner, "rejected")
    response = await client.post("/v1/events", json={"events": [item]}, headers=auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 1)
    result = body["results"][0]
    assert result["status"] == "rejected"
    assert result["field"] == field
    assert reason in result["reason"]
    assert result["problems"] == [{"field": field, "reason": result["reason"]}]  # only one
    assert await outcome_count(client, app, runner, "rejected") == before + 1
    letters = (await client.get("/v1/dead-letters?limit=1", headers=auth(READ))).json()
    newest = letters["items"][0]
    assert (newest["kind"], newest["field"]) == ("invalid", field)
    assert reason in newest["reason"]
    # the event's own bytes as they stood in the body: whole, or the first 64 KiB of the
    # 1 MB one, with the size and digest of all of them
    (sent,) = split_body(response.request.content, 1) or [b""]
    assert (newest["size"], newest["sha256"]) == (len(sent), hashlib.sha256(sent).hexdigest())
    assert payload_bytes(newest) == sent[:64 * 1024]
    assert newest["truncated"] == (len(sent) > 64 * 1024)
    assert newest["truncated"] or orjson.loads(newest["payload"]) == item
    await still_serving(client, 1)


async def test_every_mistake_of_one_event_is_named(
    client: httpx.AsyncClient, app: Any, runner: EmbeddedRunner,
) -> None:
    item = {**_without("customer_id"), "value": 0, "channel": {"name": "chat"},
            "occurred_at": (NOW + timedelta(days=400)).isoformat(), "stage": "delight"}
    before = await outcome_count(client, app, runner, "rejected")
    response = await client.post("/v1/events", json=[item, event(2)], headers=auth())
    result, good = response.json()["results"]
    assert (result["status"], good["status"]) == ("rejected", "accepted")
    problems = [(p["field"], p["reason"]) for p in result["problems"]]
    assert [f for f, _ in problems] == ["value", "customer_id", "stage", "channel",
                                        "occurred_at"]
    assert "in the future" in problems[-1][1]
    assert (result["field"], result["reason"]) == problems[0]
    with pytest.raises(EventError) as err:  # the Kafka and file path say the same
        EventDecoder().decode(orjson.dumps(item))
    assert [f for f, _ in err.value.problems] == [f for f, _ in problems]
    assert await outcome_count(client, app, runner, "rejected") == before + 1  # one event
    newest = (await client.get("/v1/dead-letters?limit=1", headers=auth(READ))).json()
    assert (newest["items"][0]["field"], newest["items"][0]["reason"]) == problems[0]


async def test_huge_integer_is_rejected_not_wrapped(client: httpx.AsyncClient) -> None:
    """A 30-digit integer literal: orjson reads it as a float, so it is not an int."""
    response = await post_raw(client, _raw_event(value=b"1" + b"0" * 29))
    result = response.json()["results"][0]
    assert (result["status"], result["field"]) == ("rejected", "value")
    assert "Expected `int`, got `float`" in result["reason"]


# -- bodies that hold no event: refused whole, with 400 and the reason ----------------

DEEP = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
BODIES: list[tuple[str, bytes, str, str]] = [
    # (case, body, HTTP reason substring, decoder reason substring)
    ("not JSON", b"csat=5&customer=c1", "not valid JSON", "not valid JSON"),
    ("truncated JSON", orjson.dumps(event(1))[:-7], "not valid JSON", "not valid JSON"),
    ("empty body", b"", "not valid JSON", "not valid JSON"),
    ("NaN literal", _raw_event(value=b"NaN"), "not valid JSON", "not valid JSON"),
    ("Infinity literal", _raw_event(value=b"Infinity"), "not valid JSON", "not valid JSON"),
    ("-Infinity literal", _raw_event(value=b"-Infinity"), "not valid JSON", "not valid JSON"),
    ("number overflowing a double", _raw_event(value=b"1e400"), "not valid JSON",
     "out of range"),
    ("invalid UTF-8 in a string", _raw_event(comment=b'"caf\xc3("'), "not valid JSON",
     "not valid UTF-8"),
    ("invalid UTF-8 lead byte", _raw_event(channel=b'"\xff\xfe"'), "not valid JSON",
     "not valid UTF-8"),
    ("lone high surrogate escape", _raw_event(comment=b'"\\ud800"'), "not valid JSON",
     "not valid JSON"),
    ("lone low surrogate escape", _raw_event(comment=b'"\\udc00x"'), "not valid JSON",
     "not valid JSON"),
    ("10,000 levels of nested objects", DEEP, "not valid JSON", "nested too deeply"),
]


@pytest.mark.parametrize(("body", "http_reason"), [(c[1], c[2]) for c in BODIES],
                         ids=[c[0] for c in BODIES])
async def test_unparseable_bodies_are_refused_with_a_reason_and_counted(
    client: httpx.AsyncClient, app: Any, runner: EmbeddedRunner, body: bytes,
    http_reason: str,
) -> None:
    before = await outcome_count(client, app, runner, "rejected")
    response = await post_raw(client, body)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail["field"] == "$"
    assert http_reason in detail["reason"]
    assert await outcome_count(client, app, runner, "rejected") == before + 1
    (kept,) = runner.dead_letters_blocking(1, 0)  # kept with its reason, byte for byte
    assert (kept["field"], kept["reason"]) == ("$", detail["reason"])
    assert kept["payload"] == body.decode("utf-8", errors="replace")
    await still_serving(client, 2)


@pytest.mark.parametrize(("body", "reason"), [(c[1], c[3]) for c in BODIES],
                         ids=[c[0] for c in BODIES])
def test_the_decoder_refuses_raw_bytes_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(EventError) as err:
        EventDecoder().decode(body)
    # msgspec names the field when the document parses up to it (1e400 -> value)
    assert err.value.field == ("value" if reason == "out of range" else "$")
    assert reason in err.value.reason


def test_deep_arrays_and_lone_surrogates_from_python_do_not_crash_the_decoder() -> None:
    decoder = EventDecoder()
    with pytest.raises(EventError, match="Expected `object`, got `array`"):
        decoder.decode(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(EventError) as err:  # a str made in Python, not parsed from JSON
        decoder.convert(event(1, comment="bad \ud800 half"))
    assert "not encodable as UTF-8" in err.value.reason


def test_a_lone_surrogate_rejects_one_event_not_the_batch(runner: EmbeddedRunner) -> None:
    outcomes = runner.submit_blocking([event(1, comment="\ud800"), event(2)])
    assert [o.status for o in outcomes] == ["rejected", "accepted"]
    assert runner.dead_letters_blocking(1, 0)[0]["reason"].startswith("not encodable")


# -- accepted and round-tripped ------------------------------------------------------

ACCEPTED_VALUES = [
    ("mixed scripts", "chat-чат-聊天-チャット"),
    ("right-to-left", "دردشة مباشرة"),
    ("RTL override and Hebrew", "\u202eצ'אט\u202c"),
    ("zero-width characters", "ch\u200bat\u200d\ufeff"),
    ("control characters", "ch\x00at\x1b[31m\n"),
    ("emoji with modifiers", "👩🏽‍💻 chat"),
]


@pytest.mark.parametrize("channel", [c[1] for c in ACCEPTED_VALUES],
                         ids=[c[0] for c in ACCEPTED_VALUES])
async def test_unusual_text_is_accepted_and_round_trips(
    client: httpx.AsyncClient, app: Any, runner: EmbeddedRunner, settings: Any,
    channel: str,
) -> None:
    comment = f"{channel} — مرحبا שלום привет 你好"
    sent = event(3, channel=channel, comment=comment, event_id=f"text-{channel}")
    response = await client.post("/v1/events", json=sent, headers=auth())
    assert response.json()["results"][0]["status"] == "accepted", response.text
    listed = (await client.get("/v1/scores", params={"scope": "channel", "window": "24h"},
                               headers=auth(READ))).json()
    assert channel in {item["scope"]["channel"] for item in listed["items"]}
    families = await metrics(client, app, runner)  # the exposition still parses
    labels = {s.labels.get("channel") for s in families["touchstream_score"].samples}
    assert channel in labels
    with sqlite3.connect(settings.data_dir / DB_NAME) as db:  # kept byte for byte
        rows = [orjson.loads(p) for (p,) in db.execute("SELECT payload FROM log")]
    assert [(r["channel"], r["comment"]) for r in rows] == [(channel, comment)]
    await still_serving(client, 4)


# -- duplicates, batches, label explosion -------------------------------------------

async def test_duplicate_ids_within_and_across_batches_count_once(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/v1/events", json=[event(5), event(5), event(6)],
                              headers=auth())
    assert [r["status"] for r in first.json()["results"]] == [
        "accepted", "duplicate", "accepted"]
    again = await client.post("/v1/events", json=[event(6), event(5, value=1)],
                              headers=auth())
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "duplicate"]
    overall = (await client.get("/v1/scores?window=24h&metric=csat",
                                headers=auth(READ))).json()["items"][0]
    assert overall["n"] == 2


async def test_empty_batch_is_accepted_as_nothing(client: httpx.AsyncClient) -> None:
    for body in ({"events": []}, []):
        response = await client.post("/v1/events", json=body, headers=auth())
        assert response.status_code == 200
        assert response.json() == {"mode": "live", "accepted": 0, "duplicates": 0,
                                   "late": 0, "rejected": 0, "results": []}


async def test_a_batch_over_the_cap_is_refused_whole(client: httpx.AsyncClient) -> None:
    batch = [event(i % 50, event_id=f"big-{i}") for i in range(10_001)]
    response = await client.post("/v1/events", json=batch, headers=auth())
    assert response.status_code == 413
    assert response.json()["detail"]["field"] == "events"
    assert "at most 10000" in response.json()["detail"]["reason"]
    scores = (await client.get("/v1/scores?window=24h", headers=auth(READ))).json()
    assert scores["items"] == []  # nothing of it was ingested
    await still_serving(client, 7)


async def test_a_body_over_the_cap_is_refused(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, b'{"events": ["' + b"x" * (9 * MB) + b'"]}')
    assert response.status_code == 413
    assert "request body over" in response.json()["detail"]["reason"]
    await still_serving(client, 8)


async def test_label_explosion_is_folded_and_bounded(
    client: httpx.AsyncClient, app: Any, runner: EmbeddedRunner,
) -> None:
    """5,000 new channel values, then 5,000 more: past the cap they fold into "other";
    the second flood adds no series and no Prometheus sample, only to the folded count."""
    cap = runner.config.cap("channel")

    async def flood(start: int) -> tuple[int, float, set[str], int]:
        items = [event(i % 200, event_id=f"flood-{start + i}", channel=f"ch-{start + i}")
                 for i in range(5_000)]
        response = await client.post("/v1/events", json=items, headers=auth())
        assert response.json()["accepted"] == 5_000
        families = await metrics(client, app, runner)
        channels = {s.labels["channel"] for s in families["touchstream_score"].samples
                    if s.labels.get("channel")}  # "" is a scope without the channel
        folded = sum(s.value for s in families["touchstream_dimension_folded"].samples
                     if s.name.endswith("_total") and s.labels["dimension"] == "channel")
        listed = (await client.get("/v1/scores", params={
            "scope": "channel", "window": "24h", "limit": 10_000}, headers=auth(READ))).json()
        return sum(len(f.samples) for f in families.values()), folded, channels, \
            listed["total"]

    samples1, folded1, channels1, series1 = await flood(0)
    assert len(channels1) <= cap + 1 and "other" in channels1  # the cap, plus "other"
    assert series1 <= cap + 1
    assert folded1 == 5_000 - cap
    samples2, folded2, channels2, series2 = await flood(5_000)
    assert (samples2, channels2, series2) == (samples1, channels1, series1)
    assert folded2 == folded1 + 5_000
    await still_serving(client, 9)
