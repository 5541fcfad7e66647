"""The monitoring engine: events in, windows, journeys, customers and pulse studies out.

It knows nothing of Kafka or HTTP. A runner hands it batches of validated events;
it drops duplicates (by event id, within the dedupe horizon) and holds back late events
(older than the watermark minus ``lateness_horizon``) and returns both, so nothing is
lost silently; everything else updates mergeable aggregates per (series, time bucket),
computed for the whole batch with numpy.

An answer counts in the buckets of its event time whenever it arrives, up to the
lateness horizon (35 days by default): in every granularity whose kept range still holds
its bucket (a 3-day-late answer lands in the hourly buckets and the calendar periods,
not in the minute buckets, kept ~3 h, whose windows do not cover it anyway), so memory
does not grow with the horizon. An answer more than ``allowed_lateness`` behind the
watermark it meets is counted as usual and, in each bucket that had closed (the
watermark had passed its end by ``allowed_lateness``), noted per series in the bucket's
``late`` and ``revised`` counters: every window covering the bucket says how many late
answers it holds and when it was last revised (``ScopeScore.late_answers``,
``revised_at``). Nothing is noted per event on the on-time path.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, Literal

import msgspec
import numpy as np

from schemas.event import TouchpointEvent
from streams.engine.buckets import CalendarBucketing, FixedBucketing, IntArray
from streams.engine.config import CALENDAR_UNITS, DIMENSIONS, EngineConfig
from streams.engine.customers import CustomerBook
from streams.engine.dedupe import BUCKET, SeenIds, bucket_width
from streams.engine.dimensions import NONE, DimensionCodes
from streams.engine.journeys import JourneyTracker
from streams.engine.metrics import (
    NCOLS,
    BoolArray,
    CompactRows,
    FloatArray,
    Observations,
    Score,
    distinct_inverse,
    observe_many,
    score,
)
from streams.engine.pulses import PulseError, PulseStudy, filter_series
from streams.engine.pulses import seed as seed_pulse
from streams.engine.store import (
    BucketTable,
    Granularity,
    SeriesKey,
    SeriesRegistry,
    group_compact,
    regroup,
)

log = logging.getLogger(__name__)

Family = Literal["continuous", "periodic"]
SNAPSHOT_VERSION: Final = 3
"""3: the dedupe memory in two tiers (hot and ``frozen``), buckets with their ``late`` and
``revised`` counters; 2: the dedupe memory as digests (``SeenIds``); versions 1 (ids and
times) and 2 still restore, and so does a snapshot whose configuration differs only in
the horizons (``EngineConfig.same_state``)."""
_METRIC_RADIX: Final = 1024
_NEVER: Final = -(2**62)
_FOREVER: Final = 2**61
"""A lateness horizon that never applies (a backfill: ``kept_since`` bounds it)."""
_GROUP_ROWS: Final = 1 << 17
"""About how many (event, scope) rows one grouping call takes, over granularities."""
_Behind = tuple[IntArray, IntArray]
"""Accepted events behind the allowed lateness: their indexes, the watermark each met."""


@dataclass(slots=True)
class IngestResult:
    """What became of a batch: counted, or handed back as duplicate or late."""

    accepted: int = 0
    duplicates: list[TouchpointEvent] = field(default_factory=list)
    late: list[TouchpointEvent] = field(default_factory=list)
    too_old_since: int | None = None
    """A backfill's bound (``Engine.kept_since``): its ``late`` events are older."""


@dataclass(frozen=True, slots=True)
class Erased:
    """What ``Engine.erase_customer`` removed, for the audit trail (counts, no ids)."""

    customers: int = 0
    """1 when the customer's history and baseline were held, else 0."""
    journeys: int = 0
    """Their journeys, open and ended."""

    @property
    def total(self) -> int:
        """Everything removed; 0 when there was nothing (an erasure repeated)."""
        return self.customers + self.journeys

    def as_dict(self) -> dict[str, int]:
        """As plain data (the audit record's ``removed``)."""
        return {"customers": self.customers, "journeys": self.journeys}


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
    vector: FloatArray | None = field(default=None, compare=False, repr=False)
    """The aggregate vector the score was computed from."""
    late_answers: int = 0
    """Answers in the window that arrived after their bucket had closed (more than
    ``allowed_lateness`` behind the watermark past its end): for a calendar period,
    those that arrived after the period closed."""
    revised_at: datetime | None = None
    """The watermark (newest event time seen) when the last of those was counted: when
    the window was last revised after (a bucket of) it closed; None when never."""

    @property
    def change(self) -> float | None:
        """Change from the previous period (periodic windows only)."""
        if self.previous is None or self.previous.n == 0 or self.score.n == 0:
            return None
        return self.score.value - self.previous.value


@dataclass(frozen=True, slots=True)
class ScoreSeries:
    """One scope value's score per bucket: (start, end, score) oldest first."""

    scope: dict[str, str]
    metric: str
    step: str
    points: list[tuple[datetime, datetime, Score]]


def _step_name(seconds: int) -> str:
    """60 -> 1m, 3600 -> 1h, 86400 -> 1d, 90 -> 90s."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def event_seconds(event: TouchpointEvent) -> int:
    """Event time as whole epoch seconds."""
    return int(event.occurred_at.timestamp() // 1)


_Column = Callable[[Sequence[TouchpointEvent]], list[Any]]

# A list comprehension with the attribute spelled out reads a field of every event
# several times faster than ``map(attrgetter(name), events)``: these are the fields
# read from every batch (others, such as pulse filters on rarer dimensions, use
# ``attrgetter``).
_COLUMNS: Final[dict[str, _Column]] = {
    "event_id": lambda events: [e.event_id for e in events],
    "customer_id": lambda events: [e.customer_id for e in events],
    "segment": lambda events: [e.segment for e in events],
    "offering": lambda events: [e.offering for e in events],
    "journey_id": lambda events: [e.journey_id for e in events],
    "journey_type": lambda events: [e.journey_type for e in events],
    "journey_end": lambda events: [e.journey_end for e in events],
    "stage": lambda events: [e.stage for e in events],
    "channel": lambda events: [e.channel for e in events],
    "touchpoint": lambda events: [e.touchpoint for e in events],
    "owner": lambda events: [e.owner for e in events],
}


class _Fields:
    """Fields of a batch of events as lists, each read once."""

    def __init__(self, events: Sequence[TouchpointEvent]) -> None:
        self._events = events
        self._lists: dict[str, list[Any]] = {}

    def get(self, name: str) -> list[Any]:
        """The value of field ``name`` of every event."""
        found = self._lists.get(name)
        if found is None:
            column = _COLUMNS.get(name)
            found = self._lists[name] = (
                column(self._events) if column is not None
                else list(map(attrgetter(name), self._events))
            )
        return found


def _matches(values: list[Any], allowed: tuple[str, ...]) -> BoolArray:
    """Which dimension values (None meaning ``none``) a pulse filter allows."""
    verdict = {v: (NONE if v is None else str(v)) in allowed for v in set(values)}
    return np.fromiter(map(verdict.__getitem__, values), dtype=np.bool_, count=len(values))


_MEMO_SIZE: Final = 256
"""Distinct ``scores`` questions remembered per engine version."""
_DENSE_MEMO_SIZE: Final = 4
"""Window sums remembered per engine version (a window's and its previous period's)."""


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
        self.seen = SeenIds(bucket_width(config.dedupe_span))
        self.counters: Counter[str] = Counter()
        self.journeys = JourneyTracker(config.journey_timeout, config.journeys_kept)
        self.customers = CustomerBook(config.customers)
        self.pulses: dict[str, PulseStudy] = {}
        self._people_watermark: int | None = None
        self._changed: dict[str, set[int]] = {name: set() for name in self.granularities}
        self.version = 0
        """Bumped by every change that can move a score (``ingest``; the merged view
        when it applies partials): ``scores`` answers repeated questions from a memo
        while it stays the same."""
        self._memo: dict[tuple[Any, ...], list[ScopeScore]] = {}
        self._dense_memo: dict[tuple[int, int, int, int], FloatArray] = {}
        self._memo_version = -1

    def _check_packing(self) -> None:
        for scope in self.config.scopes:
            radix = _METRIC_RADIX
            for dim in scope:
                radix *= self.dims[dim].radix
            if radix >= 2**62:
                raise ValueError(f"scope {scope}: dimension caps too large to pack")

    # -- ingestion -------------------------------------------------------------------

    def ingest(self, events: Iterable[TouchpointEvent],
               stamps: FloatArray | None = None, *, backfill: bool = False) -> IngestResult:
        """Count a batch of validated events, in arrival order.

        ``stamps``, when given, holds each event's ``occurred_at`` as epoch seconds
        (``DecodedBatch.stamps``), so that it is not computed twice.

        ``backfill``: history loaded on purpose. The lateness horizon does not apply;
        the bound is what the state keeps: an answer older than the oldest bucket any
        granularity keeps (``kept_since``, at the watermark after the batch) is handed
        back in ``late`` (``IngestResult.too_old_since`` says from when the state keeps),
        everything else counts where its buckets are kept.
        """
        batch = events if isinstance(events, list) else list(events)
        result = IngestResult()
        self.version += 1
        if stamps is None:
            stamps = np.array([e.occurred_at.timestamp() for e in batch], dtype=np.float64)
        times = np.floor(stamps).astype(np.int64)  # event_seconds of each
        horizon = self.config.lateness_horizon
        if backfill:
            batch, times = self._too_old(batch, times, result)
            horizon = _FOREVER
        at_list: list[int] = times.tolist()
        new = self.seen.add([e.event_id for e in batch], times, backfill)
        if new is None:
            # No duplicates (the usual case): dedupe and lateness for the whole batch.
            accepted, kept, wm, behind = self._drop_late(batch, times, result, horizon)
        else:
            accepted, kept, wm, behind = self._dedupe(batch, new, at_list, result, horizon)
        self.watermark = wm
        self.counters["duplicate"] += len(result.duplicates)
        self.counters["late"] += len(result.late)
        if accepted and wm is not None:
            self._aggregate(accepted, kept, wm, behind)
        result.accepted = len(accepted)
        self.counters["accepted"] += len(accepted)
        self._prune_seen()
        return result

    def _too_old(self, batch: list[TouchpointEvent], times: IntArray, result: IngestResult,
                 ) -> tuple[list[TouchpointEvent], IntArray]:
        """Hand back the events of a backfill older than anything the state keeps at the
        watermark the batch leads to; the rest, with their times."""
        if not batch:
            return batch, times
        top = int(times.max())
        since = self.kept_since(top if self.watermark is None else max(self.watermark, top))
        result.too_old_since = since
        old = times < since
        if not old.any():
            return batch, times
        kept: list[TouchpointEvent] = []
        for event, is_old in zip(batch, old.tolist(), strict=True):
            (result.late if is_old else kept).append(event)
        return kept, times[~old]

    def kept_since(self, watermark: int | None = None) -> int:
        """The start (epoch seconds) of the oldest bucket any granularity keeps at
        ``watermark`` (default: the engine's): older answers count nowhere."""
        at = self.watermark if watermark is None else watermark
        if at is None:
            return _NEVER
        now = np.array([at], dtype=np.int64)
        return min(int(gran.bucketing.bounds(int(gran.bucketing.ids(now)[0]) - gran.keep + 1
                                             )[0].timestamp())
                   for gran in self.granularities.values())

    def _drop_late(self, batch: list[TouchpointEvent], times: IntArray, result: IngestResult,
                   horizon: int,
                   ) -> tuple[list[TouchpointEvent], IntArray, int | None, _Behind | None]:
        """Hold back the late events of a batch without duplicates.

        Returns the accepted events, their times, the new watermark and the accepted
        events behind the allowed lateness (``_Behind``; None when none is).
        """
        wm = self.watermark
        if not batch:
            return batch, times, wm, None
        # The watermark each event meets: late events never raise it, so a running max.
        before = np.empty(len(times), dtype=np.int64)
        before[0] = _NEVER if wm is None else wm
        np.maximum(np.maximum.accumulate(times)[:-1], before[0], out=before[1:])
        behind = (times < before - self.config.allowed_lateness) & (before != _NEVER)
        top = int(times.max())
        wm = top if wm is None or top > wm else wm
        if not behind.any():  # the usual case: every event on time
            return batch, times, wm, None
        late = behind & (times < before - horizon)
        if late.any():
            accepted: list[TouchpointEvent] = []
            dropped: list[TouchpointEvent] = []
            for event, is_late in zip(batch, late.tolist(), strict=True):
                (dropped if is_late else accepted).append(event)
            result.late += dropped
            # Handed back, never counted: not remembered, so a resend or a backfill of
            # them is not a duplicate.
            self.seen.forget([e.event_id for e in dropped], times[late])
            kept = ~late
            times, before, behind = times[kept], before[kept], behind[kept]
        else:
            accepted = batch
        picked = np.flatnonzero(behind)
        return accepted, times, wm, (picked, before[picked]) if len(picked) else None

    def _dedupe(self, batch: list[TouchpointEvent], new: list[bool], times: list[int],
                result: IngestResult, horizon: int,
                ) -> tuple[list[TouchpointEvent], IntArray, int | None, _Behind | None]:
        """Drop duplicates and hold back late events, event by event.

        ``new`` says, for each event, whether its id was new (``SeenIds.add`` has already
        remembered it). Returns what ``_drop_late`` returns.
        """
        accepted: list[TouchpointEvent] = []
        kept: list[int] = []
        picked: list[int] = []
        met: list[int] = []
        wm = self.watermark
        lateness = self.config.allowed_lateness
        late_first: dict[str, int] = {}
        """Ids whose first copy in this batch was late, with its time: a later copy is
        not a duplicate of it (a late answer is not remembered, ``_forget_late``)."""
        for event, is_new, at in zip(batch, new, times, strict=True):
            if not is_new and event.event_id not in late_first:
                result.duplicates.append(event)
                continue
            if wm is not None and at < wm - lateness:
                if at < wm - horizon:
                    result.late.append(event)
                    late_first.setdefault(event.event_id, at)
                    continue
                picked.append(len(accepted))
                met.append(wm)
            late_first.pop(event.event_id, None)  # counted: remembered from now on
            accepted.append(event)
            kept.append(at)
            if wm is None or at > wm:
                wm = at
        if late_first:
            self.seen.forget(list(late_first), np.fromiter(late_first.values(), np.int64,
                                                           len(late_first)))
        behind = ((np.array(picked, dtype=np.int64), np.array(met, dtype=np.int64))
                  if picked else None)
        return accepted, np.array(kept, dtype=np.int64), wm, behind

    def _aggregate(self, events: Sequence[TouchpointEvent], times: IntArray,
                   watermark: int, behind: _Behind | None = None) -> None:
        observations = observe_many(events)
        compact = observations.compact()
        self.counters["not_applicable"] += int(np.count_nonzero(~observations.scored))
        metric_codes = np.array([self._metric(m) for m in observations.metrics],
                                dtype=np.int64)[observations.metric]
        fields = _Fields(events)
        codes = {d: reg.encode(fields.get(d)) for d, reg in self.dims.items()}
        series = self._series_ids(metric_codes, codes)
        n_scopes = len(self.config.scopes)
        self._grow_latest()
        np.maximum.at(self.latest, series, np.tile(times, n_scopes))
        all_rows = compact.tile(n_scopes)
        # The bucket ids of every event time, then of the watermark (the newest to keep).
        bucket_ids = self._bucket_ids(np.append(times, watermark))
        grans = list(self.granularities.values())
        rest = self._add_by_class(grans, bucket_ids, series, all_rows, n_scopes)
        # Small batches group several granularities at once (fewer numpy calls); large
        # ones one at a time (arrays that stay in cache).
        step = max(1, _GROUP_ROWS // (n_scopes * len(times)))
        for i in range(0, len(rest), step):
            picked = rest[i : i + step]
            self._add_grouped([grans[g] for g in picked], [bucket_ids[g] for g in picked],
                              series, all_rows, n_scopes)
        changed = list(self._changed.values())
        for g in rest:  # (those served by class noted their buckets already)
            changed[g].update(np.unique(bucket_ids[g][:-1]).tolist())
        if behind is not None:
            self._revise(behind, bucket_ids, series, len(times))
        self._pulses(observations, compact, times, fields)
        self._people(observations, times, fields)
        self.journeys.sweep(watermark)

    def take_changed(self) -> dict[str, set[int]]:
        """The buckets, per granularity, that counted events since the last call (an
        expired bucket may be among them: look it up before use)."""
        changed = self._changed
        self._changed = {name: set() for name in self.granularities}
        return changed

    def _add_by_class(self, grans: list[Granularity], bucket_ids: list[IntArray],
                      series: IntArray, rows: CompactRows, n_scopes: int) -> list[int]:
        """Add a batch to every granularity from its rows grouped once by (time class,
        series), and note the buckets it changed; returns the indexes of the
        granularities left to the caller: all of them when the batch's times spread too
        wide to pack into one key, else none.

        A time class is one combination of buckets over all granularities: a batch
        mostly spans seconds to minutes, so its events fall in a few classes. Where no
        two classes share a bucket (the finest granularity), the groups are the
        (bucket, series) groups themselves, with exactly the sums grouping by (bucket,
        series) gives (the same rows, in the same order); where classes share buckets
        (coarser ones), ``regroup`` adds the groups up, bit for bit the same too.
        """
        n_series = len(self.series)
        classes = np.zeros(len(bucket_ids[0]) - 1, dtype=np.int64)
        lows: list[int] = []
        spans: list[int] = []
        radix = 1
        for ids in bucket_ids:
            low = int(ids[:-1].min())
            span = int(ids[:-1].max()) - low + 1
            radix *= span
            if radix * n_series >= 2**62:  # spread too wide to pack: one at a time
                return list(range(len(grans)))
            classes = classes * span + (ids[:-1] - low)
            lows.append(low)
            spans.append(span)
        distinct, inverse = distinct_inverse(classes)
        # Each class's bucket in each granularity, unpacked from its key.
        of_class: list[IntArray] = []
        rem = distinct
        for low, span in zip(reversed(lows), reversed(spans), strict=True):
            rem, digit = np.divmod(rem, span)
            of_class.append(digit + low)
        of_class.reverse()
        k = len(distinct)
        keys, sums = group_compact(np.tile(inverse, n_scopes) * n_series + series, rows)
        class_of, series_of = np.divmod(keys, n_series)
        n_events = len(classes)
        ordered = np.flatnonzero(rows.ordered) if rows.ordered.any() else None
        for g, (buckets, changed) in enumerate(zip(of_class, self._changed.values(),
                                                   strict=True)):
            distinct_buckets = np.unique(buckets)
            changed.update(distinct_buckets.tolist())  # every event's bucket
            if len(distinct_buckets) == k:  # one class per bucket
                grans[g].add(buckets[class_of], series_of, sums)
            else:  # classes share buckets (a coarser granularity): their groups add up
                ids = bucket_ids[g][:-1]
                grans[g].add(*regroup(
                    buckets[class_of], series_of, sums, n_series,
                    None if ordered is None else (ids[ordered % n_events], series[ordered],
                                                  rows.sums[ordered])))
            grans[g].expire(int(bucket_ids[g][-1]))
        return []

    def _add_grouped(self, grans: list[Granularity], bucket_ids: list[IntArray],
                     series: IntArray, rows: CompactRows, n_scopes: int) -> None:
        """Add a batch to granularities: its rows grouped by (bucket, series) in one go.

        ``bucket_ids`` holds each granularity's bucket of every event, then of the
        watermark; ``series`` and ``rows`` the series and row of every event in every
        scope, scope by scope.
        """
        n_series = len(self.series)
        # The (bucket, series) keys of each granularity start past the previous one's.
        keys_by_gran: list[IntArray] = []
        origins: list[tuple[int, int]] = []  # (first key, first bucket) per granularity
        offset = 0
        for ids in bucket_ids:
            low = int(ids[:-1].min())
            keys_by_gran.append((np.tile(ids[:-1], n_scopes) - low) * n_series + series
                                + offset)
            origins.append((offset, low))
            offset += (int(ids[:-1].max()) - low + 1) * n_series
        keys, sums = group_compact(
            np.concatenate(keys_by_gran) if len(keys_by_gran) > 1 else keys_by_gran[0],
            rows.tile(len(bucket_ids)) if len(bucket_ids) > 1 else rows,
        )
        cuts = np.searchsorted(keys, [first for first, _ in origins] + [offset]).tolist()
        for gran, ids, (first, low), lo, hi in zip(grans, bucket_ids, origins, cuts[:-1],
                                                   cuts[1:], strict=True):
            local = keys[lo:hi] - first
            gran.add(local // n_series + low, local % n_series, sums[lo:hi])
            gran.expire(int(ids[-1]))

    def _revise(self, behind: _Behind, bucket_ids: list[IntArray], series: IntArray,
                n_events: int) -> None:
        """Note the answers behind the allowed lateness in the buckets that had closed
        when they arrived: per (bucket, series), how many, and the newest watermark met.

        Only the events ``behind`` names are looked at: nothing on the on-time path.
        """
        picked, met = behind
        lateness = self.config.allowed_lateness
        n_scopes = len(series) // n_events
        n_series = len(self.series)
        for gran, ids in zip(self.granularities.values(), bucket_ids, strict=True):
            buckets = ids[picked]
            bucketing = gran.bucketing
            if isinstance(bucketing, FixedBucketing):
                ends = (buckets + 1) * bucketing.step
            else:
                distinct, inverse = np.unique(buckets, return_inverse=True)
                ends = np.array([int(bucketing.bounds(b)[1].timestamp())
                                 for b in distinct.tolist()], dtype=np.int64)[inverse]
            closed = np.flatnonzero(met >= ends + lateness)
            if not len(closed):
                continue
            rows = picked[closed]
            low = int(buckets[closed].min())
            sids = series[(np.arange(n_scopes)[:, None] * n_events + rows).ravel()]
            keys = np.tile(buckets[closed] - low, n_scopes) * n_series + sids
            marks = np.tile(met[closed], n_scopes)
            order = np.argsort(keys, kind="stable")
            keys, marks = keys[order], marks[order]
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            counts = np.diff(np.r_[starts, len(keys)])
            newest = np.maximum.reduceat(marks, starts)
            distinct_keys = keys[starts]
            of_bucket = distinct_keys // n_series + low
            cuts = np.flatnonzero(np.r_[True, of_bucket[1:] != of_bucket[:-1]])
            for lo, hi in zip(cuts.tolist(), [*cuts[1:].tolist(), len(of_bucket)],
                              strict=True):
                table = gran.tables.get(int(of_bucket[lo]))
                if table is None:  # out of the kept range: not kept
                    continue
                table.revise(distinct_keys[lo:hi] % n_series, counts[lo:hi],
                             newest[lo:hi])

    def _bucket_ids(self, times: IntArray) -> list[IntArray]:
        """Bucket ids of each time in every granularity (local days computed once)."""
        out: list[IntArray] = []
        days: dict[object, IntArray] = {}
        for gran in self.granularities.values():
            bucketing = gran.bucketing
            if isinstance(bucketing, CalendarBucketing):
                local = days.get(bucketing.zone)
                if local is None:
                    local = days[bucketing.zone] = bucketing.local_days(times)
                out.append(bucketing.ids_of_days(local))
            else:
                out.append(bucketing.ids(times))
        return out

    def _metric(self, name: str) -> int:
        code = self._metric_codes.get(name)
        if code is None:
            code = self._metric_codes[name] = len(self.metrics)
            self.metrics.append(name)
        return code

    def _series_ids(self, metric_codes: IntArray, codes: dict[str, IntArray]) -> IntArray:
        """The series of every event in every scope, scope after scope.

        Each scope packs the metric and dimension codes into one integer per event; new
        series register scope by scope, in key order. The keys of all scopes are ranked
        together, each scope's shifted into a range of its own, when the ranges fit.
        """
        packed: list[IntArray] = []
        origins: list[tuple[int, int]] = []  # (first shifted key, lowest key) per scope
        offset = 0
        for scope in self.config.scopes:
            key = metric_codes
            for dim in scope:
                key = key * self.dims[dim].radix + codes[dim]
            low = int(key.min())
            packed.append(key)
            origins.append((offset, low))
            offset += int(key.max()) - low + 1
        if offset >= 2**62:  # too far apart to shift into one range: scope by scope
            return np.concatenate([self._scope_series_ids(i, key)
                                   for i, key in enumerate(packed)])
        distinct, inverse = distinct_inverse(np.concatenate([
            key - low + first for key, (first, low) in zip(packed, origins, strict=True)
        ]))
        scope_of = np.searchsorted([first for first, _ in origins], distinct, side="right") - 1
        ids = np.array([
            self._series_id(index, shifted - origins[index][0] + origins[index][1])
            for shifted, index in zip(distinct.tolist(), scope_of.tolist(), strict=True)
        ], dtype=np.int64)
        out: IntArray = ids[inverse]
        return out

    def _scope_series_ids(self, index: int, packed: IntArray) -> IntArray:
        distinct, inverse = distinct_inverse(packed)
        ids = np.array([self._series_id(index, key) for key in distinct.tolist()],
                       dtype=np.int64)
        out: IntArray = ids[inverse]
        return out

    def _series_id(self, index: int, key: int) -> int:
        """The series of packed key ``key`` in the scope at ``index``, registered if new."""
        sid = self._series_cache.get((index, key))
        if sid is None:
            sid = self._series_cache[(index, key)] = self.series.id(
                self._unpack(self.config.scopes[index], key)
            )
        return sid

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

    def _pulses(self, observations: Observations, rows: CompactRows, times: IntArray,
                fields: _Fields) -> None:
        names = observations.metrics
        for study in self.pulses.values():
            # An active study counts matching answers by event time, late ones too
            # (within its ranges); an ended one (its end command) counts no more.
            if not study.active:
                continue
            match = np.ones(len(times), dtype=np.bool_)
            for dim, allowed in study.filter.items():
                match &= _matches(fields.get(dim), allowed)
            for target, lo, hi in study.ranges():  # the spans its seed covered
                idx = np.flatnonzero(match & (times >= lo) & (times < hi))
                if len(idx):
                    study.add(target, [names[m] for m in observations.metric[idx].tolist()],
                              rows.expand(idx))

    def _people(self, observations: Observations, times: IntArray, fields: _Fields) -> None:
        satisfaction: list[float] = observations.satisfaction.tolist()
        at_list: list[int] = times.tolist()
        self.customers.add_many(fields.get("customer_id"), fields.get("segment"),
                                satisfaction, at_list)
        # The watermark as each event arrives: journeys time out as it passes them, event
        # by event, so the result never depends on how events were batched.
        start = self._people_watermark
        running = np.maximum.accumulate(times)
        if start is not None:
            np.maximum(running, start, out=running)
        journey_ids: list[str | None] = fields.get("journey_id")
        picked = [i for i, j in enumerate(journey_ids) if j is not None]
        if picked:
            def column(values: list[Any]) -> list[Any]:
                return values if len(picked) == len(values) else [values[i] for i in picked]

            self.journeys.add_many(zip(
                running[picked].tolist(), column(journey_ids),
                column(fields.get("customer_id")),
                [t or NONE for t in column(fields.get("journey_type"))], column(at_list),
                column(fields.get("channel")), column(fields.get("touchpoint")),
                column(fields.get("stage")), column(satisfaction),
                column(fields.get("journey_end")), strict=True,
            ), start)
        self._people_watermark = int(running[-1])

    def _prune_seen(self) -> None:
        if self.watermark is not None:
            # Ids of answers on time (and an hour more) stay hot; older ones freeze.
            hot = self.config.allowed_lateness + BUCKET + self.seen.width
            self.seen.prune(self.watermark - self.config.dedupe_span, self.watermark - hot,
                            self.kept_since)

    # -- queries ---------------------------------------------------------------------

    def window_names(self, family: Family) -> list[str]:
        """Names of the windows of a family."""
        if family == "continuous":
            return [w.name for w in self.config.continuous]
        return list(CALENDAR_UNITS)

    def _window(self, family: Family, name: str, at: int | None,
                offset: int = 0, period: str | None = None,
                ) -> tuple[Granularity, int, int, WindowRef] | None:
        if name not in self.window_names(family):
            known = ", ".join(self.window_names(family))
            raise KeyError(f"unknown {family} window {name!r} (known: {known})")
        if period is not None:
            if family != "periodic":
                raise KeyError("a period names a calendar window: family=periodic")
            return self._period(name, period, offset)
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
        current = int(bucketing.ids(np.array([now], dtype=np.int64))[0]) - offset
        start, end = bucketing.bounds(current)
        return gran, current, current, WindowRef(family, name, start, end,
                                                 bucketing.label(current))

    def _period(self, unit: str, label: str, offset: int,
                ) -> tuple[Granularity, int, int, WindowRef]:
        """A calendar period named by its label (``2026-01``), if the state keeps it."""
        bucketing = next(c for u, c in self.calendars.items() if u == unit)
        try:
            period = bucketing.parse(label) - offset
        except ValueError as exc:
            raise KeyError(str(exc)) from None
        gran = self.granularities[unit]
        if offset == 0 and self.watermark is not None:
            newest = int(bucketing.ids(np.array([self.watermark], dtype=np.int64))[0])
            if period < newest - gran.keep + 1:
                raise KeyError(f"{label} is older than the {gran.keep} {unit}s kept "
                               f"(periods_kept)")
        start, end = bucketing.bounds(period)
        return gran, period, period, WindowRef("periodic", unit, start, end,
                                               bucketing.label(period))

    def scores(
        self,
        family: Family,
        window: str,
        where: dict[str, str] | None = None,
        scope: tuple[str, ...] | None = None,
        metric: str | None = None,
        at: int | None = None,
        period: str | None = None,
    ) -> list[ScopeScore]:
        """Scores of one window, for the scope values that match.

        ``where`` picks exact scope values (``{"channel": "chat"}``); ``scope`` lists
        every value of a scope (``("channel",)``); neither means the overall scope.
        ``period`` names a past (or the current) calendar period instead of the current
        one (``2026-01`` for a month), as long as the state keeps it.
        Periodic scores carry the previous period for period-over-period change.
        Until ``version`` changes, the same question is answered from a memo (dashboards
        poll the same windows far more often than the state changes).
        """
        if self._memo_version != self.version:
            self._memo.clear()
            self._dense_memo.clear()
            self._memo_version = self.version
        key = (family, window, None if where is None else tuple(sorted(where.items())),
               scope, metric, at, period)
        found = self._memo.get(key)
        if found is None:
            found = self._scores(family, window, where, scope, metric, at, period)
            if len(self._memo) >= _MEMO_SIZE:
                del self._memo[next(iter(self._memo))]  # the oldest question
            self._memo[key] = found
        return list(found)

    def _scores(self, family: Family, window: str, where: dict[str, str] | None,
                scope: tuple[str, ...] | None, metric: str | None,
                at: int | None, period: str | None = None) -> list[ScopeScore]:
        dims, wanted = self._selection(where, scope)
        found = self._window(family, window, at, period=period)
        if found is None:
            return []
        gran, first, last, ref = found
        dense = self._dense(gran, first, last)
        revisions = gran.revisions(first, last, len(self.series))
        previous: FloatArray | None = None
        prev = (self._window(family, window, at, offset=1, period=period)
                if family == "periodic" else None)
        if prev is not None:
            previous = self._dense(prev[0], prev[1], prev[2])
        out: list[ScopeScore] = []
        for sid, (sdims, values, m) in enumerate(self.series.keys):
            if sdims != dims or (metric is not None and m != metric):
                continue
            if wanted is not None and values != wanted:
                continue
            vec = dense[sid]
            if vec[0] == 0 and vec[5] == 0:
                continue
            found_score = self._scope_score(sid, vec, ref,
                                            None if previous is None else previous[sid])
            if revisions is not None and revisions[0][sid]:
                found_score = dataclasses.replace(
                    found_score, late_answers=int(revisions[0][sid]),
                    revised_at=datetime.fromtimestamp(int(revisions[1][sid]), UTC))
            out.append(found_score)
        out.sort(key=lambda s: (tuple(s.scope.values()), s.metric))
        return out

    def series_steps(self) -> dict[str, str]:
        """Steps a score series can take (``1m``, ``1h``: the sliding windows' buckets;
        ``day`` to ``quarter``), each with the granularity that holds it."""
        steps = {_step_name(step): f"{step}s" for step in sorted(set(self.steps.values()))}
        steps.update({unit: unit for unit in CALENDAR_UNITS})
        return steps

    def score_series(
        self,
        step: str,
        where: dict[str, str] | None = None,
        scope: tuple[str, ...] | None = None,
        metric: str | None = None,
        since: int | None = None,
        until: int | None = None,
        max_points: int = 20_000,
    ) -> list[ScoreSeries]:
        """Each matching scope value's score per bucket of ``step`` over the kept range
        (or ``[since, until)``, epoch seconds), oldest first: the trend a chart draws.

        Buckets without answers are points with ``n`` 0. KeyError names what is wrong:
        an unknown step, a scope that is not configured, too many points.
        """
        steps = self.series_steps()
        if step not in steps:
            raise KeyError(f"unknown step {step!r} (known: {', '.join(steps)})")
        dims, wanted = self._selection(where, scope)
        if self.watermark is None:
            return []
        gran = self.granularities[steps[step]]
        bucketing = gran.bucketing

        def bucket(seconds: int) -> int:
            return int(bucketing.ids(np.array([seconds], dtype=np.int64))[0])

        newest = bucket(self.watermark)
        first = newest - gran.keep + 1
        last = newest
        if since is not None:
            first = max(first, bucket(since))
        if until is not None:
            last = min(last, bucket(until - 1))
        if last < first:
            return []
        sids = [sid for sid, (sdims, values, m) in enumerate(self.series.keys)
                if sdims == dims and (metric is None or m == metric)
                and (wanted is None or values == wanted)]
        buckets = range(first, last + 1)
        if len(sids) * len(buckets) > max_points:
            raise KeyError(f"{len(sids)} series x {len(buckets)} buckets of {step} is more "
                           f"than {max_points:,} points: name a metric, a scope value or a "
                           "shorter range")
        chosen = np.array(sids, dtype=np.int64)  # ascending, as enumerate gives them
        sums = np.zeros((len(buckets), len(sids), NCOLS), dtype=np.float64)
        for j, b in enumerate(buckets):
            table = gran.tables.get(b)
            if table is None or not len(table):
                continue
            used = len(table)
            ids = table.series[:used]
            mask = np.isin(ids, chosen)
            if mask.any():
                sums[j, np.searchsorted(chosen, ids[mask])] += table.data[:used][mask]
        bounds = [bucketing.bounds(b) for b in buckets]
        out = []
        for i, sid in enumerate(sids):
            column = sums[:, i]
            if not column[:, 0].any() and not column[:, 5].any():
                continue
            sdims, values, m = self.series.keys[sid]
            points = [(start, end, score(m, column[j])) for j, (start, end) in enumerate(bounds)]
            out.append(ScoreSeries(dict(zip(sdims, values, strict=True)), m, step, points))
        out.sort(key=lambda s: (tuple(s.scope.values()), s.metric))
        return out

    def _dense(self, gran: Granularity, first: int, last: int) -> FloatArray:
        """``gran.dense`` of buckets ``first..last``, remembered for the scopes asked
        next at the same version (each scope of a window sums the same buckets)."""
        key = (id(gran), first, last, len(self.series))
        found = self._dense_memo.get(key)
        if found is None:
            found = gran.dense(first, last, len(self.series))
            if len(self._dense_memo) >= _DENSE_MEMO_SIZE:
                del self._dense_memo[next(iter(self._dense_memo))]
            self._dense_memo[key] = found
        return found

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
            None if previous is None else score(metric, previous), vec,
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
        """Start a pulse study: it counts matching answers already in the state where
        the state can tell them apart (its filter is a configured scope; see
        ``streams.engine.pulses.seed_side``), and every matching answer that arrives
        from now on. ``PulseStudy.seeds`` says, per side, which it did and why."""
        if pulse_id in self.pulses:
            raise PulseError("pulse_id", f"a study with id {pulse_id!r} exists")
        for dim, values in filter.items():
            if isinstance(values, str):
                raise PulseError(f"filter.{dim}", "must be a list of values, not a string")
        study = PulseStudy(pulse_id, name, {k: tuple(v) for k, v in filter.items()}, start,
                           end, baseline_start, baseline_end,
                           self.watermark if self.watermark is not None else start)
        sids, why_not = filter_series(study.filter, self.config.scopes, self.dims,
                                      self.series, self.metrics)
        seed_pulse(study, self.watermark, self.granularities, sids, why_not)
        self.pulses[pulse_id] = study
        self.version += 1
        return study

    def end_pulse(self, pulse_id: str) -> PulseStudy:
        """Stop a study counting; its results stay readable."""
        study = self.pulses.get(pulse_id)
        if study is None:
            raise PulseError("pulse_id", f"no study with id {pulse_id!r}")
        if study.ended_at is None:
            study.ended_at = self.watermark if self.watermark is not None else study.start
        return study

    # -- erasure ---------------------------------------------------------------------

    def erase_customer(self, customer_id: str) -> Erased:
        """Remove everything the state holds about one customer (GDPR Art. 17): their
        history and baseline (``customers``) and their journeys, open and ended.

        Nothing else in the state or its snapshot carries a customer id or a comment:
        aggregates are per (series, bucket) of dimension values, pulse studies per
        metric, the dedupe memory holds 64-bit digests of event ids, counters are
        counts; comments are never kept. Those aggregates stay exactly as they are (they
        are anonymous), so every score is unchanged. Idempotent: erasing a customer
        that is not (or no longer) held removes nothing and returns zeros.

        Their open journeys go too, so they never end and never enter the statistics
        by channel count (``journeys.by_channel_count``), which hold the ended ones.
        Events of the customer that arrive later are counted as new ones: a customer
        who comes back is a new customer.
        """
        customers = 1 if self.customers.erase(customer_id) else 0
        return Erased(customers, self.journeys.erase(customer_id))

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
            "seen": self.seen.state(),
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
        if state["version"] not in (1, 2, SNAPSHOT_VERSION):
            raise ValueError(f"snapshot version {state['version']} is not {SNAPSHOT_VERSION}")
        if not EngineConfig.stored(state["config"]).same_state(config):
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
        if state["version"] == 1:  # event id -> event time
            engine.seen = SeenIds.from_times(state["seen"], engine.seen.width)
        else:  # version 2 has no frozen tier: its ids are hot until the next prune
            engine.seen = SeenIds.from_state(state["seen"])
        engine.counters = Counter(state["counters"])
        engine.journeys.restore(state["journeys"])
        engine.customers.restore(state["customers"])
        engine.pulses = {p["pulse_id"]: PulseStudy.from_state(p) for p in state["pulses"]}
        return engine

    def folded(self) -> dict[str, int]:
        """How many values each dimension folded into ``other`` past its cap."""
        return {d: reg.folded for d, reg in self.dims.items()}

    # ---------------------------------------------------------------- read models
    # An engine that is set from outside rather than fed events: the Kafka runner's
    # merged view (streams/worker/merge.py) sums partitions' partials into one. It
    # answers scores, vectors and windows exactly as an engine fed every event would.

    @classmethod
    def read_model(cls, config: EngineConfig, series: SeriesRegistry) -> Engine:
        """An engine whose series ids are ``series``'s, to be set with ``set_bucket``,
        ``set_latest`` and ``set_merged``."""
        engine = cls(config)
        engine.series = series
        return engine

    def set_bucket(self, granularity: str, bucket: int, table: BucketTable | None) -> None:
        """Replace one bucket's aggregates; ``None`` or an empty table drops it."""
        tables = self.granularities[granularity].tables
        if table is not None and len(table):
            tables[bucket] = table
        else:
            tables.pop(bucket, None)

    def set_latest(self, times: Iterable[tuple[int, int]]) -> None:
        """Each series' latest event time from (series id, epoch seconds) pairs, the
        greatest per series winning; a series not named has none."""
        latest = np.full(len(self.series), _NEVER, dtype=np.int64)
        for sid, at in times:
            if at > latest[sid]:
                latest[sid] = at
        self.latest = latest

    def set_merged(self, *, watermark: int | None, folded: Mapping[str, int],
                   counters: Mapping[str, int], pulses: dict[str, PulseStudy],
                   journeys: Iterable[dict[str, Any]]) -> None:
        """The state that is not per bucket: the watermark, values folded per dimension,
        pipeline counters, pulse studies and journeys (``JourneyTracker.summary()`` of
        each part)."""
        self.watermark = watermark
        for dim, reg in self.dims.items():
            reg.folded = folded.get(dim, 0)
        self.counters = Counter(counters)
        self.pulses = pulses
        self.journeys.set_merged(journeys)

    def expire(self, watermark: int) -> dict[str, int]:
        """Drop the buckets an engine at ``watermark`` no longer keeps; the oldest bucket
        kept, per granularity."""
        now = np.array([watermark], dtype=np.int64)
        oldest: dict[str, int] = {}
        for name, gran in self.granularities.items():
            newest = int(gran.bucketing.ids(now)[0])
            gran.expire(newest)
            oldest[name] = newest - gran.keep + 1
        return oldest

    def changed(self) -> None:
        """Say the state moved (scores asked before are computed again)."""
        self.version += 1


def _dimension_order(dim: str) -> int:
    return DIMENSIONS.index(dim) if dim in DIMENSIONS else len(DIMENSIONS)
