"""The ingest steps both runners share, free of any transport.

Per batch: a decode result (valid events, their input positions and the rejects) goes
into the engine; every input gets its outcome in one wording (accepted, duplicate,
late, rejected, with field and reason); the fresh answers open follow-ups; and, where
the runner evaluates alerts beside its engine (the embedded runner), the detector runs
when event time entered a new minute. The :class:`Report` says all of it; each runner
persists it its own way (the embedded runner as SQLite rows, a worker as Kafka
records), so the runners are adapters around this module.

Decoding itself stays with the runners (JSON objects from the API, bytes and
CloudEvents from Kafka); both hand over a :class:`~schemas.decode.DecodedBatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from schemas.decode import DecodedBatch, EventDecoder, EventError
from schemas.event import TouchpointEvent
from streams.deadletters import LATE_FIELD, late_reason, too_old_reason
from streams.detection import AlertChange, Detector, FollowUp, FollowUpRule, followups
from streams.engine.engine import Engine, IngestResult
from streams.runner import EventOutcome

DUPLICATE_REASON: Final = "event_id already received"
DETECT_EVERY: Final = 60
"""Event-time seconds between detector evaluations (replays evaluate at the same points)."""


@dataclass(slots=True)
class Report:
    """What became of one batch: the decode result, the engine's verdicts, follow-ups
    opened and alert changes. Positions are indices into the batch as the runner
    received it."""

    size: int
    events: list[TouchpointEvent]
    positions: list[int] | None
    """The input position of each event; ``None`` when every input was an event."""
    rejected: list[tuple[int, EventError]]
    result: IngestResult
    late_reason: str
    """Why the ``late`` events were not counted (empty when none was)."""
    followups: list[FollowUp] = field(default_factory=list)
    changes: list[AlertChange] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.result.accepted

    @property
    def duplicates(self) -> int:
        return len(self.result.duplicates)

    @property
    def late(self) -> int:
        return len(self.result.late)

    def late_events(self) -> Iterator[tuple[int, TouchpointEvent]]:
        """(input position, event) of each late event, in input order."""
        if not self.result.late:
            return
        late = {id(e) for e in self.result.late}
        for i, event in enumerate(self.events):
            if id(event) in late:
                yield (i if self.positions is None else self.positions[i]), event

    def outcomes(self, rejected_id: Callable[[int], str | None] = lambda index: None,
                 ) -> list[EventOutcome]:
        """One outcome per input, in input order, in the words both runners use;
        ``rejected_id(index)``: the ``event_id`` a rejected input carries, if usable."""
        out: list[EventOutcome | None] = [None] * self.size
        for index, exc in self.rejected:
            out[index] = EventOutcome(index, "rejected", rejected_id(index), exc.field,
                                      exc.reason)
        late = {id(e) for e in self.result.late}
        duplicates = {id(e) for e in self.result.duplicates}
        for i, event in enumerate(self.events):
            index = i if self.positions is None else self.positions[i]
            key = id(event)
            if key in late:
                out[index] = EventOutcome(index, "late", event.event_id, LATE_FIELD,
                                          self.late_reason)
            elif key in duplicates:
                out[index] = EventOutcome(index, "duplicate", event.event_id,
                                          reason=DUPLICATE_REASON)
            else:
                out[index] = EventOutcome(index, "accepted", event.event_id)
        return [o for o in out if o is not None]


class Pipeline:
    """One engine's ingest: engine, follow-up rules and, optionally, the detector.

    ``detector``: the embedded runner evaluates alerts beside its one engine (the
    detector then also keeps the follow-ups it opens); a worker passes none (the group
    leader evaluates the merged view) and only ``followup_rules``.
    """

    def __init__(self, engine: Engine, *, followup_rules: Sequence[FollowUpRule] = (),
                 detector: Detector | None = None) -> None:
        self.engine = engine
        self.detector = detector
        self.followup_rules = tuple(
            detector.config.followups if detector is not None else followup_rules)

    def run(self, decoded: DecodedBatch, size: int | None = None, *,
            backfill: bool = False) -> Report:
        """Count a decoded batch of ``size`` inputs (default: its events and rejects).

        ``backfill``: history loaded on purpose (``touchstream replay --backfill``,
        ``POST /v1/events?mode=backfill``): bounded by what the state keeps, not by the
        lateness horizon (``Engine.ingest``); it opens no follow-up and runs no
        detection, so it never pages. Later evaluations see it like any answer."""
        events = decoded.events
        if size is None:
            size = len(events) + len(decoded.errors)
        engine = self.engine
        result = engine.ingest(events, decoded.stamps, backfill=backfill)
        reason = "" if not result.late else (
            too_old_reason(result.too_old_since) if backfill
            else late_reason(engine.config.lateness_horizon))
        report = Report(size, events, decoded.positions, decoded.errors, result, reason)
        if backfill:
            return report
        if self.followup_rules and events:
            # Late answers still need a human; duplicates were handled the first time.
            fresh = events
            if result.duplicates:
                seen = {id(e) for e in result.duplicates}
                fresh = [e for e in events if id(e) not in seen]
            report.followups = (self.detector.follow_up(fresh) if self.detector is not None
                                else followups(fresh, self.followup_rules))
        detector = self.detector
        watermark = engine.watermark
        if detector is not None and watermark is not None and detector.due(watermark,
                                                                            DETECT_EVERY):
            report.changes = detector.evaluate(engine, watermark)
        return report

    def apply(self, events: list[TouchpointEvent], *, backfill: bool = False) -> Report:
        """Count events decoded before (the embedded runner's log on replay)."""
        stamps = np.array([e.occurred_at.timestamp() for e in events], dtype=np.float64)
        return self.run(DecodedBatch(events, stamps), backfill=backfill)


def convert_many(decoder: EventDecoder, items: Sequence[object]) -> DecodedBatch:
    """A decode result from already-parsed JSON items (the API's request bodies), with
    the same checks and reasons as ``EventDecoder.decode_many`` on bytes."""
    events: list[TouchpointEvent] = []
    positions: list[int] = []
    errors: list[tuple[int, EventError]] = []
    for index, item in enumerate(items):
        try:
            events.append(decoder.convert(item))
        except EventError as exc:
            errors.append((index, exc))
            continue
        positions.append(index)
    stamps = np.array([e.occurred_at.timestamp() for e in events], dtype=np.float64)
    return DecodedBatch(events, stamps, None if not errors else positions, errors)
