"""Signal kinds as mergeable statistics, and the scores computed from them.

Every aggregate cell is one fixed-length float64 vector (``NCOLS`` wide): count,
sum, sum of squares, a "top" count (top-2-box, promoters, easy, top box, resolved,
positive), a "bottom" count (bottom-2-box, detractors, difficult, bottom box,
abandoned, negative), not-applicable answers and an 11-bin histogram of the answers.
Vectors add, so the same addition merges partitions, time buckets and restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.event import Ces, Csat, Nps, Outcome, Rating, TouchpointEvent
from streams.engine import stats

N, SUM, SUMSQ, TOP, BOTTOM, NA = range(6)
HIST: Final = 6
HIST_BINS: Final = 11
NCOLS: Final = HIST + HIST_BINS

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Observation:
    """One event reduced to what aggregates need.

    ``value`` is the answer on its own scale (resolution 1/0 for outcomes); ``hist``
    the histogram bin or -1; ``satisfaction`` the answer mapped to 0..1 so that
    journeys and customers can mix kinds.
    """

    metric: str
    scored: bool
    value: float
    top: bool
    bottom: bool
    hist: int
    satisfaction: float


def observe(event: TouchpointEvent) -> Observation:
    """Reduce one validated event to an ``Observation``."""
    if isinstance(event, Csat):
        v = event.value
        return Observation("csat", True, v, v >= 4, v <= 2, v - 1, (v - 1) / 4)
    if isinstance(event, Nps):
        v = event.value
        return Observation("nps", True, v, v >= 9, v <= 6, v, v / 10)
    if isinstance(event, Ces):
        v = event.value
        return Observation("ces", True, v, v >= 5, v <= 3, v - 1, (v - 1) / 6)
    if isinstance(event, Rating):
        metric = f"rating:{event.scale_min}-{event.scale_max}"
        if event.not_applicable:
            return Observation(metric, False, 0.0, False, False, -1, math.nan)
        lo, hi = event.scale_min, event.scale_max
        v = event.value
        width = hi - lo + 1
        return Observation(
            metric, True, v, v == hi, v == lo, v - lo if width <= HIST_BINS else -1,
            (v - lo) / (hi - lo),
        )
    if isinstance(event, Outcome):
        resolved = event.value == "resolved"
        index = ("resolved", "unresolved", "abandoned").index(event.value)
        return Observation(
            "outcome", True, 1.0 if resolved else 0.0, resolved,
            event.value == "abandoned", index, 1.0 if resolved else 0.0,
        )
    s = event.value
    return Observation("sentiment", True, s, s > 0, s < 0, -1, (s + 1) / 2)


def rows(observations: list[Observation]) -> FloatArray:
    """The aggregate vector of each observation, as an (n, NCOLS) matrix."""
    n = len(observations)
    out = np.zeros((n, NCOLS), dtype=np.float64)
    if n == 0:
        return out
    scored = np.fromiter((o.scored for o in observations), dtype=np.bool_, count=n)
    value = np.fromiter((o.value for o in observations), dtype=np.float64, count=n)
    out[:, N] = scored
    out[:, SUM] = value * scored
    out[:, SUMSQ] = value * value * scored
    out[:, TOP] = np.fromiter((o.top for o in observations), dtype=np.bool_, count=n)
    out[:, BOTTOM] = np.fromiter((o.bottom for o in observations), dtype=np.bool_, count=n)
    out[:, NA] = ~scored
    hist = np.fromiter((o.hist for o in observations), dtype=np.int64, count=n)
    has = hist >= 0
    out[np.nonzero(has)[0], HIST + hist[has]] = 1.0
    return out


@dataclass(frozen=True, slots=True)
class Score:
    """A score with its sample size and 95% interval.

    ``value`` is the headline number: a share 0..1 for CSAT and resolution, points
    -100..100 for NPS, a mean on the answer's scale for CES, ratings and sentiment.
    ``share`` is the top-box-style share where the metric has one (easy for CES).
    """

    metric: str
    value: float
    n: int
    low: float
    high: float
    unit: str
    share: float | None = None
    share_low: float | None = None
    share_high: float | None = None
    not_applicable: int = 0


def _share(vec: FloatArray, metric: str, unit: str = "ratio") -> Score:
    n, top = float(vec[N]), float(vec[TOP])
    low, high = stats.wilson_interval(top, n)
    value = top / n if n else math.nan
    return Score(metric, value, int(n), low, high, unit, value, low, high, int(vec[NA]))


def _mean(vec: FloatArray, metric: str, with_share: bool) -> Score:
    n = float(vec[N])
    mean = float(vec[SUM]) / n if n else math.nan
    low, high = stats.mean_interval(n, float(vec[SUM]), float(vec[SUMSQ]))
    share = share_low = share_high = None
    if with_share:
        share = float(vec[TOP]) / n if n else math.nan
        share_low, share_high = stats.wilson_interval(float(vec[TOP]), n)
    return Score(metric, mean, int(n), low, high, "mean", share, share_low, share_high,
                 int(vec[NA]))


def score(metric: str, vec: FloatArray) -> Score:
    """The score of ``metric`` from its aggregate vector."""
    if metric == "csat":
        return _share(vec, metric)
    if metric == "outcome":
        return _share(vec, metric)
    if metric == "nps":
        n, p, d = float(vec[N]), float(vec[TOP]), float(vec[BOTTOM])
        low, high = stats.nps_interval(p, d, n)
        return Score(metric, stats.nps_score(p, d, n), int(n), low, high, "points",
                     p / n if n else math.nan, None, None, int(vec[NA]))
    if metric == "sentiment":
        return _mean(vec, metric, with_share=False)
    return _mean(vec, metric, with_share=True)  # ces, rating:*


def empty() -> FloatArray:
    """A zero aggregate vector."""
    return np.zeros(NCOLS, dtype=np.float64)
