"""Detection: drops, targets and drifts against the engine, alert lifecycle, follow-ups.

Exact checks against hand computations and scipy, and seeded statistical checks: false
alarms across many null scopes are controlled by Benjamini-Hochberg, and the CUSUM's run
lengths match Siegmund's approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from pydantic import ValidationError
from scipy import stats as sps

from schemas.event import Ces, Csat, Nps, Outcome, TouchpointEvent
from streams.detection import (
    AlertBook,
    AlertChange,
    Baseline,
    DetectionConfig,
    Detector,
    DriftRule,
    DropRule,
    Evidence,
    FollowUpBook,
    FollowUpRule,
    TargetRule,
    Window,
    alert_id,
    arcsine_z,
    compare,
    followups,
    lower_cusum,
    parse_duration,
    screen_drops,
    siegmund_arl,
)
from streams.detection.spans import Dense, baseline_span, window_span
from streams.engine.config import EngineConfig, Target
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, NCOLS, TOP, N, observe, rows

T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
HOUR, DAY, WEEK = 3600, 86_400, 604_800
LIVE = T0 + WEEK  # live traffic starts after a week of baseline
CONFIG = EngineConfig(scopes=((), ("channel",)))


# ------------------------------------------------------------------------- helpers


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def csat_stream(channel: str, start: int, end: int, per_hour: int, share: float,
                seed: int, segment: str = "smb") -> list[TouchpointEvent]:
    """CSAT answers evenly spaced in [start, end); exactly ``share`` top-2 per 20 answers."""
    rng = np.random.default_rng(seed)
    count = (end - start) * per_hour // HOUR
    top = round(share * 20)
    values: list[int] = []
    while len(values) < count:
        block = [5] * top + [2] * (20 - top)
        values += rng.permutation(block).tolist()
    gap = HOUR / per_hour
    return [Csat(event_id=f"{channel}-{seed}-{i}", occurred_at=at(start + i * gap),
                 customer_id=f"c{i % 50}", touchpoint="contact", channel=channel,
                 segment=segment, value=values[i]) for i in range(count)]


def replay(engine: Engine, detectors: Sequence[Detector], events: list[TouchpointEvent],
           every: int, evaluate_from: int) -> list[list[AlertChange]]:
    """Ingest in time order; evaluate each detector at the watermark after every block."""
    events = sorted(events, key=lambda e: e.occurred_at)
    out: list[list[AlertChange]] = [[] for _ in detectors]
    blocks: dict[int, list[TouchpointEvent]] = {}
    for e in events:
        t = int(e.occurred_at.timestamp())
        blocks.setdefault(t // every if t >= evaluate_from else -1, []).append(e)
    for block in sorted(blocks):
        engine.ingest(blocks[block])
        if block >= 0:
            assert engine.watermark is not None
            for i, detector in enumerate(detectors):
                out[i] += detector.evaluate(engine, engine.watermark)
    return out


def share_vec(n: float, top: float) -> np.ndarray:
    vec = np.zeros(NCOLS)
    vec[N], vec[TOP] = n, top
    return vec


def drop_rule(**fields: Any) -> DropRule:
    base: dict[str, Any] = {"name": "chat-csat", "metric": "csat", "scopes": (("channel",),),
                            "window": ("continuous", "1h"), "baseline": ("prior", "7d"),
                            "min_n_window": 200, "min_n_baseline": 400,
                            "hold_seconds": 900, "clear_seconds": 1200}
    base.update(fields)
    return DropRule(**base)


# -------------------------------------------------------------------- configuration


def test_rules_parse_pairs_and_durations_and_refuse_nonsense() -> None:
    rule = DropRule(name="week", metric="nps", window=("periodic", "week"),
                    baseline=("periodic", "week", 4))
    assert rule.window == Window(family="periodic", unit="week")
    assert rule.baseline == Baseline(kind="periodic", unit="week", periods=4)
    assert rule.effect_threshold == 5.0
    assert drop_rule().baseline.span == WEEK and drop_rule().window.span == HOUR
    assert drop_rule(min_effect=0.1).effect_threshold == 0.1
    assert [parse_duration(v) for v in (90, "15m", "1h", "7d", "2w")] == [
        90, 900, 3600, WEEK, 2 * WEEK]
    assert DropRule(name="x", metric="rating:1-7", scopes=(("segment", "channel"),)).scopes \
        == (("channel", "segment"),)
    bad: list[dict[str, Any]] = [
        {"metric": "happiness"},
        {"scopes": (("colour",),)},
        {"window": ("continuous", "1h"), "baseline": ("periodic", 4)},
        {"window": ("periodic", "week"), "baseline": ("periodic", "month", 4)},
        {"window": ("periodic", "fortnight")},
        {"window": ("continuous", "soon")},
        {"alpha": 0.0},
        {"surprise": 1},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            DropRule(**{"name": "x", "metric": "csat", **fields})
    with pytest.raises(ValidationError):
        DetectionConfig(drops=(drop_rule(),), targets=(TargetRule(name="chat-csat",
                                                                  metric="csat"),))
    with pytest.raises(ValidationError):
        FollowUpRule(name="f", condition="detractor", kinds=("csat",))
    with pytest.raises(ValidationError):
        DriftRule(name="d", metric="csat", step="1h", baseline="90m")
    engine = Engine(CONFIG)
    # Refused by ``check`` at start; evaluating it anyway is counted and logged, never
    # raised into the ingest that runs it.
    unchecked = Detector(DetectionConfig(drops=(drop_rule(scopes=(("segment",),)),)))
    assert unchecked.evaluate(engine, LIVE) == [] and unchecked.failures == 1
    unservable = [
        DetectionConfig(drops=(drop_rule(scopes=(("segment",),)),)),
        DetectionConfig(drops=(drop_rule(baseline=("prior", "30d")),)),
        DetectionConfig(drops=(DropRule(name="w", metric="csat", window=("periodic", "week"),
                                        baseline=("periodic", 20)),)),
        DetectionConfig(targets=(TargetRule(name="t", metric="csat",
                                            window=("continuous", "30d")),)),
        DetectionConfig(drifts=(DriftRule(name="d", metric="csat", step="15m"),)),
    ]
    for config in unservable:
        with pytest.raises(ValueError, match="rule "):
            Detector(config).check(engine)
    Detector(DetectionConfig(drops=(drop_rule(),), drifts=(DriftRule(name="d", metric="nps"),),
                             targets=(TargetRule(name="t", metric="ces"),))).check(engine)


# ------------------------------------------------------------------------ the tests


def test_nps_difference_uses_the_multinomial_standard_error() -> None:
    window = np.zeros(NCOLS)
    window[N], window[TOP], window[BOTTOM] = 100, 30, 40       # NPS -10
    baseline = np.zeros(NCOLS)
    baseline[N], baseline[TOP], baseline[BOTTOM] = 400, 200, 80  # NPS 30
    c = compare("nps", window, baseline)
    se_w = 100 * math.sqrt((0.30 + 0.40 - (0.30 - 0.40) ** 2) / 100)  # 8.3066
    se_b = 100 * math.sqrt((0.50 + 0.20 - (0.50 - 0.20) ** 2) / 400)  # 3.9051
    assert se_w == pytest.approx(8.30662, abs=1e-5)
    assert se_b == pytest.approx(3.90512, abs=1e-5)
    assert c.test == "nps_difference_z"
    assert (c.window_score, c.baseline_score, c.effect) == (-10.0, 30.0, 40.0)
    assert c.statistic == pytest.approx(-40 / math.sqrt(se_w**2 + se_b**2))
    assert c.statistic == pytest.approx(-4.35788, abs=1e-5)
    assert c.p == pytest.approx(sps.norm.cdf(c.statistic), rel=1e-9)


def test_ces_is_compared_with_welch_t_like_scipy() -> None:
    rng = np.random.default_rng(7)
    now = rng.integers(1, 8, 150)
    before = np.clip(rng.integers(1, 8, 600) + rng.integers(0, 2, 600), 1, 7)

    def vec(values: np.ndarray) -> np.ndarray:
        events = [Ces(event_id=str(i), occurred_at=at(T0), customer_id="c", touchpoint="t",
                      channel="web", value=int(v)) for i, v in enumerate(values)]
        out: np.ndarray = rows([observe(e) for e in events]).sum(axis=0)
        return out

    c = compare("ces", vec(now), vec(before))
    ref = sps.ttest_ind(now, before, equal_var=False, alternative="less")
    assert c.test == "welch_t"
    assert c.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert c.dof == pytest.approx(ref.df, rel=1e-9)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-7)
    assert c.effect == pytest.approx(before.mean() - now.mean())


def test_shares_are_compared_on_the_arcsine_scale() -> None:
    c = compare("csat", share_vec(100, 60), share_vec(400, 340))
    a1 = math.asin(math.sqrt((60 + 3 / 8) / (100 + 3 / 4)))
    a2 = math.asin(math.sqrt((340 + 3 / 8) / (400 + 3 / 4)))
    z = 2 * (a1 - a2) / math.sqrt(1 / 100.5 + 1 / 400.5)
    assert c.test == "two_proportion_arcsine_z"
    assert (c.window_score, c.baseline_score) == (0.6, 0.85)
    assert c.effect == pytest.approx(0.25)
    assert c.statistic == pytest.approx(z) and c.statistic == pytest.approx(-5.14245, abs=1e-5)
    assert c.p == pytest.approx(sps.norm.cdf(z), rel=1e-9)


def test_the_share_test_keeps_its_far_tail_where_the_pooled_z_does_not() -> None:
    # BH compares the smallest p-values with alpha / m, so the far tail must be honest.
    rng = np.random.default_rng(99)
    draws, level = 400_000, 0.001
    x1, x2 = rng.binomial(100, 0.85, draws), rng.binomial(1000, 0.85, draws)
    arcsine_p = sps.norm.cdf(arcsine_z(x1, 100, x2, 1000))
    pooled = (x1 + x2) / 1100
    pooled_z = (x1 / 100 - x2 / 1000) / np.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 1000))
    assert np.mean(arcsine_p <= level) / level < 1.0
    assert np.mean(sps.norm.cdf(pooled_z) <= level) / level > 1.5


def test_a_tiny_drop_is_not_an_alert_however_large_n() -> None:
    rule = drop_rule()  # min effect 0.03 for a share
    [f] = screen_drops(rule, "csat", share_vec(1e6, 0.84e6)[None], share_vec(1e7, 0.85e7)[None])
    assert f is not None and f.q < 1e-100  # overwhelmingly significant...
    assert f.comparison.effect == pytest.approx(0.01)
    assert not f.holds  # ...but not large enough to matter


def test_a_large_drop_on_few_answers_is_not_tested() -> None:
    rule = drop_rule()
    found = screen_drops(rule, "csat", np.stack([share_vec(20, 6), share_vec(300, 150)]),
                         np.stack([share_vec(5000, 4250), share_vec(399, 340)]))
    assert found == [None, None]  # 30% vs 85% on 20 answers; a 399-answer baseline
    [ok] = screen_drops(rule, "csat", share_vec(200, 100)[None], share_vec(400, 340)[None])
    assert ok is not None and ok.holds


def test_false_alarms_are_controlled_across_200_null_scopes() -> None:
    rng = np.random.default_rng(20261124)
    rule = drop_rule(min_effect=0.0, alpha=0.05)
    rounds, scopes = 150, 200
    any_alarm = per_test = per_scope_bh = 0
    for _ in range(rounds):
        windows = np.zeros((scopes, NCOLS))
        baselines = np.zeros((scopes, NCOLS))
        windows[:, N], baselines[:, N] = 400, 2000
        windows[:, TOP] = rng.binomial(400, 0.85, scopes)
        baselines[:, TOP] = rng.binomial(2000, 0.85, scopes)
        found = screen_drops(rule, "csat", windows, baselines)
        assert all(f is not None for f in found)
        alarms = sum(f.holds for f in found if f is not None)
        per_scope_bh += alarms
        any_alarm += alarms > 0
        per_test += sum(f.comparison.p <= rule.alpha for f in found if f is not None)
    # Under the global null BH bounds P(any false alarm) by alpha (0.05 here).
    assert any_alarm / rounds <= 0.09
    assert per_scope_bh / (rounds * scopes) < 0.001
    # Testing each scope at 5% alone would raise ~10 false alarms every evaluation.
    assert 8 <= per_test / rounds <= 12


def test_real_drops_among_many_scopes_are_found_with_few_false_discoveries() -> None:
    rng = np.random.default_rng(5)
    rule = drop_rule(alpha=0.05)
    windows = np.zeros((200, NCOLS))
    baselines = np.zeros((200, NCOLS))
    windows[:, N], baselines[:, N] = 400, 2000
    true_share = np.full(200, 0.85)
    true_share[:10] = 0.72  # ten real 13-point drops
    windows[:, TOP] = rng.binomial(400, true_share)
    baselines[:, TOP] = rng.binomial(2000, 0.85, 200)
    holds = [f is not None and f.holds for f in screen_drops(rule, "csat", windows, baselines)]
    assert sum(holds[:10]) == 10
    assert sum(holds[10:]) <= 1


def _drop_scenario() -> tuple[Engine, list[TouchpointEvent]]:
    events: list[TouchpointEvent] = []
    for i, channel in enumerate(("chat", "phone")):
        events += csat_stream(channel, T0, LIVE, 4, 0.85, seed=10 + i)
    events += csat_stream("phone", LIVE, LIVE + 6 * HOUR, 420, 0.85, seed=20)
    events += csat_stream("chat", LIVE, LIVE + 2 * HOUR, 420, 0.85, seed=21)
    events += csat_stream("chat", LIVE + 2 * HOUR, LIVE + 4 * HOUR, 420, 0.60, seed=22)
    events += csat_stream("chat", LIVE + 4 * HOUR, LIVE + 6 * HOUR, 420, 0.85, seed=23)
    return Engine(CONFIG), events


def test_a_real_drop_fires_after_the_hold_and_resolves_after_the_clear_time() -> None:
    engine, events = _drop_scenario()
    config = DetectionConfig(drops=(drop_rule(owner="support-chat", severity="critical"),))
    detector = Detector(config)
    [changes] = replay(engine, [detector], events, every=300, evaluate_from=LIVE)
    assert [(c.previous, c.state) for c in changes] == [
        (None, "pending"), ("pending", "firing"), ("firing", "resolved")]
    pending, firing, resolved = (c.alert for c in changes)
    assert {c.alert.id for c in changes} == {pending.id}
    assert pending.id == alert_id("chat-csat", {"channel": "chat"}, "csat", pending.started_at)
    assert (pending.scope, pending.owner, pending.severity) == (
        {"channel": "chat"}, "support-chat", "critical")
    drop_at, back_at = LIVE + 2 * HOUR, LIVE + 4 * HOUR
    assert drop_at < pending.started_at < drop_at + 30 * 60
    assert firing.firing_at is not None
    assert 900 <= firing.firing_at - firing.started_at < 1200
    assert resolved.resolved_at is not None
    assert back_at + 1200 <= resolved.resolved_at < back_at + 2 * HOUR
    ev = firing.evidence
    assert ev is not None and ev.test == "two_proportion_arcsine_z"
    assert ev.window_n >= 200 and ev.baseline_n is not None and ev.baseline_n >= 400
    assert ev.effect is not None and ev.effect >= 0.03
    assert ev.q is not None and ev.p is not None and ev.q <= 0.05 and ev.p <= ev.q
    assert ev.window_end - ev.window_start == HOUR
    assert ev.baseline_end is not None and ev.baseline_start is not None
    assert ev.baseline_end - ev.baseline_start == WEEK and ev.baseline_end <= ev.window_start
    assert detector.alerts.get(pending.id) is not None
    assert detector.alerts.list(state="resolved", owner="support-chat")[0].id == pending.id
    assert detector.alerts.list(state="firing") == [] and detector.alerts.active == {}
    event = changes[1].to_dict()
    assert event["state"] == "firing" and event["previous"] == "pending"
    assert event["started_at"].endswith("+00:00") and event["evidence"]["q"] <= 0.05
    assert orjson.loads(orjson.dumps(event)) == event  # ready for touchstream.alerts


def test_steady_traffic_raises_nothing() -> None:
    events: list[TouchpointEvent] = []
    for i, channel in enumerate(("chat", "phone", "web")):
        events += csat_stream(channel, T0, LIVE, 4, 0.85, seed=30 + i)
        events += csat_stream(channel, LIVE, LIVE + 3 * HOUR, 420, 0.85, seed=40 + i)
    detector = Detector(DetectionConfig(drops=(drop_rule(scopes=None, hold_seconds=0),)))
    [changes] = replay(Engine(CONFIG), [detector], events, every=300, evaluate_from=LIVE)
    assert changes == []


def test_detector_state_round_trips_through_msgpack_mid_alert() -> None:
    engine, events = _drop_scenario()
    rule = drop_rule()
    drift = DriftRule(name="chat-drift", metric="csat", scopes=(("channel",),), min_n=3,
                      min_n_baseline=50)
    config = DetectionConfig(drops=(rule,), drifts=(drift,))
    original = Detector(config)
    middle = LIVE + 2 * HOUR + 40 * 60  # the drop alert is firing by now
    before = [e for e in events if e.occurred_at < at(middle)]
    after = [e for e in events if e.occurred_at >= at(middle)]
    replay(engine, [original], before, every=300, evaluate_from=LIVE)
    assert [a.state for a in original.alerts.list()] == ["firing"]
    data = msgspec.msgpack.encode(original.state())
    restored = Detector(config)
    restored.restore(msgspec.msgpack.decode(data))
    assert restored.state() == original.state()
    last = original.last_evaluated
    assert last is not None and restored.last_evaluated == last
    assert not restored.due(last) and restored.due(last + 60)
    ours, theirs = replay(engine, [original, restored], after, every=300, evaluate_from=LIVE)
    assert [c.to_dict() for c in ours] == [c.to_dict() for c in theirs]
    assert [(c.alert.rule, c.state) for c in ours if c.alert.rule == "chat-csat"] == [
        ("chat-csat", "resolved")]
    assert [c.state for c in ours if c.alert.rule == "chat-drift"] == [
        "pending", "firing"]  # hourly CUSUM of the 25-point drop, once its buckets close


def test_this_week_against_the_last_four() -> None:
    events: list[TouchpointEvent] = []
    start = T0 - 4 * WEEK
    events += csat_stream("chat", start, T0, 2, 0.85, seed=50)
    events += csat_stream("chat", T0, T0 + 3 * DAY, 2, 0.65, seed=51)
    events += csat_stream("phone", start, T0 + 3 * DAY, 2, 0.85, seed=52)
    rule = DropRule(name="weekly", metric="csat", scopes=(("channel",),),
                    window=("periodic", "week"), baseline=("periodic", "week", 4),
                    min_n_window=100, min_n_baseline=400, hold_seconds=0)
    engine = Engine(CONFIG)
    engine.ingest(sorted(events, key=lambda e: e.occurred_at))
    changes = Detector(DetectionConfig(drops=(rule,))).evaluate(engine, T0 + 3 * DAY)
    assert [(c.alert.scope, c.state) for c in changes] == [
        ({"channel": "chat"}, "pending"), ({"channel": "chat"}, "firing")]
    ev = changes[-1].alert.evidence
    assert ev is not None
    assert (ev.window_start, ev.window_end) == (T0, T0 + WEEK)
    assert (ev.baseline_start, ev.baseline_end) == (T0 - 4 * WEEK, T0)
    assert (ev.window_n, ev.baseline_n) == (144, 1344)
    assert ev.window_score == pytest.approx(0.65, abs=0.01)
    assert ev.baseline_score == pytest.approx(0.85, abs=0.001)


def test_below_target_fires_only_when_the_interval_is_wholly_below() -> None:
    config = EngineConfig(scopes=((), ("channel",)), targets=(Target(metric="csat", value=0.8),))
    engine = Engine(config)
    events = (csat_stream("near", T0, T0 + 20 * HOUR, 5, 0.75, seed=60)        # 100 at 75%
              + csat_stream("far", T0, T0 + 20 * HOUR, 10, 0.60, seed=61)       # 200 at 60%
              + csat_stream("fine", T0, T0 + 20 * HOUR, 10, 0.90, seed=62)      # 200 at 90%
              + csat_stream("few", T0, T0 + 20 * HOUR, 2, 0.40, seed=63))       # 40 at 40%
    engine.ingest(sorted(events, key=lambda e: e.occurred_at))
    rule = TargetRule(name="csat-target", metric="csat", scopes=(("channel",),),
                      window=("continuous", "24h"), min_n=50, hold_seconds=0)
    changes = Detector(DetectionConfig(targets=(rule,))).evaluate(engine, T0 + 20 * HOUR)
    assert [(c.alert.scope["channel"], c.state) for c in changes] == [
        ("far", "pending"), ("far", "firing")]
    ev = changes[-1].alert.evidence
    assert ev is not None and ev.test == "interval_below_target" and ev.target == 0.8
    assert ev.window_high is not None and ev.window_high < 0.8
    near = engine.scores("continuous", "24h", where={"channel": "near"},
                         at=T0 + 20 * HOUR)[0].score
    assert near.value < 0.8 < near.high  # below target, but not surely
    own = TargetRule(name="own", metric="csat", scopes=(("channel",),), target=0.95,
                     window=("continuous", "24h"), min_n=50, hold_seconds=0)
    fired = Detector(DetectionConfig(targets=(own,))).evaluate(engine, T0 + 20 * HOUR)
    assert {c.alert.scope["channel"] for c in fired} == {"far", "near", "fine"}


def test_lifecycle_emits_exactly_the_expected_changes() -> None:
    rule = drop_rule(name="r", hold_seconds=600, clear_seconds=300, owner="ops")
    key = (("owner", "channel"), ("team-a", "chat"), "csat")
    other = (("owner", "channel"), ("other", "web"), "csat")
    book = AlertBook(recent=2)
    ev = Evidence("two_proportion_z", 300, 0.6, 0, 3600)

    def step(now: int, holds: bool, key: Any = key) -> list[tuple[str | None, str]]:
        return [(c.previous, c.state) for c in book.update(rule, "drop", now,
                                                           {key: (holds, ev)})]

    assert step(0, True) == [(None, "pending")]
    assert step(300, True) == []
    assert step(600, True) == [("pending", "firing")]
    assert step(700, False) == []            # clearing...
    assert step(800, True) == []             # ...interrupted: the clear time starts over
    assert step(900, False) == []
    assert step(1100, False) == []
    assert step(1200, False) == [("firing", "resolved")]
    assert step(1300, False) == []
    first = book.list()[0]
    assert (first.started_at, first.firing_at, first.resolved_at) == (0, 600, 1200)
    assert first.owner == "team-a"           # the scope's owner beats the rule's
    assert step(2000, True) == [(None, "pending")]
    assert step(2100, False) == [("pending", "resolved")]  # never fired: closed at once
    second = book.list()[0]
    assert second.firing_at is None and second.id != first.id
    assert book.update(rule, "drop", 3000, {}) == []  # an untested series opens nothing
    assert step(3000, True, other) == [(None, "pending")]
    assert book.list(state="pending")[0].owner == "ops"  # "other" is nobody's
    assert book.update(rule, "drop", 3100, {}) != []  # no longer tested: condition false
    assert len(book.recent) == 2 and book.get(first.id) is None  # bounded history
    instant = drop_rule(name="now", hold_seconds=0, clear_seconds=0)
    changes = book.update(instant, "drop", 5000, {key: (True, ev)})
    assert [(c.previous, c.state) for c in changes] == [(None, "pending"), ("pending", "firing")]
    assert changes[0].alert.state == "pending"  # each change carries the alert as it was
    assert [c.state for c in book.retire(set(), 5100)] == ["resolved"]
    restored = AlertBook(recent=2)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(book.state())))
    assert restored.state() == book.state()
    assert [a.id for a in restored.list()] == [a.id for a in book.list()]


# ---------------------------------------------------------------------------- CUSUM


def _run_lengths(shift: float, k: float, h: float, chains: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros(chains)
    length = np.zeros(chains, dtype=np.int64)
    alive = np.ones(chains, dtype=np.bool_)
    t = 0
    while alive.any():
        t += 1
        s = lower_cusum(s, rng.standard_normal(chains) - shift, k, cap=2 * h)
        hit = alive & (s > h)
        length[hit] = t
        alive &= ~hit
    return length


def test_cusum_in_control_run_length_matches_siegmund() -> None:
    k, h = 0.5, 5.0
    assert siegmund_arl(k, h) == pytest.approx(938.2, abs=0.1)
    assert siegmund_arl(0.5, 4.0) == pytest.approx(338.1, abs=0.1)
    assert siegmund_arl(0.0, 4.0) == pytest.approx(5.166**2)
    arl0 = _run_lengths(0.0, k, h, chains=1500, seed=11).mean()
    assert abs(arl0 / siegmund_arl(k, h) - 1) < 0.2


def test_cusum_detects_a_one_sigma_drop_within_the_expected_run_length() -> None:
    k, h = 0.5, 5.0
    expected = siegmund_arl(k, h, shift=1.0)
    assert expected == pytest.approx(10.34, abs=0.01)
    lengths = _run_lengths(1.0, k, h, chains=4000, seed=12)
    assert abs(lengths.mean() / expected - 1) < 0.2
    assert np.quantile(lengths, 0.95) < 25


def test_drift_rule_catches_a_slow_hourly_decline_the_hourly_test_misses() -> None:
    events: list[TouchpointEvent] = []
    for i, channel in enumerate(("chat", "phone")):
        events += csat_stream(channel, T0, LIVE, 60, 0.85, seed=70 + i)
    events += csat_stream("phone", LIVE, LIVE + DAY, 60, 0.85, seed=72)
    events += csat_stream("chat", LIVE, LIVE + DAY, 60, 0.80, seed=73)  # a 1-SD hourly dip
    drift = DriftRule(name="chat-drift", metric="csat", scopes=(("channel",),),
                      owner="cx-quality")
    hourly = drop_rule(min_n_window=50, hold_seconds=0)
    detector = Detector(DetectionConfig(drops=(hourly,), drifts=(drift,)))
    [changes] = replay(Engine(CONFIG), [detector], events, every=HOUR,
                       evaluate_from=LIVE - 2 * HOUR)
    assert [(c.alert.rule, c.alert.scope, c.state) for c in changes] == [
        ("chat-drift", {"channel": "chat"}, "pending"),
        ("chat-drift", {"channel": "chat"}, "firing")]
    alert = changes[-1].alert
    ev = alert.evidence
    assert ev is not None and ev.cusum is not None and ev.cusum > 5.0
    assert ev.test == "cusum" and ev.statistic is not None and ev.statistic < -0.5
    # z = -0.05 / sqrt(p(1-p)(1/60 + 1/10080)) ~ -1.08 per bucket: S passes 5 in 9 buckets,
    # each usable once the hour's lateness has passed.
    assert LIVE + 9 * HOUR <= alert.started_at <= LIVE + 13 * HOUR
    assert alert.owner == "cx-quality"


# ----------------------------------------------------------------------- follow-ups


def test_followups_come_from_answers_that_need_a_human_in_key_segments() -> None:
    def common(i: int, segment: str) -> dict[str, Any]:
        return {"event_id": f"e{i}", "occurred_at": at(T0 + i), "customer_id": f"c{i}",
                "touchpoint": "call", "channel": "phone", "segment": segment,
                "owner": "team-phone", "journey_id": "j1" if i == 0 else None}

    events: list[TouchpointEvent] = [
        Nps(**common(0, "enterprise"), value=3),          # detractor, key segment
        Nps(**common(1, "smb"), value=2),                 # detractor, not key
        Nps(**common(2, "enterprise"), value=8),          # passive
        Csat(**common(3, "enterprise"), value=2),         # very dissatisfied
        Ces(**common(4, "enterprise"), value=3),          # difficult, not very
        Ces(**common(5, "enterprise"), value=1),          # very difficult
        Outcome(**common(6, "smb"), value="abandoned"),   # any segment
        Outcome(**common(7, "smb"), value="resolved"),
        Outcome(**common(8, "smb"), value="unresolved"),
    ]
    rules = [
        FollowUpRule(name="key-detractors", condition="detractor", segments=("enterprise",),
                     owner="account-team"),
        FollowUpRule(name="key-unhappy", condition="very_dissatisfied",
                     segments=("enterprise",)),
        FollowUpRule(name="unresolved", condition="unresolved", owner="support-leads"),
    ]
    found = followups(events, rules)
    assert [(f.event_id, f.rule, f.owner, f.reason) for f in found] == [
        ("e0", "key-detractors", "account-team", "detractor: nps 3"),
        ("e3", "key-unhappy", "team-phone", "very dissatisfied: csat 2"),
        ("e5", "key-unhappy", "team-phone", "very dissatisfied: ces 1"),
        ("e6", "unresolved", "support-leads", "outcome abandoned"),
        ("e8", "unresolved", "support-leads", "outcome unresolved"),
    ]
    first = found[0]
    assert (first.customer_id, first.journey_id, first.segment, first.channel,
            first.touchpoint, first.created_at, first.status) == (
        "c0", "j1", "enterprise", "phone", "call", T0, "open")
    assert first.to_dict()["created_at"] == "2026-03-02T00:00:00+00:00"
    only_csat = FollowUpRule(name="csat-only", condition="very_dissatisfied", kinds=("csat",))
    assert [f.event_id for f in followups(events, [only_csat])] == ["e3"]

    detector = Detector(DetectionConfig(followups=tuple(rules)))
    assert detector.follow_up(events) == found
    assert detector.follow_up(events) == []
    assert detector.followups.list(owner="account-team") == found[:1]

    book = FollowUpBook(closed_kept=10)
    assert len(book.add(found)) == 5
    again = followups(events, rules)
    assert book.add(again) == []  # a replay does not duplicate
    assert [f.event_id for f in book.list(owner="support-leads")] == ["e6", "e8"]
    closed = book.close(first.id, "called back, refund issued", at=T0 + DAY)
    assert (closed.status, closed.closed_at, closed.note) == (
        "closed", T0 + DAY, "called back, refund issued")
    assert book.get(first.id) is closed
    assert [f.event_id for f in book.list(status="closed")] == ["e0"]
    assert len(book.list(status="open", segment="enterprise")) == 2
    with pytest.raises(KeyError):
        book.close(first.id, "twice")
    assert book.add(again) == []  # closed ones are remembered too
    restored = FollowUpBook(closed_kept=10)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(book.state())))
    assert restored.state() == book.state()


def test_a_copy_of_its_parent_is_one_test_and_alerts_once_on_the_coarsest_scope() -> None:
    # Every answer has segment "smb": the segment=smb series is the overall series again.
    config = EngineConfig(scopes=((), ("channel",), ("segment",)))
    events: list[TouchpointEvent] = []
    for i, channel in enumerate(("chat", "phone")):
        events += csat_stream(channel, T0, LIVE, 4, 0.85, seed=60 + i)
        share = 0.5 if channel == "chat" else 0.85
        events += csat_stream(channel, LIVE, LIVE + HOUR, 300, share, seed=70 + i)
    engine = Engine(config)
    rule = drop_rule(scopes=None, hold_seconds=0)
    [changes] = replay(engine, [Detector(DetectionConfig(drops=(rule,)))], events,
                       every=300, evaluate_from=LIVE + HOUR - 300)
    fired = {tuple(c.alert.scope.items()): c.alert for c in changes if c.state == "firing"}
    assert set(fired) == {(), (("channel", "chat"),)}  # not segment=smb: it is the overall

    # The family is overall, chat and phone: three tests, not four.
    keys = engine.series.keys
    sids = [keys.index(k) for k in (((), (), "csat"), (("channel",), ("chat",), "csat"),
                                    (("channel",), ("phone",), "csat"))]
    assert engine.watermark is not None
    detector = Detector(DetectionConfig(drops=(rule,)))
    dense = Dense(engine)
    wspan = window_span(engine, rule.name, rule.window, engine.watermark)
    bspan = baseline_span(engine, rule, wspan, engine.watermark)
    expected = screen_drops(rule, "csat", dense(wspan)[sids], dense(bspan)[sids])
    detector.evaluate(engine, engine.watermark)
    assert expected[0] is not None
    q_by_scope = {tuple(a.scope.items()): a.evidence.q for a in detector.alerts.active.values()
                  if a.evidence is not None}
    assert q_by_scope[()] == pytest.approx(expected[0].q)
    assert expected[1] is not None
    assert q_by_scope[(("channel", "chat"),)] == pytest.approx(expected[1].q)
