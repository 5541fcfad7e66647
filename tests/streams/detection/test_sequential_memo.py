"""The memoized sequential scan computes what the plain one did.

``reference_sequential.reference_scan`` is the scan as first written: every bucket summed
and every segment's statistic computed at each evaluation. The product's ``scan`` keeps
what closed hours give (``sequential.Hours``) across evaluations and adds the minutes;
these tests drive both over the same engines, evaluation after evaluation, across hour
boundaries, empty buckets, copies, every metric family and both cycle settings, and with
answers counted after their hour closed, and require the same statistics and the same
decisions (the same alerts, at the same times, with the same evidence).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from schemas.event import Csat
from streams.detection import DetectionConfig, Detector, DropRule, sequential
from streams.detection.sequential import Buckets, Scan, scan
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, HIST, NCOLS, SUM, SUMSQ, TOP, N
from streams.engine.store import BucketTable, SeriesRegistry
from tests.streams.detection.reference_sequential import reference_scan

T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
MINUTE, HOUR, DAY = 60, 3600, 86_400
CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",)))
VALUES = {"csat": np.arange(1, 6), "nps": np.arange(0, 11), "ces": np.arange(1, 8)}
TOPS = {"csat": 4, "nps": 9, "ces": 5}
BOTTOMS = {"csat": 2, "nps": 6, "ces": 3}


def rows(metric: str, counts: np.ndarray) -> np.ndarray:
    """Aggregate rows (..., NCOLS) from answer counts per value (..., values)."""
    v = VALUES[metric].astype(np.float64)
    c = counts.astype(np.float64)
    out = np.zeros((*counts.shape[:-1], NCOLS))
    out[..., N], out[..., SUM], out[..., SUMSQ] = c.sum(-1), c @ v, c @ v**2
    out[..., TOP] = c @ (v >= TOPS[metric])
    out[..., BOTTOM] = c @ (v <= BOTTOMS[metric])
    out[..., HIST:HIST + min(len(v), NCOLS - HIST)] = c[..., :NCOLS - HIST]
    return out


class Feed:
    """A read-model engine: 4 channels (one of them silent for days), overall, and a
    ``segment=unspecified`` copy of overall, set minute by minute."""

    def __init__(self, metric: str, per_hour: float, seed: int, wave: float = 0.0) -> None:
        self.metric, self.rng, self.wave = metric, np.random.default_rng(seed), wave
        series = SeriesRegistry()
        self.ids = np.array([series.id(((), (), metric))]
                            + [series.id((("channel",), (f"c{c}",), metric)) for c in range(4)]
                            + [series.id((("segment",), ("unspecified",), metric))])
        self.engine = Engine.read_model(CONFIG, series)
        self.lam = per_hour / 60 / 4
        self.p = self.rng.dirichlet(np.full(len(VALUES[metric]), 3.0))
        self.minutes: dict[int, np.ndarray] = {}

    def draw(self, m: int, drop: bool) -> np.ndarray:
        p = self.p.copy()
        if self.wave:  # a daily rhythm in the top answers (the baseline curve's harmonics)
            p[-2:] *= 1.0 + self.wave * np.sin(2 * np.pi * (m % (24 * 60)) / (24 * 60))
            p /= p.sum()
        if drop:  # answers move to the lowest value
            p[-2:] *= 0.6
            p[0] += 1 - p.sum()
        per = self.rng.poisson(self.lam * p, size=(4, len(p)))
        if (m // (24 * 60)) % 5 == 3:
            per[3] = 0  # a silent channel: empty buckets, ties between segments
        out = rows(self.metric, per)
        return np.concatenate([out.sum(0, keepdims=True), out, out.sum(0, keepdims=True)])

    def set(self, gran: str, bucket: int, data: np.ndarray) -> None:
        keep = data[:, N] > 0
        table = None
        if keep.any():
            table = BucketTable()
            table.add(self.ids[keep], data[keep])
        self.engine.set_bucket(gran, bucket, table)

    def minute(self, m: int, drop: bool = False) -> int:
        self.minutes[m] = self.draw(m, drop)
        self.set("60s", T0 // MINUTE + m, self.minutes[m])
        h0 = m - m % 60
        self.set("3600s", T0 // HOUR + m // 60,
                 sum(self.minutes[i] for i in range(h0, m + 1)))
        now = T0 + (m + 1) * MINUTE - 1
        self.engine.set_merged(watermark=now, folded={}, counters={}, pulses={}, journeys=[])
        self.engine.expire(now)
        return now


def same(ours: Scan, theirs: Scan) -> None:
    assert ours.sids == theirs.sids
    np.testing.assert_allclose(ours.stat, theirs.stat, rtol=1e-9, atol=1e-9)
    assert np.array_equal(ours.start, theirs.start)
    assert np.array_equal(ours.seg_n, theirs.seg_n)
    assert np.array_equal(ours.base_n, theirs.base_n)
    assert np.array_equal(ours.sigma, theirs.sigma)
    np.testing.assert_allclose(ours.volume, theirs.volume, rtol=1e-12)
    assert np.array_equal(ours.tested, theirs.tested)
    assert np.array_equal(ours.live, theirs.live)
    np.testing.assert_allclose(ours.delta, theirs.delta, rtol=1e-12)


@pytest.mark.parametrize(("metric", "cycle", "per_hour", "wave"), [
    ("csat", "hour_of_day", 40.0, 0.0), ("csat", "none", 3.0, 0.0),
    ("nps", "hour_of_day", 300.0, 0.0), ("ces", "hour_of_day", 8.0, 0.0),
    ("ces", "none", 1000.0, 0.0), ("csat", "hour_of_day", 400.0, 0.4),
    ("nps", "hour_of_week", 300.0, 0.4), ("ces", "hour_of_week", 100.0, 0.0)])
def test_the_memoized_scan_equals_the_plain_one(metric: str, cycle: str,
                                                per_hour: float, wave: float) -> None:
    feed = Feed(metric, per_hour, seed=len(metric) + int(per_hour), wave=wave)
    rule = DropRule(name="d", metric=metric, test="sequential", cycle=cycle,
                    horizon="3d", baseline=("prior", "4d"))
    start = 7 * 24 * 60 + 17
    for m in range(start):
        feed.minute(m)
    closed: dict[sequential.MemoKey, np.ndarray] = {}
    parts: dict[object, sequential.Hours] = {}
    sids = list(range(6))
    compared = 0
    for m in range(start, start + 150):  # two hour boundaries; a drop after the first
        now = feed.minute(m, drop=m >= start + 50)
        ours = scan(feed.engine, rule, now, sids, Buckets(feed.engine, closed, parts))
        theirs = reference_scan(feed.engine, rule, now, sids, Buckets(feed.engine))
        same(ours, theirs)
        compared += 1
    assert parts and compared == 150
    assert len({k[3] for k in parts}) >= 2  # the hours' part was rebuilt at an hour
    if wave:  # the curve took the daily harmonics where the rhythm is
        assert any(h.fit.harmonic.any() for h in parts.values())


def test_a_late_answer_rebuilds_the_memoized_hours() -> None:
    """A late answer in a closed monitored hour changes the next scan exactly as the
    plain scan sees it (the memo of derived hours is keyed as the closed sums are)."""
    engine = Engine(EngineConfig(scopes=((), ("channel",))))
    rng = np.random.default_rng(4)
    events = []
    for i, t in enumerate(np.sort(rng.uniform(T0, T0 + 10 * DAY, 8000)).tolist()):
        events.append(Csat(event_id=f"e{i}", occurred_at=datetime.fromtimestamp(t, UTC),
                           customer_id="c", touchpoint="contact",
                           channel="chat" if i % 3 else "email",
                           value=5 if rng.random() < 0.8 else 1))
    engine.ingest(events)
    rule = DropRule(name="d", metric="csat", test="sequential", horizon="3d",
                    baseline=("prior", "4d"))
    assert engine.watermark is not None
    now = engine.watermark
    sids = [sid for sid, k in enumerate(engine.series.keys) if k[2] == "csat"]
    closed: dict[sequential.MemoKey, np.ndarray] = {}
    parts: dict[object, sequential.Hours] = {}
    before = scan(engine, rule, now, sids, Buckets(engine, closed, parts))
    assert parts
    late = [Csat(event_id=f"late{i}", customer_id="c", touchpoint="contact",
                 occurred_at=datetime.fromtimestamp(now - 30 * HOUR + i, UTC),
                 channel="chat", value=1) for i in range(40)]
    assert engine.ingest(late).accepted == 40
    after = scan(engine, rule, now, sids, Buckets(engine, closed, parts))
    same(after, reference_scan(engine, rule, now, sids, Buckets(engine)))
    assert not np.array_equal(after.stat, before.stat)


def test_the_detector_pages_as_with_the_plain_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole runs: the same alert changes, at the same times, with the same evidence."""
    def run(plain: bool) -> list[tuple[int, str, str, dict[str, object] | None]]:
        feed = Feed("csat", 60.0, seed=11)
        # top-2 0.80, 0.48 in the drop (the random draw, top 0.44 and bottom 0.44, gave a
        # drop too weak to page for sure once shares test a grid of destinations)
        feed.p = np.array([0.05, 0.05, 0.10, 0.35, 0.45])
        rule = DropRule(name="d", metric="csat", test="sequential", horizon="3d",
                        baseline=("prior", "4d"))
        detector = Detector(DetectionConfig(drops=(rule,), false_pages_per_week=50.0))
        if plain:
            monkeypatch.setattr(sequential, "scan", lambda e, r, n, s, b, t: reference_scan(
                e, r, n, s, Buckets(e), t))
        start = 7 * 24 * 60
        for m in range(start):
            feed.minute(m)
        out = []
        for m in range(start, start + 16 * 60):  # the page resolves hours after the drop
            now = feed.minute(m, drop=start + 60 <= m < start + 200)
            if detector.due(now, 60):
                for c in detector.evaluate(feed.engine, now):
                    ev = None if c.alert.evidence is None else c.alert.evidence.to_dict()
                    out.append((c.at, c.state, c.alert.id, ev))
        monkeypatch.undo()
        return out

    ours, theirs = run(False), run(True)
    assert [o[:3] for o in ours] == [t[:3] for t in theirs]
    assert any(o[1] == "firing" for o in ours) and any(o[1] == "resolved" for o in ours)
    for (_, _, _, a), (_, _, _, b) in zip(ours, theirs, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.keys() == b.keys()
            for k in a:
                if isinstance(a[k], float):
                    assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
                else:
                    assert a[k] == b[k], k


def test_a_page_restarts_the_cusum_one_change_pages_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a page resolves, only evidence that starts after it counts: the segment
    that paged cannot page again as its statistic hovers about the threshold (without
    the restart it does: c3 pages six times on the same two drops)."""
    def run(restart: bool) -> list[tuple[str, int, int]]:
        feed = Feed("csat", 120.0, seed=3)
        feed.p = np.array([0.05, 0.05, 0.10, 0.35, 0.45])  # top-2 0.80, 0.48 in a drop
        rule = DropRule(name="d", metric="csat", test="sequential", horizon="3d",
                        baseline=("prior", "4d"), scopes=((), ("channel",)),
                        clear_seconds=0)
        detector = Detector(DetectionConfig(drops=(rule,), false_pages_per_week=50.0))
        if not restart:
            monkeypatch.setattr(Detector, "restarts", lambda self: {})
        start = 7 * 24 * 60
        for m in range(start):
            feed.minute(m)
        out = []
        for m in range(start, start + 12 * 60):
            drop = start + 60 <= m < start + 180 or start + 600 <= m < start + 720
            now = feed.minute(m, drop=drop)
            if detector.due(now, 60):
                for c in detector.evaluate(feed.engine, now):
                    ev = c.alert.evidence
                    if c.state == "firing" and ev is not None and ev.change_start:
                        out.append((c.alert.scope.get("channel", ""), c.at,
                                    ev.change_start))
        if restart:
            assert detector.restarts()["d"], "a page resolved and restarted its CUSUM"
        monkeypatch.undo()
        return out

    def reused(pages: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Pages whose evidence starts before the same series' previous page."""
        last: dict[str, int] = {}
        out = []
        for scope, at, change in pages:
            if scope in last and change <= last[scope]:
                out.append((scope, at, change))
            last[scope] = at
        return out

    ours, flapping = run(True), run(False)
    assert reused(ours) == [] and len(ours) < len(flapping)
    assert reused(flapping)  # the defect the restart removes
    # Both drops page each channel (a page that resolves within a drop may be followed
    # by another on the drop's later answers: evidence that starts after the page, as
    # the restart allows; never the same evidence again, as ``reused`` checks).
    start = (7 * 24 * 60) * 60 + T0
    first, second = start + 60 * 60, start + 600 * 60
    for channel in ("c2", "c3"):
        times = [at for scope, at, _ in ours if scope == channel]
        assert any(first <= at < second for at in times), (channel, times)
        assert any(at >= second for at in times), (channel, times)
