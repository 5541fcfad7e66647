"""A rejected event reports every problem it has, not only the first one msgspec met.

The first problem stays ``field`` and ``reason`` (what every caller reads), and an
event with one problem is rejected exactly as before: the field and the reason that
msgspec's own error gives (``explain``), or the clock check's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import EventDecoder, EventError, TouchpointEvent
from schemas.decode import explain

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GONE = object()
"""A field left out of the event."""

BASE: dict[str, Any] = {
    "event_id": "evt-1",
    "occurred_at": "2026-11-24T11:59:00+01:00",
    "customer_id": "cus-1",
    "touchpoint": "support_call",
    "channel": "phone",
    "kind": "csat",
    "value": 4,
}
ORDER = ["kind", "value", "schema_version", "event_id", "source", "occurred_at",
         "customer_id", "segment", "offering", "journey_type", "journey_id", "stage",
         "journey_end", "touchpoint", "channel", "contact", "owner", "program", "comment"]
"""The schema's field order: the tag, the kind's own fields, then the common ones
(msgspec's order, and that of ``required`` in the published JSON Schema)."""

BREAKS: dict[str, list[tuple[object, str]]] = {
    "kind": [("stars", "unknown kind (expected one of csat, nps, ces, rating, outcome, "
                       "sentiment)"), (GONE, "is required")],
    "value": [(9, "Expected `int` <= 5"), ("4", "Expected `int`, got `str`"),
              (4.5, "Expected `int`, got `float`"), (GONE, "is required")],
    "schema_version": [("2", "unknown schema version (supported: 1)")],
    "event_id": [("", "Expected `str` of length >= 1"), (GONE, "is required"),
                 ("e" * 129, "Expected `str` of length <= 128")],
    "occurred_at": [("yesterday", "Invalid RFC3339 encoded datetime"),
                    ("2026-11-24T11:59:00", "Expected `datetime` with a timezone component"),
                    (GONE, "is required")],
    "customer_id": [(GONE, "is required"), (7, "Expected `str`, got `int`")],
    "segment": [("s" * 65, "Expected `str` of length <= 64"),
                (None, "Expected `str`, got `null`")],
    "stage": [("deliver", "Invalid enum value 'deliver'")],
    "journey_end": [("yes", "Expected `bool`, got `str`")],
    "channel": [(GONE, "is required"), (["chat"], "Expected `str`, got `array`"),
                ({"name": "chat"}, "Expected `str`, got `object`")],
    "comment": [("x" * 4001, "Expected `str` of length <= 4000")],
}
CLOCK = {
    "2026-11-25T12:00:00Z": "is 1 day, 0:00:00 in the future (at most 0:15:00 allowed)",
    "1990-01-01T00:00:00Z": "is older than the oldest accepted age (3650 days)",
}
"""Times that are times, but not acceptable ones."""


def decoder() -> EventDecoder:
    return EventDecoder(clock=NOW.timestamp)


def rejection(data: bytes | dict[str, Any]) -> EventError:
    with pytest.raises(EventError) as caught:
        if isinstance(data, bytes):
            decoder().decode(data)
        else:
            decoder().convert(data)
    return caught.value


def raw(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


def test_three_problems_are_reported_with_their_fields() -> None:
    broken = {**BASE, "value": 9, "occurred_at": "yesterday"}
    del broken["customer_id"]
    for data in (raw(broken), broken):
        error = rejection(data)
        assert error.problems == (
            ("value", "Expected `int` <= 5"),
            ("occurred_at", "Invalid RFC3339 encoded datetime"),
            ("customer_id", "is required"),
        )
        assert (error.field, error.reason) == error.problems[0]
        assert str(error) == "value: Expected `int` <= 5 (and 2 more)"
        assert error.as_dict() == {
            "field": "value", "reason": "Expected `int` <= 5",
            "problems": [{"field": "value", "reason": "Expected `int` <= 5"},
                         {"field": "occurred_at",
                          "reason": "Invalid RFC3339 encoded datetime"},
                         {"field": "customer_id", "reason": "is required"}],
        }


def test_the_order_is_the_schemas_not_the_events() -> None:
    broken = {"channel": ["chat"], "event_id": "", "occurred_at": BASE["occurred_at"],
              "customer_id": "cus-1", "touchpoint": "support_call", "kind": "csat",
              "value": 0}
    backwards = dict(reversed(broken.items()))
    for data in (raw(broken), raw(backwards), broken, backwards):
        assert rejection(data).problems == (
            ("value", "Expected `int` >= 1"),
            ("event_id", "Expected `str` of length >= 1"),
            ("channel", "Expected `str`, got `array`"),
        )


def test_without_a_known_kind_the_common_fields_are_still_checked() -> None:
    error = rejection(raw({**BASE, "kind": "stars", "value": "whatever", "event_id": ""}))
    # the value's type depends on the kind: it cannot be checked without one
    assert error.problems == (
        ("kind", BREAKS["kind"][0][1]),
        ("event_id", "Expected `str` of length >= 1"),
    )
    error = rejection(raw({"value": 3, "segment": "", "channel": "chat"}))
    assert error.problems == (
        ("kind", "is required"), ("event_id", "is required"),
        ("occurred_at", "is required"), ("customer_id", "is required"),
        ("segment", "Expected `str` of length >= 1"), ("touchpoint", "is required"),
    )


def test_the_check_across_fields_runs_once_every_field_is_right() -> None:
    rating = {**BASE, "kind": "rating", "value": 3, "na_code": 3}
    assert rejection(raw(rating)).problems == (
        ("na_code", "`na_code` 3 lies inside the scale 1..5"),)
    # event_id wrong: the rating is not built, so its scale is not checked
    assert rejection(raw({**rating, "event_id": ""})).problems == (
        ("event_id", "Expected `str` of length >= 1"),)
    # a field of the check itself wrong on its own
    assert rejection(raw({**rating, "scale_max": 500})).problems == (
        ("scale_max", "Expected `int` <= 100"),)


def test_the_clock_is_checked_last_when_the_time_is_a_time() -> None:
    future = {**BASE, "value": 9, "event_id": "", "occurred_at": "2026-11-25T12:00:00Z"}
    for data in (raw(future), future):
        assert rejection(data).problems == (
            ("value", "Expected `int` <= 5"),
            ("event_id", "Expected `str` of length >= 1"),
            ("occurred_at", CLOCK["2026-11-25T12:00:00Z"]),
        )
    rating = {**BASE, "kind": "rating", "value": 3, "na_code": 3,
              "occurred_at": "1990-01-01T00:00:00Z"}
    assert rejection(raw(rating)).problems == (
        ("na_code", "`na_code` 3 lies inside the scale 1..5"),
        ("occurred_at", CLOCK["1990-01-01T00:00:00Z"]),
    )
    # only the clock: as before, one problem
    assert rejection(raw({**BASE, "occurred_at": "2026-11-25T12:00:00Z"})).problems == (
        ("occurred_at", CLOCK["2026-11-25T12:00:00Z"]),)


def test_unknown_fields_are_no_problem() -> None:
    error = rejection(raw({**BASE, "value": 9, "specversion": "1.0", "extra": {"a": [1]}}))
    assert error.problems == (("value", "Expected `int` <= 5"),)


@pytest.mark.parametrize(("data", "problem"), [
    (b"not json", ("$", "not valid JSON (JSON is malformed: invalid character (byte 4))")),
    (b'[{"kind": "csat"}]', ("$", "Expected `object`, got `array`")),
    (b'"an event"', ("$", "Expected `object`, got `str`")),
    (b'{"kind": "csat", "event_id": "\xff", "value": 9}',
     ("$", "not valid UTF-8 (invalid start byte)")),
    (raw(BASE)[:-3], ("$", "not valid JSON (Input data was truncated)")),
])
def test_what_is_not_an_event_object_is_one_problem(data: bytes,
                                                    problem: tuple[str, str]) -> None:
    assert rejection(data).problems == (problem,)


def test_bad_utf8_after_another_problem_is_named_by_its_field() -> None:
    # msgspec stops at the value, before it reads the bytes of event_id
    data = b'{"kind": "csat", "value": 9, "event_id": "\xff", ' + raw(BASE)[1:]
    data = data.replace(b'"event_id": "evt-1", ', b"")
    assert rejection(data).problems == (("value", "Expected `int` <= 5"),
                                        ("event_id", "not valid UTF-8 (invalid start byte)"))


def test_deep_nesting_inside_a_field_is_one_more_problem_not_a_crash() -> None:
    deep = {**BASE, "value": 9, "channel": json.loads("[" * 500 + "]" * 500)}
    for data in (raw(deep), deep):
        assert rejection(data).problems == (("value", "Expected `int` <= 5"),
                                            ("channel", "Expected `str`, got `array`"))


def test_a_key_given_twice_keeps_msgspecs_problem() -> None:
    # msgspec checks both values; the members seen on their own keep the last one (4)
    data = b'{"value": 9, ' + raw({**BASE, "event_id": ""})[1:]
    assert rejection(data).problems == (("value", "Expected `int` <= 5"),
                                        ("event_id", "Expected `str` of length >= 1"))


@st.composite
def broken_events(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A valid event broken in one or more fields, its keys in any order, and the
    problems it must be rejected with, in the schema's order."""
    fields = draw(st.lists(st.sampled_from(sorted(BREAKS)), min_size=1, max_size=5,
                           unique=True))
    event = dict(BASE)
    expected: list[tuple[str, str]] = []
    for name in fields:
        bad, reason = draw(st.sampled_from(BREAKS[name]))
        if bad is GONE:
            event.pop(name, None)
        else:
            event[name] = bad
        expected.append((name, reason))
    if "kind" in fields:  # without a known kind the value is not checked
        expected = [p for p in expected if p[0] != "value"]
    expected.sort(key=lambda p: ORDER.index(p[0]))
    if "occurred_at" not in fields and draw(st.booleans()):
        at = draw(st.sampled_from(sorted(CLOCK)))
        event["occurred_at"] = at
        expected.append(("occurred_at", CLOCK[at]))  # the clock comes last
    keys = draw(st.permutations(list(event)))
    return {k: event[k] for k in keys}, expected


@given(broken_events())
def test_every_problem_of_a_randomly_broken_event(
        case: tuple[dict[str, Any], list[tuple[str, str]]]) -> None:
    event, expected = case
    data = raw(event)
    for given_as in (data, event):
        error = rejection(given_as)
        assert list(error.problems) == expected
        assert error.problems[0] == (error.field, error.reason)
        assert error.as_dict()["problems"] == [{"field": f, "reason": r}
                                               for f, r in expected]
    try:  # msgspec's own problem (what was reported before) is always among them
        msgspec.json.decode(data, type=TouchpointEvent)
    except msgspec.ValidationError as exc:
        before = explain(exc)
        assert (before.field, before.reason) in error.problems
        if len(expected) == 1:
            assert (error.field, error.reason) == (before.field, before.reason)
    else:  # structurally right: only the clock is wrong
        assert len(expected) == 1 and expected[0][0] == "occurred_at"


@given(st.permutations(list(BASE)), st.fixed_dictionaries({}, optional={
    "segment": st.sampled_from(["enterprise", "é" * 64]),
    "stage": st.sampled_from(["recognize", "respond"]),
    "journey_id": st.one_of(st.none(), st.just("j-1")),
    "comment": st.text(max_size=50),
    "journey_end": st.booleans(),
}))
def test_valid_events_decode_as_msgspec_decodes_them(keys: list[str],
                                                     extra: dict[str, Any]) -> None:
    event = {**{k: BASE[k] for k in keys}, **extra}
    data = raw(event)
    expected = msgspec.json.decode(data, type=TouchpointEvent)
    assert decoder().decode(data) == expected
    assert decoder().convert(event) == expected
    assert decoder().decode_many([data, data]).events == [expected, expected]
