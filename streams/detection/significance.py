"""The statistics of detection: is a window below its baseline, and how sure is that.

``compare`` runs the one-sided test that suits the metric, ``screen_drops`` controls the
false discoveries across a drop rule's family, ``lower_cusum`` and ``siegmund_arl`` are the
drift chart and its run length; ``Evidence`` records what was seen and travels with an
alert.

Drops (``DropRule``). For each series of the rule's metric in the selected scopes, a
window (e.g. the last hour) is compared with a baseline (the 7 days before it, or the
previous N calendar periods). The test follows the metric: a two-proportion z for
shares (CSAT top-2-box, resolution) on Anscombe's arcsine scale (``arcsine_z`` says why
not the pooled z), the NPS difference over its multinomial SE, Welch's t for means (CES,
ratings, sentiment); all one-sided, "window below baseline".
Every series with at least ``min_n_window`` and ``min_n_baseline`` answers is one test
of the rule's family; Benjamini-Hochberg q-values are computed across that family, and
the condition holds where ``q <= alpha`` and the observed drop ``>= min_effect``. The
effect filter is applied after BH, not before it: choosing the family by its observed
effects would shrink it on the data and inflate false alarms.

Drifts (``DriftRule``). A one-sided lower CUSUM per series on a per-bucket standardized
score: for each closed bucket b (closed once the allowed lateness has passed, so late
events cannot change a bucket already used) ``z_b`` is the same drop statistic as above,
bucket b against the ``baseline`` span just before it, and

    S_b = min(cap, max(0, S_{b-1} - z_b - k)),   condition: S_b > h.

In-control average run length (ARL0), by Siegmund's approximation for a one-sided CUSUM
on unit-variance normal scores with a mean shift ``delta`` (in SDs, in the direction
watched), ``D = delta - k`` and ``b = h + 1.166``:

    ARL(delta) ~= (exp(-2 D b) + 2 D b - 1) / (2 D^2)     (b^2 when D = 0)

Defaults k = 0.5, h = 5: ARL0 ~= 938 buckets (39 days of hourly buckets per series) and
ARL1 ~= 10.3 buckets for a 1-SD drop. (k = 0.5, h = 4 gives ARL0 ~= 338 one-sided; the
often-quoted 168 is the two-sided chart's, half of it. h = 6: 2573 and 12.3; h = 7: 7020
and 14.3.) ARL0 is per series and assumes independent N(0, 1) scores (``min_n`` keeps
them near that): m series watched hourly raise about 24 m / ARL0 false alarms a day, so
drift rules watch the overall scope unless told otherwise. The cap (default 2h) only acts
after a crossing, so it leaves run lengths alone and bounds how long recovery takes
(about (cap - h) / k buckets). ``siegmund_arl`` computes the formula; the tests check
it against a seeded simulation of ``lower_cusum``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from streams.detection.rules import SHARES, DropRule
from streams.engine import stats
from streams.engine.metrics import BOTTOM, SUM, SUMSQ, TOP, FloatArray, N, score


@dataclass(frozen=True, slots=True)
class Comparison:
    """Window against baseline: drop (baseline minus window, metric units) and its test."""

    test: str
    window_n: int
    window_score: float
    baseline_n: int
    baseline_score: float
    effect: float
    statistic: float
    dof: float | None
    p: float


def compare(metric: str, window: FloatArray, baseline: FloatArray) -> Comparison:
    """The one-sided test of "window below baseline" that suits ``metric``."""
    wn, bn = float(window[N]), float(baseline[N])
    ws, bs = score(metric, window).value, score(metric, baseline).value
    dof: float | None = None
    if metric in SHARES:
        test = "two_proportion_arcsine_z"
        stat = float(arcsine_z(window[TOP], wn, baseline[TOP], bn))
        p = stats.normal_sf(-stat)
    elif metric == "nps":
        test = "nps_difference_z"
        stat, p = stats.nps_difference_z(window[TOP], window[BOTTOM], wn,
                                         baseline[TOP], baseline[BOTTOM], bn)
    else:
        test = "welch_t"
        stat, dof, p = stats.welch_t(wn, window[SUM], window[SUMSQ],
                                     bn, baseline[SUM], baseline[SUMSQ])
    return Comparison(test, int(wn), ws, int(bn), bs, bs - ws, stat, dof, p)


def arcsine_z(x1: Any, n1: Any, x2: Any, n2: Any) -> Any:
    """Two-proportion z on Anscombe's variance-stabilized scale (floats or arrays).

    z = 2 (asin sqrt(p1') - asin sqrt(p2')) / sqrt(1 / (n1 + 1/2) + 1 / (n2 + 1/2)), with
    p' = (x + 3/8) / (n + 3/4). BH looks far into the tail (alpha / m), where the pooled
    z is anti-conservative for high shares and a small window against a large baseline
    (at p = 0.85, n = 100 vs 1000, P(p <= 0.001) is 1.8x nominal; 2.3x at 0.00025). On
    this scale the same tails stay near or below nominal (0.4-1.2x for shares 0.5-0.95,
    windows of 100-2000 against baselines of 400-10000, simulated).
    """
    a1 = np.arcsin(np.sqrt((np.asarray(x1, dtype=np.float64) + 0.375) / (n1 + 0.75)))
    a2 = np.arcsin(np.sqrt((np.asarray(x2, dtype=np.float64) + 0.375) / (n2 + 0.75)))
    return 2.0 * (a1 - a2) / np.sqrt(1.0 / (n1 + 0.5) + 1.0 / (n2 + 0.5))


def iso(seconds: int | None) -> str | None:
    """Epoch ``seconds`` as an ISO 8601 UTC time (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a condition holds (or not): both sides' n and scores, effect, test, bounds.

    Times are epoch seconds; bounds are [start, end) of the buckets summed.
    """

    test: str
    window_n: int
    window_score: float
    window_start: int
    window_end: int
    baseline_n: int | None = None
    baseline_score: float | None = None
    baseline_start: int | None = None
    baseline_end: int | None = None
    effect: float | None = None
    statistic: float | None = None
    dof: float | None = None
    p: float | None = None
    q: float | None = None
    window_low: float | None = None
    window_high: float | None = None
    target: float | None = None
    cusum: float | None = None
    llr: float | None = None
    """Sequential drops: the CUSUM of log-likelihood ratios since the change's start."""
    threshold: float | None = None
    """Sequential drops: where ``llr`` pages (from the false-alarm budget)."""
    shift: float | None = None
    """Sequential drops: the drop size behind ``llr``, in the metric's units."""
    destination: str | None = None
    """Sequential drops of shares: where the lost top answers went in the hypothesis
    behind ``llr`` (``bottom``, ``middle``; ``rest``: the top-only test)."""
    change_start: int | None = None
    """Sequential drops: where the evidence starts (the change's estimated start)."""
    change_n: int | None = None
    false_page_days: float | None = None
    """Sequential drops: the series' false-page period the threshold is set for."""
    decision_hours: float | None = None
    """Sequential drops: hours to the threshold at the current volume if the drop goes
    on (0 once reached; None when no evidence accumulates)."""
    attribution: dict[str, Any] | None = None
    """Drops: what explains it, as plain data (``attribution.Explanation.to_dict``)."""
    attribution_summary: str | None = None
    """Drops: the one line for a page, e.g. "channel=chat explains 82% of the drop; ..."."""
    explained_by: str | None = None
    """Drops: the id of the alert of the same rule whose drop explains this one."""

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC bounds (for the API and the alerts topic)."""
        out = asdict(self)
        for key in ("window_start", "window_end", "baseline_start", "baseline_end",
                    "change_start"):
            out[key] = iso(out[key])
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One tested series of a drop rule: its comparison, q-value and whether it alerts."""

    comparison: Comparison
    q: float
    holds: bool


def screen_drops(rule: DropRule, metric: str, windows: FloatArray,
                 baselines: FloatArray) -> list[Finding | None]:
    """Test every row (one series each) of a rule's family; None where n is too small.

    BH q-values are computed across all rows with enough answers on both sides; a row
    holds when ``q <= alpha`` and its drop is at least the rule's minimum effect.
    """
    eligible = (windows[:, N] >= rule.min_n_window) & (baselines[:, N] >= rule.min_n_baseline)
    comparisons: list[Comparison | None] = [
        compare(metric, windows[i], baselines[i]) if ok else None
        for i, ok in enumerate(eligible.tolist())
    ]
    p = [math.nan if c is None else c.p for c in comparisons]
    q = stats.benjamini_hochberg(p).tolist()
    threshold = rule.effect_threshold
    out: list[Finding | None] = []
    for c, qi in zip(comparisons, q, strict=True):
        if c is None or math.isnan(qi):
            out.append(None)
            continue
        out.append(Finding(c, qi, qi <= rule.alpha and c.effect >= threshold))
    return out


# ---------------------------------------------------------------------- CUSUM helpers


def lower_cusum(s: FloatArray, z: FloatArray, k: float, cap: float = math.inf) -> FloatArray:
    """One step of the lower CUSUM for many series at once: min(cap, max(0, s - z - k))."""
    out: FloatArray = np.minimum(cap, np.maximum(0.0, s - z - k))
    return out


def siegmund_arl(k: float, h: float, shift: float = 0.0) -> float:
    """Siegmund's approximation to a one-sided CUSUM's average run length.

    ``shift`` is the mean change in SDs in the watched direction (0 gives ARL0).
    """
    d = shift - k
    b = h + 1.166
    if abs(d) < 1e-12:
        return b * b
    return (math.exp(-2.0 * d * b) + 2.0 * d * b - 1.0) / (2.0 * d * d)
