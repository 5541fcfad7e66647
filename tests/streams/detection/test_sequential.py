"""The sequential drop test (``test="sequential"``): evidence at any volume, the budget's
threshold, hour-of-day baselines, and a statistic recomputed from the buckets alone."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas.event import Csat, TouchpointEvent
from streams.detection import DetectionConfig, Detector, DropRule, siegmund_arl
from streams.detection.sequential import (
    MAX_OVERSHOOT_SHIFT,
    layout,
    series_days,
    thresholds,
)
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine

T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
HOUR, DAY = 3600, 86_400
CONFIG = EngineConfig(scopes=((), ("channel",)))


def stream(channel: str, start: int, end: int, per_hour: float, share: object,
           seed: int) -> list[TouchpointEvent]:
    """CSAT answers at random times in [start, end); ``share(t)`` top-2 (5, else 2)."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(start, end, rng.poisson(per_hour * (end - start) / HOUR)))
    out: list[TouchpointEvent] = []
    for i, t in enumerate(times.tolist()):
        p = share(t) if callable(share) else share
        out.append(Csat(event_id=f"{channel}-{seed}-{i}", occurred_at=datetime.fromtimestamp(
            t, UTC), customer_id="c", touchpoint="contact", channel=channel,
            value=5 if rng.random() < p else 2))
    return out


def run(events: list[TouchpointEvent], rule: DropRule, evaluate_from: int,
        every: int = 600) -> tuple[Engine, Detector, list[tuple[int, str, dict[str, str]]]]:
    engine, detector = Engine(CONFIG), Detector(DetectionConfig(drops=(rule,)))
    events = sorted(events, key=lambda e: e.occurred_at)
    seen: list[tuple[int, str, dict[str, str]]] = []
    block: list[TouchpointEvent] = []
    slot = None
    for e in events:
        t = int(e.occurred_at.timestamp())
        s = t // every if t >= evaluate_from else -1
        if slot is not None and s != slot and block:
            engine.ingest(block)
            block = []
            if slot >= 0 and engine.watermark is not None:
                seen += [(c.at, c.state, c.alert.scope)
                         for c in detector.evaluate(engine, engine.watermark)]
        slot = s
        block.append(e)
    if block:
        engine.ingest(block)
    return engine, detector, seen


def seq_rule(**fields: object) -> DropRule:
    return DropRule.model_validate({"name": "csat-seq", "metric": "csat", "test": "sequential",
                                    **fields})


def test_thresholds_give_the_run_length_of_the_budget() -> None:
    for delta in (0.05, 0.125, 0.325):
        for answers in (1e4, 1e6):
            h = float(thresholds(np.array([delta]), np.array([answers]))[0])
            assert siegmund_arl(delta / 2, h / delta) == pytest.approx(answers, rel=0.02)
            # Checked once every 167 answers (a minute at 10,000 an hour): a CUSUM of
            # per-check sums, whose shift is delta * sqrt(167), for answers / 167 checks;
            # it overshoots more, so the same run length takes a lower threshold.
            batched = float(thresholds(np.array([delta]), np.array([answers]), 167.0)[0])
            mu = delta * math.sqrt(167.0)
            if mu <= MAX_OVERSHOOT_SHIFT:
                assert siegmund_arl(mu / 2, batched / mu) * 167.0 == pytest.approx(
                    answers, rel=0.02)
            else:  # the overshoot term stops growing: a longer run length than asked
                assert siegmund_arl(mu / 2, batched / mu) * 167.0 > 1.5 * answers
            assert batched < h
            # fewer answers than checks: the statistic moves by single answers
            assert float(thresholds(np.array([delta]), np.array([answers]), 0.3)[0]) == h
    rule = seq_rule()
    assert rule.hold_seconds == 0 and series_days(rule, 11, 1.0) == 77.0
    assert series_days(rule, 2, 1.0) == 30.0


def test_twenty_answers_a_day_page_when_the_evidence_is_there() -> None:
    live = T0 + 8 * DAY
    events = stream("chat", T0, live, 20 / 24, 0.85, seed=1)
    events += stream("chat", live, live + 6 * DAY, 20 / 24, 0.35, seed=2)
    events += stream("phone", T0, live + 6 * DAY, 40, 0.85, seed=3)
    _, detector, seen = run(events, seq_rule(), live)
    fired = [(t, scope) for t, state, scope in seen if state == "firing"]
    assert fired and fired[0][1] == {"channel": "chat"}
    assert live < fired[0][0] < live + 4 * DAY  # days, not never: no minimum n
    alert = next(a for a in detector.alerts.active.values() if a.scope == {"channel": "chat"})
    ev = alert.evidence
    assert ev is not None and ev.test == "sequential_llr"
    assert ev.llr is not None and ev.threshold is not None and ev.llr >= ev.threshold
    assert ev.change_start is not None and abs(ev.change_start - live) < DAY
    assert ev.window_end - ev.window_start == HOUR  # the window comparison, to read
    assert ev.to_dict()["change_start"].endswith("+00:00")


def test_a_daily_cycle_is_not_a_drop_with_hour_of_day_baselines() -> None:
    live = T0 + 8 * DAY

    def cyclic(t: float) -> float:
        return 0.80 + 0.05 * math.sin(2 * math.pi * ((t % DAY) / DAY - 0.5))

    events = stream("chat", T0, live + DAY, 300, cyclic, seed=5)
    _, _, seen = run(events, seq_rule(), live)
    assert [s for s in seen if s[1] == "firing"] == []


def test_a_weekend_is_not_a_drop_with_hour_of_week_baselines() -> None:
    # T0 is a Monday: days 5-6, 12-13 and 19-20 are weekends, 8 points below the week
    def weekly(t: float) -> float:
        return 0.82 - 0.08 * (((t - T0) // DAY) % 7 >= 5)

    live = T0 + 16 * DAY  # a Wednesday: the baseline (days 2-9) spans a whole week
    events = stream("chat", T0, live + 5 * DAY, 300, weekly, seed=31)
    fired = {}
    for cycle in ("hour_of_day", "hour_of_week"):
        _, _, seen = run(events, seq_rule(cycle=cycle), live, every=1800)
        fired[cycle] = [t for t, state, _ in seen if state == "firing"]
    weekend = live + 3 * DAY  # Saturday
    # per hour of the day: the last weekend (in the horizon) at the first look, and
    # this one on the Saturday; per hour of the week: neither
    assert any(t >= weekend for t in fired["hour_of_day"])
    assert fired["hour_of_week"] == []


def test_the_statistic_is_recomputed_from_the_buckets_alone() -> None:
    live = T0 + 8 * DAY
    events = stream("chat", T0, live + 3 * HOUR, 60, 0.85, seed=7)
    events += stream("chat", live + 3 * HOUR, live + 6 * HOUR, 60, 0.65, seed=8)
    engine, detector, _ = run(events, seq_rule(), live)
    assert engine.watermark is not None
    fresh = Detector(DetectionConfig(drops=(seq_rule(),)))
    ours = {a.scope.get("channel", ""): a.evidence for a in detector.alerts.active.values()}
    theirs = {c.alert.scope.get("channel", ""): c.alert.evidence
              for c in fresh.evaluate(engine, engine.watermark) if c.state == "pending"}
    assert ours and set(ours) <= set(theirs)
    again = {c.alert.scope.get("channel", ""): c.alert.evidence
             for c in Detector(DetectionConfig(drops=(seq_rule(),))).evaluate(
                 engine, engine.watermark) if c.state == "pending"}
    assert again == theirs


def test_a_late_answer_is_summed_again_not_read_from_the_closed_hours_memo() -> None:
    """Closed hours are memoized across evaluations; an answer that arrives after its hour
    closed (within the lateness horizon) must be in the next evaluation's sums."""
    from streams.detection.sequential import Buckets

    engine = Engine(CONFIG)
    engine.ingest(stream("chat", T0, T0 + 10 * HOUR, 60, 0.85, seed=3))
    closed: dict[tuple[int, str, int, int, int, int], np.ndarray] = {}
    assert engine.watermark is not None
    first, last = T0 // HOUR, T0 // HOUR + 4
    before = Buckets(engine, closed)("3600s", first, last).copy()
    assert closed, "the closed hours were memoized"
    late = Csat(event_id="late-1", occurred_at=datetime.fromtimestamp(T0 + 2 * HOUR + 5, UTC),
                customer_id="c", touchpoint="contact", channel="chat", value=5)
    assert engine.ingest([late]).accepted == 1  # hours late: counted, not dead-lettered
    after = Buckets(engine, closed)("3600s", first, last)
    assert after.sum() > before.sum()
    assert np.array_equal(after, Buckets(engine, None)("3600s", first, last))


def _answers_to_page(after: tuple[int, ...], monkeypatch: pytest.MonkeyPatch | None = None,
                     ) -> tuple[int, int, float] | None:
    """Answers since a CSAT drop (100 an hour, answers 1-5 in the exact proportions
    5/5/10/35/45 before, ``after`` per hundred from 3 days on) when the overall series
    first holds; with the hypothesis picked then (its index) and its reported shift."""
    from streams.detection import sequential

    engine = Engine(CONFIG)
    rule = seq_rule(cycle="none", horizon="1d", baseline=("prior", "2d"))
    order = np.random.default_rng(0).permutation(100)
    live = T0 + 3 * DAY
    since = 0
    for hour in range(3 * 24 + 12):
        counts = (5, 5, 10, 35, 45) if T0 + hour * HOUR < live else after
        values = np.repeat(np.arange(1, 6), counts)[order]
        start = T0 + hour * HOUR
        for block in range(6):  # ingest ten minutes at a time, then evaluate
            events = [Csat(event_id=f"{hour}-{i}", occurred_at=datetime.fromtimestamp(
                start + (i + 0.5) * 36, UTC), customer_id="c", touchpoint="contact",
                channel="chat", value=int(values[i])) for i in range(block * 100 // 6,
                                                                    (block + 1) * 100 // 6)]
            engine.ingest(events)
            since += len(events) if start >= live else 0
            now = start + (block + 1) * 600 - 1
            if start < live:
                continue
            found = sequential.scan(engine, rule, now, [0], sequential.Buckets(engine))
            decided = sequential.decided(found, 1, 1.0)
            if decided.holds[0]:
                seq = decided.at(0)
                assert seq is not None
                return since, int(decided.pick[0]), seq.shift
    return None


def test_a_share_drop_to_the_bottom_pages_sooner_than_the_top_only_bernoulli(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: a share's lost top answers go to the bottom or to the middle, and the
    grid tests both; a drop to the bottom carries ~1.7x the Bernoulli's evidence per
    answer (10 points: KL 0.045 against 0.026), so it pages with fewer answers than the
    top-only Bernoulli the rule used before (``DESTINATIONS = ("rest",)``), and a drop to
    the middle still pages. The reported shift is the top share's drop."""
    from streams.detection import sequential

    to_bottom = _answers_to_page((10, 10, 10, 30, 40))
    to_middle = _answers_to_page((5, 5, 20, 30, 40))
    monkeypatch.setattr(sequential, "DESTINATIONS", ("rest",))
    bernoulli = _answers_to_page((10, 10, 10, 30, 40))
    assert to_bottom is not None and to_middle is not None and bernoulli is not None
    shifts = len(DropRule.model_fields["shifts"].default)
    assert to_bottom[0] < 0.8 * bernoulli[0]
    assert to_bottom[1] < shifts <= to_middle[1]  # picked: to the bottom, to the middle
    assert 0.0 < to_bottom[2] <= 0.15 and 0.0 < to_middle[2] <= 0.15  # top-share points
    assert to_middle[0] <= 1.1 * bernoulli[0]


def test_a_young_history_splits_into_baseline_and_horizon() -> None:
    rule = seq_rule()  # 7 days of baseline before a 7-day horizon
    engine = Engine(CONFIG)
    engine.ingest(stream("chat", T0, T0 + 10 * HOUR, 30, 0.85, seed=11))
    h = (T0 + 10 * HOUR) // HOUR
    lay = layout(engine, rule, h * HOUR)  # all but the last 3 hours: towards a whole day
    assert (lay.base_first, lay.base_last, lay.hour_first) == (h - 10, h - 4, h - 3)
    engine.ingest(stream("chat", T0 + 10 * HOUR, T0 + 30 * HOUR, 30, 0.85, seed=17))
    h = (T0 + 30 * HOUR) // HOUR
    lay = layout(engine, rule, h * HOUR)  # a whole day of baseline, the rest horizon
    assert (lay.base_first, lay.base_last, lay.hour_first) == (h - 30, h - 7, h - 6)
    engine.ingest(stream("chat", T0 + 30 * HOUR, T0 + 4 * DAY, 30, 0.85, seed=18))
    h = (T0 + 4 * DAY) // HOUR
    lay = layout(engine, rule, h * HOUR)  # then half and half
    assert (lay.base_first, lay.base_last, lay.hour_first) == (h - 96, h - 49, h - 48)
    engine.ingest(stream("chat", T0 + 4 * DAY, T0 + 15 * DAY, 30, 0.85, seed=12))
    h = (T0 + 15 * DAY) // HOUR
    lay = layout(engine, rule, h * HOUR)  # grown up: the configured 7 + 7 days
    assert (lay.base_first, lay.base_last, lay.hour_first) == (h - 336, h - 169, h - 168)


def test_a_drop_after_the_first_day_pages() -> None:
    # A new deployment: a day of history, then chat drops 15 points (the demo's case).
    live = T0 + 26 * HOUR
    events = stream("chat", T0, live, 300, 0.85, seed=13)
    events += stream("chat", live, live + 2 * HOUR, 300, 0.70, seed=14)
    events += stream("phone", T0, live + 2 * HOUR, 300, 0.85, seed=15)
    _, detector, seen = run(events, seq_rule(), T0 + 4 * HOUR, every=60)
    fired = [(t, scope) for t, state, scope in seen if state == "firing"]
    chat = [t for t, scope in fired if scope == {"channel": "chat"}]
    assert chat and live < chat[0] < live + HOUR
    # the overall scope (half of it chat: 7.5 points down) may page too; phone never
    assert {str(scope) for _, scope in fired} <= {str({"channel": "chat"}), str({})}
    assert all(t > live for t, _ in fired)  # no page on the flat hours before


def test_a_rule_whose_metric_has_no_answers_tests_nothing_and_raises_nothing() -> None:
    nps = DropRule.model_validate({"name": "nps-seq", "metric": "nps", "test": "sequential"})
    for days in (0.2, 20):  # young and grown-up layouts
        engine = Engine(CONFIG)
        engine.ingest(stream("chat", T0, T0 + int(days * DAY), 10, 0.85, seed=16))
        assert engine.watermark is not None
        detector = Detector(DetectionConfig(drops=(nps, seq_rule())))
        changes = detector.evaluate(engine, engine.watermark)
        assert [c for c in changes if c.alert.rule == "nps-seq"] == []


def test_the_curve_follows_a_smooth_rhythm_and_the_weight_what_it_misses() -> None:
    from streams.detection.sequential import _curve
    rng = np.random.default_rng(19)
    n = np.full(24, 2000.0)
    hours = np.arange(24)
    # a smooth rhythm, and one the daily harmonics do not follow (each hour its own)
    cases = {"flat": np.full(24, 0.80),
             "cyclic": 0.80 + 0.05 * np.sin(2 * np.pi * hours / 24),
             "ragged": 0.80 + 0.05 * np.where(hours % 2 == 0, 1.0, -1.0)}
    fits = {}
    for name, p in cases.items():
        top = rng.binomial(n.astype(int), p).astype(float)
        by_cls = np.zeros((24, 1, 5))
        by_cls[:, 0, 0], by_cls[:, 0, 3] = n, top  # n, top
        fits[name] = fit = _curve(seq_rule(), by_cls, by_cls.sum(0))
        estimate = fit.estimate(by_cls[..., 3])[:, 0]
        if name != "ragged":  # each hour's estimate within noise of the truth
            assert np.abs(estimate - p).max() < 4 * math.sqrt(0.16 / 2000)
    assert not fits["flat"].harmonic[0] and fits["cyclic"].harmonic[0]
    assert fits["flat"].kappa[0] > 1000  # pools (up to all 48,000 baseline answers)
    assert fits["cyclic"].kappa[0] > 1000  # the sine is the curve: nothing left over
    # sigma^2 / tau^2 with tau^2 = 0.05^2 (every hour 5 points off): 0.16 / 0.0025 = 64
    assert 30 < fits["ragged"].kappa[0] < 130
    one_hour = np.zeros((24, 1, 5))
    one_hour[5, 0, 0], one_hour[5, 0, 3] = 300, 240  # a young baseline: one hour seen
    young = _curve(seq_rule(), one_hour, one_hour.sum(0))
    assert young.kappa[0] == 21.0 and not young.harmonic[0]  # the floor, the pooled mean


def test_a_weekly_curve_follows_the_weekend() -> None:
    from streams.detection.sequential import _curve
    rng = np.random.default_rng(29)
    hours = np.arange(168)  # hour of the week, from Thursday 00:00 (the epoch's)
    weekend = (hours // 24 >= 2) & (hours // 24 < 4)  # Saturday and Sunday
    p = 0.80 + 0.03 * np.sin(2 * np.pi * hours / 24) - 0.05 * weekend
    n = np.full(168, 300.0)  # one week of baseline at 300 answers an hour
    by_cls = np.zeros((168, 1, 5))
    by_cls[:, 0, 0], by_cls[:, 0, 3] = n, rng.binomial(300, p)
    week = _curve(seq_rule(cycle="hour_of_week"), by_cls, by_cls.sum(0))
    day = by_cls.reshape(7, 24, 1, 5).sum(0)
    daily = _curve(seq_rule(), day, day.sum(0))
    assert week.harmonic[0] and week.x.shape == (168, 11)
    estimate = week.estimate(by_cls[..., 3])[:, 0]
    # the weekend is in the estimate (a day-of-week step, fitted by three harmonics and
    # each hour's own answers), not spread over the week as the daily curve spreads it
    assert estimate[weekend].mean() - estimate[~weekend].mean() < -0.035
    # a week day against the daily curve: the weekend's 5 points spread over the week
    weekday = p[~weekend].mean()  # 0.80
    assert abs(estimate[~weekend].mean() - weekday) < 0.006
    assert daily.estimate(day[..., 3])[:, 0].mean() < weekday - 0.009  # ~1.4 points low


def test_a_flat_series_seldom_takes_the_harmonics() -> None:
    from streams.detection.sequential import _curve
    rng = np.random.default_rng(23)
    by_cls = np.zeros((24, 400, 5))
    by_cls[..., 0] = 500.0
    by_cls[..., 3] = rng.binomial(500, 0.8, size=(24, 400))
    taken = _curve(seq_rule(), by_cls, by_cls.sum(0)).harmonic.mean()
    assert taken < 0.16  # a 10% test (400 series: ~40 expected)


def three_way(channel: str, start: int, end: int, per_hour: float,
              shares: tuple[float, float, float], seed: int) -> list[TouchpointEvent]:
    """CSAT answers 5, 3 and 1 (top, middle, bottom) in ``shares``, at random times."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(start, end, rng.poisson(per_hour * (end - start) / HOUR)))
    values = rng.choice([5, 3, 1], size=len(times), p=shares)
    return [Csat(event_id=f"{channel}-{seed}-{i}", occurred_at=datetime.fromtimestamp(t, UTC),
                 customer_id="c", touchpoint="contact", channel=channel, value=int(v))
            for i, (t, v) in enumerate(zip(times.tolist(), values.tolist(), strict=True))]


@pytest.mark.parametrize(("after", "where"), [((0.65, 0.10, 0.25), "bottom"),
                                              ((0.65, 0.25, 0.10), "middle")])
def test_the_evidence_says_where_the_lost_answers_went(
        after: tuple[float, float, float], where: str) -> None:
    live = T0 + 8 * DAY
    events = three_way("chat", T0, live, 200, (0.80, 0.10, 0.10), seed=21)
    events += three_way("chat", live, live + 3 * HOUR, 200, after, seed=22)
    _, detector, seen = run(events, seq_rule(), live)
    assert any(state == "firing" for _, state, _ in seen)
    (alert,) = detector.alerts.active.values()  # on the overall scope: chat is its copy
    assert alert.evidence is not None and alert.evidence.destination == where
    assert alert.evidence.to_dict()["destination"] == where
