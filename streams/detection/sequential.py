"""The sequential drop test: a CUSUM of log-likelihood ratios on the engine's buckets.

For every series a sequential ``DropRule`` watches, at each evaluation (time ``now``,
current hour ``H``), recomputed from the engine's buckets alone (so both runners, a
restart and a replay compute the same value, with no state of its own):

* **Baseline**: the rule's ``baseline.span`` of hourly buckets before the last
  ``horizon`` (defaults: the 7 days before the last 7 days; while the history is
  younger than both, its first part, see ``layout``), per hour of the day (UTC)
  when ``cycle`` is ``"hour_of_day"``: each hour's estimate is shrunk toward a curve
  through the day (the pooled mean, or daily harmonics when the hours differ by more
  than noise) with a weight estimated from how far the hours lie from it
  (``streams.detection.baseline``), so a flat series pools, a smooth rhythm follows its
  curve and a thin hour borrows from the day. Shares
  (CSAT top-2, resolution): the top share; NPS: promoter and detractor shares; means
  (CES, ratings, sentiment): the mean, with the pooled standard deviation.
* **Buckets since the change**: the hourly buckets of the horizon, then the 60-s buckets
  of the last two hours (so a change is located to the minute when it is recent).
* **Log-likelihood ratio** of each bucket, for each hypothesis of the grid: each drop
  size in ``shifts`` (standard deviations of one answer) and, for shares, each
  destination of the lost answers (``DESTINATIONS``): categorical over top, middle and
  bottom, the top share p0 against p0 - delta with delta moved to the bottom (q0 + delta)
  or to the middle (neither top nor bottom; m0 + delta), the other category unchanged;
  the shares shrunk to the pooled ones per hour and kept off 0 (a baseline with no
  bottom or middle answers); a series whose baseline has fewer than ``MIN_CATEGORY``
  answers in the bottom or the middle tests the top-only Bernoulli instead (no middle
  hypotheses);
  each less the upward bias a noisy baseline share gives the plug-in LLR at second
  order (``_jensen``: the ``1 + Q/n`` factor below is exact to first order only).
  Categorical for NPS (delta / 2 of the answers moved from promoters to detractors),
  Gaussian for means. All are linear in the bucket's n, sum, top and bottom, so a
  bucket's LLR is computed from its sums in one go.
* **CUSUM**: ``S = max(0, max_k L_k / (1 + Q_k / n_k))``, where ``L_k`` is the LLR summed
  over the buckets from k to now (the segment a change starting at bucket k explains),
  ``n_k`` its answers and ``Q_k`` the baseline estimates' variance summed over the
  segment, ``A' V A`` with ``A`` its answers per hour of the day and ``V`` the hours'
  covariance (``streams.detection.baseline``: each hour's own ``1 / (n_h + kappa)`` and
  the curve's shared error). The factor is the exact correction for a Gaussian
  baseline mean estimated from ``m`` answers (Var(mean_k - baseline) = sigma^2 (1/n_k +
  1/m)), applied to every metric: a segment as large as the baseline counts half.
  Without it a noisy baseline pages on its noise.
* **Threshold** per shift, from the false-alarm budget: the in-control average run
  length per series in answers is ``A = T * volume`` with ``T`` the per-series false-page
  period (``max(false_page_days, 7 days * m / false_pages_per_week)``, m the distinct
  series watched by sequential rules) and ``volume`` the series' answers per second;
  each hypothesis gets ``A`` times the series' hypotheses (Bonferroni over the grid:
  ``len(shifts)``, times the destinations tested for shares). Siegmund's approximation
  for a CUSUM of Gaussian LLRs with a per-answer shift delta (in SDs) gives
  ``ARL0 = (e^y - y - 1) / (delta^2 / 2)`` with ``y = h + 1.166 delta``, solved for
  ``h``; for shares delta is the hypothesis' own LLR scale, ``sqrt(2 KL)`` per answer at
  the pooled baseline shares (a drop to a small bottom share moves the LLR by more than
  the shift in SDs). The condition holds when ``S >= h`` for some hypothesis; the shift
  reported is the top share's drop.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

import numpy as np

from streams.detection.baseline import Curve, curve
from streams.detection.rules import SHARES, DropRule
from streams.detection.spans import copies, oldest
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, SUM, SUMSQ, TOP, FloatArray, N

HOUR, MINUTE, DAY, WEEK = 3600, 60, 86_400, 604_800
_COLS = (N, SUM, SUMSQ, TOP, BOTTOM)
_N, _SUM, _SUMSQ, _TOP, _BOTTOM = range(5)
_LLR_COLS = (_N, _SUM, _TOP, _BOTTOM)  # what the LLR coefficients multiply
MemoKey = tuple[int, str, int, int, int, int]
DESTINATIONS: tuple[str, ...] = ("bottom", "middle")
"""Share metrics: where the top share's lost answers go, one hypothesis each per shift:
to the bottom category, or to the middle (neither top nor bottom). The grid's axis G is
``destination * len(shifts) + shift``. (``"rest"``, to the non-top answers in proportion,
is the top-only Bernoulli the shares were tested with before issue 17's grid.)"""


MIN_CATEGORY: Final = 200
"""Baseline answers a share's bottom and middle each need for the destination grid; a
thinner series tests the top-only Bernoulli (``"rest"``) in the bottom's place: where
those shares rest on a few dozen answers, the plug-in LLR of a drop into them pages on
their noise (the 30-answers-an-hour null run paged 1.8 times a series per 30 days)."""


def destinations(rule: DropRule) -> int:
    """How many destinations of the lost answers ``rule``'s grid has (1 but for shares)."""
    return len(DESTINATIONS) if rule.metric in SHARES else 1


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
    does not keep them (60-s buckets for two hours, 3600-s ones for horizon + baseline).

    A young history (its first answers less than horizon + baseline ago) is split in the
    same proportion, but with a baseline of a whole day first where the history allows
    (so that every hour of the day has one): the baseline from the first answered hour,
    the horizon the rest (at least 3 hours). A new deployment is watched from its first
    hours, not after two weeks; the baseline's uncertainty, large while it is short, is
    in the statistic, and an hour of the day the baseline has not seen yet is judged by the
    curve's value at ``cycle_prior + 1`` answers of its own (``streams.detection.baseline``).
    """
    hours, minutes = engine.granularities.get("3600s"), engine.granularities.get("60s")
    if hours is None or minutes is None:
        raise ValueError(f"rule {rule.name}: a sequential rule needs 60s and 3600s buckets")
    h = now // HOUR
    horizon, base = rule.horizon // HOUR, rule.baseline.span // HOUR
    if h - horizon - base < oldest(engine, hours, now) or horizon < 3:
        raise ValueError(f"rule {rule.name}: the engine keeps too few 3600s buckets for a "
                         f"{rule.horizon}s horizon and a {rule.baseline.span}s baseline")
    if (h - 1) * 60 < oldest(engine, minutes, now):
        raise ValueError(f"rule {rule.name}: the engine keeps too few 60s buckets")
    first = first_answered(engine)
    if first is not None and first > h - horizon - base:
        age = h - first
        horizon = min(max(3, age * horizon // (horizon + base)), max(3, age - 24))
    base_first = h - horizon - base if first is None else max(first, h - horizon - base)
    return Layout(base_first, h - horizon - 1, h - horizon, h - 2, (h - 1) * 60,
                  now // MINUTE)


def first_answered(engine: Engine) -> int | None:
    """The first hour (3600-s bucket id) the engine holds answers in, any series."""
    tables = engine.granularities["3600s"].tables
    return min((b for b, t in tables.items() if len(t)), default=None)


class Buckets:
    """Per-bucket sums (bucket, series, n/sum/sumsq/top/bottom), shared between rules.

    ``closed``, kept by the detector across evaluations, memoizes the 3600-s buckets
    that closed: every hour before the previous one (a bucket closes ``allowed_lateness``
    after its end; the memo is used for ``allowed_lateness <= 3600`` only). An answer
    that arrives after its bucket closed (up to the lateness horizon) is counted in the
    bucket's ``late`` counter, so the memo is keyed by the late answers in its range:
    a late answer makes the next evaluation sum those buckets again.

    ``parts``, also kept by the detector, memoizes what ``scan`` derives from closed
    hours alone (the baseline's coefficients and every hourly segment's sums), under
    the same keys: it is as exact as ``closed``, and recomputed when they change.
    """

    def __init__(self, engine: Engine,
                 closed: dict[tuple[int, str, int, int, int, int], FloatArray] | None = None,
                 parts: dict[Hashable, Hours] | None = None) -> None:
        self.engine = engine
        self.n_series = len(engine.series)
        self._cache: dict[tuple[str, int, int], FloatArray] = {}
        self._keys: dict[tuple[str, int, int], MemoKey | None] = {}
        self._closed = closed if engine.config.allowed_lateness <= HOUR else None
        self.parts = parts if self._closed is not None else None

    def closed_key(self, granularity: str, first: int, last: int) -> MemoKey | None:
        """The memo key of buckets ``first..last`` when they are closed, else None."""
        key = (granularity, first, last)
        if key in self._keys:
            return self._keys[key]
        watermark = self.engine.watermark
        found: MemoKey | None = None
        if (self._closed is not None and granularity == "3600s" and watermark is not None
                and last <= watermark // HOUR - 2):
            found = (id(self.engine), granularity, first, last, self.n_series,
                     self._late_answers(granularity, first, last))
        self._keys[key] = found
        return found

    def __call__(self, granularity: str, first: int, last: int) -> FloatArray:
        key = (granularity, first, last)
        found = self._cache.get(key)
        if found is not None:
            return found
        memo_key = self.closed_key(granularity, first, last)
        if memo_key is not None and self._closed is not None:
            found = self._closed.get(memo_key)
            if found is None:
                if len(self._closed) > 8:
                    self._closed.clear()
                found = self._closed[memo_key] = self._sum(granularity, first, last)
        if found is None:
            found = self._sum(granularity, first, last)
        self._cache[key] = found
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
    destination: str | None = None
    """Shares: where the hypothesis behind ``llr`` sends the top's lost answers:
    ``"bottom"``, ``"middle"``, or ``"rest"`` (the top-only test of a series whose
    baseline is too thin for the grid, ``MIN_CATEGORY``); None for NPS and means."""

    @property
    def holds(self) -> bool:
        """Whether the evidence reached the threshold."""
        return self.llr >= self.threshold


@dataclass(slots=True)
class Scan:
    """A rule's statistics before the thresholds (which need every rule's series)."""

    rule: DropRule
    sids: list[int]
    stat: FloatArray  # (series, G) best shrunk LLR of each hypothesis (0: not live)
    start: FloatArray  # (series, G) start time of its segment
    seg_n: FloatArray  # (series, G) answers in it
    base_n: FloatArray  # (series,)
    sigma: FloatArray  # (series,) SD of one answer, metric units
    volume: FloatArray  # (series,) answers per second
    tested: FloatArray  # (series,) bool: a baseline, and not a copy of a coarser series
    live: np.ndarray  # (series, G) bool: the hypothesis is tested (and counted) here
    delta: FloatArray  # (series, G) its per-answer LLR scale, sqrt(2 KL), the threshold's


CLASSES: Final = {"none": 1, "hour_of_day": 24, "hour_of_week": 168}
"""Classes of hour a rule's baseline keeps apart, by its ``cycle``."""


def _classes(buckets: np.ndarray, per_hour: int, n_cls: int) -> np.ndarray:
    """Each bucket's class of hour (its hour's id mod ``n_cls``: hour 0 of the epoch
    is a midnight, so class mod 24 is the hour of the day, UTC)."""
    out: np.ndarray = (buckets // per_hour) % n_cls
    return out


def _suffix(x: FloatArray) -> FloatArray:
    """Sums from each index to the end along the last axis (a reversed running sum)."""
    out: FloatArray = np.cumsum(x[..., ::-1], -1)[..., ::-1]
    return out


def _llr(sums: FloatArray, coef: FloatArray, used: tuple[int, ...],
         runs: list[tuple[int, int, int]]) -> FloatArray:
    """(S, G, K) LLR of the segments k..last of buckets ``sums`` (K, S, 5); ``runs``
    (first, stop, class) gives each run of consecutive buckets of one class.

    Within a run the coefficients are constant, so a segment's LLR is the coefficients
    times its column sums (running sums from the end, over (S, K) columns), plus the
    LLR of the segment after the run: no (S, G, K) running sum.
    """
    k, n_series = sums.shape[:2]
    out: FloatArray = np.zeros((n_series, coef.shape[2], k))
    cols = {j: _suffix(np.ascontiguousarray(sums[:, :, _LLR_COLS[j]].T)) for j in used}
    for first, stop, cls in reversed(runs):
        part = out[:, :, first:stop]
        for j in used:
            col = cols[j][:, None, first:stop]
            if stop < k:
                col = col - cols[j][:, None, stop:stop + 1]
            part += col * coef[cls, :, :, j, None]
        if stop < k:
            part += out[:, :, stop:stop + 1]
    return out


def _runs(cls: np.ndarray) -> list[tuple[int, int, int]]:
    """(first, stop, class) of each run of equal classes in ``cls``."""
    edges = [0, *(np.flatnonzero(np.diff(cls)) + 1).tolist(), len(cls)]
    return [(a, b, int(cls[a])) for a, b in zip(edges[:-1], edges[1:], strict=True)
            if b > a]


@dataclass(slots=True)
class Hours:
    """What a rule's closed hours give at one hour: the baseline (its LLR coefficients
    per class of hour) and every segment k..last of the monitored hourly buckets
    (arrays with k on the last axis); fixed until the hour changes or a late answer
    reaches these hours (``Buckets.parts``)."""

    engine: weakref.ref[Engine]
    coef: FloatArray  # (C, S, G, 4) coefficients of n, sum, top, bottom
    used: tuple[int, ...]  # the coefficient columns not all zero
    live: np.ndarray  # (S, G) bool
    delta: FloatArray  # (S, G)
    fit: Curve  # the baseline curve (each class's own weight ``own``, the curve's ``u``)
    sigma: FloatArray  # (S,)
    base_n: FloatArray  # (S,)
    llr: FloatArray  # (S, G, Kh) LLR of hours k..last
    n: FloatArray  # (S, Kh) answers in hours k..last
    q: FloatArray  # (S, Kh) Q of hours k..last (``streams.detection.baseline``)
    cross: FloatArray  # (J, S, Kh) answers of hours k..last in minute class j / m_j
    mz: FloatArray  # (S, Kh, p) M z of hours k..last: the curve's part of the cross term
    pooled: FloatArray  # (all series, 5) sums over baseline and monitored hours
    scratch: FloatArray  # (S, G, Kh) reused by each evaluation's statistic


@dataclass(slots=True)
class Coefficients:
    """A baseline's LLR per hypothesis of the grid, and what its threshold needs."""

    coef: FloatArray  # (C, S, G, 4) of n, sum, top, bottom
    fit: Curve  # the baseline curve: each class's own answers and the curve's share
    sigma: FloatArray  # (S,) SD of one answer, metric units
    base_n: FloatArray  # (S,)
    live: np.ndarray  # (S, G) bool: tested (a share's drop to an empty middle is not)
    delta: FloatArray  # (S, G) per-answer LLR scale: shifts, or sqrt(2 KL) for shares


def _jensen(var: FloatArray | float, r0: FloatArray, g: FloatArray) -> FloatArray:
    """The plug-in LLR's upward bias per answer from a category whose share ``r0`` is
    estimated with variance ``var * r0 (1 - r0)`` and moves by ``g``: the coefficient
    ``log((r0 + g) / r0)`` is convex in ``r0``, so ``r0 * E[l''] * Var / 2``."""
    out: FloatArray = 0.5 * var * (1.0 - r0) * (1.0 - (r0 / (r0 + g)) ** 2)
    return out


def _to_shares(shifts: FloatArray, sigma: FloatArray, p0: FloatArray, q0: FloatArray,
               var: FloatArray | float = 0.0, dests: tuple[str, ...] | None = None
               ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """A share's grid (shifts x destinations on the last axis) for top share ``p0`` and
    bottom share ``q0`` (broadcast with ``sigma`` to the series axis): coefficients
    a, c, d of n, top, bottom, and KL(before || after) per answer.

    The top share drops by ``f = shift * sigma`` (at most 0.9 of it, as the Bernoulli
    model did); its answers go to the bottom (c = log(p1/p0), d = log(q1/q0)), to the
    middle, ``n - top - bottom`` (a = log(m1/m0), c = log(p1/p0) - a, d = -a), or (the
    Bernoulli) to the rest (a = log(r1/r0), c = log(p1/p0) - a).

    ``var``: the baseline shares' estimation variance per unit ``r0 (1 - r0)`` (n/eff^2
    of the hour's class); ``a`` is lowered by the LLR's bias it causes (``_jensen``:
    second order, so the ``1 + Q/n`` shrink, exact to first order, leaves it), which
    in a thin hour (10 answers an hour: ~90 answers of baseline per hour of the day)
    would cancel the smallest drop to a 0.10 bottom share's negative drift under no
    change. KL is the known-baseline one.
    """
    m0 = np.clip(1.0 - p0 - q0, 0.005, 0.995)
    f = np.minimum(shifts * sigma, 0.9 * p0)
    lt = np.log((p0 - f) / p0)
    zero = np.zeros_like(lt)
    parts = []
    for to in dests or DESTINATIONS:
        r0 = q0 if to == "bottom" else m0 if to == "middle" else 1.0 - p0
        lr = np.log((r0 + f) / r0)
        bias = _jensen(var, p0, -f) + _jensen(var, r0, f)
        if to == "bottom":
            parts.append((zero - bias, lt, lr, -(p0 * lt + r0 * lr)))
        else:
            parts.append((lr - bias, lt - lr, -lr if to == "middle" else zero,
                          -(p0 * lt + r0 * lr)))
    a, c, d, kl = (np.concatenate([part[j] for part in parts], -1) for j in range(4))
    return a, c, d, kl


def _curve(rule: DropRule, by_cls: FloatArray, pooled: FloatArray) -> Curve:
    """The baseline curve of ``rule``'s series (``streams.detection.baseline``), fitted
    to the quantity that moves with a drop: the top share, NPS's net, the mean."""
    n_c = by_cls[..., _N]
    total = np.maximum(pooled[:, _N], 1.0)
    if rule.metric in SHARES:
        x_sums = by_cls[..., _TOP]
        x = pooled[:, _TOP] / total
        var = x * (1 - x)
    elif rule.metric == "nps":
        x_sums = by_cls[..., _TOP] - by_cls[..., _BOTTOM]
        pp, pd = pooled[:, _TOP] / total, pooled[:, _BOTTOM] / total
        var = pp + pd - (pp - pd) ** 2
    else:
        x_sums = by_cls[..., _SUM]
        x = pooled[:, _SUM] / total
        var = pooled[:, _SUMSQ] / total - x**2
    harmonics = rule.cycle_harmonics if rule.cycle != "none" else 0
    return curve(n_c, x_sums, var, rule.cycle_prior + 1.0, harmonics)


def _baseline(rule: DropRule, base: FloatArray, base_cls: np.ndarray, n_cls: int
              ) -> Coefficients:
    """The LLR coefficients of the grid for each class of hour, from the baseline."""
    n_series = base.shape[1]
    by_cls = np.stack([base[base_cls == h].sum(0) for h in range(n_cls)])
    pooled = base.sum(0)  # (S, 5)
    base_n = pooled[:, _N]
    fit = _curve(rule, by_cls, pooled)
    shifts = np.asarray(rule.shifts)  # (G0,)
    grid = len(shifts) * destinations(rule)
    live = np.ones((n_series, grid), dtype=bool)
    delta = np.broadcast_to(np.tile(shifts, destinations(rule)), (n_series, grid)).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        # coefficients (C, S, G) of the LLR: llr = a*n + b*sum + c*top + d*bottom
        zeros = np.zeros((n_cls, n_series, grid))
        a, b, c, d = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
        half = (0.5, 1.0)  # shares kept off 0 and 1 by half an answer
        if rule.metric in SHARES:
            # top, bottom, middle: each class's shares shrunk toward the curve, and kept
            # off 0 and 1 (a baseline without bottom or middle answers)
            p_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            q_pool = (pooled[:, _BOTTOM] + 0.5) / (base_n + 1.0)
            p0 = np.clip(fit.estimate(by_cls[..., _TOP], half), 0.005, 0.995)[..., None]
            q0 = np.clip(fit.estimate(by_cls[..., _BOTTOM], half), 0.005, 0.995)[..., None]
            sigma = np.sqrt(p_pool * (1 - p_pool))
            var = fit.variance()[..., None]  # the hour's estimate's, per r0 (1 - r0)
            a, c, d, _ = _to_shares(shifts, sigma[:, None], p0, q0, var)
            a = a + zeros
            # the threshold's scale: KL at the pooled shares (a Bernoulli: ~ shifts)
            pooled_p = np.clip(p_pool, 0.005, 0.995)[:, None]
            pooled_q = np.clip(q_pool, 0.005, 0.995)[:, None]
            _, _, _, kl = _to_shares(shifts, sigma[:, None], pooled_p, pooled_q)
            delta = np.sqrt(2.0 * np.maximum(kl, 0.0))
            # A bottom or a middle with few baseline answers (none: a share whose bottom
            # is its complement): the top-only Bernoulli in the bottom's place, and no
            # middle hypotheses (not tested, not counted in the Bonferroni factor).
            middle = pooled[:, _N] - pooled[:, _TOP] - pooled[:, _BOTTOM]
            thin = (pooled[:, _BOTTOM] < MIN_CATEGORY) | (middle < MIN_CATEGORY)
            if thin.any() and DESTINATIONS == ("bottom", "middle"):
                g0 = len(shifts)
                ra, rc, rd, _ = _to_shares(shifts, sigma[:, None], p0, q0, var, ("rest",))
                _, _, _, rkl = _to_shares(shifts, sigma[:, None], pooled_p, pooled_q,
                                          dests=("rest",))
                bottom = DESTINATIONS.index("bottom") * g0
                a[:, thin, bottom:bottom + g0] = ra[:, thin]
                c[:, thin, bottom:bottom + g0] = rc[:, thin]
                d[:, thin, bottom:bottom + g0] = rd[:, thin]
                delta[thin, bottom:bottom + g0] = np.sqrt(2.0 * np.maximum(rkl[thin], 0.0))
                mid = DESTINATIONS.index("middle") * g0
                live[thin, mid:mid + g0] = False
        elif rule.metric == "nps":
            pp_pool = (pooled[:, _TOP] + 0.5) / (base_n + 1.0)
            pd_pool = (pooled[:, _BOTTOM] + 0.5) / (base_n + 1.0)
            pp0 = np.clip(fit.estimate(by_cls[..., _TOP], half), 0.005, 0.995)[..., None]
            pd0 = np.clip(fit.estimate(by_cls[..., _BOTTOM], half), 0.005, 0.995)[..., None]
            sd = np.sqrt(np.maximum(pp_pool + pd_pool - (pp_pool - pd_pool) ** 2, 1e-4))
            sigma = 100.0 * sd
            f = np.minimum(shifts * sd[:, None] / 2.0, 0.9 * pp0)
            c = np.log((pp0 - f) / pp0)
            d = np.log((pd0 + f) / pd0)
        else:
            mean_pool = pooled[:, _SUM] / np.maximum(base_n, 1.0)
            var = pooled[:, _SUMSQ] / np.maximum(base_n, 1.0) - mean_pool**2
            sigma = np.sqrt(np.maximum(var, 1e-4 * np.maximum(mean_pool**2, 1.0)))
            mu0 = fit.estimate(by_cls[..., _SUM])[..., None]
            k = shifts / sigma[:, None]  # (S, G): delta/sigma^2 in the metric's units
            a = k * mu0 - (shifts**2 / 2.0)
            b = -k + zeros
    coef = np.nan_to_num(np.stack([a, b, c, d], -1), nan=0.0, posinf=0.0, neginf=0.0)
    coef[:, ~live] = 0.0
    return Coefficients(coef, fit, np.asarray(sigma, dtype=np.float64), base_n, live,
                        np.nan_to_num(delta, nan=0.0))


def _hours(engine: Engine, rule: DropRule, lay: Layout, ix: np.ndarray,
           buckets: Buckets, minute_cls: list[int]) -> Hours:
    """The closed hours' part of ``scan`` (see ``Hours``)."""
    n_cls = CLASSES[rule.cycle]
    base_all = buckets("3600s", lay.base_first, lay.base_last)
    hours_all = buckets("3600s", lay.hour_first, lay.hour_last)
    base, hours = base_all[:, ix], hours_all[:, ix]  # (Kb, S, 5), (Kh, S, 5)
    base_cls = _classes(np.arange(lay.base_first, lay.base_last + 1), 1, n_cls)
    found = _baseline(rule, base, base_cls, n_cls)
    coef, fit = found.coef, found.fit
    eff = fit.own
    used = tuple(j for j in range(4) if coef[..., j].any())
    hour_cls = _classes(np.arange(lay.hour_first, lay.hour_last + 1), 1, n_cls)
    n = np.ascontiguousarray(hours[..., _N].T)  # (S, Kh)
    # Q over hours k..last, telescoped: adding hour k (class h) to the segment raises
    # the class's answers from A to A + n_k, so Q by ((A + n_k)^2 - A^2) / m_h. Hours k
    # and k + C share their class (hour_cls is the hour's id mod C), so A + n_k, the
    # class's answers from k on, is a running sum over an (S, rows, C) reshape.
    # The curve's part is z' M z with z summed over the segment's hours.
    period = n_cls
    n_series, kh = n.shape
    padded = np.concatenate([n, np.zeros((n_series, (-kh) % period))], 1)
    own = _suffix(padded.reshape(n_series, -1, period).transpose(0, 2, 1))
    own = own.transpose(0, 2, 1).reshape(n_series, -1)[:, :kh]  # class of k, from k on
    z = np.cumsum(fit.z(n, hour_cls)[:, ::-1], 1)[:, ::-1]  # (S, Kh, p)
    mz = np.einsum("spq,skq->skp", fit.m, z)
    q = _suffix((own**2 - (own - n) ** 2) / eff[hour_cls].T) + (z * mz).sum(-1)
    cross = np.stack([_suffix(np.where(hour_cls == h, n, 0.0)) / eff[h][:, None]
                      for h in minute_cls])
    pooled = base_all.sum(0) + hours_all.sum(0)
    llr = _llr(hours, coef, used, _runs(hour_cls))
    return Hours(weakref.ref(engine), coef, used, found.live, found.delta, fit,
                 found.sigma, found.base_n, llr, _suffix(n), q, cross,
                 np.ascontiguousarray(mz), pooled, np.empty_like(llr))


def _shrunk(llr: FloatArray, n: FloatArray, q: FloatArray,
            out: FloatArray | None = None) -> FloatArray:
    """``L / (1 + Q/n)`` (0 where a segment has no answers); L (S, G, K), n and Q (S, K);
    into ``out`` when given."""
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(n > 0, 1.0 / (1.0 + q / n), 0.0)
    found: FloatArray = np.multiply(llr, shrink[:, None, :], out=out)
    return found


def scan(engine: Engine, rule: DropRule, now: int, sids: list[int], buckets: Buckets,
         restarts: FloatArray | None = None) -> Scan:
    """The sequential statistics of ``rule``'s series ``sids`` at ``now``.

    ``restarts`` (per series, epoch seconds; NaN or absent: none) restarts a series'
    CUSUM after a page, as a CUSUM is restarted after its alarm: only segments that
    start after it count, so evidence that paged once does not page again when the
    statistic hovers about its threshold (``Detector`` passes each series' last
    resolved page; the run length the threshold is set for is between such restarts).

    The closed hours' part (``Hours``) is memoized in ``buckets.parts`` while it cannot
    change; each evaluation adds the minutes of the last two hours: a segment starting
    at hour k has the hours' LLR and answers plus all the minutes', and
    ``Q = Q_hours + 2 sum_j A_j R_j / m_j + Q_minutes`` (A_j, R_j: the hours' and the
    minutes' answers in class j), the square of the per-class sums expanded.
    """
    lay = layout(engine, rule, now)
    if not sids:  # nothing of this metric answered yet
        none, grid = np.zeros(0), np.zeros((0, len(rule.shifts) * destinations(rule)))
        return Scan(rule, [], grid, grid.copy(), grid.copy(), none, none.copy(),
                    none.copy(), np.zeros(0, dtype=bool), np.zeros(grid.shape, dtype=bool),
                    grid.copy())
    n_cls = CLASSES[rule.cycle]
    cycle = n_cls > 1
    ix = np.asarray(sids, dtype=np.int64)
    h_now = now // HOUR
    minute_cls = [(h_now - 1) % n_cls, h_now % n_cls] if cycle else [0]
    hours = _cached_hours(engine, rule, lay, ix, buckets, minute_cls)

    minutes_all = buckets("60s", lay.minute_first, lay.minute_last)
    mins = minutes_all[:, ix]  # (Km, S, 5)
    minute_ids = np.arange(lay.minute_first, lay.minute_last + 1)
    slot = minute_ids // 60 - (h_now - 1) if cycle else np.zeros(len(minute_ids), np.int64)
    n_m = np.ascontiguousarray(mins[..., _N].T)  # (S, Km)
    runs = [(a, b, minute_cls[j]) for a, b, j in _runs(slot)]
    llr_m = _llr(mins, hours.coef, hours.used, runs)  # (S, G, Km)
    seg_n_m = _suffix(n_m)
    per_cls = [_suffix(np.where(slot == j, n_m, 0.0))
               for j in range(len(minute_cls))]  # R_j from k on
    eff = hours.fit.own
    z_m = np.cumsum(hours.fit.z(n_m, np.asarray(minute_cls)[slot])[:, ::-1], 1)[:, ::-1]
    q_m = np.einsum("skp,spq,skq->sk", z_m, hours.fit.m, z_m)  # (S, Km) the curve's
    for j, r in enumerate(per_cls):
        q_m += r**2 / eff[minute_cls[j]][:, None]
    cross = hours.mz @ z_m[:, 0, :, None]  # (S, Kh, 1): z_hours' M z_minutes
    cross = cross[..., 0]
    for j, r in enumerate(per_cls):
        cross += hours.cross[j] * r[:, :1]
    n_h = hours.n + seg_n_m[:, :1]
    stat_h = np.add(hours.llr, llr_m[..., :1], out=hours.scratch)  # (S, G, Kh)
    stat_h = _shrunk(stat_h, n_h, hours.q + 2.0 * cross + q_m[:, :1], out=stat_h)
    stat_m = _shrunk(llr_m, seg_n_m, q_m)  # (S, G, Km)

    if restarts is not None:
        _restart(stat_h, (lay.hour_first + np.arange(stat_h.shape[-1])) * HOUR, restarts)
        _restart(stat_m, (lay.minute_first + np.arange(stat_m.shape[-1])) * MINUTE,
                 restarts)
    best_h, best_m = last_argmax(stat_h), last_argmax(stat_m)  # (S, G)
    val_h = np.take_along_axis(stat_h, best_h[..., None], -1)[..., 0]
    val_m = np.take_along_axis(stat_m, best_m[..., None], -1)[..., 0]
    minute = val_m >= val_h  # the last maximum in time order, as one over both
    rows = np.arange(len(sids))[:, None]
    seg_n = np.where(minute, seg_n_m[rows, best_m], n_h[rows, best_h])
    start = np.where(minute, (lay.minute_first + best_m) * MINUTE,
                     (lay.hour_first + best_h) * HOUR)
    top = np.where(hours.live, np.maximum(np.where(minute, val_m, val_h), 0.0), 0.0)
    base_seconds = max(lay.base_last - lay.base_first + 1, 1) * HOUR  # young: may be empty
    mon_seconds = (lay.hour_last - lay.hour_first + 1) * HOUR + (now % HOUR) + HOUR
    volume = np.maximum(hours.base_n / base_seconds, n_h[:, 0] / mon_seconds)
    pooled = hours.pooled + minutes_all.sum(0)
    repeated = (np.array(copies(engine, sids, pooled), dtype=bool) if sids
                else np.zeros(0, dtype=bool))
    tested = (hours.base_n > 0) & ~repeated
    return Scan(rule, sids, top, start.astype(np.float64), seg_n, hours.base_n,
                hours.sigma, volume, tested, hours.live, hours.delta)


def last_argmax(stat: FloatArray) -> np.ndarray:
    """Index of the last maximum along the last axis. Segments that differ only by
    answerless buckets at their start tie; the latest of them dates the change where its
    answers begin, not at the first empty hour before them."""
    k = stat.shape[-1]
    out: np.ndarray = k - 1 - stat[..., ::-1].argmax(-1)
    return out


def _restart(stat: FloatArray, starts: np.ndarray, restarts: FloatArray) -> None:
    """Rule out (-inf) the segments of ``stat`` (S, G, K) that start at or before each
    series' restart (``starts``: each segment's start, epoch seconds)."""
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(restarts >= starts[0])
    if len(rows):
        early = starts[None, :] <= restarts[rows, None]  # (R, K)
        stat[rows] = np.where(early[:, None, :], -np.inf, stat[rows])


def _cached_hours(engine: Engine, rule: DropRule, lay: Layout, ix: np.ndarray,
                  buckets: Buckets, minute_cls: list[int]) -> Hours:
    parts = buckets.parts
    base_key = buckets.closed_key("3600s", lay.base_first, lay.base_last)
    hour_key = buckets.closed_key("3600s", lay.hour_first, lay.hour_last)
    if parts is None or base_key is None or hour_key is None:
        return _hours(engine, rule, lay, ix, buckets, minute_cls)
    key = (rule, ix.tobytes(), tuple(minute_cls), base_key, hour_key)
    found = parts.get(key)
    if found is None or found.engine() is not engine:
        if len(parts) > 16:
            parts.clear()
        found = parts[key] = _hours(engine, rule, lay, ix, buckets, minute_cls)
    return found


MAX_OVERSHOOT_SHIFT: Final = 2.5
"""The per-check shift up to which Siegmund's overshoot term ``1.166 mu`` is used; checked
by simulation: run lengths 1.0-1.25 times the target up to it, and 0.63 at 4.2 without
the cap (4.0 with it: conservative where a page takes a minute or two anyway)."""


def thresholds(shifts: FloatArray, answers: FloatArray, per_check: FloatArray | float = 1.0
               ) -> FloatArray:
    """The CUSUM threshold for each per-answer shift (SDs) and in-control run length
    (answers), when the statistic can cross only every ``per_check`` answers (at least
    one): Siegmund's approximation for a CUSUM of Gaussian observations of shift
    ``mu = shift * sqrt(per_check)`` each, ``(e^y - y - 1) / (mu^2 / 2) = ARL0`` in
    checks, ``h = y - 1.166 mu`` (shapes broadcast). The run length in checks times
    ``mu^2`` is the one in answers times ``shift^2``, so only the overshoot term sees
    the batching: a CUSUM looked at once a batch overshoots its threshold by more than
    one looked at every answer, and pages less often at the same ``h``. Past a per-check
    shift of ``MAX_OVERSHOOT_SHIFT`` the correction overshoots itself (a check alone then
    decides), so it stops growing there (``benchmarks/check_thresholds.py``)."""
    target = np.maximum(answers * shifts**2 / 2.0, 1e-9)
    y = np.maximum(np.log1p(target), 0.5)
    for _ in range(30):  # Newton on the convex e^y - y - 1 - target
        y = y - (np.expm1(y) - y - target) / np.maximum(np.expm1(y), 1e-12)
        y = np.maximum(y, 1e-6)
    mu = np.minimum(shifts * np.sqrt(np.maximum(per_check, 1.0)), MAX_OVERSHOOT_SHIFT)
    out: FloatArray = np.maximum(y - 1.166 * mu, 0.5)
    return out


def series_days(rule: DropRule, distinct: int, per_week: float) -> float:
    """The per-series false-page period: the rule's, or the deployment budget's share."""
    return max(rule.false_page_days, 7.0 * max(distinct, 1) / per_week)


@dataclass(slots=True)
class Decided:
    """A rule's scanned series against their thresholds, as arrays (``at`` gives one
    series' ``Sequential``, built only for the series that need it)."""

    found: Scan
    threshold: FloatArray  # (S, G)
    pick: np.ndarray  # (S,) the hypothesis closest to (or furthest past) its threshold
    days: float

    @property
    def holds(self) -> np.ndarray:
        """(S,) bool: tested, and the evidence reached its threshold."""
        rows = np.arange(len(self.pick))
        out: np.ndarray = self.found.tested & (self.found.stat[rows, self.pick]
                                               >= self.threshold[rows, self.pick])
        return out

    def at(self, i: int) -> Sequential | None:
        """Series ``i``'s evidence (None: not tested)."""
        found = self.found
        if not found.tested[i]:
            return None
        g = int(self.pick[i])
        g0 = len(found.rule.shifts)
        shift = float(found.rule.shifts[g % g0])  # the top's drop
        return Sequential(
            float(found.stat[i, g]), float(self.threshold[i, g]),
            shift * float(found.sigma[i]), int(found.start[i, g]),
            int(found.seg_n[i, g]), int(found.base_n[i]), float(found.volume[i]) * HOUR,
            self.days, destination_of(found, i, g))


def destination_of(found: Scan, i: int, g: int) -> str | None:
    """Where hypothesis ``g`` of series ``i`` sends the top share's lost answers."""
    if found.rule.metric not in SHARES:
        return None
    g0 = len(found.rule.shifts)
    to = DESTINATIONS[g // g0]
    if to == "bottom" and "middle" in DESTINATIONS:
        mid = DESTINATIONS.index("middle") * g0
        if not found.live[i, mid:mid + g0].any():  # thin: the top-only test in its place
            return "rest"
    return to


def decided(found: Scan, distinct: int, per_week: float) -> Decided:
    """``found``'s thresholds from the budget, and each series' closest hypothesis.

    Bonferroni over the series' live hypotheses (shifts x destinations for shares);
    each hypothesis' threshold is Siegmund's for its per-answer LLR scale ``delta``."""
    rule = found.rule
    days = series_days(rule, distinct, per_week)
    count = np.maximum(found.live.sum(1), 1)
    answers = (days * DAY * found.volume * count)[:, None]
    # the statistic's segments start on minutes at the finest: a check every minute
    per_check = (found.volume * MINUTE)[:, None]
    h = thresholds(np.maximum(found.delta, 1e-6), answers, per_check)  # (S, G)
    ratio = np.where(found.live, found.stat / h, -np.inf)
    return Decided(found, h, ratio.argmax(1), days)


def decide(found: Scan, distinct: int, per_week: float) -> list[Sequential | None]:
    """Each scanned series' evidence against its threshold (None: not tested)."""
    out = decided(found, distinct, per_week)
    return [out.at(i) for i in range(len(found.sids))]


def time_to_decision(ev: Sequential) -> float | None:
    """Hours until the evidence would reach its threshold at the current volume if the
    drop behind it is real and goes on (None when nothing is accumulating)."""
    if ev.holds:
        return 0.0
    if ev.llr <= 0 or ev.change_n <= 0 or ev.per_hour <= 0:
        return None
    per_answer = ev.llr / ev.change_n
    return (ev.threshold - ev.llr) / per_answer / ev.per_hour if per_answer > 0 else math.inf
