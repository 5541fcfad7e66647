"""Pulse studies: targeted, time-boxed measurements started on demand, against a baseline.

A study has a filter on dimensions (e.g. segment=enterprise and channel=chat), a span
[start, end) and a baseline span. Matching events inside the span count for the study,
matching events inside the baseline span count for its baseline, per metric.

When a study starts, the answers already in the state count too where the state can
tell them apart (``seed``): when the filter's dimensions are exactly a configured scope
(the empty filter: the overall scope), each side (baseline, study) takes the sum of its
filter's series over the buckets the engine keeps, in the finest granularity that still
keeps the side's span, preferring one whose bucket edges fall on the span's bounds (else
each bound moves to the start of its bucket, and the side says so). From then on the
study counts answers as they arrive (late ones included), by event time, over the span
the seed covered: every answer is in the state before the start (and so in
the seed) or arrives after it (and so in the streaming count), never both. A side that
cannot be seeded says why (``Seed.source`` ``live only``, ``Seed.note``), never a silent
n 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import numpy as np

from streams.engine.config import DIMENSIONS
from streams.engine.dimensions import OTHER, DimensionCodes
from streams.engine.metrics import NCOLS, FloatArray, Score, score
from streams.engine.store import Granularity, SeriesRegistry

Source = Literal["state", "live only", "mixed"]
SIDES: Final = ("baseline", "study")
_GRAIN_NAMES: Final = {"day": "daily", "week": "weekly", "month": "monthly",
                       "quarter": "quarterly"}
LEGACY_NOTE: Final = ("started before studies were seeded from the state: counts only "
                      "answers that arrived after it started")


class PulseError(ValueError):
    """A pulse study that cannot be created as asked; names the field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Seed:
    """How one side of a study (its baseline or its span) took the answers that were in
    the state when it started, and the span it counts over.

    - ``source``: ``state`` when the answers already in the state are in it (summed
      from the buckets, or there were none in its span yet), ``live only`` when it
      counts only answers that arrive after the start (``note`` says why), ``mixed``
      on a merged view whose partitions did not seed alike (``note`` says how).
    - ``granularity``: the buckets the side is summed from (``60s``, ``3600s``, ``day``,
      ...), whether or not the state held answers in its span yet; None when live only.
    - ``start``, ``end``: the span counted, epoch seconds, [start, end): the asked span,
      or, when the state could not split a bucket at a bound, that bound moved to the
      start of its bucket (``exact`` False); answers arriving later count over the same
      span.
    - ``tail``: finer buckets (``60s``) summed for the end of the span, from the start of
      the ``granularity`` bucket that holds ``end``, when they keep it: a baseline of two
      weeks that ends now is summed by the hour, its last hour by the minute.
    """

    source: Source
    start: int
    end: int
    granularity: str | None = None
    exact: bool = True
    note: str | None = None
    tail: str | None = None

    def state(self) -> list[Any]:
        """Snapshot as a plain list."""
        return [self.source, self.start, self.end, self.granularity, self.exact, self.note,
                self.tail]

    @classmethod
    def from_state(cls, s: Sequence[Any]) -> Seed:
        """Restore a snapshot taken by ``state``."""
        return cls(s[0], int(s[1]), int(s[2]), s[3], bool(s[4]), s[5],
                   s[6] if len(s) > 6 else None)


@dataclass(slots=True)
class PulseStudy:
    """One study and its running aggregates per metric."""

    pulse_id: str
    name: str
    filter: dict[str, tuple[str, ...]]
    start: int
    end: int
    baseline_start: int
    baseline_end: int
    created_at: int
    ended_at: int | None = None
    study: dict[str, FloatArray] = field(default_factory=dict)
    baseline: dict[str, FloatArray] = field(default_factory=dict)
    seeds: dict[str, Seed] = field(default_factory=dict)
    """Per side (``baseline``, ``study``), how it took the state at the start; empty
    for a study restored from a snapshot taken before seeding existed (live only)."""

    def __post_init__(self) -> None:
        for dim, values in self.filter.items():
            if dim not in DIMENSIONS:
                known = ", ".join(DIMENSIONS)
                raise PulseError(f"filter.{dim}", f"unknown dimension (known: {known})")
            if not values:
                raise PulseError(f"filter.{dim}", "needs at least one value")
        if self.end <= self.start:
            raise PulseError("end", "must be after start")
        if self.baseline_end <= self.baseline_start:
            raise PulseError("baseline_end", "must be after baseline_start")

    @property
    def active(self) -> bool:
        """Whether the study still counts events."""
        return self.ended_at is None

    def seed_of(self, side: str) -> Seed:
        """How ``side`` (``baseline`` or ``study``) took the state at the start."""
        found = self.seeds.get(side)
        if found is not None:
            return found
        lo, hi = (self.baseline_start, self.baseline_end) if side == "baseline" \
            else (self.start, self.end)
        return Seed("live only", lo, hi, note=LEGACY_NOTE)

    def ranges(self) -> tuple[tuple[str, int, int], tuple[str, int, int]]:
        """(side, start, end) of the spans answers count in as they arrive."""
        study, baseline = self.seed_of("study"), self.seed_of("baseline")
        return (("study", study.start, study.end),
                ("baseline", baseline.start, baseline.end))

    def add(self, target: str, metrics: list[str], vectors: FloatArray) -> None:
        """Add per-event vectors to the study or its baseline, per metric."""
        book = self.study if target == "study" else self.baseline
        for metric, vec in zip(metrics, vectors, strict=True):
            acc = book.get(metric)
            if acc is None:
                acc = book[metric] = np.zeros(NCOLS, dtype=np.float64)
            acc += vec

    def results(self) -> list[tuple[str, Score, Score]]:
        """(metric, study score, baseline score) for every metric seen on either side."""
        empty = np.zeros(NCOLS, dtype=np.float64)
        metrics = sorted(set(self.study) | set(self.baseline))
        return [
            (m, score(m, self.study.get(m, empty)), score(m, self.baseline.get(m, empty)))
            for m in metrics
        ]

    def state(self) -> dict[str, Any]:
        """Snapshot."""
        return {
            "pulse_id": self.pulse_id, "name": self.name,
            "filter": {k: list(v) for k, v in self.filter.items()},
            "start": self.start, "end": self.end, "baseline_start": self.baseline_start,
            "baseline_end": self.baseline_end, "created_at": self.created_at,
            "ended_at": self.ended_at,
            "study": {m: v.tobytes() for m, v in self.study.items()},
            "baseline": {m: v.tobytes() for m, v in self.baseline.items()},
            "seeds": {side: s.state() for side, s in self.seeds.items()},
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> PulseStudy:
        """Restore a snapshot taken by ``state`` (one without ``seeds`` too: a study
        started before seeding existed, live only)."""
        def arrays(d: dict[str, bytes]) -> dict[str, FloatArray]:
            return {m: np.frombuffer(b, dtype=np.float64).copy() for m, b in d.items()}

        return cls(
            s["pulse_id"], s["name"], {k: tuple(v) for k, v in s["filter"].items()},
            s["start"], s["end"], s["baseline_start"], s["baseline_end"], s["created_at"],
            s["ended_at"], arrays(s["study"]), arrays(s["baseline"]),
            {side: Seed.from_state(v) for side, v in s.get("seeds", {}).items()},
        )


# -- seeding from the state -------------------------------------------------------------


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _grain(name: str) -> str:
    """``3600s`` -> hourly, ``60s`` -> minute, ``day`` -> daily."""
    if name in _GRAIN_NAMES:
        return _GRAIN_NAMES[name]
    seconds = int(name.rstrip("s"))
    for unit, size in (("hourly", 3600), ("minute", 60)):
        if seconds == size:
            return unit
    return f"{name}"


def _edges(gran: Granularity, bucket: int) -> tuple[int, int]:
    start, end = gran.bucketing.bounds(bucket)
    return int(start.timestamp()), int(end.timestamp())


def _bucket(gran: Granularity, seconds: int) -> int:
    return int(gran.bucketing.ids(np.array([seconds], dtype=np.int64))[0])


def filter_series(filter: Mapping[str, tuple[str, ...]], scopes: Sequence[tuple[str, ...]],
                  dims: Mapping[str, DimensionCodes], series: SeriesRegistry,
                  metrics: Sequence[str]) -> tuple[list[tuple[str, int]], str | None]:
    """(metric, series id) of every series a pulse filter sums (several values of a
    dimension: each value's series), or why the state cannot answer the filter: its
    dimensions are not a configured scope, or a value may have been folded into
    ``other`` past the dimension's cap (so its answers are not its own series)."""
    order = sorted(filter, key=lambda d: DIMENSIONS.index(d) if d in DIMENSIONS else 99)
    scope = tuple(order)
    if scope not in scopes:
        listed = ", ".join(" x ".join(s) if s else "overall" for s in scopes)
        asked = " x ".join(scope) or "nothing (the overall scope)"
        return [], (f"the filter groups by {asked}, which is not a configured scope "
                    f"(scopes: {listed}): the state keeps no series for it, so the "
                    "study counts only answers that arrive after it started")
    for dim in scope:
        reg = dims[dim]
        if not reg.folded:
            continue
        unsure = [v for v in filter[dim] if v == OTHER or reg.known(v) is None]
        if unsure:
            return [], (f"{dim} has folded values past its cap of {reg.cap} into "
                        f"{OTHER!r}, so the state cannot tell answers with "
                        f"{', '.join(map(repr, unsure))} apart: the study counts only "
                        "answers that arrive after it started")
    allowed = [set(filter[dim]) for dim in scope]
    known = set(metrics)
    return [(metric, sid) for sid, (dims_, values, metric) in enumerate(series.keys)
            if dims_ == scope and metric in known
            and all(v in a for v, a in zip(values, allowed, strict=True))], None


def seed_side(side: str, lo: int, hi: int, watermark: int | None,
              granularities: Mapping[str, Granularity], sids: Sequence[tuple[str, int]],
              why_not: str | None, reference: int) -> tuple[Seed, dict[str, FloatArray]]:
    """How one side over [lo, hi) takes the state at the start, and what it takes
    (``plan_side``); a span whose bucket edges are not dates (year 1, year 9999: no
    answer can lie there) is live only."""
    try:
        return plan_side(side, lo, hi, watermark, granularities, sids, why_not, reference)
    except (ValueError, OverflowError, OSError):
        return Seed("live only", lo, hi, note=(
            f"the {side} span lies outside the dates the state's buckets can hold: it "
            "counts only answers that arrive after the study started")), {}


def plan_side(side: str, lo: int, hi: int, watermark: int | None,
              granularities: Mapping[str, Granularity], sids: Sequence[tuple[str, int]],
              why_not: str | None, reference: int) -> tuple[Seed, dict[str, FloatArray]]:
    """How one side over [lo, hi) takes the state at the start, and what it takes.

    ``granularities`` in order, finest first; ``sids``: (metric, series id) of every
    series the filter sums; ``why_not``: why the filter cannot be read from the state
    (None: it can). The granularity is the finest that keeps the side's first bucket
    (at ``watermark``; an empty state plans as if at ``reference``, the study's start)
    whose edges fall on both bounds, else the finest that keeps it; the side then
    counts from the start of the bucket of each bound (``exact`` False, said in
    ``note``): a baseline that ends where the study starts still ends where it starts.

    The plan depends on the span and on which granularities keep it, not on whether
    the state already holds answers in it: engines that keep the same buckets (the
    input partitions of one deployment, one engine fed all of their events) plan
    alike, so their seeds add up to one engine's.
    """
    if why_not is not None:
        return Seed("live only", lo, hi, note=why_not), {}
    at = reference if watermark is None else watermark
    keepers: list[tuple[str, Granularity, bool]] = []
    oldest = ("", lo)  # the coarsest granularity and its oldest bucket's start
    for name, gran in granularities.items():
        first = _bucket(gran, lo)
        kept_from = _bucket(gran, at) - gran.keep + 1
        oldest = (name, _edges(gran, kept_from)[0])
        if first < kept_from:
            continue
        exact = _edges(gran, first)[0] == lo and _edges(gran, _bucket(gran, hi))[0] == hi
        keepers.append((name, gran, exact))
    if not keepers:
        return Seed("live only", lo, hi, note=(
            f"the {side} span starts {_iso(lo)}, before anything the state keeps (the "
            f"{_grain(oldest[0])} buckets, the longest kept, go back to {_iso(oldest[1])}): "
            f"it counts only answers that arrive after the study started")), {}
    name, gran, exact = next((k for k in keepers if k[2]), keepers[0])
    first = _bucket(gran, lo)
    start, body_end = _edges(gran, first)[0], _edges(gran, _bucket(gran, hi))[0]
    end, tail = body_end, None
    if body_end != hi and body_end > start:  # the end's bucket, by finer buckets?
        for fine_name, fine in granularities.items():
            if fine_name == name:
                break  # (finest first: only finer ones)
            b = _bucket(fine, body_end)
            if _edges(fine, b)[0] == body_end and b >= _bucket(fine, at) - fine.keep + 1:
                tail, end = fine_name, _edges(fine, _bucket(fine, hi))[0]
                break
    if end <= start:  # the span lies inside one bucket: that bucket
        end = _edges(gran, first)[1]
    book: dict[str, FloatArray] = {}
    if watermark is not None and start <= watermark:
        book = _sum(gran, first, _bucket(gran, (end if tail is None else body_end) - 1), sids)
        if tail is not None and body_end <= watermark:
            fine = granularities[tail]
            for metric, vector in _sum(fine, _bucket(fine, body_end), _bucket(fine, end - 1),
                                       sids).items():
                book[metric] = book[metric] + vector if metric in book else vector
    if start == lo and end == hi:
        return Seed("state", lo, hi, name, tail=tail), book
    finer = "" if tail is None else f" (its last {_grain(name)} bucket by {_grain(tail)} ones)"
    return Seed("state", start, end, name, exact=False, tail=tail, note=(
        f"approximated to whole {_grain(name)} buckets{finer}: the {side} counts answers "
        f"from {_iso(start)} to {_iso(end)} (asked: {_iso(lo)} to {_iso(hi)}), those in "
        f"the state before the start and those that arrive after it")), book


def _sum(gran: Granularity, first: int, last: int,
         sids: Sequence[tuple[str, int]]) -> dict[str, FloatArray]:
    """Per metric, the rows of series ``sids`` summed over buckets ``first..last``."""
    names = sorted({metric for metric, _ in sids})
    pairs = sorted((sid, names.index(metric)) for metric, sid in sids)
    chosen = np.array([sid for sid, _ in pairs], dtype=np.int64)
    metric_of = np.array([m for _, m in pairs], dtype=np.int64)
    sums = np.zeros((len(names), NCOLS), dtype=np.float64)
    seen = np.zeros(len(names), dtype=np.bool_)
    for bucket, table in gran.tables.items() if len(chosen) else ():
        if not first <= bucket <= last or not len(table):
            continue
        ids = table.series[: len(table)]
        rows = np.flatnonzero(np.isin(ids, chosen))
        if len(rows):
            of = metric_of[np.searchsorted(chosen, ids[rows])]
            np.add.at(sums, of, table.data[rows])
            seen[of] = True
    return {name: sums[i] for i, name in enumerate(names) if seen[i]}


def seed(study: PulseStudy, watermark: int | None, granularities: Mapping[str, Granularity],
         sids: Sequence[tuple[str, int]], why_not: str | None) -> None:
    """Seed both sides of a new study from the state (``seed_side``)."""
    for side, lo, hi in (("baseline", study.baseline_start, study.baseline_end),
                         ("study", study.start, study.end)):
        found, book = seed_side(side, lo, hi, watermark, granularities, sids, why_not,
                                study.start)
        study.seeds[side] = found
        study.add(side, list(book), np.array(list(book.values())).reshape(-1, NCOLS))


# -- merging partitions -----------------------------------------------------------------


def _merge_seeds(seeds: list[Seed]) -> Seed:
    """One side's seeds from several partitions as one: the first when they agree (the
    same source, span and granularity), else ``mixed`` with a note saying how they
    differ (a partition whose state no longer kept the span's hours, say)."""
    first = seeds[0]
    if all(s.source == first.source and s.start == first.start and s.end == first.end
           and s.granularity == first.granularity and s.tail == first.tail for s in seeds):
        return first
    kinds: dict[str, int] = {}
    for s in seeds:
        how = s.source if s.granularity is None else (
            f"{s.source} ({_grain(s.granularity)}, {_iso(s.start)} to {_iso(s.end)})")
        kinds[how] = kinds.get(how, 0) + 1
    told = "; ".join(f"{n} {how}" for how, n in kinds.items())
    notes = sorted({s.note for s in seeds if s.note})
    return Seed("mixed", first.start, first.end, first.granularity, False,
                f"the partitions did not take the state alike: {told}"
                + ("" if not notes else " — " + " / ".join(notes)))


def merge_studies(parts: list[list[dict[str, Any]]]) -> dict[str, PulseStudy]:
    """Studies kept by several partitions of the input, as one set of studies.

    ``parts`` holds each partition's ``PulseStudy.state()`` list, in partition order.
    Counts add up (each partition seeded from its own buckets, so the seeds add up to
    one engine's); the definition is the first partition's (every partition applied the
    same command); a study has ended once every partition that has it has ended it,
    and was created at the earliest of their creation times; its seeds are the
    partitions' when they agree, else ``mixed`` with how they differ.
    """
    merged: dict[str, PulseStudy] = {}
    seeds: dict[str, list[PulseStudy]] = {}
    for states in parts:
        for state in states:
            part = PulseStudy.from_state(state)
            seeds.setdefault(part.pulse_id, []).append(part)
            have = merged.get(part.pulse_id)
            if have is None:
                merged[part.pulse_id] = part
                continue
            have.created_at = min(have.created_at, part.created_at)
            if have.ended_at is None or part.ended_at is None:
                have.ended_at = None
            else:
                have.ended_at = max(have.ended_at, part.ended_at)
            for book, other in ((have.study, part.study), (have.baseline, part.baseline)):
                for metric, vector in other.items():
                    if metric in book:
                        book[metric] = book[metric] + vector
                    else:
                        book[metric] = vector
    for pulse_id, studies in seeds.items():
        if len(studies) > 1:
            merged[pulse_id].seeds = {side: _merge_seeds([s.seed_of(side) for s in studies])
                                      for side in SIDES}
    return merged
