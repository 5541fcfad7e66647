"""One input partition's state: an engine, the next input offset it reflects, and what
changed since it was last published. Transport-free, so it is tested without Kafka.

The invariant everything rests on: ``engine`` holds exactly the effect of input records
``[0, next_offset)`` of this partition. Records below ``next_offset`` are skipped (they
are redeliveries); a checkpoint stores the engine and ``next_offset`` together, so a
restored state and the offset to resume from can never disagree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Literal, Protocol

from schemas import cloudevents
from schemas.decode import DecodedBatch, EventDecoder, EventError
from streams.deadletters import LATE_FIELD
from streams.detection import FollowUp, FollowUpRule
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.pipeline import Pipeline
from streams.runner import apply_command
from streams.worker import records as rec

log = logging.getLogger(__name__)
Headers = Sequence[tuple[str, bytes]]


class InputRecord(Protocol):
    """What the worker needs from a consumed record (aiokafka's ConsumerRecord fits)."""

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def timestamp(self) -> int | None: ...

    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that was not counted, with why; its bytes are kept as they came."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes], ...]
    kind: Literal["invalid", "late", "bad_command"]
    """The dead-letter contract's kind (``streams.deadletters.KINDS``)."""
    field: str
    reason: str

    def dlq_headers(self, topic: str, partition: int) -> list[tuple[str, bytes]]:
        """The original headers plus the reason and the source position."""
        ours = {rec.H_KIND, rec.H_STATUS, rec.H_FIELD, rec.H_REASON, rec.H_TOPIC,
                rec.H_PARTITION, rec.H_OFFSET, rec.H_INDEX}
        kept = [(k, v) for k, v in self.headers if k not in ours]
        return kept + [
            (rec.H_KIND, self.kind.encode()),
            (rec.H_FIELD, self.field.encode()),
            (rec.H_REASON, self.reason.encode()),
            (rec.H_TOPIC, topic.encode()),
            (rec.H_PARTITION, str(partition).encode()),
            (rec.H_OFFSET, str(self.offset).encode()),
        ]


@dataclass(slots=True)
class BatchReport:
    """What became of one batch of records."""

    records: int = 0
    skipped: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    commands: int = 0
    """Control records applied (pulse studies started or ended)."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    followups: list[FollowUp] = field(default_factory=list)


class PartitionState:
    """The engine of one input partition and the bookkeeping around it."""

    def __init__(self, partition: int, engine: Engine, next_offset: int,
                 decoder: EventDecoder | None = None) -> None:
        self.partition = partition
        self.next_offset = next_offset
        self.decoder = decoder or EventDecoder()
        self.rejected = 0
        self.pipeline = Pipeline(engine)
        """The shared ingest steps (the leader, not a partition, evaluates alerts)."""
        self._dirty: dict[str, set[int]] = {g: set() for g in engine.granularities}
        self._published: dict[str, set[int]] = {
            g: set(gran.tables) for g, gran in engine.granularities.items()
        }
        self._meta_dirty = False
        self._keys = rec.SeriesKeys()
        self.checkpointed_offset = next_offset
        self.checkpointed_at = time.monotonic()
        self.published_offset = next_offset
        self.published_at = time.monotonic()

    @property
    def engine(self) -> Engine:
        """This partition's engine (the pipeline's)."""
        return self.pipeline.engine

    @property
    def followup_rules(self) -> tuple[FollowUpRule, ...]:
        """Which answers become follow-ups (set by the worker from its detection config)."""
        return self.pipeline.followup_rules

    @followup_rules.setter
    def followup_rules(self, rules: tuple[FollowUpRule, ...]) -> None:
        self.pipeline.followup_rules = tuple(rules)

    @classmethod
    def fresh(cls, partition: int, config: EngineConfig,
              decoder: EventDecoder | None = None) -> PartitionState:
        """An empty state that starts at the beginning of the partition."""
        return cls(partition, Engine(config), 0, decoder)

    @classmethod
    def restore(cls, partition: int, config: EngineConfig, data: bytes,
                decoder: EventDecoder | None = None) -> PartitionState:
        """The state saved by ``checkpoint``; raises ``ValueError`` on a foreign one."""
        cp = rec.decode_checkpoint(data)
        if cp.partition != partition:
            raise ValueError(f"checkpoint of partition {cp.partition} read for {partition}")
        state = cls(partition, Engine.restore(config, cp.snapshot), cp.offset, decoder)
        state.rejected = state.engine.counters.get("rejected", 0)
        return state

    # -- processing ----------------------------------------------------------------

    def process(self, records: Sequence[InputRecord]) -> BatchReport:
        """Decode, validate, dedupe and count a batch of this partition's records.

        Records below ``next_offset`` are redeliveries and skipped. Invalid and late
        records come back as dead letters (with the reason); duplicates are counted.
        Control records (a pulse study started or ended) apply between the events
        before and after them, exactly where they sit in the partition.
        """
        report = BatchReport(records=len(records))
        next_offset = self.next_offset
        if (records and records[0].offset >= next_offset
                and not any(map(_headers_of, records))):
            # The usual batch: nothing redelivered (offsets only grow within a
            # partition), no control record: one run of events.
            self._ingest(list(records), report)
            self._finish(report, records[-1].offset + 1)
            return report
        run: list[InputRecord] = []  # the records since the last control or mode change
        backfill = False
        for record in records:
            offset = record.offset
            if offset < next_offset:
                report.skipped += 1
                continue
            next_offset = offset + 1
            headers = record.headers
            command = rec.control_kind(headers) if headers else None
            if command is not None:
                self._ingest(run, report, backfill)
                run = []
                self._command(record, command, report)
                continue
            mode = bool(headers) and rec.is_backfill(headers)
            if mode != backfill:
                self._ingest(run, report, backfill)
                run, backfill = [], mode
            run.append(record)
        self._ingest(run, report, backfill)
        self._finish(report, next_offset)
        return report

    def _finish(self, report: BatchReport, next_offset: int) -> None:
        self.rejected += report.rejected
        self.engine.counters["rejected"] = self.rejected
        if next_offset != self.next_offset:
            self._meta_dirty = True
        self.next_offset = next_offset

    def _command(self, record: InputRecord, command: str, report: BatchReport) -> None:
        """Apply a control record; one that cannot apply becomes a dead letter."""
        try:
            apply_command(self.engine, command, record.value or b"")
        except PulseError as exc:
            log.warning("partition %d offset %d: %s command not applied: %s",
                        self.partition, record.offset, command, exc)
            report.dead_letters.append(_dead(record, "bad_command", f"control.{exc.field}",
                                             exc.reason))
            return
        report.commands += 1

    def _ingest(self, run: list[InputRecord], report: BatchReport,
                backfill: bool = False) -> None:
        """Decode and count a run of event records (no control record among them; all
        live, or all ``backfill``)."""
        if not run:
            return
        values = [record.value for record in run]
        decoded = self.decoder.decode_many(values)
        if decoded.errors:
            run, decoded = self._cloudevents(run, values, decoded, report)
        for index, exc in decoded.errors:
            report.rejected += 1
            report.dead_letters.append(_dead(run[index], "invalid", exc.field, exc.reason))
        if not decoded.events:
            return
        ingested = self.pipeline.run(decoded, backfill=backfill)
        report.accepted += ingested.accepted
        report.duplicates += ingested.duplicates
        report.late += ingested.late
        for index, _ in ingested.late_events():  # the record's own bytes, as they came
            report.dead_letters.append(_dead(run[index], "late", LATE_FIELD,
                                             ingested.late_reason))
        if ingested.accepted:
            for name, buckets in self.engine.take_changed().items():
                self._dirty[name] |= buckets
            self._meta_dirty = True
        report.followups.extend(ingested.followups)

    def _cloudevents(self, run: list[InputRecord], values: list[bytes | None],
                     decoded: DecodedBatch, report: BatchReport,
                     ) -> tuple[list[InputRecord], DecodedBatch]:
        """Records that failed to decode because they are CloudEvents (the Kafka
        protocol binding: ``ce_`` headers, or the whole envelope as the value) become
        events, and the run is decoded again in order; a CloudEvent whose envelope
        cannot carry an event is a dead letter naming the attribute. Only on the
        failure path: a batch that decodes pays nothing."""
        values = list(values)
        refused: set[int] = set()
        mapped = False
        for index, _ in decoded.errors:
            record = run[index]
            try:
                event = cloudevents.from_kafka(record.headers or (), record.value)
            except EventError as exc:
                report.rejected += 1
                report.dead_letters.append(_dead(record, "invalid", exc.field, exc.reason))
                refused.add(index)
                continue
            if event is not None:
                values[index] = event
                mapped = True
        if not mapped and not refused:
            return run, decoded
        kept = [i for i in range(len(run)) if i not in refused]
        return [run[i] for i in kept], self.decoder.decode_many([values[i] for i in kept])

    @property
    def events_since_checkpoint(self) -> int:
        """Input records taken in since the last checkpoint."""
        return self.next_offset - self.checkpointed_offset

    @property
    def has_unpublished(self) -> bool:
        """Whether partial aggregates changed since they were last published."""
        return self._meta_dirty or any(self._dirty.values())

    # -- outputs ---------------------------------------------------------------------

    def partial_records(self) -> list[tuple[bytes, bytes | None]]:
        """Changed buckets as absolute state, tombstones for expired ones, then the meta.

        A bucket changed by a late answer, however old, is among the changed ones as
        long as the engine keeps it (the engine notes every bucket an answer lands in),
        and goes out again whole, with its ``late`` and ``revised`` counters.

        Calling it marks everything returned as published; a caller that fails to
        deliver them must not checkpoint (a checkpoint would hide the loss).
        """
        out: list[tuple[bytes, bytes | None]] = []
        engine = self.engine
        keys = engine.series.keys
        for name, gran in engine.granularities.items():
            published = self._published[name]
            current = set(gran.tables)
            for bucket in sorted(published - current):
                out.append((rec.bucket_key(self.partition, name, bucket), None))
            for bucket in sorted(self._dirty[name] & current):
                table = gran.tables[bucket]
                used = len(table)
                out.append((
                    rec.bucket_key(self.partition, name, bucket),
                    rec.encode_bucket(self.next_offset,
                                      self._keys.raw(keys, table.series[:used].tolist()),
                                      table.data[:used], table.late, table.revised),
                ))
            self._published[name] = current
            self._dirty[name].clear()
        out.append((rec.meta_key(self.partition), rec.encode_meta(self.meta())))
        self._meta_dirty = False
        self.published_offset = self.next_offset
        self.published_at = time.monotonic()
        return out

    def meta(self) -> rec.PartitionMeta:
        """The partition's meta record."""
        engine = self.engine
        n = len(engine.series)
        return rec.PartitionMeta(
            offset=self.next_offset,
            watermark=engine.watermark,
            counters={k: int(v) for k, v in engine.counters.items()},
            folded=engine.folded(),
            latest_keys=self._keys.raw(engine.series.keys, list(range(n))),
            latest=engine.latest[:n].tolist(),
            pulses=[study.state() for study in engine.pulses.values()],
            journeys=engine.journeys.summary(),
        )

    def checkpoint(self) -> bytes:
        """The whole state and the offset it reflects, as one value."""
        return rec.encode_checkpoint(self.partition, self.next_offset, self.engine.snapshot())

    def mark_checkpointed(self, offset: int) -> None:
        """Record that the checkpoint taken at ``offset`` is durable."""
        self.checkpointed_offset = offset
        self.checkpointed_at = time.monotonic()


_headers_of = attrgetter("headers")


def _dead(record: InputRecord, kind: Literal["invalid", "late", "bad_command"], field: str,
          reason: str) -> DeadLetter:
    return DeadLetter(record.offset, record.key, record.value, record.timestamp,
                      tuple(record.headers or ()), kind, field, reason)
