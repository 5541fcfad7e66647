"""The event contract: what is accepted, what is refused and why, and byte-exact text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import EventDecoder, EventError, Rating, encode, to_cloudevent
from schemas.jsonschema import SCHEMA_PATH, build_schema, render_schema

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def decoder() -> EventDecoder:
    return EventDecoder(clock=NOW.timestamp)


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "occurred_at": "2026-11-24T11:59:00+01:00",
        "customer_id": "cus-1",
        "touchpoint": "support_call",
        "channel": "phone",
        "kind": "csat",
        "value": 4,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def raw(**overrides: Any) -> bytes:
    return json.dumps(event(**overrides), ensure_ascii=False).encode()


def test_committed_json_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "schemas/touchpoint-event.v1.schema.json is stale: run python -m schemas.jsonschema"
    )


def test_json_schema_declares_every_kind_and_its_scale() -> None:
    schema = build_schema()
    mapping = schema["discriminator"]["mapping"]
    assert sorted(mapping) == ["ces", "csat", "nps", "outcome", "rating", "sentiment"]
    csat = schema["$defs"]["Csat"]["properties"]["value"]
    assert (csat["minimum"], csat["maximum"]) == (1, 5)
    nps = schema["$defs"]["Nps"]["properties"]["value"]
    assert (nps["minimum"], nps["maximum"]) == (0, 10)


@pytest.mark.parametrize(
    ("overrides", "kind", "value"),
    [
        ({}, "csat", 4),
        ({"kind": "nps", "value": 0}, "nps", 0),
        ({"kind": "nps", "value": 10}, "nps", 10),
        ({"kind": "ces", "value": 7}, "ces", 7),
        ({"kind": "rating", "value": 9, "scale_min": 0, "scale_max": 10}, "rating", 9),
        ({"kind": "rating", "value": 0, "na_code": 0}, "rating", 0),
        ({"kind": "outcome", "value": "abandoned"}, "outcome", "abandoned"),
        ({"kind": "sentiment", "value": -0.25}, "sentiment", -0.25),
    ],
)
def test_accepts_every_kind_on_its_scale(
    decoder: EventDecoder, overrides: dict[str, Any], kind: str, value: object
) -> None:
    decoded = decoder.decode(raw(**overrides))
    assert decoded.kind == kind
    assert decoded.value == value
    assert decoded.occurred_at == datetime(2026, 11, 24, 10, 59, tzinfo=UTC)


def test_not_applicable_rating_is_flagged(decoder: EventDecoder) -> None:
    decoded = decoder.decode(raw(kind="rating", value=0, na_code=0))
    assert isinstance(decoded, Rating)
    assert decoded.not_applicable


BAD = [
    (raw(value=6), "value", "Expected `int` <= 5"),
    (raw(value=0), "value", "Expected `int` >= 1"),
    (raw(kind="nps", value=11), "value", "Expected `int` <= 10"),
    (raw(kind="ces", value=0), "value", "Expected `int` >= 1"),
    (raw(kind="sentiment", value=1.5), "value", "Expected `float` <= 1.0"),
    (raw(kind="outcome", value="meh"), "value", "Invalid enum value 'meh'"),
    (raw(kind="rating", value=6), "value", "`value` 6 is off the declared scale 1..5"),
    (raw(kind="rating", value=3, na_code=3), "na_code",
     "`na_code` 3 lies inside the scale 1..5"),
    (raw(value="4"), "value", "Expected `int`, got `str`"),
    (raw(value=True), "value", "Expected `int`, got `bool`"),
    (raw(value=4.5), "value", "Expected `int`, got `float`"),
    (raw(kind="stars"), "kind",
     "unknown kind (expected one of csat, nps, ces, rating, outcome, sentiment)"),
    (raw(kind=...), "kind", "is required"),
    (raw(event_id=...), "event_id", "is required"),
    (raw(event_id=""), "event_id", "Expected `str` of length >= 1"),
    (raw(customer_id=...), "customer_id", "is required"),
    (raw(channel=...), "channel", "is required"),
    (raw(occurred_at="2026-11-24T11:59:00"), "occurred_at",
     "Expected `datetime` with a timezone component"),
    (raw(occurred_at="yesterday"), "occurred_at", "Invalid RFC3339 encoded datetime"),
    (raw(occurred_at="2026-11-25T12:00:00Z"), "occurred_at",
     "is 1 day, 0:00:00 in the future (at most 0:15:00 allowed)"),
    (raw(occurred_at="1990-01-01T00:00:00Z"), "occurred_at",
     "is older than the oldest accepted age (3650 days)"),
    (raw(comment="x" * 4001), "comment", "Expected `str` of length <= 4000"),
    (raw(stage="deliver"), "stage", "Invalid enum value 'deliver'"),
    (raw(schema_version="2"), "schema_version", "unknown schema version (supported: 1)"),
    (raw(segment="s" * 65), "segment", "Expected `str` of length <= 64"),
    (b"not json", "$", "not valid JSON (JSON is malformed: invalid character (byte 4))"),
    (raw()[:-5], "$", "not valid JSON (Input data was truncated)"),
    (b"[1, 2]", "$", "Expected `object`, got `array`"),
    (b'{"kind": "csat", "event_id": "\xff"}', "$", "not valid UTF-8 (invalid start byte)"),
    (raw().replace(b'"value": 4', b'"value": NaN'), "$",
     "not valid JSON (JSON is malformed: invalid character (byte 165))"),
]


@pytest.mark.parametrize(("data", "field", "reason"), BAD)
def test_rejects_bad_input_naming_field_and_reason(
    decoder: EventDecoder, data: bytes, field: str, reason: str
) -> None:
    with pytest.raises(EventError) as caught:
        decoder.decode(data)
    assert caught.value.field == field
    assert caught.value.reason == reason
    assert caught.value.problems == ((field, reason),)  # one problem: nothing more to say
    assert str(caught.value) == f"{field}: {reason}"
    assert caught.value.as_dict() == {"field": field, "reason": reason,
                                      "problems": [{"field": field, "reason": reason}]}


def one_by_one(decoder: EventDecoder, values: list[bytes | None]) -> list[Any]:
    """What ``decode`` makes of each value: the event, or its problems."""
    out: list[Any] = []
    for value in values:
        try:
            if value is None:
                raise EventError("$", "empty message (no value)")
            out.append(decoder.decode(value))
        except EventError as exc:
            out.append(exc.problems)
    return out


VALID = [raw(event_id=f"evt-{i}", occurred_at=f"2026-11-24T11:{i:02d}:30Z", value=1 + i % 5)
         for i in range(12)] + [raw(occurred_at="2026-11-24T12:14:59Z")]
MANY = [raw(value=9, customer_id=..., occurred_at="yesterday"),
        raw(kind="stars", event_id="", occurred_at="2026-11-25T12:00:00Z"),
        raw(kind="rating", value=3, na_code=3, occurred_at="1990-01-01T00:00:00Z")]
"""Events with more than one problem."""


@given(st.lists(st.one_of(st.sampled_from(VALID), st.sampled_from([b for b, _, _ in BAD]),
                          st.sampled_from(MANY), st.none()), max_size=40))
def test_decode_many_equals_decode_one_by_one(values: list[bytes | None]) -> None:
    decoder = EventDecoder(clock=NOW.timestamp)
    batch = decoder.decode_many(values)
    expected = one_by_one(decoder, values)
    got: list[Any] = [None] * len(values)
    positions = batch.positions if batch.positions is not None else range(len(values))
    for position, decoded in zip(positions, batch.events, strict=True):
        got[position] = decoded
    for position, exc in batch.errors:
        assert got[position] is None, "a value both decoded and rejected"
        assert exc.problems[0] == (exc.field, exc.reason)
        got[position] = exc.problems
    assert got == expected
    assert [index for index, _ in batch.errors] == sorted(index for index, _ in batch.errors)
    assert batch.stamps.tolist() == [e.occurred_at.timestamp() for e in batch.events]


COMMENTS = [
    "Þjónustan var frábær, takk fyrir!",  # Icelandic
    "پشتیبانی خیلی کند بود؛ دو ساعت منتظر ماندم.",  # Persian, right to left
    "Η εξυπηρέτηση ήταν άψογη.",  # Greek
    "Asiakaspalvelu oli ystävällistä ja nopeaa.",  # Finnish
    "Great 👍🏽 but the app crashed 💥 twice",  # emoji with a skin-tone modifier
    "混合 mixed עברית text\u200f with marks",  # mixed scripts and a right-to-left mark
    "e\u0301 vs \u00e9: not normalised",  # combining accent kept as sent
]


@pytest.mark.parametrize("comment", COMMENTS)
def test_comment_round_trips_byte_for_byte(decoder: EventDecoder, comment: str) -> None:
    data = raw(comment=comment)
    decoded = decoder.decode(data)
    assert decoded.comment == comment
    again = decoder.decode(encode(decoded))
    assert again == decoded
    assert again.comment is not None
    assert again.comment.encode("utf-8") == comment.encode("utf-8")


@given(st.text(max_size=400))
def test_any_text_round_trips(comment: str) -> None:
    decoder = EventDecoder(clock=NOW.timestamp)
    decoded = decoder.decode(raw(comment=comment))
    assert decoded.comment == comment
    assert decoder.decode(encode(decoded)).comment == comment


def test_cloudevent_view_maps_the_standard_attributes(decoder: EventDecoder) -> None:
    decoded = decoder.decode(raw(source="ivr-survey"))
    cloud = to_cloudevent(decoded)
    assert cloud["specversion"] == "1.0"
    assert cloud["id"] == "evt-1"
    assert cloud["source"] == "ivr-survey"
    assert cloud["type"] == "io.touchstream.touchpoint.v1"
    assert cloud["time"] == "2026-11-24T11:59:00+01:00"
    data = cloud["data"]
    assert isinstance(data, dict)
    assert data["kind"] == "csat"
    assert decoder.convert(data) == decoded


def test_convert_applies_the_same_checks_as_decode(decoder: EventDecoder) -> None:
    with pytest.raises(EventError) as caught:
        decoder.convert(event(value=9))
    assert (caught.value.field, caught.value.reason) == ("value", "Expected `int` <= 5")
    future = (NOW + timedelta(hours=2)).isoformat()
    with pytest.raises(EventError) as caught:
        decoder.convert(event(occurred_at=future))
    assert caught.value.field == "occurred_at"


def test_unknown_fields_are_ignored_for_forward_compatibility(decoder: EventDecoder) -> None:
    decoded = decoder.decode(raw(specversion="1.0", extra={"a": 1}))
    assert msgspec.to_builtins(decoded)["event_id"] == "evt-1"
