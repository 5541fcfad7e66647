"""The shared ingest pipeline (streams/pipeline.py): one wording for every outcome, the
same decode result from parsed JSON (the API) as from bytes (Kafka), and both runners'
adapters built on it agreeing with each other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import EventDecoder
from streams.deadletters import LATE_FIELD, late_reason
from streams.detection import DetectionConfig, Detector, FollowUpRule
from streams.embedded import DUPLICATE_REASON, EmbeddedRunner
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.pipeline import Pipeline, convert_many
from streams.worker.partition import PartitionState
from tests.streams.worker.record_support import Record

START = 1_767_225_600  # 2026-01-01T00:00:00Z
CONFIG = EngineConfig(scopes=((), ("channel",)))
HORIZON = CONFIG.lateness_horizon


def clock() -> float:
    return START + 90 * 86_400


def event(i: int, at: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"e-{i}", "customer_id": f"c-{i % 3}", "touchpoint": "support",
        "channel": ("chat", "web")[i % 2], "kind": "csat", "value": 1 + i % 5,
        "occurred_at": datetime.fromtimestamp(START + at, UTC).isoformat(),
    }
    base.update(fields)
    return base


BATCH = [
    event(1, 10 * 86_400),
    event(2, 10 * 86_400 + 5, comment="Þjónustan var hræðileg"),
    {"event_id": "bad-1", "kind": "csat"},            # invalid: fields missing
    event(1, 10 * 86_400),                             # a duplicate of the first
    event(3, 10 * 86_400 - HORIZON - 10),              # older than the horizon: late
    event(4, 10 * 86_400 + 9, value=9),                # invalid: value out of range
]


@dataclass(frozen=True)
class Seen:
    status: str
    field: str | None
    reason: str | None


def test_every_outcome_in_one_wording() -> None:
    decoded = convert_many(EventDecoder(clock=clock), BATCH)
    report = Pipeline(Engine(CONFIG)).run(decoded, len(BATCH))
    got = [(o.index, o.status, o.event_id, o.field, o.reason)
           for o in report.outcomes(lambda i: BATCH[i].get("event_id"))]
    assert [g[:3] for g in got] == [
        (0, "accepted", "e-1"), (1, "accepted", "e-2"), (2, "rejected", "bad-1"),
        (3, "duplicate", "e-1"), (4, "late", "e-3"), (5, "rejected", "e-4")]
    assert got[3][4] == DUPLICATE_REASON
    assert got[4][3:] == (LATE_FIELD, late_reason(HORIZON))
    assert got[5][3] == "value"
    assert [i for i, _ in report.late_events()] == [4]
    assert (report.accepted, report.duplicates, report.late) == (2, 1, 1)


def test_the_embedded_runner_and_a_worker_partition_say_the_same(tmp_path: Path) -> None:
    """The same batch through both runners' adapters: the same outcome per input
    (the embedded answer; the worker's counts and dead letters) and the same engine."""
    rules = (FollowUpRule(name="unhappy", condition="very_dissatisfied"),)
    detection = DetectionConfig(followups=rules)
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, detection=detection) as runner:
        answered = runner.submit_blocking(BATCH)
        embedded = runner.read_blocking(lambda engine: engine.snapshot())
        opened = runner.read_detector_blocking(lambda d: sorted(
            f.event_id for f in d.followups.list()))
    state = PartitionState.fresh(0, CONFIG, EventDecoder(clock=clock))
    state.followup_rules = rules

    report = state.process([Record(i, None, orjson.dumps(item))
                            for i, item in enumerate(BATCH)])
    assert (report.accepted, report.duplicates, report.late, report.rejected) == (
        sum(o.status == "accepted" for o in answered),
        sum(o.status == "duplicate" for o in answered),
        sum(o.status == "late" for o in answered),
        sum(o.status == "rejected" for o in answered))
    dead = {d.offset: Seen(d.kind, d.field, d.reason) for d in report.dead_letters}
    said = {o.index: Seen("invalid" if o.status == "rejected" else o.status, o.field,
                          o.reason)
            for o in answered if o.status in ("rejected", "late")}
    assert dead == said
    # The worker also keeps its partition's rejects among the engine's counters.
    assert state.engine.counters.pop("rejected") == 2
    assert state.engine.snapshot() == embedded
    assert sorted(f.event_id for f in report.followups) == opened
    assert opened  # the batch holds unhappy answers: the comparison is not empty


_value = st.one_of(st.integers(-1, 7), st.text(max_size=3), st.none())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "i": st.integers(0, 20), "at": st.integers(-HORIZON - 100, 20 * 86_400),
    "value": _value, "drop": st.sampled_from([None, "kind", "customer_id"]),
}), max_size=12))
def test_parsed_json_and_bytes_decode_alike(specs: list[dict[str, Any]]) -> None:
    """The API hands the pipeline parsed JSON, Kafka hands it bytes: same events, same
    rejects with the same field and reason."""
    items = []
    for spec in specs:
        item = event(spec["i"], spec["at"], value=spec["value"])
        if spec["drop"]:
            del item[spec["drop"]]
        items.append(item)
    decoder = EventDecoder(clock=clock)
    parsed = convert_many(decoder, items)
    raw = decoder.decode_many([orjson.dumps(item) for item in items])
    assert parsed.events == raw.events
    assert [(i, e.field, e.reason) for i, e in parsed.errors] == [
        (i, e.field, e.reason) for i, e in raw.errors]
    assert (parsed.positions or list(range(len(parsed.events)))) == (
        raw.positions or list(range(len(raw.events))))
    assert parsed.stamps.tolist() == raw.stamps.tolist()
    Detector(DetectionConfig())  # the detector accepts the default config (smoke)


def test_a_failing_evaluation_is_counted_and_the_events_still_count(
        monkeypatch: Any, caplog: Any) -> None:
    from streams.detection import sequential

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a defect in detection")

    monkeypatch.setattr(sequential, "scan", broken)
    detection = DetectionConfig.model_validate(
        {"drops": [{"name": "csat-drop", "metric": "csat", "test": "sequential"}]})
    detector = Detector(detection)
    pipeline = Pipeline(Engine(CONFIG), detector=detector)
    decoder = EventDecoder(clock=clock)
    for minute in range(3):
        report = pipeline.run(convert_many(decoder, [event(10 + minute, minute * 60)]))
        assert report.changes == [] and report.result.accepted == 1
    assert detector.failures == 3  # once per due evaluation, not once per batch forever
    assert "alert evaluation at" in caplog.text and "a defect in detection" in caplog.text
