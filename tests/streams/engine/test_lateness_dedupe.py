"""Late events and duplicates: handed back in ``IngestResult``, counted, never aggregated.

Late means older than the watermark minus ``lateness_horizon`` (here 600 s, as short as
``allowed_lateness``, so both boundaries coincide; ``test_late_answers.py`` has them
apart)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from engine_reference import BASE, make_event

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine

T0 = 1_774_648_800  # BASE as epoch seconds
CONFIG = EngineConfig(scopes=((),), allowed_lateness=600, lateness_horizon=600)


def ev(event_id: str, at: int, value: int = 4) -> TouchpointEvent:
    """A csat event ``at`` seconds after BASE."""
    return make_event(event_id=event_id, occurred_at=BASE + timedelta(seconds=at), value=value)


def total_n(engine: Engine, window: str = "7d") -> int:
    return sum(s.score.n for s in engine.scores("continuous", window))


@pytest.mark.parametrize(
    ("offset", "late"),
    [
        (-601, True),     # older than watermark - lateness_horizon
        (-3600, True),
        (-600, False),    # exactly at the boundary: accepted
        (-599, False),
        (-1, False),
        (0, False),
        (5000, False),
    ],
)
def test_lateness_boundary(offset: int, late: bool) -> None:
    engine = Engine(CONFIG)
    engine.ingest([ev("anchor", 0)])
    event = ev("x", offset, value=1)
    result = engine.ingest([event])
    assert result.late == ([event] if late else [])
    assert result.duplicates == []
    assert result.accepted == (0 if late else 1)
    assert engine.counters["late"] == int(late)
    assert engine.counters["accepted"] == (1 if late else 2)
    assert engine.watermark == T0 + max(0, offset)
    assert total_n(engine) == (1 if late else 2)
    [csat] = engine.scores("continuous", "7d")
    assert csat.score.value == (1.0 if late else 0.5)  # the late 1-star never got in


# Each batch lists (event id, seconds after BASE); the expected columns list, per batch,
# (accepted, duplicate ids, late ids), then the final watermark offset and counters.
Batch = list[tuple[str, int]]
BATCH_CASES = [
    pytest.param([[("a", 1000), ("b", 300)]], [(1, [], ["b"])], 1000, id="late-inside-a-batch"),
    pytest.param([[("b", 300), ("a", 1000)]], [(2, [], [])], 1000, id="arrival-order-matters"),
    pytest.param([[("a", 1000), ("b", 400)]], [(2, [], [])], 1000, id="boundary-inside-batch"),
    pytest.param([[("a", 0), ("b", 10), ("a", 0)]], [(2, ["a"], [])], 10,
                 id="duplicate-inside-a-batch"),
    pytest.param([[("a", 0), ("a", 0), ("a", 0)]], [(1, ["a", "a"], [])], 0,
                 id="triplicate"),
    pytest.param([[("a", 0)], [("a", 0), ("c", 5)]], [(1, [], []), (1, ["a"], [])], 5,
                 id="duplicate-across-batches"),
    pytest.param([[("a", 0)], [("a", 900)]], [(1, [], []), (0, ["a"], [])], 0,
                 id="same-id-other-time-is-a-duplicate"),
    # A late event was never counted, so it is not remembered: sent again, it is late
    # again (not a duplicate), in another batch or in the same one.
    pytest.param([[("a", 2000)], [("l", 0)], [("l", 0)]],
                 [(1, [], []), (0, [], ["l"]), (0, [], ["l"])], 2000,
                 id="a-late-event-sent-again-is-late-again"),
    pytest.param([[("a", 2000)], [("l", 0), ("l", 0), ("a", 2000)]],
                 [(1, [], []), (0, ["a"], ["l", "l"])], 2000,
                 id="a-late-event-twice-in-a-batch-is-late-twice"),
    pytest.param([[("l", 0), ("a", 2000)], [("b", 1400), ("c", 1399), ("b", 1400)]],
                 [(2, [], []), (1, ["b"], ["c"])], 2000, id="mixed"),
    pytest.param([[]], [(0, [], [])], None, id="empty-batch"),
]


@pytest.mark.parametrize(("batches", "expected", "watermark"), BATCH_CASES)
def test_duplicates_and_late_events(batches: list[Batch],
                                    expected: list[tuple[int, list[str], list[str]]],
                                    watermark: int | None) -> None:
    engine = Engine(CONFIG)
    got = []
    for n, batch in enumerate(batches):
        result = engine.ingest([ev(eid, at, value=1 + n % 5) for eid, at in batch])
        got.append((result.accepted, [e.event_id for e in result.duplicates],
                    [e.event_id for e in result.late]))
    assert got == expected
    assert engine.watermark == (None if watermark is None else T0 + watermark)
    accepted = sum(a for a, _, _ in expected)
    assert engine.counters["accepted"] == accepted
    assert engine.counters["duplicate"] == sum(len(d) for _, d, _ in expected)
    assert engine.counters["late"] == sum(len(late) for _, _, late in expected)
    assert total_n(engine) == accepted  # each accepted event counted exactly once


def test_the_first_copy_wins() -> None:
    engine = Engine(CONFIG)
    first, second = ev("a", 0, value=5), ev("a", 0, value=1)
    result = engine.ingest([first, second])
    assert result.duplicates == [second]
    assert result.duplicates[0] is second
    [csat] = engine.scores("continuous", "1h")
    assert (csat.score.n, csat.score.value) == (1, 1.0)


def test_no_lateness_allowed() -> None:
    engine = Engine(EngineConfig(scopes=((),), allowed_lateness=0, lateness_horizon=0))
    result = engine.ingest([ev("a", 100), ev("b", 100), ev("c", 99), ev("d", 101)])
    assert (result.accepted, [e.event_id for e in result.late]) == (3, ["c"])


def test_duplicates_survive_a_snapshot() -> None:
    engine = Engine(CONFIG)
    engine.ingest([ev("a", 0), ev("b", 10)])
    resumed = Engine.restore(CONFIG, engine.snapshot())
    result = resumed.ingest([ev("a", 0), ev("c", 20), ev("late", -700)])
    assert ([e.event_id for e in result.duplicates], [e.event_id for e in result.late]) == (
        ["a"], ["late"])
    assert (resumed.counters["accepted"], resumed.counters["duplicate"],
            resumed.counters["late"]) == (3, 1, 1)


# -- the dedupe horizon ------------------------------------------------------------------


def fill(engine: Engine, n: int, at: int) -> None:
    result = engine.ingest([ev(f"fill-{i}", at) for i in range(n)])
    assert result.accepted == n


def test_a_horizon_shorter_than_the_lateness_is_refused() -> None:
    """A forgotten id that is still within the lateness horizon would be counted twice."""
    with pytest.raises(ValueError, match="dedupe_horizon must be at least lateness_horizon"):
        EngineConfig(scopes=((),), lateness_horizon=3600, dedupe_horizon=60)
    with pytest.raises(ValueError, match="lateness_horizon must be at least allowed_lateness"):
        EngineConfig(scopes=((),), allowed_lateness=3600, lateness_horizon=60)
    assert EngineConfig(scopes=((),)).dedupe_span == 35 * 86_400  # the lateness horizon


def test_before_the_prune_runs_old_ids_are_still_duplicates() -> None:
    """Ids are pruned lazily, when the remembered set has doubled past 1024."""
    cfg = EngineConfig(scopes=((),), allowed_lateness=60, lateness_horizon=60, dedupe_horizon=60)
    engine = Engine(cfg)
    engine.ingest([ev("old", 0)])
    fill(engine, 2000, 1000)  # 2001 ids remembered: below the first prune at 2048
    result = engine.ingest([ev("old", 0)])
    assert (result.accepted, [e.event_id for e in result.duplicates]) == (0, ["old"])


def test_with_a_horizon_at_least_the_lateness_a_forgotten_id_is_late_not_counted() -> None:
    cfg = EngineConfig(scopes=((),), allowed_lateness=60, lateness_horizon=60, dedupe_horizon=60)
    engine = Engine(cfg)
    engine.ingest([ev("old", 0)])
    fill(engine, 2100, 1000)
    assert "old" not in engine.seen
    result = engine.ingest([ev("old", 0)])
    assert (result.accepted, [e.event_id for e in result.late]) == (0, ["old"])
    assert total_n(engine) == 1 + 2100
