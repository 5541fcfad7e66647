"""Reading the past: any calendar period kept, and a score's series per bucket, each
against a count by hand over the same events."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from engine_reference import make_event

from streams.engine.buckets import CalendarBucketing
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine

START = datetime(2026, 1, 1, tzinfo=UTC)


def history(days: int, seed: int = 3) -> tuple[Engine, list[tuple[datetime, str, int]]]:
    """An engine fed ``days`` of csat answers in time order, and what was fed."""
    rng = random.Random(seed)
    fed = []
    engine = Engine(EngineConfig())
    at = START
    events = []
    for i in range(days * 40):
        at += timedelta(seconds=rng.randint(60, 3600))
        channel = rng.choice(("web", "phone", "chat"))
        value = rng.randint(1, 5)
        fed.append((at, channel, value))
        events.append(make_event(event_id=f"e-{i}", occurred_at=at, channel=channel,
                                 kind="csat", value=value, customer_id=f"c-{i % 50}"))
    engine.ingest(events)
    return engine, fed


def test_any_kept_month_is_read_by_its_label() -> None:
    engine, fed = history(70)
    by_month = Counter(at.strftime("%Y-%m") for at, _, _ in fed)
    happy = Counter(at.strftime("%Y-%m") for at, _, v in fed if v >= 4)
    for label in by_month:
        (overall,) = engine.scores("periodic", "month", metric="csat", period=label)
        assert overall.window.label == label
        assert overall.score.n == by_month[label]
        assert overall.score.value == pytest.approx(happy[label] / by_month[label])
    # The current month read by its label is the current month.
    (current,) = engine.scores("periodic", "month", metric="csat")
    (named,) = engine.scores("periodic", "month", metric="csat", period=current.window.label)
    assert named == current
    # Its previous period comes along for the change, as for the current one.
    (february,) = engine.scores("periodic", "month", metric="csat", period="2026-02")
    assert february.previous is not None and february.previous.n == by_month["2026-01"]
    with pytest.raises(KeyError, match="expected the form 2026-11"):
        engine.scores("periodic", "month", period="January")
    with pytest.raises(KeyError, match="older than the"):
        engine.scores("periodic", "day", period="2026-01-01")  # past the days kept
    with pytest.raises(KeyError, match="family=periodic"):
        engine.scores("continuous", "1h", period="2026-01")


def test_a_series_per_hour_and_per_day_counts_each_bucket() -> None:
    engine, fed = history(5)
    series = engine.score_series("1h", scope=("channel",), metric="csat")
    assert sorted(s.scope["channel"] for s in series) == ["chat", "phone", "web"]
    for s in series:
        counted = Counter(at.replace(minute=0, second=0) for at, ch, _ in fed
                          if ch == s.scope["channel"])
        got = {start: sc.n for start, _, sc in s.points}
        assert {k: v for k, v in got.items() if v} == \
            {k: v for k, v in counted.items() if k in got}
        starts = [start for start, _, _ in s.points]
        assert starts == sorted(starts) and all(
            b - a == timedelta(hours=1) for a, b in zip(starts, starts[1:], strict=False))
        empty = [sc for _, _, sc in s.points if sc.n == 0]
        assert all(np.isnan(sc.value) for sc in empty)
    (daily,) = engine.score_series("day", metric="csat")
    (month,) = engine.scores("periodic", "month", metric="csat")
    assert sum(sc.n for _, _, sc in daily.points) == month.score.n == len(fed)
    # A range picks its buckets; an unknown step or an outsize answer says why.
    since = int((START + timedelta(days=2)).timestamp())
    until = int((START + timedelta(days=3)).timestamp())
    (one_day,) = engine.score_series("1h", metric="csat", since=since, until=until)
    assert len(one_day.points) == 24
    assert sum(sc.n for _, _, sc in one_day.points) == sum(
        1 for at, _, _ in fed if since <= at.timestamp() < until)
    with pytest.raises(KeyError, match="unknown step"):
        engine.score_series("2h")
    with pytest.raises(KeyError, match="points"):
        engine.score_series("1m", scope=("channel",), max_points=10)


def test_period_labels_round_trip() -> None:
    for unit in ("day", "week", "month", "quarter"):
        bucketing = CalendarBucketing(unit, "Europe/Oslo")  # type: ignore[arg-type]
        for period in range(600, 21_000, 37):
            assert bucketing.parse(bucketing.label(period)) == period
    with pytest.raises(ValueError, match="2026-W48"):
        CalendarBucketing("week", "UTC").parse("2026-W54")
