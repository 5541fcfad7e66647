"""The dead-letter contract (streams/deadletters.py): what is kept, how it is shown, and
each event's own bytes out of an HTTP body. Both runners answer through ``letter``;
tests/integration/test_dead_letter_contract.py runs them side by side."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from streams.deadletters import (
    KINDS,
    BodyItems,
    keep,
    kind_of,
    late_reason,
    letter,
    payload_bytes,
    reencoded,
    source,
    split_body,
)
from streams.worker.reader import dead_letter_of

TEXTS = {
    "icelandic": "Þjónustan var frábær, takk fyrir! Ég bíð þó enn eftir svari.",
    "persian": "پشتیبانی عالی بود، ممنون. هنوز منتظر پاسخ هستم.",
    "greek": "Η εξυπηρέτηση ήταν εξαιρετική — ευχαριστώ πολύ!",
}


def shown(data: bytes, max_bytes: int = 64) -> dict[str, Any]:
    return letter(kind="invalid", field="value", reason="r", received_at=0.0,
                  source=source("http", index=0), kept=keep(data, max_bytes),
                  max_bytes=max_bytes)


def test_the_fields_are_the_same_for_every_letter() -> None:
    item = shown(b'{"a": 1}')
    assert list(item) == ["kind", "field", "reason", "received_at", "source", "size",
                          "sha256", "truncated", "payload", "payload_base64"]
    assert item["received_at"] == "1970-01-01T00:00:00.000+00:00"
    assert item["source"] == {"topic": "http", "partition": None, "offset": None, "index": 0}
    assert (item["size"], item["truncated"], item["payload"], item["payload_base64"]) == (
        8, False, '{"a": 1}', None)
    assert item["sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_text_in_any_script_round_trips_as_text(name: str) -> None:
    data = orjson.dumps({"comment": TEXTS[name]})
    item = shown(data, max_bytes=1 << 16)
    assert item["payload_base64"] is None
    assert item["payload"].encode() == data == payload_bytes(item)


def test_bytes_that_are_not_utf8_round_trip_through_base64() -> None:
    data = b'{"channel": "\xff\xfe caf\xc3("}'
    item = shown(data)
    assert "\ufffd" in item["payload"]  # readable, marked where bytes are not text
    assert payload_bytes(item) == data
    assert item["size"] == len(data) and not item["truncated"]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_a_payload_over_the_cap_keeps_exactly_the_first_bytes(name: str) -> None:
    data = orjson.dumps({"comment": TEXTS[name] * 50})
    item = shown(data, max_bytes=101)
    assert item["truncated"] and item["size"] == len(data)
    assert item["sha256"] == hashlib.sha256(data).hexdigest()  # of all of it
    assert payload_bytes(item) == data[:101]
    # a cut through a character is not text: the exact bytes are in base64
    cut_inside = data[:101] != data[:101].decode("utf-8", "ignore").encode()
    assert (item["payload_base64"] is not None) == cut_inside


def test_the_cap_applies_again_when_reading_with_a_smaller_one() -> None:
    kept = keep(b"x" * 100, 80)
    assert (len(kept.head), kept.size) == (80, 100)
    item = letter(kind="late", field="occurred_at", reason="r", received_at=1.5,
                  source=source(), kept=kept, max_bytes=10)
    assert item["payload"] == "x" * 10 and item["truncated"]
    assert keep(None, 10).size == 0 and keep(b"", 0).head == b""


def test_kinds_and_legacy_words() -> None:
    assert KINDS == ("invalid", "late", "bad_body", "bad_command")
    assert kind_of("rejected", "value") == "invalid"
    assert kind_of("rejected", "control.pulse_id") == "bad_command"
    assert kind_of("late", "occurred_at") == "late"
    assert late_reason(600) == "older than the watermark minus the lateness horizon (600 s)"
    assert late_reason(35 * 86_400) == ("older than the watermark minus the lateness horizon "
                                        "(3024000 s, 35 days)")


@pytest.mark.parametrize("body", [
    b'[{"a": 1},  {"b" : [1, 2 ]} ,"x",42]',
    b' {"events": [ {"a": "\\u00fe"},\n\t{"b": {"c": null}} ], "extra": true} ',
    '[{"comment": "Þökk ☕ سلام Ευχαριστώ"}]'.encode(),
])
def test_each_event_keeps_its_own_bytes_from_the_body(body: bytes) -> None:
    parsed = orjson.loads(body)
    items = parsed["events"] if isinstance(parsed, dict) else parsed
    parts = split_body(body, len(items))
    assert parts is not None
    for part, item in zip(parts, items, strict=True):
        assert part in body and orjson.loads(part) == item
    assert b"  " not in parts[0] or b"  " in body  # as written, spaces included


def test_one_event_body_is_its_own_bytes_and_odd_bodies_fall_back() -> None:
    body = b'  {"event_id": "e", "kind": "csat"}\n'
    assert split_body(body, 1) == [body]
    assert split_body(b'"text"', 1) is None
    assert split_body(b"[1, 2]", 3) is None  # not the route's count
    items = [{"a": 1}, {"b": 2}]
    fallback = BodyItems(b"[1, 2, 3]", items)  # not the parsed count: re-encoded
    assert fallback(1) == orjson.dumps({"b": 2})
    assert reencoded({1: object}).startswith(b"{")  # never raises


def test_body_items_splits_only_when_asked() -> None:
    body = b'[{"a":1}, {"b":2}]'
    items = BodyItems(body, orjson.loads(body))
    assert items._parts is None  # nothing done for a batch without dead letters
    assert items(1) == b'{"b":2}' and items(0) == b'{"a":1}'


def test_a_kafka_record_reads_as_the_same_contract() -> None:
    value = orjson.dumps({"comment": TEXTS["greek"]})
    headers = [("h", b"v"), ("touchstream.kind", b"late"),
               ("touchstream.field", b"occurred_at"),
               ("touchstream.reason", late_reason(600).encode()),
               ("touchstream.source.topic", b"touchpoints"),
               ("touchstream.source.partition", b"2"), ("touchstream.source.offset", b"17")]
    item = dead_letter_of(headers, value, 1_500, 64 * 1024)
    assert item == {**shown(value, 64 * 1024), "kind": "late", "field": "occurred_at",
                    "reason": late_reason(600), "received_at": "1970-01-01T00:00:01.500+00:00",
                    "source": {"topic": "touchpoints", "partition": 2, "offset": 17,
                               "index": None}}
    legacy = dead_letter_of([("touchstream.status", b"rejected"),
                             ("touchstream.field", b"value")], None, 0, 10)
    assert (legacy["kind"], legacy["size"], legacy["payload"]) == ("invalid", 0, "")
