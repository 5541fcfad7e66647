"""Backfill (issue 18, item 3): history loaded on purpose counts in every window and
calendar period the state keeps, however old; what is older than anything kept is
handed back as too old, with the bound in the reason; it opens no follow-up and runs no
detection (never pages); the embedded log replays it as backfill; a worker partition
takes the mode from the record header."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from schemas import EventDecoder
from schemas.modes import BACKFILL, MODE_HEADER
from streams.deadletters import TOO_OLD_REASON, late_reason
from streams.detection import DetectionConfig, FollowUpRule
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.pipeline import Pipeline, convert_many
from streams.worker.partition import PartitionState
from tests.streams.worker.record_support import Record

NOW = 1_796_601_600  # 2026-12-07T00:00:00Z
DAY = 86_400
CONFIG = EngineConfig(scopes=((), ("channel",)))
UNHAPPY = DetectionConfig(followups=(FollowUpRule(name="unhappy",
                                                  condition="very_dissatisfied"),))


def clock() -> float:
    return NOW + 3600


def event(i: int, at: float, value: int = 1, **fields: Any) -> dict[str, Any]:
    base = {"event_id": f"e-{i}", "customer_id": f"c-{i % 4}", "touchpoint": "support",
            "channel": ("chat", "web")[i % 2], "kind": "csat", "value": value,
            "occurred_at": datetime.fromtimestamp(at, UTC).isoformat()}
    base.update(fields)
    return base


LIVE = [event(i, NOW - 600 + i, value=5) for i in range(20)]
# Four months back (kept: 13 months, past the 35-day horizon), and 30 months back
# (not: the longest kept are 8 quarters).
HISTORY = ([event(100 + i, NOW - 120 * DAY + i * 60) for i in range(30)]
           + [event(200 + i, NOW - 900 * DAY + i) for i in range(5)])
MONTH = datetime.fromtimestamp(NOW - 120 * DAY, UTC).strftime("%Y-%m")


def month_n(engine: Engine) -> int:
    (score,) = engine.scores("periodic", "month", metric="csat", period=MONTH)
    return score.score.n


def test_history_counts_where_kept_and_older_is_too_old() -> None:
    decoder = EventDecoder(clock=clock)
    engine = Engine(CONFIG)
    pipeline = Pipeline(engine)
    pipeline.run(convert_many(decoder, LIVE))
    live = pipeline.run(convert_many(decoder, HISTORY))  # as live: past the horizon
    assert (live.accepted, live.late) == (0, 35)
    assert {o.reason for o in live.outcomes() if o.status == "late"} == {
        late_reason(CONFIG.lateness_horizon)}

    backfill = pipeline.run(convert_many(decoder, HISTORY), backfill=True)
    assert (backfill.accepted, backfill.late) == (30, 5)
    assert [i for i, _ in backfill.late_events()] == [30, 31, 32, 33, 34]
    reasons = {o.reason for o in backfill.outcomes() if o.status == "late"}
    assert len(reasons) == 1 and reasons.pop().startswith(TOO_OLD_REASON + " (kept since ")
    assert backfill.result.too_old_since == engine.kept_since()
    assert month_n(engine) == 30
    assert engine.customers.get("c-0")["signals"] == 5 + 8  # live 5, history 8 of 30


def test_a_backfill_sent_again_is_duplicate_past_the_dedupe_horizon() -> None:
    """Its ids are kept as long as the state keeps their time (not only the 35-day
    dedupe horizon of live answers), across pruning and a snapshot."""
    decoder = EventDecoder(clock=clock)
    pipeline = Pipeline(Engine(CONFIG))
    pipeline.run(convert_many(decoder, LIVE))
    first = pipeline.run(convert_many(decoder, HISTORY[:30]), backfill=True)
    assert first.accepted == 30
    for b in range(5):  # enough live traffic for the dedupe memory to prune
        pipeline.run(convert_many(decoder, [
            event(10_000 + b * 1000 + i, NOW - 300 + i / 10, value=4) for i in range(1000)]))
    engine = pipeline.engine
    assert HISTORY[0]["event_id"] in engine.seen
    restored = Pipeline(Engine.restore(CONFIG, engine.snapshot()))
    for target in (pipeline, restored):
        again = target.run(convert_many(decoder, HISTORY[:30]), backfill=True)
        assert (again.accepted, again.duplicates) == (0, 30)
    live_late = [event(400 + i, NOW - 60 * DAY) for i in range(3)]  # live, past the horizon
    assert pipeline.run(convert_many(decoder, live_late)).late == 3
    # Handed back as late, never counted: not remembered, so the backfill counts them.
    assert pipeline.run(convert_many(decoder, live_late), backfill=True).accepted == 3


def test_backfill_opens_no_followup_and_never_evaluates(tmp_path: Path) -> None:
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, detection=UNHAPPY) as runner:
        runner.submit_blocking(LIVE)
        evaluated = runner.read_detector_blocking(lambda d: d.last_evaluated)
        answered = runner.submit_blocking(HISTORY, backfill=True)
        assert [o.status for o in answered].count("accepted") == 30
        assert runner.read_detector_blocking(lambda d: (d.last_evaluated,
                                                        d.followups.list())) == (evaluated, [])
        live_unhappy = runner.submit_blocking([event(300, NOW - 30)])
        assert live_unhappy[0].status == "accepted"
        assert len(runner.read_detector_blocking(lambda d: d.followups.list())) == 1
        before = runner.read_blocking(lambda e: e.snapshot())
        runner._release()  # a crash: the log holds the backfill, replayed as one
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, detection=UNHAPPY) as again:
        assert again.read_blocking(lambda e: e.snapshot()) == before
        assert again.read_blocking(month_n) == 30
        assert len(again.read_detector_blocking(lambda d: d.followups.list())) == 1


def test_a_worker_partition_takes_the_mode_from_the_header() -> None:
    """Live and backfill records interleaved in one partition: each run counted in its
    mode, the same as one engine fed the same runs."""
    rules = UNHAPPY.followups
    state = PartitionState.fresh(0, CONFIG, EventDecoder(clock=clock))
    state.followup_rules = rules
    mode = ((MODE_HEADER, BACKFILL),)
    records = ([Record(i, None, orjson.dumps(e)) for i, e in enumerate(LIVE)]
               + [Record(20 + i, None, orjson.dumps(e), headers=mode)
                  for i, e in enumerate(HISTORY)]
               + [Record(55, None, orjson.dumps(event(300, NOW - 30)))])
    report = state.process(records)
    assert (report.accepted, report.late) == (51, 5)
    assert {d.reason.split(" (")[0] for d in report.dead_letters} == {TOO_OLD_REASON}
    assert len(report.followups) == 1  # the live unhappy answer, not the history
    assert month_n(state.engine) == 30

    decoder = EventDecoder(clock=clock)
    oracle = Pipeline(Engine(CONFIG), followup_rules=rules)
    oracle.run(convert_many(decoder, LIVE))
    oracle.run(convert_many(decoder, HISTORY), backfill=True)
    oracle.run(convert_many(decoder, [event(300, NOW - 30)]))
    state.engine.counters.pop("rejected", None)
    assert state.engine.snapshot() == oracle.engine.snapshot()
