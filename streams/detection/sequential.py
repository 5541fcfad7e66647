"""The sequential drop test: a CUSUM of log-likelihood ratios on the engine's buckets.

For every series a sequential ``DropRule`` watches, at each evaluation (time ``now``,
current hour ``H``), recomputed from the engine's buckets alone (so both runners, a
restart and a replay compute the same value, with no state of its own):

* **Baseline**: the rule's ``baseline.span`` of hourly buckets before the last
  ``horizon`` (defaults: the 7 days before the last 7 days), per hour of the day (UTC)
  when ``cycle`` is ``"hour_of_day"``: each hour's estimate is shrunk toward the pooled
  one with ``cycle_prior`` answers' weight, so a thin hour borrows from the day. Shares
  (CSAT top-2, resolution): the top share; NPS: promoter and detractor shares; means
  (CES, ratings, sentiment): the mean, with the pooled standard deviation.
* **Buckets since the change**: the hourly buckets of the horizon, then the 60-s buckets
  of the last two hours (so a change is located to the minute when it is recent).
* **Log-likelihood ratio** of each bucket, for each drop size in ``shifts`` (standard
  deviations of one answer): exact Bernoulli for shares (top share p0 against
  p0 - delta), categorical for NPS (delta / 2 of the answers moved from promoters to
  detractors), Gaussian for means. All are linear in the bucket's n, sum, top and
  bottom, so a bucket's LLR is computed from its sums in one go.
* **CUSUM**: ``S = max(0, max_k L_k / (1 + Q_k / n_k))``, where ``L_k`` is the LLR summed
  over the buckets from k to now (the segment a change starting at bucket k explains),
  ``n_k`` its answers and ``Q_k = sum_h n_kh^2 / m_h`` with ``n_kh`` its answers in hour
  of the day h and ``m_h`` the baseline's (effective) answers there. The factor is the
  exact correction for a Gaussian baseline mean estimated from ``m`` answers
  (Var(mean_k - baseline) = sigma^2 (1/n_k + 1/m)), applied to every metric: a segment
  as large as the baseline counts half. Without it a noisy baseline pages on its noise.
* **Threshold** per shift, from the false-alarm budget: the in-control average run
  length per series in answers is ``A = T * volume`` with ``T`` the per-series false-page
  period (``max(false_page_days, 7 days * m / false_pages_per_week)``, m the distinct
  series watched by sequential rules) and ``volume`` the series' answers per second;
  each shift gets ``A * len(shifts)`` (Bonferroni over the grid). Siegmund's
  approximation for a CUSUM of Gaussian LLRs with a per-answer shift delta (in SDs)
  gives ``ARL0 = (e^y - y - 1) / (delta^2 / 2)`` with ``y = h + 1.166 delta``, solved for
  ``h``. The condition holds when ``S >= h`` for some shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streams.detection.rules import SHARES, DropRule
from streams.detection.spans import copies, oldest
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, SUM, SUMSQ, TOP, FloatArray, N

HOUR, MINUTE, DAY, WEEK = 3600, 60, 86_400, 604_800
_COLS = (N, SUM, SUMSQ, TOP, BOTTOM)
_N, _SUM, _SUMSQ, _TOP, _BOTTOM = range(5)


@dataclass(frozen=True, slots=True)
class Layout:
    """The buckets one evaluation reads: baseline and monitored hours, recent minutes."""

    base_first: int
    base_last: int
    hour_first: int
    hour_last: int
    minute_first: int
    minute_last: int


def layout(engine: Engine, rule: DropRule, now: int) -> Layout:
    """The buckets of ``rule`` at ``now``; ``ValueError`` naming the rule when the engine
    does not keep them (60-s buckets for two hours, 3600-s ones for horizon + baseline)."""
    hours, minutes = engine.granularities.get("3600s"), engine.granularities.get("60s")
    if hours is None or minutes is None:
        raise ValueError(f"rule {rule.name}: a sequential rule needs 60s and 3600s buckets")
    h = now // HOUR
    horizon, base = rule.horizon // HOUR, rule.baseline.span // HOUR
    out = Layout(h - horizon - base, h - horizon - 1, h - horizon, h - 2,
                 (h - 1) * 60, now // MINUTE)
    if out.base_first < oldest(engine, hours, now) or horizon < 3:
        raise ValueError(f"rule {rule.name}: the engine keeps too few 3600s buckets for a "
                         f"{rule.horizon}s horizon and a {rule.baseline.span}s baseline")
    if out.minute_first < oldest(engine, minutes, now):
        raise ValueError(f"rule {rule.name}: the engine keeps too few 60s buckets")
    return out


class Buckets:
    """Per-bucket sums (bucket, series, n/sum/sumsq/top/bottom), shared between rules.

    ``closed``, kept by the detector across evaluations, memoizes the 3600-s buckets
    that closed: every hour before the previous one (a bucket closes ``allowed_lateness``
    after its end; the memo is used for ``allowed_lateness <= 3600`` only). An answer
    that arrives after its bucket closed (up to the lateness horizon) is counted in the
    bucket's ``late`` counter, so the memo is keyed by the late answers in its range:
    a late answer makes the next evaluation sum those buckets again.
    """

    def __init__(self, engine: Engine,
                 closed: dict[tuple[int, str, int, int, int, int], FloatArray] | None = None
                 ) -> None:
        self.engine = engine
        self.n_series = len(engine.series)
        self._cache: dict[tuple[str, int, int], FloatArray] = {}
        self._closed = closed if engine.config.allowed_lateness <= HOUR else None

    def __call__(self, granularity: str, first: int, last: int) -> FloatArray:
        key = (granularity, first, last)
        found = self._cache.get(key)
        watermark = self.engine.watermark
        if (found is None and self._closed is not None and granularity == "3600s"
                and watermark is not None and last <= watermark // HOUR - 2):
            memo_key = (id(self.engine), granularity, first, last, self.n_series,
                        self._late_answers(granularity, first, last))
            found = self._closed.get(memo_key)
            if found is None:
                if len(self._closed) > 8:
                    self._closed.clear()
                found = self._closed[memo_key] = self._sum(granularity, first, last)
            self._cache[key] = found
        if found is None:
            found = self._cache[key] = self._sum(granularity, first, last)
        return found

    def _late_answers(self, granularity: str, first: int, last: int) -> int:
        """Answers counted after their bucket closed, in buckets ``first..last``."""
        total = 0
        for bucket, table in self.engine.granularities[granularity].tables.items():
            if first <= bucket <= last and table.late is not None:
                total += int(table.late.sum())
        return total

    def _sum(self, granularity: str, first: int, last: int) -> FloatArray:
        found = np.zeros((max(0, last - first + 1), self.n_series, len(_COLS)))
        cols = list(_COLS)
        for bucket, table in self.engine.granularities[granularity].tables.items():
            if first <= bucket <= last and len(table):
                used = len(table)
                found[bucket - first, table.series[:used]] = table.data[:used][:, cols]
        return found


@dataclass(frozen=True, slots=True)
class Sequential:
    """One series' sequential evidence at one evaluation."""

    llr: float
    """The CUSUM of the shift closest to (or furthest past) its threshold."""
    threshold: float
    shift: float
    """That shift, in the metric's units (0.05 = 5 points of a share; NPS points)."""
    change_start: int
    """Where the segment behind ``llr`` starts (epoch seconds): the change's estimate."""
    change_n: int
    baseline_n: int
    per_hour: float
    """The series' answers per hour (baseline or horizon, the larger)."""
    false_page_days: float
    """The per-series false-alarm period the threshold is set for."""

    @property
    def holds(self) -> bool:
        """Whether the evidence reached the threshold."""
        return self.llr >= self.threshold


@dataclass(slots=True)
class Scan:
    """A rule's statistics before the thresholds (which need every rule's series)."""

    rule: DropRule
    sids: list[int]
    stat: FloatArray  # (series, shifts) best shrunk LLR
    start: FloatArray  # (series, shifts) start time of its segment
    seg_n: FloatArray  # (series, shifts) answers in it
    base_n: FloatArray  # (series,)
    sigma: FloatArray  # (series,) SD of one answer, metric units
    volume: FloatArray  # (series,) answers per second
    tested: FloatArray  # (series,) bool: a baseline, and not a copy of a coarser series


def _classes(buckets: np.ndarray, per_hour: int, cycle: bool) -> np.ndarray:
    if not cycle:
        return np.zeros(len(buckets), dtype=np.int64)
    out: np.ndarray = (buckets // per_hour) % 24
    return out


def scan(engine: Engine, rule: DropRule, now: int, sids: list[int], buckets: Buckets) -> Scan:
    """The sequential statistics of ``rule``'s series ``sids`` at ``now``."""
    lay = layout(engine, rule, now)
    cycle = rule.cycle == "hour_of_day"
    n_cls = 24 if cycle else 1
    ix = np.asarray(sids, dtype=np.int64)
    base = buckets("3600s", lay.base_first, lay.base_last)[:, ix]  # (Kb, S, 5)
    mon = np.concatenate([buckets("3600s", lay.hour_first, lay.hour_last)[:, ix],
                          buckets("60s", lay.minute_first, lay.minute_last)[:, ix]])
    hour_ids = np.arange(lay.hour_first, lay.hour_last + 1)
    minute_ids = np.arange(lay.minute_first, lay.minute_last + 1)
    starts = np.concatenate([hour_ids * HOUR, minute_ids * MINUTE])
    mon_cls = np.concatenate([_classes(hour_ids, 1, cycle), _classes(minute_ids, 60, cycle)])
    base_cls = _classes(np.arange(lay.base_first, lay.base_last + 1), 1, cycle)
    n_series = len(sids)
    by_cls = np.stack([base[base_cls == h].sum(0) for h in range(n_cls)])
    pooled = base.sum(0)  # (S, 5)
    mon_total = mon.sum(0)
    base_n = pooled[:, _N]
    kappa = rule.cycle_prior + 1.0
    n_c = by_cls[..., _N]  # (C, S)
    eff = n_c + kappa  # the hour's effective baseline answers
    shifts = np.asarray(rule.shifts)  # (G,)
    with np.errstate(divide="ignore", invalid="ignore"):
        # coefficients (C, S, G) of the LLR: llr = a*n + b*sum + c*top + d*bottom
        zeros = np.zeros((n_cls, n_series, len(shifts)))
        a, b, c, d = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
        if rule.metric in SHARES:
            p_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            p0 = np.clip((by_cls[..., _TOP] + kappa * p_pool) / eff, 0.005, 0.995)[..., None]
            sigma = np.sqrt(p_pool * (1 - p_pool))
            p1 = np.maximum(p0 - shifts * sigma[:, None], 0.1 * p0)
            c = np.log(p1 / p0) - np.log((1 - p1) / (1 - p0))
            a = np.log((1 - p1) / (1 - p0)) + zeros
        elif rule.metric == "nps":
            pp_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            pd_pool = (pooled[:, _BOTTOM] + 0.5) / (base_n + 1.0)
            pp0 = np.clip((by_cls[..., _TOP] + kappa * pp_pool) / eff, 0.005, 0.995)[..., None]
            pd0 = np.clip((by_cls[..., _BOTTOM] + kappa * pd_pool) / eff, 0.005, 0.995)[..., None]
            sd = np.sqrt(np.maximum(pp_pool + pd_pool - (pp_pool - pd_pool) ** 2, 1e-4))
            sigma = 100.0 * sd
            f = np.minimum(shifts * sd[:, None] / 2.0, 0.9 * pp0)
            c = np.log((pp0 - f) / pp0)
            d = np.log((pd0 + f) / pd0)
        else:
            mean_pool = pooled[:, _SUM] / np.maximum(base_n, 1.0)
            var = pooled[:, _SUMSQ] / np.maximum(base_n, 1.0) - mean_pool**2
            sigma = np.sqrt(np.maximum(var, 1e-4 * np.maximum(mean_pool**2, 1.0)))
            mu0 = ((by_cls[..., _SUM] + kappa * mean_pool) / eff)[..., None]
            k = shifts / sigma[:, None]  # (S, G): delta/sigma^2 in the metric's units
            a = k * mu0 - (shifts**2 / 2.0)
            b = -k + zeros
    n = np.ascontiguousarray(mon[..., _N].T)  # (S, K)
    # (S, K, G): each bucket's sums times its hour's coefficients, in one contraction
    coef = np.nan_to_num(np.stack([a, b, c, d], -1), nan=0.0, posinf=0.0, neginf=0.0)
    sums = mon[..., [_N, _SUM, _TOP, _BOTTOM]]  # (K, S, 4)
    llr = np.einsum("ksj,ksgj->skg", sums, coef[mon_cls], optimize=True)
    seg_llr = np.flip(np.cumsum(np.flip(llr, 1), 1), 1)  # (S, K, G) from bucket k to now
    seg_n = np.flip(np.cumsum(np.flip(n, 1), 1), 1)  # (S, K)
    q = np.zeros_like(seg_n)
    for h in range(n_cls):
        here = np.where(mon_cls == h, n, 0.0)
        if here.any():
            q += np.flip(np.cumsum(np.flip(here, 1), 1), 1) ** 2 / eff[h][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(seg_n > 0, 1.0 / (1.0 + q / seg_n), 0.0)
    stat = seg_llr * shrink[..., None]  # (S, K, G)
    best = stat.argmax(1)  # (S, G)
    rows = np.arange(n_series)[:, None]
    top = np.maximum(stat[rows, best, np.arange(len(shifts))[None, :]], 0.0)
    base_seconds = (lay.base_last - lay.base_first + 1) * HOUR
    mon_seconds = (lay.hour_last - lay.hour_first + 1) * HOUR + (now % HOUR) + HOUR
    volume = np.maximum(base_n / base_seconds, mon_total[:, _N] / mon_seconds)
    repeated = np.array(copies(engine, sids, pooled_full(buckets, lay, engine), ),
                        dtype=bool) if sids else np.zeros(0, dtype=bool)
    tested = (base_n > 0) & ~repeated
    return Scan(rule, sids, top, starts[best].astype(np.float64), seg_n[rows, best],
                base_n, np.asarray(sigma, dtype=np.float64), volume, tested)


def pooled_full(buckets: Buckets, lay: Layout, engine: Engine) -> FloatArray:
    """Every series' sums over the baseline and the horizon (to find copies)."""
    del engine
    out: FloatArray = (buckets("3600s", lay.base_first, lay.hour_last).sum(0)
                       + buckets("60s", lay.minute_first, lay.minute_last).sum(0))
    return out


def thresholds(shifts: FloatArray, answers: FloatArray) -> FloatArray:
    """The CUSUM threshold for each per-answer shift (SDs) and in-control run length
    (answers): Siegmund's ``(e^y - y - 1) / (delta^2 / 2) = ARL0``, ``h = y - 1.166 delta``
    (shapes broadcast)."""
    target = np.maximum(answers * shifts**2 / 2.0, 1e-9)
    y = np.maximum(np.log1p(target), 0.5)
    for _ in range(30):  # Newton on the convex e^y - y - 1 - target
        y = y - (np.expm1(y) - y - target) / np.maximum(np.expm1(y), 1e-12)
        y = np.maximum(y, 1e-6)
    out: FloatArray = np.maximum(y - 1.166 * shifts, 0.5)
    return out


def series_days(rule: DropRule, distinct: int, per_week: float) -> float:
    """The per-series false-page period: the rule's, or the deployment budget's share."""
    return max(rule.false_page_days, 7.0 * max(distinct, 1) / per_week)


def decide(found: Scan, distinct: int, per_week: float) -> list[Sequential | None]:
    """Each scanned series' evidence against its threshold (None: not tested)."""
    rule = found.rule
    days = series_days(rule, distinct, per_week)
    shifts = np.asarray(rule.shifts)
    answers = (days * DAY * found.volume)[:, None] * len(shifts)
    h = thresholds(shifts[None, :], answers)  # (S, G)
    ratio = found.stat / h
    pick = ratio.argmax(1)
    out: list[Sequential | None] = []
    for i, ok in enumerate(found.tested.tolist()):
        if not ok:
            out.append(None)
            continue
        g = int(pick[i])
        unit = float(found.sigma[i])
        out.append(Sequential(
            float(found.stat[i, g]), float(h[i, g]), float(shifts[g]) * unit,
            int(found.start[i, g]), int(found.seg_n[i, g]), int(found.base_n[i]),
            float(found.volume[i]) * HOUR, days))
    return out


def time_to_decision(ev: Sequential) -> float | None:
    """Hours until the evidence would reach its threshold at the current volume if the
    drop behind it is real and goes on (None when nothing is accumulating)."""
    if ev.holds:
        return 0.0
    if ev.llr <= 0 or ev.change_n <= 0 or ev.per_hour <= 0:
        return None
    per_answer = ev.llr / ev.change_n
    return (ev.threshold - ev.llr) / per_answer / ev.per_hour if per_answer > 0 else math.inf
