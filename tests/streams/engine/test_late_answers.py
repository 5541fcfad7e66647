"""Late answers count: in the buckets of their event time, up to ``lateness_horizon``.

The oracle is a fresh engine fed the same accepted answers in event-time order: an
engine that took them hours or days late must hold the same aggregates. Only answers
older than the watermark minus the horizon are late (handed back, not counted); answers
behind ``allowed_lateness`` revise the windows they fall in (``late_answers``,
``revised_at``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest
from engine_reference import BASE, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine, event_seconds

DAY = 86_400
HOUR = 3600
CONFIG = EngineConfig(scopes=((), ("channel",)))
FAMILIES = (("continuous", ("15m", "1h", "24h", "7d")),
            ("periodic", ("day", "week", "month", "quarter")))


def ev(event_id: str, at: datetime, value: int = 4, channel: str = "chat",
       **fields: Any) -> TouchpointEvent:
    return make_event(event_id=event_id, occurred_at=at, value=value, channel=channel,
                      **fields)


def in_time_order(config: EngineConfig, events: list[TouchpointEvent]) -> Engine:
    """The oracle: a fresh engine fed the answers sorted by event time."""
    engine = Engine(config)
    ordered = sorted(events, key=event_seconds)
    for i in range(0, len(ordered), 500):
        engine.ingest(ordered[i:i + 500])
    return engine


def differences(got: Engine, want: Engine) -> list[str]:
    problems = []
    if got.watermark != want.watermark:
        problems.append(f"watermark {got.watermark} != {want.watermark}")
    for family, names in FAMILIES:
        for name in names:
            for key in set(got.series.keys) | set(want.series.keys):
                a = got.vector(family, name, key)  # type: ignore[arg-type]
                b = want.vector(family, name, key)  # type: ignore[arg-type]
                if not np.allclose(a, b, atol=1e-9):
                    problems.append(f"{family}/{name} {key}: n {a[0]:g} != {b[0]:g}")
    return problems


def nights_export(today: datetime) -> tuple[list[TouchpointEvent], list[TouchpointEvent]]:
    """Today's live answers (00:00 to 03:00) and yesterday's, exported at 03:00."""
    live = [ev(f"live-{i}", today + timedelta(seconds=20 * i), value=1 + i % 5,
               channel=("chat", "phone")[i % 2]) for i in range(540)]
    yesterday = today - timedelta(days=1)
    export = [ev(f"night-{i}", yesterday + timedelta(seconds=90 * i), value=1 + i % 3,
                 channel=("email", "sms", "chat")[i % 3]) for i in range(960)]
    return live, export


def test_a_nights_export_is_fully_counted() -> None:
    today = BASE.replace(hour=0, minute=0, second=0)
    live, export = nights_export(today)
    engine = Engine(CONFIG)
    engine.ingest(live)
    results = [engine.ingest(export[i:i + 200]) for i in range(0, len(export), 200)]
    assert sum(r.accepted for r in results) == len(export)
    assert not any(r.late or r.duplicates for r in results)
    assert differences(engine, in_time_order(CONFIG, live + export)) == []
    label = (today - timedelta(days=1)).date().isoformat()
    [overall] = engine.scores("periodic", "day", period=label, metric="csat")
    assert overall.score.n == len(export)
    # Every export answer arrived after yesterday closed (00:00 plus the hour allowed).
    assert overall.late_answers == len(export)
    assert overall.revised_at == datetime.fromtimestamp(event_seconds(live[-1]), UTC)
    by_channel = {s.scope["channel"]: s for s in
                  engine.scores("periodic", "day", period=label, scope=("channel",))}
    assert by_channel["email"].late_answers == 320
    [today_score] = engine.scores("periodic", "day", metric="csat")
    assert today_score.score.n == len(live) and today_score.late_answers == 0
    assert today_score.revised_at is None
    # The 7-day window holds yesterday's hours (closed, revised); the hour does not.
    [week] = engine.scores("continuous", "7d", metric="csat")
    assert (week.score.n, week.late_answers) == (len(live) + len(export), len(export))
    [hour] = engine.scores("continuous", "1h", metric="csat")
    assert hour.late_answers == 0


def test_a_late_answer_lands_where_its_bucket_is_still_kept() -> None:
    """3 days late: the hourly buckets and the calendar periods, not the minute ones
    (kept ~3 h), so memory does not grow with the horizon."""
    engine = Engine(CONFIG)
    engine.ingest([ev("now", BASE)])
    late_at = BASE - timedelta(days=3, minutes=10)
    result = engine.ingest([ev("old", late_at, value=1)])
    assert result.accepted == 1 and not result.late
    minute = engine.granularities["60s"]
    assert min(minute.tables) >= event_seconds(ev("now", BASE)) // 60 - minute.keep + 1
    assert late_at.timestamp() // 3600 in engine.granularities["3600s"].tables
    [week] = engine.scores("continuous", "7d", metric="csat")
    assert (week.score.n, week.late_answers) == (2, 1)
    assert week.revised_at == BASE.astimezone(UTC)
    changed = engine.take_changed()
    assert int(late_at.timestamp() // 3600) in changed["3600s"]


@pytest.mark.parametrize(("behind", "late"), [
    (35 * DAY, False),  # exactly at the horizon: counted
    (35 * DAY + 1, True),
    (30 * DAY, False),
    (400 * DAY, True),
])
def test_only_answers_older_than_the_horizon_are_late(behind: int, late: bool) -> None:
    engine = Engine(CONFIG)
    engine.ingest([ev("now", BASE)])
    old = ev("old", BASE - timedelta(seconds=behind))
    result = engine.ingest([old])
    assert result.late == ([old] if late else [])
    assert engine.counters["late"] == int(late)


def test_a_duplicate_30_days_late_is_a_duplicate() -> None:
    engine = Engine(CONFIG)
    first = ev("resent", BASE - timedelta(days=30))
    engine.ingest([first])
    # 30 days of traffic, enough ids for the dedupe memory to prune (freeze) many times
    for day in range(31):
        at = BASE - timedelta(days=30 - day)
        engine.ingest([ev(f"d{day}-{i}", at + timedelta(seconds=30 * i)) for i in range(300)])
    assert engine.seen.frozen > 0 and engine.seen.hot < len(engine.seen)
    result = engine.ingest([ev("resent", BASE - timedelta(days=30)), ev("d2-5", BASE -
                                                                        timedelta(days=28) +
                                                                        timedelta(seconds=150))])
    assert [e.event_id for e in result.duplicates] == ["resent", "d2-5"]
    # An answer first seen 30 days late, sent again: a duplicate too, before and after
    # its bucket's digests freeze.
    assert engine.ingest([ev("export-1", BASE - timedelta(days=30, hours=5))]).accepted == 1
    assert len(engine.ingest([ev("export-1", BASE - timedelta(days=30, hours=5))])
               .duplicates) == 1
    engine.ingest([ev(f"more-{i}", BASE + timedelta(seconds=i)) for i in range(5000)])
    assert len(engine.ingest([ev("export-1", BASE - timedelta(days=30, hours=5))])
               .duplicates) == 1
    assert engine.counters["accepted"] == 1 + 31 * 300 + 1 + 5000


def test_snapshot_round_trips_the_two_tier_dedupe() -> None:
    engine = Engine(CONFIG)
    for day in range(10):
        at = BASE - timedelta(days=10 - day)
        engine.ingest([ev(f"s{day}-{i}", at + timedelta(seconds=60 * i)) for i in range(400)])
    engine.ingest([ev("late-1", BASE - timedelta(days=8))])  # waits in the hot tier
    assert engine.seen.frozen > 0
    data = engine.snapshot()
    seen_state = msgspec.msgpack.decode(data)["seen"]
    frozen_bytes = sum(len(b) for _, b in seen_state["frozen"])
    assert frozen_bytes == 8 * engine.seen.frozen  # 8 bytes per id
    resumed = Engine.restore(CONFIG, data)
    assert resumed.seen.buckets() == engine.seen.buckets()
    assert (resumed.seen.hot, resumed.seen.frozen) == (engine.seen.hot, engine.seen.frozen)
    again = [ev("s1-7", BASE - timedelta(days=9) + timedelta(seconds=420)),
             ev("late-1", BASE - timedelta(days=8)), ev("new", BASE)]
    for e in (engine, resumed):
        result = e.ingest(again)
        assert [d.event_id for d in result.duplicates] == ["s1-7", "late-1"]
    assert resumed.snapshot() == engine.snapshot()


def test_a_version_2_snapshot_with_the_old_horizons_restores() -> None:
    """Written before the horizons: config without ``lateness_horizon`` (late meant
    ``allowed_lateness``), a 7-day dedupe horizon, no frozen tier, no late counters."""
    engine = Engine(CONFIG)
    engine.ingest([ev(f"v-{i}", BASE + timedelta(seconds=97 * i)) for i in range(300)])
    state = msgspec.msgpack.decode(engine.snapshot())
    config = msgspec.json.decode(state["config"])
    del config["lateness_horizon"]
    config["dedupe_horizon"] = 7 * DAY
    state.update(version=2, config=msgspec.json.encode(config).decode())
    del state["seen"]["frozen"]
    resumed = Engine.restore(CONFIG, msgspec.msgpack.encode(state))
    assert resumed.seen.buckets() == engine.seen.buckets()
    result = resumed.ingest([ev("v-7", BASE + timedelta(seconds=97 * 7)),
                             ev("old", BASE - timedelta(days=20))])
    assert ([e.event_id for e in result.duplicates], result.accepted) == (["v-7"], 1)
    # a configuration that differs in more than the horizons is still refused
    other = CONFIG.model_copy(update={"allowed_lateness": 60})
    with pytest.raises(ValueError, match="different engine configuration"):
        Engine.restore(other, msgspec.msgpack.encode(state))


def test_pulse_studies_count_late_answers_in_their_range() -> None:
    engine = Engine(CONFIG)
    start = int(BASE.timestamp())
    engine.ingest([ev("first", BASE)])
    engine.start_pulse("p", "chat", {"channel": ["chat"]}, start - 2 * DAY, start + DAY,
                       start - 9 * DAY, start - 2 * DAY)
    engine.ingest([ev("live", BASE + timedelta(hours=2))])
    # Days late, in the study's range and in its baseline's: both count; outside: not.
    # ("first", in the state when the study started, counts too: seeded from the state.)
    engine.ingest([ev("late-study", BASE - timedelta(days=1), value=2),
                   ev("late-base", BASE - timedelta(days=5), value=5),
                   ev("too-early", BASE - timedelta(days=10), value=1),
                   ev("email", BASE - timedelta(days=1), channel="email")])
    [(metric, study, baseline)] = engine.pulses["p"].results()
    assert (metric, study.n, baseline.n) == ("csat", 3, 1)
    engine.end_pulse("p")  # ended: it counts no more, late or not
    engine.ingest([ev("after", BASE - timedelta(days=1), value=1)])
    [(_, study, _)] = engine.pulses["p"].results()
    assert study.n == 3


def test_revisions_survive_a_snapshot() -> None:
    engine = Engine(CONFIG)
    live, export = nights_export(BASE.replace(hour=0, minute=0, second=0))
    engine.ingest(live)
    engine.ingest(export)
    resumed = Engine.restore(CONFIG, engine.snapshot())
    for family, window in (("periodic", "week"), ("continuous", "7d")):
        assert ([(s.late_answers, s.revised_at) for s in
                 resumed.scores(family, window, scope=("channel",))]  # type: ignore[arg-type]
                == [(s.late_answers, s.revised_at) for s in
                    engine.scores(family, window, scope=("channel",))])  # type: ignore[arg-type]


# -- random arrival ------------------------------------------------------------------------

HORIZON = 3 * DAY
SMALL = EngineConfig(scopes=((), ("channel",)), lateness_horizon=HORIZON)


@st.composite
def arrivals(draw: st.DrawFn) -> list[TouchpointEvent]:
    """Answers over 5 days, each arriving up to the horizon (some past it) late: sent in
    order of arrival time (event time plus delay); some ids are sent twice."""
    n = draw(st.integers(1, 80))
    timed = []
    for i in range(n):
        at = draw(st.integers(0, 5 * DAY))
        delay = draw(st.one_of(st.just(0), st.integers(0, HORIZON + DAY)))
        timed.append((at + delay, i, at))
        if draw(st.integers(0, 9)) == 0:  # the same answer sent again, later
            timed.append((at + delay + draw(st.integers(0, HORIZON)), i, at))
    timed.sort()
    return [ev(f"a-{i}", BASE + timedelta(seconds=at), value=1 + i % 5,
               channel=("chat", "email", "sms")[i % 3]) for _, i, at in timed]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrivals(), st.lists(st.integers(0, 200), max_size=6))
def test_random_arrival_equals_the_oracle(events: list[TouchpointEvent],
                                          cuts: list[int]) -> None:
    engine = Engine(SMALL)
    points = sorted({c % (len(events) + 1) for c in cuts})
    late: list[str] = []
    duplicates: list[str] = []
    for lo, hi in zip([0, *points], [*points, len(events)], strict=True):
        result = engine.ingest(events[lo:hi])
        late += [e.event_id for e in result.late]
        duplicates += [e.event_id for e in result.duplicates]
    # Only answers older than the watermark they meet minus the horizon are late.
    wm: int | None = None
    seen: set[str] = set()
    want_late: list[str] = []
    want_dup: list[str] = []
    accepted: list[TouchpointEvent] = []
    for e in events:
        t = event_seconds(e)
        if e.event_id in seen:
            want_dup.append(e.event_id)
            continue
        if wm is not None and t < wm - HORIZON:
            want_late.append(e.event_id)  # never counted, so not remembered
            continue
        seen.add(e.event_id)
        accepted.append(e)
        wm = t if wm is None else max(wm, t)
    assert (late, duplicates) == (want_late, want_dup)
    assert differences(engine, in_time_order(SMALL, accepted)) == []
