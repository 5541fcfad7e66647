"""The alert book read back from the alerts topic is the evaluator's book, and an
evaluator that takes over from it goes on exactly as the one that never stopped (no
alert re-opens under a new id). Follow-ups: a person's status record wins over a
worker's copy in any order. Without a broker: records are the bytes the topics hold.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.decode import EventDecoder
from streams.detection import (
    AlertChange,
    DetectionConfig,
    Detector,
    DropRule,
    FollowUp,
    FollowUpBook,
    FollowUpUpdate,
)
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.worker.alerts import DetectorMirror, status_key

CONFIG = EngineConfig(scopes=((), ("channel",)))
DETECTION = DetectionConfig(drops=(DropRule(
    name="csat-drop", metric="csat", scopes=(("channel",),), hold_seconds=300,
    clear_seconds=600, min_n_window=40, min_n_baseline=100),))
START = datetime(2026, 11, 1, tzinfo=UTC)


def minutes(n: int, *, drop_from: int, drop_until: int, seed: int = 3) -> list[list[Any]]:
    """``n`` minutes of chat and phone CSAT, 10 answers a minute each; chat falls from
    85% to 40% top-2-box between ``drop_from`` and ``drop_until``."""
    rng = random.Random(seed)
    decoder = EventDecoder()
    out = []
    for m in range(n):
        at = START + timedelta(minutes=m)
        batch = []
        for k in range(20):
            channel = "chat" if k % 2 else "phone"
            good = 0.4 if channel == "chat" and drop_from <= m < drop_until else 0.85
            batch.append(decoder.convert({
                "event_id": f"e-{m}-{k}", "occurred_at": (at + timedelta(seconds=3 * k))
                .isoformat(), "customer_id": f"c-{k}", "touchpoint": "support",
                "channel": channel, "kind": "csat", "value": 5 if rng.random() < good else 2}))
        out.append(batch)
    return out


def run(detector: Detector, engine: Engine, batches: list[list[Any]]) -> list[AlertChange]:
    """Ingest minute by minute, evaluating as the runners do (every 60 s of event time)."""
    changes: list[AlertChange] = []
    for batch in batches:
        engine.ingest(batch)
        assert engine.watermark is not None
        if detector.due(engine.watermark, 60):
            changes += detector.evaluate(engine, engine.watermark)
    return changes


def published(changes: list[AlertChange]) -> list[bytes]:
    return [orjson.dumps(c.record()) for c in changes]


def book(detector: Detector) -> list[dict[str, Any]]:
    return [a.to_dict() for a in detector.alerts.list()]


def test_the_book_read_back_is_the_evaluators_book() -> None:
    evaluator = Detector(DETECTION)
    changes = run(evaluator, Engine(CONFIG), minutes(4 * 24 * 60 // 10, drop_from=400,
                                                      drop_until=460))
    assert {c.state for c in changes} == {"pending", "firing", "resolved"}
    mirror = DetectorMirror(Detector(DETECTION))
    for value in published(changes):
        mirror.apply_alert(value)
    assert book(mirror.detector) == book(evaluator)
    assert mirror.detector.changes == evaluator.changes
    # A replayed publication (an at-least-once producer's retry) changes nothing.
    for value in published(changes):
        mirror.apply_alert(value)
    assert book(mirror.detector) == book(evaluator)


def test_a_new_evaluator_carries_open_alerts_on_under_their_ids() -> None:
    batches = minutes(4 * 24 * 60 // 10, drop_from=400, drop_until=470)
    whole = Detector(DETECTION)
    engine = Engine(CONFIG)
    all_changes = run(whole, engine, batches)
    # The leader dies mid-incident (an alert firing); a new one loads the topic.
    cut = 440
    first = Detector(DETECTION)
    engine2 = Engine(CONFIG)
    before = run(first, engine2, batches[:cut])
    assert any(a.state == "firing" for a in first.alerts.active.values())
    successor = Detector(DETECTION)
    mirror = DetectorMirror(successor)
    for value in published(before):
        mirror.apply_alert(value)
    after = run(successor, engine2, batches[cut:])
    got = [(c.alert.id, c.previous, c.state, c.at) for c in before + after]
    want = [(c.alert.id, c.previous, c.state, c.at) for c in all_changes]
    assert got == want
    assert book(successor) == book(whole)


def followup(status: str = "open", **changes: Any) -> FollowUp:
    item = FollowUp("f1", "unhappy", "e-1", "c-1", None, "enterprise", "chat", "support",
                    "very dissatisfied: csat 1", "account-team", 1_700_000_000)
    item.status = status  # type: ignore[assignment]
    for k, v in changes.items():
        setattr(item, k, v)
    return item


def test_a_persons_close_wins_over_the_workers_copy_in_any_order() -> None:
    worker = orjson.dumps(followup().to_dict())
    closed = orjson.dumps(followup("closed", closed_at=1_700_000_600, note="refunded",
                                   updated_by="ann", updated_at=1_700_000_600).to_dict())
    for order in ([(b"f1", worker), (status_key("f1"), closed)],
                  [(status_key("f1"), closed), (b"f1", worker)],
                  [(b"f1", worker), (status_key("f1"), closed), (b"f1", worker)]):
        mirror = DetectorMirror(Detector(DETECTION))
        for key, value in order:
            mirror.apply_followup(key, value)
        (item,) = mirror.detector.followups.list()
        assert (item.status, item.note, item.updated_by, item.closed_at) == (
            "closed", "refunded", "ann", 1_700_000_600)
        assert not mirror.detector.followups.open


def test_followup_updates_round_trip_and_apply_in_order() -> None:
    update = FollowUpUpdate("f1", "assign", "boss", "Ηλίας θα καλέσει", 1_700_000_100,
                            "Ηλίας")
    assert FollowUpUpdate.decode(update.encode()) == update
    books = FollowUpBook()
    books.add([followup()])
    books.apply(update)
    books.apply(FollowUpUpdate("f1", "close", "boss", "done", 1_700_000_200))
    (item,) = books.list()
    assert (item.status, item.assignee, item.note, item.closed_at, item.updated_by) == (
        "closed", "Ηλίας", "done", 1_700_000_200, "boss")
    assert FollowUp.from_dict(orjson.loads(orjson.dumps(item.to_dict()))) == item
