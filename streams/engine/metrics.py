"""Signal kinds as mergeable statistics, and the scores computed from them.

Every aggregate cell is one fixed-length float64 vector (``NCOLS`` wide): count,
sum, sum of squares, a "top" count (top-2-box, promoters, easy, top box, resolved,
positive), a "bottom" count (bottom-2-box, detractors, difficult, bottom box,
abandoned, negative), not-applicable answers and an 11-bin histogram of the answers.
Vectors add, so the same addition merges partitions, time buckets and restarts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from schemas.event import OUTCOMES, Ces, Csat, Nps, Outcome, Rating, Sentiment, TouchpointEvent
from streams.engine import stats

N, SUM, SUMSQ, TOP, BOTTOM, NA = range(6)
HIST: Final = 6
HIST_BINS: Final = 11
NCOLS: Final = HIST + HIST_BINS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


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


def distinct_inverse(keys: IntArray) -> tuple[IntArray, IntArray]:
    """The distinct keys in order and, for each key, the index of its value among them.

    ``np.unique(keys, return_inverse=True)``, but keys spanning a small range (as codes
    and time buckets of a batch mostly do) are ranked by direct indexing, not sorting.
    """
    if len(keys) == 0:
        return keys, keys
    low = int(keys.min())
    span = int(keys.max()) - low + 1
    if span > 4 * len(keys) + _DENSE_SLACK:
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, inverse.reshape(-1)
    offsets = keys - low
    present = np.zeros(span, dtype=np.bool_)
    present[offsets] = True
    ranks = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, ranks[offsets]


_DENSE_SLACK: Final = 1024
"""Keys spanning at most four values per key plus this many are ranked by indexing."""


@dataclass(frozen=True, slots=True)
class Observations:
    """A batch of events reduced to what aggregates need, one numpy column per field.

    Column for column the same as ``observe`` on each event (``metric`` indexes
    ``metrics``, which lists the batch's metric names in order of first appearance), but
    computed per signal kind with numpy instead of one Python object per event.
    """

    metrics: list[str]
    metric: IntArray
    scored: BoolArray
    value: FloatArray
    top: BoolArray
    bottom: BoolArray
    hist: IntArray
    satisfaction: FloatArray

    def __len__(self) -> int:
        return len(self.metric)

    def rows(self) -> FloatArray:
        """The aggregate vector of each event, as ``rows`` gives it."""
        return self.compact().expand()

    def compact(self) -> CompactRows:
        """The aggregate vectors in the few numbers that determine them."""
        hist = self.hist
        if len(hist) and int(hist.max()) >= HIST_BINS:
            raise IndexError(f"histogram bin {int(hist.max())} is past the last")
        slot = np.where(self.scored, np.where(hist >= 0, hist + 2, 1), 0)
        sums = np.empty((len(self), 2), dtype=np.float64)
        sums[:, 0] = self.value * self.scored
        sums[:, 1] = self.value * self.value * self.scored
        value = self.value
        # -0.0 is left out: a sum of only -0.0 is -0.0 in order, 0.0 when counted.
        negative_zero = (value == 0) & np.signbit(value)
        whole = (value == np.floor(value)) & (np.abs(value) <= _WHOLE_LIMIT) & ~negative_zero
        if whole.all():
            ordered = np.zeros(len(self), dtype=np.bool_)
        else:
            ordered = np.isin(self.metric, self.metric[~whole])
        ends = self.top * TOP_END | self.bottom * BOTTOM_END
        return CompactRows(slot, ends.astype(np.int64), sums, ordered)


_WHOLE_LIMIT: Final = 1024
"""Whole answers up to this size have sums (and sums of squares) that float64 adds exactly,
in any order, for up to 2**32 answers."""
NA_SLOT: Final = 0
NO_BIN_SLOT: Final = 1
SLOTS: Final = 2 + HIST_BINS
"""``CompactRows.slot`` values: not applicable, scored without a histogram bin, then
scored in bin 0..10 (slot 2..12)."""
TOP_END: Final = 2
BOTTOM_END: Final = 1
"""Bits of ``CompactRows.ends``: the answer is a top (or a bottom) one."""


@dataclass(frozen=True, slots=True)
class CompactRows:
    """Per-event aggregate vectors, held as the few numbers that determine them.

    Row ``i`` stands for the vector with ``n`` 1 unless ``slot[i]`` is ``NA_SLOT``
    (then ``not_applicable`` 1), the histogram bin ``slot[i] - 2`` set when there is
    one, ``top`` and ``bottom`` as the bits of ``ends[i]`` say, and ``sums[i]`` in the
    ``SUM`` and ``SUMSQ`` columns. ``ordered`` marks the rows of metrics whose answers in
    this batch are not all small whole numbers: their sums depend on the order of
    addition, so grouping adds them exactly as ``store.group_sum`` does.
    """

    slot: IntArray
    ends: IntArray
    sums: FloatArray
    ordered: BoolArray

    def __len__(self) -> int:
        return len(self.slot)

    def tile(self, times: int) -> CompactRows:
        """The rows repeated ``times`` times over."""
        return CompactRows(np.tile(self.slot, times), np.tile(self.ends, times),
                           np.tile(self.sums, (times, 1)), np.tile(self.ordered, times))

    def expand(self, index: IntArray | None = None) -> FloatArray:
        """The full (n, NCOLS) vectors, of every event or of those at ``index``."""
        slot = self.slot if index is None else self.slot[index]
        out = np.zeros((len(slot), NCOLS), dtype=np.float64)
        out[:, N] = slot != NA_SLOT
        out[:, SUM : SUMSQ + 1] = self.sums if index is None else self.sums[index]
        ends = self.ends if index is None else self.ends[index]
        out[:, TOP] = (ends & TOP_END) != 0
        out[:, BOTTOM] = (ends & BOTTOM_END) != 0
        out[:, NA] = slot == NA_SLOT
        binned = np.flatnonzero(slot > NO_BIN_SLOT)
        out[binned, HIST - 2 + slot[binned]] = 1.0
        return out


_KIND_CODES: Final[tuple[type, ...]] = (Csat, Nps, Ces, Rating, Outcome, Sentiment)
CSAT, NPS, CES, RATING, OUTCOME, SENTIMENT = range(6)
_FIXED_METRICS: Final = ("csat", "nps", "ces", "rating", "outcome", "sentiment")
_OUTCOME_CODES: Final = {name: i for i, name in enumerate(OUTCOMES)}


class _KindCodes(dict[type, int]):
    """Event class -> kind code, by ``isinstance`` as ``observe`` decides (cached)."""

    def __missing__(self, cls: type) -> int:
        code = next((i for i, k in enumerate(_KIND_CODES) if issubclass(cls, k)), SENTIMENT)
        self[cls] = code
        return code


_kind_codes = _KindCodes()


def observe_many(events: Sequence[TouchpointEvent]) -> Observations:
    """Reduce a batch of validated events to ``Observations`` (``observe`` per column)."""
    n = len(events)
    kinds = np.fromiter(map(_kind_codes.__getitem__, map(type, events)), dtype=np.int8,
                        count=n)
    present = set(np.flatnonzero(np.bincount(kinds, minlength=len(_KIND_CODES))).tolist())
    raw: list[Any] = [e.value for e in events]
    value = np.zeros(n, dtype=np.float64)
    hist = np.full(n, -1, dtype=np.int64)
    # Per event: which metric (a kind, or a rating scale past the fixed kinds).
    local = kinds.astype(np.int64)
    scales: list[tuple[int, int]] = []
    outcome = np.flatnonzero(kinds == OUTCOME) if OUTCOME in present else None
    if outcome is None:
        value[:] = raw
    else:
        codes = np.array([_OUTCOME_CODES[raw[i]] for i in outcome.tolist()], dtype=np.int64)
        numeric = np.flatnonzero(kinds != OUTCOME)
        value[numeric] = [raw[i] for i in numeric.tolist()]
        value[outcome] = codes == 0
        hist[outcome] = codes
    v = value
    top = np.zeros(n, dtype=np.bool_)
    bottom = np.zeros(n, dtype=np.bool_)
    scored = np.ones(n, dtype=np.bool_)
    satisfaction = np.empty(n, dtype=np.float64)
    for kind, hi_top, lo_bottom, first, span in ((CSAT, 4, 2, 1, 4), (NPS, 9, 6, 0, 10),
                                                 (CES, 5, 3, 1, 6)):
        if kind in present:
            at = kinds == kind
            top[at] = v[at] >= hi_top
            bottom[at] = v[at] <= lo_bottom
            hist[at] = v[at] - first
            satisfaction[at] = (v[at] - first) / span
    if RATING in present:
        at = np.flatnonzero(kinds == RATING)
        ratings = cast(Sequence[Rating], [events[i] for i in at.tolist()] if len(at) < n
                       else events)
        lo = np.array([e.scale_min for e in ratings], dtype=np.int64)
        hi = np.array([e.scale_max for e in ratings], dtype=np.int64)
        r = v[at]
        # Not applicable: the answer is the declared code (None, as NaN, equals nothing).
        ok = r != np.array([e.na_code for e in ratings], dtype=np.float64)
        lo_min, hi_min = int(lo.min()), int(hi.min())
        width = int(hi.max()) - hi_min + 1
        packed, scale = distinct_inverse((lo - lo_min) * width + (hi - hi_min))
        scales = [(p // width + lo_min, p % width + hi_min) for p in packed.tolist()]
        local[at] = len(_FIXED_METRICS) + scale
        na = ~ok
        top[at] = ok & (r == hi)
        bottom[at] = ok & (r == lo)
        hist[at] = np.where(ok & (hi - lo + 1 <= HIST_BINS), r.astype(np.int64) - lo, -1)
        satisfaction[at] = np.where(ok, (r - lo) / (hi - lo), math.nan)
        scored[at] = ok
        value[at[na]] = 0.0
    if outcome is not None:
        top[outcome] = hist[outcome] == 0
        bottom[outcome] = hist[outcome] == 2
        satisfaction[outcome] = value[outcome]
    if SENTIMENT in present:
        at = kinds == SENTIMENT
        top[at] = v[at] > 0
        bottom[at] = v[at] < 0
        satisfaction[at] = (v[at] + 1) / 2
    names = [*_FIXED_METRICS, *(f"rating:{a}-{b}" for a, b in scales)]
    # Number the batch's metrics in order of first appearance.
    first_seen = np.full(len(names), n, dtype=np.int64)
    np.minimum.at(first_seen, local, np.arange(n))
    used = np.flatnonzero(first_seen < n)
    order = used[np.argsort(first_seen[used])]
    rank = np.zeros(len(names), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return Observations(
        metrics=[names[i] for i in order.tolist()],
        metric=rank[local],
        scored=scored,
        value=value,
        top=top,
        bottom=bottom,
        hist=hist,
        satisfaction=satisfaction,
    )


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
