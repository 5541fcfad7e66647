"""CloudEvents on the input topic (the Kafka protocol binding): a partition's records
made by the official SDK, binary and structured, among plain ones, count as the same
events in the same order; a CloudEvent that cannot carry an event is a dead letter that
names the attribute, with its bytes as they came."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary, to_structured

from streams.engine.config import EngineConfig
from streams.worker.partition import PartitionState
from tests.streams.worker.record_support import Record

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)




def fields(i: int) -> dict[str, object]:
    return {"touchpoint": "support", "channel": ("chat", "phone")[i % 2], "value": 1 + i % 5,
            "comment": "Takk fyrir — سپاس"}


def plain(i: int) -> bytes:
    return orjson.dumps({"event_id": f"e-{i}", "kind": "csat", "customer_id": f"c-{i % 4}",
                         "occurred_at": (NOW + timedelta(seconds=i)).isoformat(),
                         "source": "/surveys", **fields(i)})


def as_cloudevent(i: int) -> CloudEvent:
    return CloudEvent({"type": "io.touchstream.csat.v1", "source": "/surveys",
                       "id": f"e-{i}", "subject": f"c-{i % 4}",
                       "time": (NOW + timedelta(seconds=i)).isoformat(),
                       "datacontenttype": "application/json"}, fields(i))


def record(offset: int, i: int) -> Record:
    mode = i % 3
    if mode == 0:
        return Record(offset, None, plain(i))
    if mode == 1:
        message = to_binary(as_cloudevent(i), data_marshaller=lambda d: json.dumps(d).encode())
    else:
        message = to_structured(as_cloudevent(i))
    return Record(offset, None, message.value, None, tuple(message.headers.items()))


def test_cloudevents_count_as_the_events_they_carry() -> None:
    config = EngineConfig()
    state = PartitionState.fresh(0, config)
    report = state.process([record(i, i) for i in range(60)])
    assert (report.accepted, report.rejected, len(report.dead_letters)) == (60, 0, 0)
    # The same events as plain records, in the same order: the same engine.
    want = PartitionState.fresh(0, config)
    want.process([Record(i, None, plain(i)) for i in range(60)])
    for window in ("15m", "1h", "24h"):
        assert state.engine.scores("continuous", window, scope=("channel",)) == \
            want.engine.scores("continuous", window, scope=("channel",))
    # Sent again as CloudEvents: duplicates (id is event_id).
    again = state.process([Record(60 + i, None, r.value, None, r.headers)
                           for i, r in enumerate(record(i, i) for i in range(60))])
    assert (again.accepted, again.duplicates) == (0, 60)


def test_a_broken_envelope_is_a_dead_letter_naming_the_attribute() -> None:
    state = PartitionState.fresh(0, EngineConfig())
    message = to_binary(as_cloudevent(1), data_marshaller=lambda d: json.dumps(d).encode())
    headers = tuple((k, b"0.3" if k == "ce_specversion" else v)
                    for k, v in message.headers.items())
    unknown = tuple((k, b"com.example.order" if k == "ce_type" else v)
                    for k, v in message.headers.items())
    report = state.process([Record(0, None, plain(0)),
                            Record(1, None, message.value, None, headers),
                            Record(2, None, message.value, None, unknown),
                            Record(3, None, plain(3))])
    assert (report.accepted, report.rejected) == (2, 2)
    by_offset = {d.offset: d for d in report.dead_letters}
    assert by_offset[1].value == message.value  # as it came
    assert {offset: d.field for offset, d in by_offset.items()} == {1: "specversion",
                                                                     2: "type"}
    assert "0.3" in by_offset[1].reason
