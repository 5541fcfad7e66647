"""The CloudEvents Kafka protocol binding: records made by the official SDK, binary and
structured, become event JSON the decoder accepts; other records are left alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary, to_structured

from schemas import EventDecoder
from schemas.cloudevents import from_kafka
from schemas.decode import EventError

AT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def sdk_event(**data: object) -> CloudEvent:
    return CloudEvent({"type": "io.touchstream.nps.v1", "source": "/surveys/sms",
                       "id": "k-1", "subject": "c-9", "time": AT.isoformat(),
                       "datacontenttype": "application/json", "partitionkey": "c-9"},
                      {"touchpoint": "support", "channel": "sms", "value": 9,
                       "comment": "Kiitos paljon — Ευχαριστώ", **data})


def headers_of(message: object) -> list[tuple[str, bytes]]:
    return list(message.headers.items())  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_sdk_records_become_events(mode: str) -> None:
    event = sdk_event()
    message = (to_binary(event, data_marshaller=lambda d: json.dumps(d).encode())
               if mode == "binary" else to_structured(event))
    value = from_kafka(headers_of(message), message.value)
    assert value is not None
    decoded = EventDecoder(clock=lambda: AT.timestamp()).decode(value)
    assert (decoded.event_id, decoded.customer_id, decoded.kind, decoded.source) == (
        "k-1", "c-9", "nps", "/surveys/sms")
    assert decoded.occurred_at == AT and decoded.comment == "Kiitos paljon — Ευχαριστώ"


def test_plain_records_are_left_alone() -> None:
    plain = orjson.dumps({"event_id": "e", "kind": "csat", "value": 4})
    assert from_kafka([], plain) is None
    assert from_kafka([("trace", b"x")], plain) is None
    assert from_kafka([], b"{broken") is None
    assert from_kafka([], None) is None


def test_envelope_problems_name_the_attribute() -> None:
    with pytest.raises(EventError) as caught:
        from_kafka([("ce_specversion", b"1.0"), ("ce_type", b"io.touchstream.csat.v1")],
                   b"[1, 2]")
    assert caught.value.field == "data"
    with pytest.raises(EventError) as caught:
        from_kafka([("ce_specversion", b"0.3")], b"{}")
    assert caught.value.field == "specversion"
    with pytest.raises(EventError) as caught:
        from_kafka([("content-type", b"application/cloudevents+json")], b"{nope")
    assert caught.value.field == "$"
