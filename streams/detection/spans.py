"""Where a rule looks: the buckets its window and baseline cover, the series it watches.

A continuous span is served by the finest bucket granularity that divides it and still
keeps all of it; a periodic one by the engine's calendar periods. ``Dense`` sums each span
once per evaluation and shares the sums between rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from streams.detection.rules import AlertRule, DropRule, Window
from streams.engine.buckets import IntArray
from streams.engine.config import CalendarUnit
from streams.engine.engine import Engine
from streams.engine.metrics import FloatArray
from streams.engine.store import Granularity, SeriesKey


@dataclass(frozen=True, slots=True)
class Span:
    """Buckets ``first..last`` of one granularity, covering [start, end) seconds."""

    granularity: str
    first: int
    last: int
    start: int
    end: int


def _steps(engine: Engine) -> list[tuple[int, Granularity]]:
    return sorted((int(name[:-1]), g) for name, g in engine.granularities.items()
                  if name.endswith("s") and name[:-1].isdigit())


def oldest(engine: Engine, gran: Granularity, now: int) -> int:
    """The oldest bucket the engine still keeps (it expires buckets by its watermark)."""
    newest = max(now, engine.watermark if engine.watermark is not None else now)
    return int(gran.bucketing.ids(np.array([newest], dtype=np.int64))[0]) - gran.keep + 1


def window_span(engine: Engine, rule: str, window: Window, now: int) -> Span:
    """The buckets ``window`` covers at ``now``; ``ValueError`` naming ``rule`` when the
    engine keeps no granularity that serves it."""
    if window.unit is not None:
        calendar = engine.calendars[window.unit]
        period = int(calendar.ids(np.array([now], dtype=np.int64))[0])
        return _calendar_span(engine, window.unit, period, period)
    span = window.span if window.span is not None else 0
    for step, gran in _steps(engine):
        last = now // step
        first = last - span // step + 1
        if span % step == 0 and first >= oldest(engine, gran, now):
            return Span(f"{step}s", first, last, first * step, (last + 1) * step)
    raise ValueError(f"rule {rule}: no continuous granularity keeps a {span}s window")


def _calendar_span(engine: Engine, unit: CalendarUnit, first: int, last: int) -> Span:
    calendar = engine.calendars[unit]
    start, end = calendar.bounds(first)[0], calendar.bounds(last)[1]
    return Span(unit, first, last, int(start.timestamp()), int(end.timestamp()))


def baseline_span(engine: Engine, rule: DropRule, window: Span, now: int) -> Span:
    """The buckets of ``rule``'s baseline, just before its ``window``; ``ValueError`` when
    the engine does not keep them."""
    if rule.window.unit is not None:
        unit = rule.window.unit
        if engine.config.periods_kept[unit] < rule.baseline.periods + 1:
            raise ValueError(f"rule {rule.name}: the engine keeps too few {unit}s")
        return _calendar_span(engine, unit, window.first - rule.baseline.periods,
                              window.first - 1)
    span = rule.baseline.span
    for step, gran in _steps(engine):
        last = window.start // step - 1
        first = last - span // step + 1
        if span % step == 0 and first >= oldest(engine, gran, now):
            return Span(f"{step}s", first, last, first * step, (last + 1) * step)
    raise ValueError(f"rule {rule.name}: no continuous granularity keeps a {span}s baseline")


class Dense:
    """Dense sums per span, computed once per evaluation and shared between rules."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.n_series = len(engine.series)
        self._cache: dict[tuple[str, int, int], FloatArray] = {}

    def __call__(self, span: Span) -> FloatArray:
        key = (span.granularity, span.first, span.last)
        found = self._cache.get(key)
        if found is None:
            gran = self.engine.granularities[span.granularity]
            found = self._cache[key] = gran.dense(span.first, span.last, self.n_series)
        return found


def select_series(engine: Engine, rule: AlertRule) -> list[int]:
    """The ids of the series ``rule`` watches: its metric in its scopes (``ValueError``
    when a scope is not configured)."""
    scopes = set(engine.config.scopes if rule.scopes is None else rule.scopes)
    missing = scopes - set(engine.config.scopes)
    if missing:
        raise ValueError(f"rule {rule.name}: scopes {sorted(missing)} are not configured")
    return [sid for sid, (dims, _, metric) in enumerate(engine.series.keys)
            if metric == rule.metric and dims in scopes]


def copies(engine: Engine, sids: list[int], *aggregates: FloatArray) -> list[bool]:
    """Which of ``sids`` repeat a coarser series among ``sids``: a series whose rows in
    every one of ``aggregates`` (n and sums, per series id) equal those of an ancestor
    (the same values on a subset of its dimensions, e.g. ``segment=unspecified`` when
    segment has one value, and the overall series) tests nothing its ancestor does not.

    Such a series is one test with its ancestor, not a second one: it is left out of
    the multiple-testing family and alerts only through the coarsest scope.
    """
    keys = engine.series.keys
    child, parent = _ancestors(tuple(keys[sid] for sid in sids))
    out = np.zeros(len(sids), dtype=bool)
    if len(child):
        ids = np.asarray(sids, dtype=np.int64)
        same = np.ones(len(child), dtype=bool)
        for a in aggregates:
            rows = a.reshape(a.shape[0], -1)
            same &= (rows[ids[child]] == rows[ids[parent]]).all(1)
        out[child[same]] = True
    return out.tolist()


@lru_cache(maxsize=64)
def _ancestors(keys: tuple[SeriesKey, ...]) -> tuple[IntArray, IntArray]:
    """Every (position, ancestor's position) pair among ``keys``: an ancestor has the
    same metric and values on a proper subset of the dimensions."""
    index = {key: i for i, key in enumerate(keys)}
    child: list[int] = []
    parent: list[int] = []
    for i, (dims, values, metric) in enumerate(keys):
        for size in range(len(dims)):
            for picked in combinations(range(len(dims)), size):
                found = index.get((tuple(dims[j] for j in picked),
                                   tuple(values[j] for j in picked), metric))
                if found is not None:
                    child.append(i)
                    parent.append(found)
    return np.asarray(child, dtype=np.int64), np.asarray(parent, dtype=np.int64)
