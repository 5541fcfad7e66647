"""Detection delay and false alarms of the drop rules, against an oracle CUSUM.

The product's own ``Engine`` and ``Detector`` are driven as the runners drive them:
event time advances minute by minute, the engine's 60-s and 3600-s buckets fill, and
``detector.evaluate(engine, now)`` runs whenever ``detector.due(now, 60)`` says so (every
60 s of event time, as ``touchstream serve`` and the worker's leader do).

**How the engine is fed (the choice, measured).** Ingesting every simulated answer as a
``TouchpointEvent`` costs about 9 µs an answer (decode + ingest, BENCHMARKS.md); a 30-day
null run at 10,000 answers an hour is 7.2 million answers, over a minute per run before
any detection, and hours for the whole table. The detectors only read the engine's
per-bucket aggregates, so the simulation draws each minute's answers per channel and
category (independent Poisson counts per answer value: a Poisson stream thinned by the
answer distribution), builds the minute's aggregate vectors exactly as the engine's
``observe``/``rows`` would (n, sum, sum of squares, top, bottom, histogram), and sets them
into an engine with ``Engine.read_model`` / ``set_bucket`` / ``set_merged`` / ``expire``:
the path the worker's group leader uses for its merged view. The 3600-s bucket of the
current hour is the running sum of its minutes, as it would be live.

**Scope layout.** Scopes overall, channel and segment; 10 channels share the rate
equally; every answer has segment "unspecified", so the segment series is a copy of the
overall one (the duplicate-series shape of issue 17). 11 distinct series per metric.
One drop rule on the simulated metric is configured (the rule under test), nothing else.

**Runs.** Drop runs: 15 days of steady history (the sequential rule reads a 7-day baseline
before its 7-day horizon; the window rule needs 7 days and an hour), of which the
detector evaluates the last day (warm-up: its pages are not counted), then a
drop in every channel at once; the delay is from the drop to the first alert *firing*
on any series of the rule (checked every 60 s); a run with no page within the horizon
is censored, and the median is the Kaplan-Meier median (all censoring is at the horizon,
so it is the plain median, or "> horizon" when half or more are censored). Null runs:
the same history and warm-up, then ``--null-days`` of unchanged data, flat or with a
daily cycle of ±5 points of top-2 share (a sine, trough at 06:00 UTC, constant volume), and
with ``--weekend W`` also that cycle with Saturdays and Sundays W lower (``--cycle
hour_of_week`` sets the rule's baseline per hour of the week); every alert
that starts firing counts as a false page; the rate is pages per distinct series per 30
days with an exact 95% Poisson interval.

**Oracle.** The best detector for the known shift: a CUSUM of the exact log-likelihood
ratio (answer-value distribution after vs before, per answer; a Bernoulli CUSUM for the
top-2 share, categorical for NPS and CES) on every answer of the overall stream (all
channels), summed per minute and checked every minute, started at the drop. Its
threshold is calibrated by simulation to one false alarm per ``--oracle-arl-days``
(default 30) days at that rate: the per-series budget the goals are stated against.

Metrics: CSAT top-2 share 0.80 with drops of 3, 5 and 10 points; NPS 30 (50% promoters,
20% detractors) with a 10-point drop; CES mean 5.10 (1-7) with a 0.2 drop (the last two
are about 0.13 SD per answer, like the 5-point CSAT drop).

    python benchmarks/bench_detection.py [--detector current|sequential|both] [--quick]
        [--runs R] [--null-runs R] [--null-days D] [--rates 30,100,1000,10000] [--jobs J]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import stats as sps  # noqa: E402

from streams.detection import DetectionConfig, Detector, DropRule, sequential  # noqa: E402
from streams.engine.config import EngineConfig  # noqa: E402
from streams.engine.engine import Engine  # noqa: E402
from streams.engine.metrics import BOTTOM, HIST, NCOLS, SUM, SUMSQ, TOP, N  # noqa: E402
from streams.engine.store import BucketTable, SeriesRegistry  # noqa: E402

MINUTE, HOUR, DAY = 60, 3600, 86_400
T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
CHANNELS = 10
HISTORY_DAYS = 15
WARMUP_HOURS = 24
"""The detector runs over the last day of history before a run counts (see the
docstring: a detector is not started at the change)."""
CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",)))


# ------------------------------------------------------------------ answer distributions


@dataclass(frozen=True)
class Metric:
    """A metric's answer values, which count as top / bottom, and its distributions."""

    name: str
    values: np.ndarray  # answer value of each category
    top: np.ndarray  # bool per category
    bottom: np.ndarray
    hist: np.ndarray  # histogram bin per category
    base: np.ndarray  # probabilities before the drop
    unit: str

    def shifted(self, drop: float) -> np.ndarray:
        """The distribution after a drop of ``drop`` (metric units; negative: a rise)."""
        p = self.base.astype(np.float64).copy()
        if self.name == "csat":  # top-2 share: d/2 from each of 5 and 4 to each of 1, 2
            p[[3, 4]] -= drop / 2
            p[[0, 1]] += drop / 2
        elif self.name == "nps":  # NPS points: d/200 from promoters (9, 10) to 0-6
            f = drop / 200.0
            p[[9, 10]] -= f / 2
            p[:7] += f / 7
        else:  # CES mean: a mixture with the distribution one step lower
            lower = np.append(p[1:], 0.0)
            lower[0] += p[0]
            w = drop / float((self.values * (p - lower)).sum())
            p = (1 - w) * p + w * lower
        if (p < 0).any() or abs(p.sum() - 1) > 1e-9:
            raise ValueError(f"drop {drop} leaves no distribution: {p}")
        return p


def _metric(name: str) -> Metric:
    if name == "csat":
        v = np.arange(1, 6)
        base = np.array([0.05, 0.05, 0.10, 0.35, 0.45])
        return Metric(name, v, v >= 4, v <= 2, v - 1, base, "points")
    if name == "nps":
        v = np.arange(0, 11)
        base = np.array([0.02, 0.02, 0.02, 0.02, 0.03, 0.04, 0.05, 0.12, 0.18, 0.25, 0.25])
        return Metric(name, v, v >= 9, v <= 6, v, base, "NPS points")
    v = np.arange(1, 8)
    base = np.array([0.03, 0.04, 0.08, 0.15, 0.25, 0.25, 0.20])
    return Metric(name, v, v >= 5, v <= 3, v - 1, base, "CES")


def _label(metric: str, drop: float) -> str:
    if metric == "csat":
        return f"csat -{drop * 100:g} pt"
    if metric == "nps":
        return f"nps -{drop:g}"
    return f"ces -{drop:g}"


# ------------------------------------------------------------------------ simulation


def simulate(rng: np.random.Generator, metric: Metric, rate: float, minutes: int,
             onset: int | None, drop: float, cycle: float, weekend: float = 0.0
             ) -> np.ndarray:
    """Counts per (minute, channel, category): independent Poissons (thinning)."""
    lam = rate / 60.0 / CHANNELS
    t = np.arange(minutes)
    probs = np.broadcast_to(metric.base, (minutes, len(metric.base))).copy()
    if cycle or weekend:
        # the share moves by cycle * sin over the day (trough at 06:00 UTC), and down by
        # ``weekend`` on Saturdays and Sundays (T0 is a Monday)
        phase = cycle * np.sin(2 * np.pi * ((t % (DAY // MINUTE)) / (DAY // MINUTE) - 0.5))
        phase -= weekend * ((t // (DAY // MINUTE)) % 7 >= 5)
        for amp in np.unique(np.round(phase, 4)):
            probs[np.round(phase, 4) == amp] = metric.shifted(-amp)
    if onset is not None:
        probs[t >= onset] = metric.shifted(drop)
    return rng.poisson(lam * probs[:, None, :], size=(minutes, CHANNELS, len(metric.base)))


def vectors(metric: Metric, counts: np.ndarray) -> np.ndarray:
    """Aggregate vectors (..., NCOLS) from counts per category (..., categories)."""
    out = np.zeros((*counts.shape[:-1], NCOLS))
    c = counts.astype(np.float64)
    out[..., N] = c.sum(-1)
    out[..., SUM] = c @ metric.values
    out[..., SUMSQ] = c @ (metric.values.astype(np.float64) ** 2)
    out[..., TOP] = c @ metric.top
    out[..., BOTTOM] = c @ metric.bottom
    for k, b in enumerate(metric.hist.tolist()):
        out[..., HIST + b] += c[..., k]
    return out


class Feed:
    """An engine (``read_model``) whose buckets are set from simulated minutes."""

    def __init__(self, metric: Metric, counts: np.ndarray) -> None:
        series = SeriesRegistry()
        ids = [series.id(((), (), metric.name))]
        ids += [series.id((("channel",), (f"c{c}",), metric.name)) for c in range(CHANNELS)]
        ids.append(series.id((("segment",), ("unspecified",), metric.name)))
        self.engine = Engine.read_model(CONFIG, series)
        per_channel = vectors(metric, counts)  # (minutes, channels, NCOLS)
        overall = per_channel.sum(1, keepdims=True)
        self.rows = np.concatenate([overall, per_channel, overall], axis=1)
        self.ids = np.array(ids, dtype=np.int64)
        self.distinct = 1 + CHANNELS

    def _table(self, rows: np.ndarray) -> BucketTable | None:
        keep = rows[:, N] > 0
        if not keep.any():
            return None
        table = BucketTable()
        table.add(self.ids[keep], rows[keep])
        return table

    def history(self, minutes: int) -> None:
        """Set every bucket of the first ``minutes`` (whole hours), no evaluation."""
        e = self.engine
        hours = self.rows[:minutes].reshape(minutes // 60, 60, *self.rows.shape[1:]).sum(1)
        base_h = T0 // HOUR
        for h in range(max(0, len(hours) - 340), len(hours)):
            e.set_bucket("3600s", base_h + h, self._table(hours[h]))
        base_m = T0 // MINUTE
        for m in range(max(0, minutes - 180), minutes):
            e.set_bucket("60s", base_m + m, self._table(self.rows[m]))
        self._advance(T0 + minutes * MINUTE - 1)

    def minute(self, m: int) -> int:
        """Set minute ``m`` and its hour so far; returns the event time at its end."""
        e = self.engine
        e.set_bucket("60s", T0 // MINUTE + m, self._table(self.rows[m]))
        h0 = m - m % 60
        e.set_bucket("3600s", T0 // HOUR + m // 60, self._table(self.rows[h0 : m + 1].sum(0)))
        now = T0 + (m + 1) * MINUTE - 1
        self._advance(now)
        return now

    def _advance(self, now: int) -> None:
        e = self.engine
        e.set_merged(watermark=now, folded={}, counters={}, pulses={}, journeys=[])
        e.expire(now)
        e.changed()


def make_rule(detector: str, metric: str, cycle: str = "hour_of_day") -> DetectionConfig:
    """The drop rule under test, as ``default_detection`` configures it (a sequential
    rule's ``cycle`` as given)."""
    if detector == "current":
        return DetectionConfig(drops=(DropRule(name=f"{metric}-drop", metric=metric),))
    # The deployment budget (one false page a week across 11 distinct series) would
    # set each series to one in 77 days; the goals and the oracle are per series per 30
    # days, so the bench sets the deployment budget that makes that the binding one.
    return DetectionConfig(drops=(DropRule(name=f"{metric}-drop", metric=metric,
                                           test="sequential", cycle=cycle),),
                           false_pages_per_week=7.0 * (CHANNELS + 1) / 30.0)


def first_page(detector: Detector, feed: Feed, start: int, stop: int) -> int | None:
    """Minutes from ``start`` to the first alert firing, or None by ``stop``."""
    for m in range(start, stop):
        now = feed.minute(m)
        if detector.due(now, 60):
            for change in detector.evaluate(feed.engine, now):
                if change.state == "firing":
                    return m - start + 1
    return None


def pages(detector: Detector, feed: Feed, start: int, stop: int) -> int:
    """Alerts that started firing between minutes ``start`` and ``stop``."""
    count = 0
    for m in range(start, stop):
        now = feed.minute(m)
        if detector.due(now, 60):
            count += sum(c.state == "firing" for c in detector.evaluate(feed.engine, now))
    return count


@dataclass(frozen=True)
class Job:
    kind: str  # "drop" or "null"
    detector: str
    metric: str
    rate: float
    drop: float
    cycle: float
    horizon_min: int
    seed: int
    history_min: int = HISTORY_DAYS * DAY // MINUTE
    weekend: float = 0.0  # null runs: top share this much lower on weekends
    rule_cycle: str = "hour_of_day"  # the sequential rule's ``cycle``


def run_job(job: Job) -> tuple[Job, float | None, float]:
    """One run: (job, delay in minutes or None / page count, seconds spent evaluating)."""
    rng = np.random.default_rng(job.seed)
    metric = _metric(job.metric)
    history = job.history_min
    minutes = history + job.horizon_min
    onset = history if job.kind == "drop" else None
    counts = simulate(rng, metric, job.rate, minutes, onset, job.drop, job.cycle,
                      job.weekend)
    feed = Feed(metric, counts)
    warm = min(WARMUP_HOURS * 60, history)
    feed.history(history - warm)
    detector = Detector(make_rule(job.detector, job.metric, job.rule_cycle))
    pages(detector, feed, history - warm, history)  # warm-up: its pages are not counted
    started = time.process_time()
    if job.kind == "drop":
        found = first_page(detector, feed, history, minutes)
        result: float | None = None if found is None else float(found)
    else:
        result = float(pages(detector, feed, history, minutes))
    return job, result, time.process_time() - started


# --------------------------------------------------------------------------- oracle


def oracle_llr(metric: Metric, drop: float) -> np.ndarray:
    """Per-answer log-likelihood ratio of each category, after vs before the drop."""
    p0, p1 = metric.base, metric.shifted(drop)
    return np.log(p1 / p0)


def calibrate_oracle(metric: Metric, drop: float, rate: float, arl_minutes: float,
                     seed: int, chains: int, span: float) -> float:
    """The threshold giving one alarm per ``arl_minutes`` on null data (simulated)."""
    rng = np.random.default_rng(seed)
    llr = oracle_llr(metric, drop)
    lam = rate / 60.0 * metric.base
    grid = np.linspace(0.5, 25.0, 50)
    s = np.zeros((len(grid), chains))
    alarms = np.zeros(len(grid))
    total = int(span * arl_minutes)
    for lo in range(0, total, 5000):
        size = min(5000, total - lo)
        steps = rng.poisson(lam, size=(size, chains, len(lam))) @ llr
        for step in steps:
            s = np.maximum(0.0, s + step)
            hit = s > grid[:, None]
            alarms += hit.sum(1)
            s[hit] = 0.0
    arl = total * chains / np.maximum(alarms, 0.5)
    ok = np.flatnonzero(arl >= arl_minutes)
    if not len(ok):
        return float(grid[-1])
    i = int(ok[0])
    if i == 0:
        return float(grid[0])
    # interpolate log(ARL) linearly in h between the two grid points around the target
    a, b = math.log(arl[i - 1]), math.log(arl[i])
    w = (math.log(arl_minutes) - a) / (b - a) if b > a else 1.0
    return float(grid[i - 1] + w * (grid[i] - grid[i - 1]))


def oracle_delay(metric: Metric, drop: float, counts: np.ndarray, onset: int,
                 h: float) -> float | None:
    """Minutes from the onset to the oracle's alarm on the overall stream, or None."""
    steps = counts[onset:].sum(1) @ oracle_llr(metric, drop)
    s = 0.0
    for i, x in enumerate(steps.tolist()):
        s = max(0.0, s + x)
        if s > h:
            return float(i + 1)
    return None


def oracle_delays(job: Job, runs: int, h: float) -> list[float | None]:
    metric = _metric(job.metric)
    history = HISTORY_DAYS * DAY // MINUTE
    out = []
    for r in range(runs):
        rng = np.random.default_rng(job.seed + r)
        counts = simulate(rng, metric, job.rate, history + job.horizon_min, history,
                          job.drop, 0.0)
        out.append(oracle_delay(metric, job.drop, counts, history, h))
    return out


# -------------------------------------------------------------------------- summary


def km_median(delays: list[float | None], horizon: float) -> tuple[float, int]:
    """Median delay (censored runs at the horizon: inf when half or more are censored)
    and how many runs were not detected."""
    missed = sum(d is None for d in delays)
    ordered = sorted(math.inf if d is None else d for d in delays)
    if not ordered:
        return math.nan, 0
    n = len(ordered)
    mid = ordered[(n - 1) // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return mid, missed


def poisson_interval(k: int, exposure: float) -> tuple[float, float, float]:
    """Rate and exact 95% interval for ``k`` events over ``exposure``."""
    low = 0.0 if k == 0 else sps.chi2.ppf(0.025, 2 * k) / 2
    high = sps.chi2.ppf(0.975, 2 * k + 2) / 2
    return k / exposure, low / exposure, high / exposure


def fmt_delay(minutes: float) -> str:
    if math.isinf(minutes):
        return "> horizon"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


def horizon_minutes(rate: float, quick: bool) -> int:
    hours = {30: 168, 100: 72, 1000: 24, 10000: 8}.get(int(rate), 72)
    return (hours if not quick else min(hours, 6)) * 60


def cells(metrics: list[str]) -> Iterator[tuple[str, float]]:
    for m in metrics:
        if m == "csat":
            yield from (("csat", d) for d in (0.03, 0.05, 0.10))
        elif m == "nps":
            yield "nps", 10.0
        else:
            yield "ces", 0.2


def timing_engine(n_series: int, seed: int) -> tuple[Engine, int]:
    """An engine of ``n_series`` CSAT series (30 channels x segments, 14 days of hourly
    and 3 hours of minute buckets, every series answering) and its watermark."""
    rng = np.random.default_rng(seed)
    series = SeriesRegistry()
    series.id(((), (), "csat"))
    segments = max(1, (n_series - 31) // 30)
    for c in range(30):
        series.id((("channel",), (f"c{c}",), "csat"))
        for g in range(segments):
            series.id((("channel", "segment"), (f"c{c}", f"s{g}"), "csat"))
    engine = Engine.read_model(EngineConfig(scopes=((), ("channel",), ("channel", "segment"))),
                               series)
    metric = _metric("csat")
    ids = np.arange(len(series), dtype=np.int64)
    now = T0 + 15 * DAY + 30 * MINUTE
    for h in range(now // HOUR - 337, now // HOUR + 1):
        table = BucketTable()
        table.add(ids, vectors(metric, rng.poisson(2.0 * metric.base, (len(ids), 5))))
        engine.set_bucket("3600s", h, table)
    for m in range(now // MINUTE - 180, now // MINUTE + 1):
        table = BucketTable()
        table.add(ids, vectors(metric, rng.poisson(0.05 * metric.base, (len(ids), 5))))
        engine.set_bucket("60s", m, table)
    engine.set_merged(watermark=now, folded={}, counters={}, pulses={}, journeys=[])
    return engine, now


def loop_stall(n_series: int, seed: int) -> tuple[float, float]:
    """The event loop's longest pause (ms) while the first sequential evaluation of an
    hour runs, called inline and, as the worker's leader runs it, in a thread
    (``asyncio.to_thread``): a task that sleeps 1 ms at a time measures its gaps."""
    out = []
    for threaded in (False, True):
        engine, now = timing_engine(n_series, seed)
        detector = Detector(make_rule("sequential", "csat"))

        async def measure(detector: Detector = detector, engine: Engine = engine,
                          now: int = now, threaded: bool = threaded) -> float:
            gaps: list[float] = []
            done = asyncio.Event()

            async def ticker() -> None:
                last = time.perf_counter()
                while not done.is_set():
                    await asyncio.sleep(0.001)
                    gaps.append(time.perf_counter() - last)
                    last = time.perf_counter()

            task = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            if threaded:
                await asyncio.to_thread(detector.evaluate, engine, now)
            else:
                detector.evaluate(engine, now)
            await asyncio.sleep(0.01)
            done.set()
            await task
            return max(gaps) * 1e3

        out.append(asyncio.run(measure()))
    print(f"the event loop's longest pause during the first evaluation of an hour at "
          f"{n_series:,} series: inline {out[0]:.0f} ms, in a thread {out[1]:.0f} ms")
    return out[0], out[1]


def timing(n_series: int, evaluations: int, seed: int) -> tuple[float, float]:
    """CPU milliseconds per ``evaluate`` of the current and the sequential CSAT drop rule over
    ``timing_engine``'s series, the first evaluation of an hour (nothing memoized)
    and the next ones (median), for the sequential rule also with the plain scan as first
    written (no memo: every bucket summed and every segment computed at each evaluation,
    ``tests/streams/detection/reference_sequential.py``), the before figure."""
    engine, now = timing_engine(n_series, seed)
    out = []
    for det in ("current", "sequential", "plain"):
        detector = Detector(make_rule("current" if det == "current" else "sequential",
                                      "csat"))
        if det == "plain":  # the scan as first written: no memo, every segment each time
            from tests.streams.detection.reference_sequential import reference_scan

            saved = sequential.scan
            sequential.scan = lambda e, r, n, s, b, t: reference_scan(
                e, r, n, s, sequential.Buckets(e), t)
        try:  # CPU time of this process: the machine is shared
            started = time.process_time()
            detector.evaluate(engine, now)
            first = time.process_time() - started
            each = []
            for i in range(evaluations):
                started = time.process_time()
                detector.evaluate(engine, now + i)
                each.append(time.process_time() - started)
            out.append((first, float(np.median(each))))
        finally:
            if det == "plain":
                sequential.scan = saved
    print(f"evaluate() with {len(engine.series):,} series: current {out[0][1] * 1e3:.1f} ms; "
          f"sequential {out[1][1] * 1e3:.1f} ms ({out[1][0] * 1e3:.1f} ms at the first "
          f"evaluation of an hour); sequential with the plain scan as first written "
          f"{out[2][1] * 1e3:.1f} ms ({out[2][0] * 1e3:.1f} ms) (CPU time, median)")
    return out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", choices=("current", "sequential", "both"),
                        default="both")
    parser.add_argument("--rates", default="30,100,1000,10000")
    parser.add_argument("--metrics", default="csat,nps,ces")
    parser.add_argument("--runs", type=int, default=5, help="drop runs per cell")
    parser.add_argument("--null-runs", type=int, default=1, help="null runs per rate")
    parser.add_argument("--null-days", type=float, default=30.0)
    parser.add_argument("--oracle-arl-days", type=float, default=30.0)
    parser.add_argument("--oracle-runs", type=int, default=120,
                        help="oracle runs per cell (the ratio's denominator; the median of "
                             "40 moved by 15%%)")
    parser.add_argument("--weekend", type=float, default=0.0,
                        help="also null runs with the daily cycle and weekends this much "
                             "lower (a share: 0.05 is 5 points)")
    parser.add_argument("--cycle", default="hour_of_day",
                        choices=("hour_of_day", "hour_of_week", "none"),
                        help="the sequential rule's cycle")
    parser.add_argument("--skip-null", action="store_true")
    parser.add_argument("--skip-drops", action="store_true")
    parser.add_argument("--timing-series", type=int, default=1231,
                        help="series for the evaluation-time figure (0: skip)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--history-hours", type=int, default=HISTORY_DAYS * 24,
                        help="history before a run (young deployments: a few hours)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one rate, one shift, 2 short runs, 1 null day")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    metrics = args.metrics.split(",")
    chains, span = 128, 2.0
    if args.quick:
        args.timing_series = min(args.timing_series, 100)
        rates, metrics = [1000.0], ["csat"]
        args.runs, args.null_runs, args.null_days, args.oracle_runs = 2, 1, 1.0, 4
        chains, span = 16, 0.5
    detectors = ["current", "sequential"] if args.detector == "both" else [args.detector]
    if args.timing_series:
        timing(args.timing_series, 3 if args.quick else 10, args.seed)
        loop_stall(args.timing_series, args.seed)
    selected = [(m, d) for m, d in cells(metrics) if not args.quick or d == 0.10]

    history_min = args.history_hours * 60
    nulls = [(0.0, 0.0), (0.05, 0.0)] + ([(0.05, args.weekend)] if args.weekend else [])
    jobs: list[Job] = []
    for det in detectors:
        for rate in rates:
            hz = horizon_minutes(rate, args.quick)
            if not args.skip_drops:
                for metric, drop in selected:
                    jobs += [Job("drop", det, metric, rate, drop, 0.0, hz, args.seed + r,
                                 history_min, rule_cycle=args.cycle)
                             for r in range(args.runs)]
            if not args.skip_null:
                null_min = int(args.null_days * DAY // MINUTE)
                for cycle, weekend in nulls:
                    jobs += [Job("null", det, "csat", rate, 0.0, cycle, null_min,
                                 10_000 + args.seed + r, history_min, weekend, args.cycle)
                             for r in range(args.null_runs)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_job, jobs))
    wall = time.perf_counter() - started
    evaluations = sum(j.horizon_min if d is None or j.kind == "null" else d
                      for j, d, _ in results)
    cpu = sum(s for _, _, s in results)

    print(f"bench_detection: {len(results)} runs in {wall:.0f} s; "
          f"{cpu / max(evaluations, 1) * 1e3:.2f} ms per evaluation (11 distinct series)")
    print(f"oracle: CUSUM of the exact LLR on every answer of the overall stream, "
          f"threshold for 1 false alarm per {args.oracle_arl_days:g} days")
    if not args.skip_drops:
        print("\ndelay to the first page, median over runs (not found within the horizon: "
              "censored)")
        print(f"{'rate/h':>7} {'shift':>14} {'oracle':>10}  " + "  ".join(
            f"{d:>26}" for d in detectors))
        for rate in rates:
            hz = horizon_minutes(rate, args.quick)
            for metric, drop in selected:
                job = Job("drop", "oracle", metric, rate, drop, 0.0, hz, args.seed)
                h = calibrate_oracle(_metric(metric), drop, rate,
                                     args.oracle_arl_days * DAY / MINUTE, args.seed,
                                     chains, span)
                omed, omiss = km_median(oracle_delays(job, args.oracle_runs, h), hz)
                row = f"{rate:>7,.0f} {_label(metric, drop):>14} {fmt_delay(omed):>10}  "
                for det in detectors:
                    ds = [d for j, d, _ in results if j.kind == "drop" and j.detector == det
                          and j.rate == rate and j.metric == metric and j.drop == drop]
                    med, miss = km_median(ds, hz)
                    ratio = med / omed if omed and not math.isinf(omed) else math.nan
                    text = f"{fmt_delay(med)} ({ratio:.1f}x)"
                    if miss:
                        text += f" miss {miss}/{len(ds)}"
                    row += f"{text:>26}  "
                print(row.rstrip() + f"   [horizon {hz / 60:g} h, oracle h={h:.2f}]")
    if not args.skip_null:
        print("\nfalse pages per distinct series per 30 days (95% Poisson interval), "
              "csat, no change")
        for det in detectors:
            for rate in rates:
                for cycle, weekend in nulls:
                    rs = [(j, d) for j, d, _ in results if j.kind == "null"
                          and j.detector == det and j.rate == rate and j.cycle == cycle
                          and j.weekend == weekend]
                    k = int(sum(d or 0 for _, d in rs))
                    days = sum(j.horizon_min for j, _ in rs) * MINUTE / DAY
                    rate30, lo, hi = poisson_interval(k, (CHANNELS + 1) * days / 30)
                    kind = ("flat" if not cycle else "cyclic ±5 pt" if not weekend
                            else f"+ weekends -{weekend * 100:g} pt")
                    print(f"{det:>10} {rate:>7,.0f}/h {kind:>18}: {rate30:6.2f} "
                          f"[{lo:.2f}, {hi:.2f}]  ({k} pages, {len(rs)} runs x "
                          f"{days / max(len(rs), 1):g} d x 11 series)")


if __name__ == "__main__":
    main()
