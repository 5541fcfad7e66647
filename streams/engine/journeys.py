"""Journeys: events stitched by ``journey_id`` into one customer story.

A journey records the channels and touchpoints it used, the stages it reached
(recognize, request, respond), when it started and last moved, and a journey score:
the mean satisfaction of its signals mapped to 0..100. It ends on an explicit end
marker or after ``timeout`` seconds of event-time silence; then it counts towards
satisfaction by number of channels used (1, 2, 3, 4+), where multi-channel journeys
tend to fare worse.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from streams.engine import stats

MAX_TOUCHPOINTS: Final = 32
JourneyRow = tuple[int, str, str, str, int, str, str, str | None, float, bool]
"""(watermark, journey id, customer id, journey type, event time, channel, touchpoint,
stage, satisfaction, end marker): one event as ``JourneyTracker.add_many`` takes it."""
CHANNEL_BANDS: Final = ("1", "2", "3", "4+")


def channel_band(n_channels: int) -> str:
    """The band a journey with ``n_channels`` distinct channels falls in."""
    return CHANNEL_BANDS[min(max(n_channels, 1), 4) - 1]


class Journey(msgspec.Struct, gc=False):
    """The running state of one journey; fixed size whatever its length.

    Not tracked by the cyclic garbage collector (``gc=False``: every field is a string,
    a number or a tuple of strings, so a journey can never be part of a cycle). A
    worker holds hundreds of thousands of journeys; tracked, with a list per field,
    they were four objects each for every collection to walk (measured: ~10% of a
    worker's time in collections, and pauses of a third of a second).
    """

    journey_id: str
    customer_id: str
    journey_type: str
    started: int
    last: int
    channels: tuple[str, ...] = ()
    touchpoints: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    events: int = 0
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    ended: int | None = None
    end_reason: str | None = None

    def add(self, at: int, channel: str, touchpoint: str, stage: str | None,
            satisfaction: float) -> None:
        """Fold one event into the journey.

        ``JourneyTracker.add_many`` has this written out inline (its hot path, one call
        per event fewer): change both together; a property test holds them equal.
        """
        if at < self.started:
            self.started = at
        if at > self.last:
            self.last = at
        self.events += 1
        if channel not in self.channels:
            self.channels += (channel,)
        if touchpoint not in self.touchpoints and len(self.touchpoints) < MAX_TOUCHPOINTS:
            self.touchpoints += (touchpoint,)
        if stage is not None and stage not in self.stages:
            self.stages += (stage,)
        if satisfaction == satisfaction:  # not NaN
            self.n += 1
            self.total += satisfaction
            self.total_sq += satisfaction * satisfaction

    @property
    def score(self) -> float | None:
        """Mean satisfaction of the journey's signals, 0..100; None without any."""
        return 100.0 * self.total / self.n if self.n else None

    def view(self) -> dict[str, Any]:
        """The journey as API callers see it."""
        stage_order = ("recognize", "request", "respond")
        reached = [s for s in stage_order if s in self.stages]
        return {
            "journey_id": self.journey_id,
            "customer_id": self.customer_id,
            "journey_type": self.journey_type,
            "started_at": self.started,
            "last_event_at": self.last,
            "ended_at": self.ended,
            "end_reason": self.end_reason,
            "open": self.ended is None,
            "events": self.events,
            "channels": list(self.channels),
            "channel_count": len(self.channels),
            "channel_band": channel_band(len(self.channels)),
            "touchpoints": list(self.touchpoints),
            "stages": reached,
            "stage_reached": reached[-1] if reached else None,
            "duration_seconds": self.last - self.started,
            "score": self.score,
            "n": self.n,
        }


@dataclass(slots=True)
class BandStats:
    """Running sums of journey scores (0..100) and durations for one band."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    duration_total: float = 0.0

    def add(self, score: float, duration: int) -> None:
        self.n += 1
        self.total += score
        self.total_sq += score * score
        self.duration_total += duration

    def view(self) -> dict[str, Any]:
        low, high = stats.mean_interval(self.n, self.total, self.total_sq)
        return {
            "n": self.n,
            "score": self.total / self.n if self.n else None,
            "low": None if math.isnan(low) else low,
            "high": None if math.isnan(high) else high,
            "mean_duration_seconds": self.duration_total / self.n if self.n else None,
        }


class JourneyTracker:
    """Open and recently ended journeys, and scores by channel count per journey type."""

    def __init__(self, timeout: int, kept: int) -> None:
        self.timeout = timeout
        self.kept = kept
        self.open: dict[str, Journey] = {}
        self.closed: OrderedDict[str, Journey] = OrderedDict()
        self._bands: dict[str, list[BandStats]] = {}
        """Journey type ("all" for every type) -> statistics by band, in ``CHANNEL_BANDS``
        order; a type is entered with its first ended, scored journey."""
        # (earliest possible timeout, journey id) of open journeys: a lower bound, since
        # a journey's last event only moves later; sweep re-queues the ones that moved.
        self._due: list[tuple[int, str]] = []
        self._merged_open: int | None = None
        """Open journeys of the partitions summed into a merged view (``set_merged``)."""

    @property
    def open_count(self) -> int:
        """Open journeys: this tracker's own, or the partitions' of a merged view."""
        return len(self.open) if self._merged_open is None else self._merged_open

    def summary(self) -> dict[str, Any]:
        """What this tracker contributes to a merged view: ended journeys' statistics by
        type and band (``state()["bands"]`` rows) and how many journeys are open."""
        return {"bands": self._band_rows(), "open": len(self.open)}

    def set_merged(self, summaries: Iterable[dict[str, Any]]) -> None:
        """Become the sum of partitions' ``summary()`` (a merged view holds no journeys
        of its own; a journey lives in the partition of its customer)."""
        self._bands = {}
        total_open = 0
        for summary in summaries:
            for t, b, n, total, total_sq, duration in summary["bands"]:
                of_type = self._bands.setdefault(t, [BandStats() for _ in CHANNEL_BANDS])
                band = of_type[CHANNEL_BANDS.index(b)]
                band.n += n
                band.total += total
                band.total_sq += total_sq
                band.duration_total += duration
            total_open += summary["open"]
        self._merged_open = total_open

    def add(self, journey_id: str, customer_id: str, journey_type: str, at: int,
            channel: str, touchpoint: str, stage: str | None, satisfaction: float,
            end: bool) -> None:
        """Fold one event into its journey; an end marker closes it."""
        journey = self.open.get(journey_id)
        if journey is None:
            if journey_id in self.closed:
                # A straggler after the end: keep the record true, but count it once only.
                self.closed[journey_id].add(at, channel, touchpoint, stage, satisfaction)
                return
            journey = self.open[journey_id] = Journey(
                journey_id, customer_id, journey_type, at, at
            )
            heapq.heappush(self._due, (at + self.timeout, journey_id))
        journey.add(at, channel, touchpoint, stage, satisfaction)
        if end:
            self._close(journey, journey.last, "end_marker")

    def add_many(self, rows: Iterable[JourneyRow], swept: int | None) -> None:
        """``add`` each event in order, timing journeys out as the watermark passes them.

        Each row leads with the watermark once its event arrived. Before an event that
        finds the watermark moved on since ``swept`` (the last watermark swept at), or
        follows the start of a journey silent past the timeout already, the journeys
        silent past the timeout close, as ``sweep`` before every event would. Callers
        ``sweep`` at the last watermark after the batch.

        The hot path of every batch: ``add`` and ``Journey.add`` written out inline
        (one call per event fewer; held to them by a property test).
        """
        due, open_, closed, timeout = self._due, self.open, self.closed, self.timeout
        get, heappush = open_.get, heapq.heappush
        for (watermark, journey_id, customer_id, journey_type, at, channel, touchpoint, stage,
             satisfaction, end) in rows:
            if swept is None or watermark > swept:
                swept = watermark
                if due and due[0][0] < watermark:
                    self.sweep(watermark)
            journey = get(journey_id)
            if journey is None:
                if journey_id in closed:  # a straggler after the end: as ``add`` does it
                    closed[journey_id].add(at, channel, touchpoint, stage, satisfaction)
                    continue
                scored = satisfaction == satisfaction  # not NaN
                journey = open_[journey_id] = Journey(
                    journey_id, customer_id, journey_type, at, at, (channel,), (touchpoint,),
                    () if stage is None else (stage,), 1, 1 if scored else 0,
                    satisfaction if scored else 0.0,
                    satisfaction * satisfaction if scored else 0.0)
                heappush(due, (at + timeout, journey_id))
                if at + timeout < watermark:  # silent too long already: the next event
                    swept = None              # must find it closed, as ``sweep`` would
            else:
                if at < journey.started:
                    journey.started = at
                if at > journey.last:
                    journey.last = at
                journey.events += 1
                if channel not in journey.channels:
                    journey.channels += (channel,)
                touchpoints = journey.touchpoints
                if touchpoint not in touchpoints and len(touchpoints) < MAX_TOUCHPOINTS:
                    journey.touchpoints = (*touchpoints, touchpoint)
                if stage is not None and stage not in journey.stages:
                    journey.stages += (stage,)
                if satisfaction == satisfaction:  # not NaN
                    journey.n += 1
                    journey.total += satisfaction
                    journey.total_sq += satisfaction * satisfaction
            if end:
                self._close(journey, journey.last, "end_marker")

    def sweep(self, watermark: int) -> None:
        """Close journeys silent for longer than the timeout (on event time).

        Exact at every call, whatever the batching: only journeys whose queued
        deadline has passed are looked at, and they close in deadline order.
        """
        due = self._due
        expired: dict[str, int] = {}
        while due and due[0][0] < watermark:
            _, journey_id = heapq.heappop(due)
            journey = self.open.get(journey_id)
            if journey is None:
                continue  # ended by its end marker meanwhile
            deadline = journey.last + self.timeout
            if deadline < watermark:
                expired[journey_id] = deadline
            else:
                heapq.heappush(due, (deadline, journey_id))
        for journey_id, deadline in sorted(expired.items(), key=lambda item: (item[1], item[0])):
            self._close(self.open[journey_id], deadline, "timeout")

    def _close(self, journey: Journey, at: int, reason: str) -> None:
        del self.open[journey.journey_id]
        journey.ended, journey.end_reason = at, reason
        n = journey.n
        if n:
            score = 100.0 * journey.total / n
            duration = journey.last - journey.started
            band = min(len(journey.channels), 4) - 1  # a journey has at least one channel
            for journey_type in ("all", journey.journey_type):
                of_type = self._bands.get(journey_type)
                if of_type is None:
                    of_type = self._bands[journey_type] = [BandStats() for _ in CHANNEL_BANDS]
                of_type[band].add(score, duration)
        closed = self.closed
        closed[journey.journey_id] = journey
        while len(closed) > self.kept:
            closed.popitem(last=False)

    def erase(self, customer_id: str) -> int:
        """Forget a customer's journeys, open and ended (erasure on request); the
        statistics of ended journeys by channel band stay (they are anonymous sums).
        How many journeys went (erasing twice changes nothing)."""
        gone = [jid for jid, j in self.open.items() if j.customer_id == customer_id]
        for jid in gone:
            del self.open[jid]
        ended = [jid for jid, j in self.closed.items() if j.customer_id == customer_id]
        for jid in ended:
            del self.closed[jid]
        if gone:
            dropped = set(gone)
            self._due = [(at, jid) for at, jid in self._due if jid not in dropped]
            heapq.heapify(self._due)
        return len(gone) + len(ended)

    def get(self, journey_id: str) -> Journey | None:
        """An open or recently ended journey."""
        return self.open.get(journey_id) or self.closed.get(journey_id)

    def by_channel_count(self, journey_type: str = "all") -> dict[str, dict[str, Any]]:
        """Ended journeys' scores by number of channels used, for one journey type."""
        of_type = self._bands.get(journey_type) or [BandStats() for _ in CHANNEL_BANDS]
        return {band: stats_.view() for band, stats_ in zip(CHANNEL_BANDS, of_type, strict=True)}

    def journey_types(self) -> list[str]:
        """Journey types with at least one ended, scored journey."""
        return sorted(t for t in self._bands if t != "all")

    def state(self) -> dict[str, Any]:
        """Snapshot."""
        def dump(j: Journey) -> list[Any]:
            return [j.journey_id, j.customer_id, j.journey_type, j.started, j.last,
                    j.channels, j.touchpoints, j.stages, j.events, j.n, j.total,
                    j.total_sq, j.ended, j.end_reason]

        return {
            "open": [dump(j) for j in self.open.values()],
            "closed": [dump(j) for j in self.closed.values()],
            "bands": self._band_rows(),
        }

    def _band_rows(self) -> list[list[Any]]:
        return [[t, b, s.n, s.total, s.total_sq, s.duration_total]
                for t, of_type in self._bands.items()
                for b, s in zip(CHANNEL_BANDS, of_type, strict=True) if s.n]

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by ``state``."""
        def load(row: list[Any]) -> Journey:
            return Journey(row[0], row[1], row[2], row[3], row[4], tuple(row[5]),
                           tuple(row[6]), tuple(row[7]), row[8], row[9], row[10], row[11],
                           row[12], row[13])

        self.open = {row[0]: load(row) for row in state["open"]}
        self.closed = OrderedDict((row[0], load(row)) for row in state["closed"])
        self._bands = {}
        for t, b, n, s, ss, d in state["bands"]:
            of_type = self._bands.setdefault(t, [BandStats() for _ in CHANNEL_BANDS])
            of_type[CHANNEL_BANDS.index(b)] = BandStats(n, s, ss, d)
        self._due = [(j.last + self.timeout, jid) for jid, j in self.open.items()]
        heapq.heapify(self._due)
