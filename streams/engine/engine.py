"""The monitoring engine: events in, windows, journeys, customers and pulse studies out.

It knows nothing of Kafka or HTTP. A runner hands it batches of validated events;
it drops duplicates (by event id, within a horizon) and holds back late events (older
than the watermark minus the allowed lateness) and returns both, so nothing is lost
silently; everything else updates mergeable aggregates per (series, time bucket),
computed for the whole batch with numpy.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
import numpy as np

from schemas.event import TouchpointEvent
from streams.engine.buckets import CalendarBucketing, FixedBucketing, IntArray
from streams.engine.config import CALENDAR_UNITS, DIMENSIONS, EngineConfig
from streams.engine.customers import CustomerBook
from streams.engine.dimensions import NONE, DimensionCodes
from streams.engine.journeys import JourneyTracker
from streams.engine.metrics import NCOLS, FloatArray, Observation, Score, observe, rows, score
from streams.engine.pulses import PulseError, PulseStudy
from streams.engine.store import Granularity, SeriesKey, SeriesRegistry, group_sum

log = logging.getLogger(__name__)

Family = Literal["continuous", "periodic"]
SNAPSHOT_VERSION: Final = 1
_METRIC_RADIX: Final = 1024
_NEVER: Final = -(2**62)


@dataclass(slots=True)
class IngestResult:
    """What became of a batch: counted, or handed back as duplicate or late."""

    accepted: int = 0
    duplicates: list[TouchpointEvent] = field(default_factory=list)
    late: list[TouchpointEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowRef:
    """Which window a score belongs to, and its [start, end) bounds in UTC."""

    family: str
    name: str
    start: datetime
    end: datetime
    label: str


@dataclass(frozen=True, slots=True)
class ScopeScore:
    """One metric in one scope value and window, against its target."""

    scope: dict[str, str]
    metric: str
    score: Score
    window: WindowRef
    target: float | None
    gap: float | None
    latest_event: datetime | None
    previous: Score | None = None

    @property
    def change(self) -> float | None:
        """Change from the previous period (periodic windows only)."""
        if self.previous is None or self.previous.n == 0 or self.score.n == 0:
            return None
        return self.score.value - self.previous.value


def event_seconds(event: TouchpointEvent) -> int:
    """Event time as whole epoch seconds."""
    return int(event.occurred_at.timestamp() // 1)


def _dim(event: TouchpointEvent, dimension: str) -> str:
    value = getattr(event, dimension)
    return NONE if value is None else str(value)


class Engine:
    """Windows, scores, journeys, customers and pulses over a stream of events."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.dims = {d: DimensionCodes(d, config.cap(d)) for d in config.scope_dimensions()}
        self._check_packing()
        self.series = SeriesRegistry()
        self.metrics: list[str] = []
        self._metric_codes: dict[str, int] = {}
        self._series_cache: dict[tuple[int, int], int] = {}
        self.latest = np.full(0, _NEVER, dtype=np.int64)
        self.steps: dict[str, int] = {w.name: w.step for w in config.continuous}
        self.granularities: dict[str, Granularity] = {}
        for step in sorted(set(self.steps.values())):
            spans = [w.span for w in config.continuous if w.step == step]
            keep = 2 * max(spans) // step + -(-config.allowed_lateness // step) + 1
            self.granularities[f"{step}s"] = Granularity(FixedBucketing(step), keep)
        self.calendars = {u: CalendarBucketing(u, config.timezone) for u in CALENDAR_UNITS}
        for unit, calendar in self.calendars.items():
            self.granularities[unit] = Granularity(calendar, config.periods_kept[unit])
        self.watermark: int | None = None
        self.seen: dict[str, int] = {}
        self._seen_mark = 1024
        self.counters: Counter[str] = Counter()
        self.journeys = JourneyTracker(config.journey_timeout, config.journeys_kept)
        self.customers = CustomerBook(config.customers)
        self.pulses: dict[str, PulseStudy] = {}
        self._people_watermark: int | None = None

    def _check_packing(self) -> None:
        for scope in self.config.scopes:
            radix = _METRIC_RADIX
            for dim in scope:
                radix *= self.dims[dim].radix
            if radix >= 2**62:
                raise ValueError(f"scope {scope}: dimension caps too large to pack")

    # -- ingestion -------------------------------------------------------------------

    def ingest(self, events: Iterable[TouchpointEvent]) -> IngestResult:
        """Count a batch of validated events, in arrival order."""
        result = IngestResult()
        accepted: list[TouchpointEvent] = []
        times: list[int] = []
        wm = self.watermark
        lateness = self.config.allowed_lateness
        seen = self.seen
        for event in events:
            at = event_seconds(event)
            if event.event_id in seen:
                result.duplicates.append(event)
                continue
            seen[event.event_id] = at
            if wm is not None and at < wm - lateness:
                result.late.append(event)
                continue
            accepted.append(event)
            times.append(at)
            if wm is None or at > wm:
                wm = at
        self.watermark = wm
        self.counters["duplicate"] += len(result.duplicates)
        self.counters["late"] += len(result.late)
        if accepted and wm is not None:
            self._aggregate(accepted, np.asarray(times, dtype=np.int64), wm)
        result.accepted = len(accepted)
        self.counters["accepted"] += len(accepted)
        self._prune_seen()
        return result

    def _aggregate(self, events: Sequence[TouchpointEvent], times: IntArray,
                   watermark: int) -> None:
        observations = [observe(e) for e in events]
        vectors = rows(observations)
        self.counters["not_applicable"] += int(vectors[:, 5].sum())
        metric_codes = np.fromiter(
            (self._metric(o.metric) for o in observations), dtype=np.int64, count=len(events)
        )
        codes = {
            d: np.asarray(reg.codes([_dim(e, d) for e in events]), dtype=np.int64)
            for d, reg in self.dims.items()
        }
        series = np.concatenate([
            self._series_ids(i, scope, metric_codes, codes)
            for i, scope in enumerate(self.config.scopes)
        ])
        n_scopes = len(self.config.scopes)
        all_vectors = np.tile(vectors, (n_scopes, 1))
        all_times = np.tile(times, n_scopes)
        self._grow_latest()
        np.maximum.at(self.latest, series, all_times)
        n_series = len(self.series)
        for gran in self.granularities.values():
            buckets = np.tile(gran.bucketing.ids(times), n_scopes)
            low = int(buckets.min())
            keys, sums = group_sum((buckets - low) * n_series + series, all_vectors)
            gran.add(keys // n_series + low, keys % n_series, sums)
            gran.expire(int(gran.bucketing.ids(np.array([watermark]))[0]))
        self._pulses(events, observations, times, vectors)
        self._people(events, observations, times)
        self.journeys.sweep(watermark)

    def _metric(self, name: str) -> int:
        code = self._metric_codes.get(name)
        if code is None:
            code = self._metric_codes[name] = len(self.metrics)
            self.metrics.append(name)
        return code

    def _series_ids(self, index: int, scope: tuple[str, ...], metric_codes: IntArray,
                    codes: dict[str, IntArray]) -> IntArray:
        packed = metric_codes.copy()
        for dim in scope:
            packed = packed * self.dims[dim].radix + codes[dim]
        distinct, inverse = np.unique(packed, return_inverse=True)
        ids = np.empty(len(distinct), dtype=np.int64)
        for i, key in enumerate(distinct.tolist()):
            sid = self._series_cache.get((index, key))
            if sid is None:
                sid = self._series_cache[(index, key)] = self.series.id(
                    self._unpack(scope, key)
                )
            ids[i] = sid
        out: IntArray = ids[inverse]
        return out

    def _unpack(self, scope: tuple[str, ...], key: int) -> SeriesKey:
        values: list[str] = []
        for dim in reversed(scope):
            reg = self.dims[dim]
            key, code = divmod(key, reg.radix)
            values.append(reg.values[code])
        return scope, tuple(reversed(values)), self.metrics[key]

    def _grow_latest(self) -> None:
        missing = len(self.series) - len(self.latest)
        if missing > 0:
            self.latest = np.concatenate(
                (self.latest, np.full(max(missing, len(self.latest)), _NEVER, dtype=np.int64))
            )

    def _pulses(self, events: Sequence[TouchpointEvent], observations: list[Observation],
                times: IntArray, vectors: FloatArray) -> None:
        for study in self.pulses.values():
            if not study.active:
                continue
            match = np.ones(len(events), dtype=np.bool_)
            for dim, allowed in study.filter.items():
                match &= np.fromiter((_dim(e, dim) in allowed for e in events),
                                     dtype=np.bool_, count=len(events))
            for target, lo, hi in (("study", study.start, study.end),
                                   ("baseline", study.baseline_start, study.baseline_end)):
                idx = np.flatnonzero(match & (times >= lo) & (times < hi))
                if len(idx):
                    study.add(target, [observations[i].metric for i in idx.tolist()],
                              vectors[idx])

    def _people(self, events: Sequence[TouchpointEvent], observations: list[Observation],
                times: IntArray) -> None:
        journeys, customers = self.journeys, self.customers
        running = self._people_watermark
        for event, obs, at in zip(events, observations, times.tolist(), strict=True):
            # Time out journeys as the watermark passes them, event by event, so the
            # result never depends on how events were batched.
            if running is None or at > running:
                running = at
                journeys.sweep(running)
            customers.add(event.customer_id, event.segment, obs.satisfaction, at)
            if event.journey_id is not None:
                journeys.add(event.journey_id, event.customer_id, event.journey_type or NONE,
                             at, event.channel, event.touchpoint, event.stage,
                             obs.satisfaction, event.journey_end)
        self._people_watermark = running

    def _prune_seen(self) -> None:
        if len(self.seen) < 2 * self._seen_mark or self.watermark is None:
            return
        horizon = self.watermark - self.config.dedupe_horizon
        self.seen = {k: t for k, t in self.seen.items() if t >= horizon}
        self._seen_mark = max(1024, len(self.seen))

    # -- queries ---------------------------------------------------------------------

    def window_names(self, family: Family) -> list[str]:
        """Names of the windows of a family."""
        if family == "continuous":
            return [w.name for w in self.config.continuous]
        return list(CALENDAR_UNITS)

    def _window(self, family: Family, name: str, at: int | None,
                offset: int = 0) -> tuple[Granularity, int, int, WindowRef] | None:
        if name not in self.window_names(family):
            known = ", ".join(self.window_names(family))
            raise KeyError(f"unknown {family} window {name!r} (known: {known})")
        now = self.watermark if at is None else at
        if now is None:
            return None
        if family == "continuous":
            spec = next(w for w in self.config.continuous if w.name == name)
            gran = self.granularities[f"{spec.step}s"]
            last = now // spec.step - offset * (spec.span // spec.step)
            first = last - spec.span // spec.step + 1
            start = datetime.fromtimestamp(first * spec.step, UTC)
            end = datetime.fromtimestamp((last + 1) * spec.step, UTC)
            return gran, first, last, WindowRef(family, name, start, end, name)
        gran = self.granularities[name]
        bucketing = next(c for unit, c in self.calendars.items() if unit == name)
        period = int(bucketing.ids(np.array([now], dtype=np.int64))[0]) - offset
        start, end = bucketing.bounds(period)
        return gran, period, period, WindowRef(family, name, start, end,
                                               bucketing.label(period))

    def scores(
        self,
        family: Family,
        window: str,
        where: dict[str, str] | None = None,
        scope: tuple[str, ...] | None = None,
        metric: str | None = None,
        at: int | None = None,
    ) -> list[ScopeScore]:
        """Scores of one window, for the scope values that match.

        ``where`` picks exact scope values (``{"channel": "chat"}``); ``scope`` lists
        every value of a scope (``("channel",)``); neither means the overall scope.
        Periodic scores carry the previous period for period-over-period change.
        """
        dims, wanted = self._selection(where, scope)
        found = self._window(family, window, at)
        if found is None:
            return []
        gran, first, last, ref = found
        dense = gran.dense(first, last, len(self.series))
        previous: FloatArray | None = None
        prev = self._window(family, window, at, offset=1) if family == "periodic" else None
        if prev is not None:
            previous = prev[0].dense(prev[1], prev[2], len(self.series))
        out: list[ScopeScore] = []
        for sid, (sdims, values, m) in enumerate(self.series.keys):
            if sdims != dims or (metric is not None and m != metric):
                continue
            if wanted is not None and values != wanted:
                continue
            vec = dense[sid]
            if vec[0] == 0 and vec[5] == 0:
                continue
            out.append(self._scope_score(sid, vec, ref,
                                         None if previous is None else previous[sid]))
        out.sort(key=lambda s: (tuple(s.scope.values()), s.metric))
        return out

    def _selection(self, where: dict[str, str] | None,
                   scope: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        if where:
            dims = tuple(sorted(where, key=_dimension_order))
            if dims not in self.config.scopes:
                raise KeyError(f"no configured scope groups by {', '.join(dims)}")
            return dims, tuple(where[d] for d in dims)
        if scope is not None:
            dims = tuple(sorted(scope, key=_dimension_order))
            if dims not in self.config.scopes:
                raise KeyError(f"no configured scope groups by {', '.join(dims) or 'nothing'}")
            return dims, None
        return (), ()

    def _scope_score(self, sid: int, vec: FloatArray, ref: WindowRef,
                     previous: FloatArray | None) -> ScopeScore:
        dims, values, metric = self.series.keys[sid]
        scope = dict(zip(dims, values, strict=True))
        sc = score(metric, vec)
        target = self.target(metric, scope)
        gap = None if target is None or sc.n == 0 else sc.value - target
        latest = int(self.latest[sid])
        return ScopeScore(
            scope, metric, sc, ref, target, gap,
            None if latest == _NEVER else datetime.fromtimestamp(latest, UTC),
            None if previous is None else score(metric, previous),
        )

    def target(self, metric: str, scope: dict[str, str]) -> float | None:
        """The target for ``metric`` in ``scope``: by segment, else offering, else default."""
        best: tuple[int, float] | None = None
        for t in self.config.targets:
            if t.metric != metric and not (t.metric == "rating" and metric.startswith("rating:")):
                continue
            if t.segment is not None and scope.get("segment") != t.segment:
                continue
            if t.offering is not None and scope.get("offering") != t.offering:
                continue
            rank = (2 if t.segment is not None else 0) + (1 if t.offering is not None else 0)
            if best is None or rank > best[0]:
                best = (rank, t.value)
        return None if best is None else best[1]

    def vector(self, family: Family, window: str, key: SeriesKey,
               at: int | None = None, offset: int = 0) -> FloatArray:
        """The aggregate vector of one series in one window (zeros when unseen)."""
        sid = self.series.get(key)
        found = self._window(family, window, at, offset)
        if sid is None or found is None:
            return np.zeros(NCOLS, dtype=np.float64)
        gran, first, last, _ = found
        return gran.series_vector(sid, first, last)

    # -- pulses ----------------------------------------------------------------------

    def start_pulse(self, pulse_id: str, name: str, filter: dict[str, Sequence[str]],
                    start: int, end: int, baseline_start: int, baseline_end: int) -> PulseStudy:
        """Start a pulse study; it counts matching events from now on."""
        if pulse_id in self.pulses:
            raise PulseError("pulse_id", f"a study with id {pulse_id!r} exists")
        for dim, values in filter.items():
            if isinstance(values, str):
                raise PulseError(f"filter.{dim}", "must be a list of values, not a string")
        study = PulseStudy(pulse_id, name, {k: tuple(v) for k, v in filter.items()}, start,
                           end, baseline_start, baseline_end,
                           self.watermark if self.watermark is not None else start)
        self.pulses[pulse_id] = study
        return study

    def end_pulse(self, pulse_id: str) -> PulseStudy:
        """Stop a study counting; its results stay readable."""
        study = self.pulses.get(pulse_id)
        if study is None:
            raise PulseError("pulse_id", f"no study with id {pulse_id!r}")
        if study.ended_at is None:
            study.ended_at = self.watermark if self.watermark is not None else study.start
        return study

    # -- state -----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """All state as bytes; ``Engine.restore`` continues exactly where this left off."""
        state: dict[str, Any] = {
            "version": SNAPSHOT_VERSION,
            "config": self.config.model_dump_json(),
            "dims": {d: reg.state() for d, reg in self.dims.items()},
            "series": self.series.state(),
            "metrics": self.metrics,
            "latest": self.latest.tobytes(),
            "granularities": {n: g.state() for n, g in self.granularities.items()},
            "watermark": self.watermark,
            "seen": self.seen,
            "counters": dict(self.counters),
            "journeys": self.journeys.state(),
            "customers": self.customers.state(),
            "pulses": [p.state() for p in self.pulses.values()],
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def restore(cls, config: EngineConfig, data: bytes) -> Engine:
        """An engine rebuilt from a snapshot taken with the same configuration."""
        state = msgspec.msgpack.decode(data)
        if state["version"] != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {state['version']} is not {SNAPSHOT_VERSION}")
        if EngineConfig.model_validate_json(state["config"]) != config:
            raise ValueError("snapshot was taken with a different engine configuration")
        engine = cls(config)
        for d, reg_state in state["dims"].items():
            engine.dims[d].restore(reg_state)
        engine.series = SeriesRegistry.from_state(state["series"])
        for name in state["metrics"]:
            engine._metric(name)
        for sid, (dims, values, metric) in enumerate(engine.series.keys):
            key = engine._metric_codes[metric]
            for dim, value in zip(dims, values, strict=True):
                code = engine.dims[dim].known(value)
                key = key * engine.dims[dim].radix + (0 if code is None else code)
            engine._series_cache[(engine.config.scopes.index(dims), key)] = sid
        engine.latest = np.frombuffer(state["latest"], dtype=np.int64).copy()
        for n, g_state in state["granularities"].items():
            engine.granularities[n].restore(g_state)
        engine.watermark = state["watermark"]
        engine._people_watermark = state["watermark"]
        engine.seen = dict(state["seen"])
        engine._seen_mark = max(1024, len(engine.seen))
        engine.counters = Counter(state["counters"])
        engine.journeys.restore(state["journeys"])
        engine.customers.restore(state["customers"])
        engine.pulses = {p["pulse_id"]: PulseStudy.from_state(p) for p in state["pulses"]}
        return engine

    def folded(self) -> dict[str, int]:
        """How many values each dimension folded into ``other`` past its cap."""
        return {d: reg.folded for d, reg in self.dims.items()}


def _dimension_order(dim: str) -> int:
    return DIMENSIONS.index(dim) if dim in DIMENSIONS else len(DIMENSIONS)
