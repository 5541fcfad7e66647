"""The embedded runner: one process, no broker, state in SQLite.

Durability comes from an ordered command log (:mod:`streams.embedded.store`), not from
saving the engine after every request. ``submit`` validates a batch, appends the valid
events to the log and the rejects to the dead letters in ONE transaction, commits
(``synchronous=FULL`` in WAL mode, so the commit is on disk), and only then runs the
batch through the shared :class:`~streams.pipeline.Pipeline` and answers. Pulse and
follow-up commands go through the same log. A process killed at any point therefore
loses nothing it acknowledged: ``open()`` restores the newest snapshot and replays every
later log row in the same batches (:mod:`streams.embedded.recovery`).

Every ``snapshot_every`` logged rows, and on ``close()``, the engine and detector are
snapshotted and the log rows they cover are deleted, in one transaction, so recovery
time stays bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec
import orjson

from schemas.decode import EventDecoder, encode
from streams.deadletters import (
    DEFAULT_MAX_BYTES,
    HTTP,
    LATE_FIELD,
    ItemBytes,
    Kept,
    letter,
    original,
)
from streams.deadletters import source as dead_source
from streams.detection import DetectionConfig, Detector, FollowUp, FollowUpUpdate
from streams.embedded import recovery
from streams.embedded.store import (
    BACKFILL,
    EVENT,
    CommandLog,
    DeadLetter,
    Record,
    Retention,
    StorageError,
    explain,
)
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.pipeline import Pipeline, Report, convert_many
from streams.runner import (
    ERASE,
    FOLLOWUP_UPDATE,
    PULSE_END,
    PULSE_START,
    ErasureReport,
    ErasureRequest,
    EventOutcome,
    PulseRequest,
    apply_command,
    encode_erase,
    encode_pulse_start,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
State = Literal["new", "open", "closed", "failed"]
EXPIRE_EVERY = 60.0
"""Wall-clock seconds between checks of the dead letters' age."""


def _item_event_id(item: object) -> str | None:
    """The ``event_id`` of a rejected item when it has a usable one, for the outcome."""
    if isinstance(item, dict):
        value = item.get("event_id")
        if isinstance(value, str):
            return value[:128]
    return None


def _needles(customer_id: str) -> list[bytes]:
    """The ways a customer id stands in stored bytes: UTF-8, and JSON's ASCII escapes."""
    return sorted({customer_id.encode("utf-8"), orjson.dumps(customer_id)[1:-1],
                   json.dumps(customer_id)[1:-1].encode("ascii")})


def _holds(data: bytes, needles: Sequence[bytes]) -> bool:
    return any(needle in data for needle in needles)


@dataclasses.dataclass(slots=True)
class _Stats:
    """Per-process counters for the exporter (``log_rows`` is a gauge)."""

    events_received: int = 0
    accepted: int = 0
    invalid: int = 0
    late: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
    dead_letters_expired: int = 0
    """Dead letters deleted by retention (age or the total bound), oldest first."""
    snapshots: int = 0
    log_rows: int = 0


class EmbeddedRunner:
    """The :class:`~streams.runner.Runner` of the one-process deployment, state in SQLite.

    One connection, used by one worker thread at a time (a lock serializes the blocking
    work, which the async methods run with :func:`asyncio.to_thread`). Validation runs
    outside the lock, so concurrent submissions overlap their CPU work.
    """

    def __init__(
        self,
        data_dir: Path,
        config: EngineConfig,
        decoder: EventDecoder | None = None,
        snapshot_every: int = 50_000,
        clock: Callable[[], float] = time.time,
        detection: DetectionConfig | None = None,
        dead_letter_max_bytes: int = DEFAULT_MAX_BYTES,
        retention: Retention | None = None,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        if dead_letter_max_bytes < 0:
            raise ValueError("dead_letter_max_bytes must not be negative")
        self._decoder = decoder if decoder is not None else EventDecoder(clock=clock)
        self.store = CommandLog(data_dir, config, dead_letter_max_bytes,
                                self._decoder.comments)
        self.data_dir = self.store.data_dir
        self.path = self.store.path
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.config = config
        self.snapshot_every = snapshot_every
        self.retention = retention if retention is not None else Retention()
        self._clock = clock
        self._snapshot_at = 0.0
        """When the newest snapshot was taken: every log row is younger."""
        self._expire_at = 0.0
        """When the dead letters' age is checked next."""
        self._lock = threading.Lock()
        self.detection = detection if detection is not None else DetectionConfig()
        self._detector = Detector(self.detection)
        self._pipeline = Pipeline(Engine(config), detector=self._detector)
        self._detector.check(self._pipeline.engine)
        self._state: State = "new"
        self._failure = ""
        self._since_snapshot = 0
        self._pending_dead: list[DeadLetter] = []
        self._pending_records: list[Record] = []
        self._stats = _Stats()

    @property
    def _engine(self) -> Engine:
        return self._pipeline.engine

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Create the data directory and database, or recover the state they hold.

        Raises :class:`StorageError` naming the path and the reason when the directory
        cannot be written, the disk is full, the database is corrupt, another process
        holds it, or it was built with another engine configuration. On failure nothing
        is left half-written and the runner is not open.
        """
        with self._lock:
            if self._state == "open":
                return
            if self._state != "new":
                raise RuntimeError("an EmbeddedRunner cannot be reopened; create a new one")
            started = time.perf_counter()
            try:
                self.store.open(self._clock())
                snapshot_seq = recovery.restore(self.store, self.config, self._pipeline)
                replayed = recovery.replay(self.store, self._pipeline, snapshot_seq,
                                           self._replayed)
            except BaseException as exc:
                self.store.release()
                self._state = "failed"
                self._failure = f"open failed: {exc}"
                if isinstance(exc, StorageError):
                    raise
                if isinstance(exc, OSError | sqlite3.Error | msgspec.DecodeError | ValueError):
                    raise StorageError(self.path, explain(exc)) from exc
                raise
            self._stats.log_rows = replayed
            self._since_snapshot = replayed
            self._snapshot_at = self.store.snapshot_time() or self._clock()
            self._flush()
            self._state = "open"
            log.info("opened %s: %d log rows replayed in %.3f s, watermark %s",
                     self.path, replayed, time.perf_counter() - started,
                     self._engine.watermark)
            self._retain()

    def close(self) -> None:
        """Write a final snapshot (so the next start replays nothing) and close the DB.

        A failing final snapshot is logged and re-raised after the database is closed;
        the log still holds everything, so the next ``open()`` recovers by replay.
        """
        with self._lock:
            if self._state != "open":
                self.store.release()
                self._state = "closed"
                return
            try:
                if self._stats.log_rows or self._pending_dead:
                    self._snapshot()
            except StorageError:
                log.exception("final snapshot failed; the log keeps everything and the "
                              "next open() replays it")
                raise
            finally:
                self.store.release()
                self._state = "closed"
                log.info("closed %s", self.path)

    def _release(self) -> None:
        """Drop the database and the lock without a snapshot, as a crash would (tests)."""
        self.store.release()
        self._state = "closed"

    def __enter__(self) -> EmbeddedRunner:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddedRunner:
        await asyncio.to_thread(self.open)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.close)

    def _usable(self) -> None:
        """Refuse work unless open and healthy."""
        if self._state != "open":
            reason = self._failure or f"the runner is {self._state}, not open"
            raise StorageError(self.path, reason)

    # -- events ------------------------------------------------------------------------

    def submit_blocking(self, items: Sequence[Any], raw: ItemBytes | None = None,
                        backfill: bool = False) -> list[EventOutcome]:
        """:meth:`submit` without the thread hop, for scripts and benchmarks."""
        received_at = self._clock()
        decoded = convert_many(self._decoder, items)
        payloads = [encode(event) for event in decoded.events]
        dead = [self.store.dead_row(received_at, "invalid", _item_event_id(items[index]),
                                    exc.field, exc.reason, original(items, raw, index), index)
                for index, exc in decoded.errors]
        with self._lock:
            self._usable()
            first = self.store.append_events(payloads, dead,
                                             BACKFILL if backfill else EVENT)
            self._stats.log_rows += len(payloads)
            self._since_snapshot += len(payloads)
            try:
                report = self._pipeline.run(decoded, len(items), backfill=backfill)
            except Exception as exc:
                # Memory is behind the log now: stop taking work until restarted
                # (recovery replays the log).
                self._state = "failed"
                self._failure = (f"the engine failed applying log rows from seq {first} "
                                 f"({exc}); restart to recover from the log")
                log.exception("engine failure; runner stopped: %s", self._failure)
                raise
            self._keep(report, lambda index: original(items, raw, index), received_at,
                       indexed=True)
            self._flush()
            self._count(report)
            self._retain()
        return report.outcomes(lambda index: _item_event_id(items[index]))

    def _replayed(self, report: Report, payloads: list[bytes]) -> None:
        """A batch replayed on open: its late rows (with the logged bytes; a row written
        at submission wins) and detector records, written once recovery is done."""
        self._keep(report, payloads.__getitem__, self._clock(), indexed=False)

    def _keep(self, report: Report, payload: Callable[[int], bytes], received_at: float,
              *, indexed: bool) -> None:
        """Queue what a batch leaves to store: late dead letters (the bytes received,
        ``indexed``: with their position in the batch) and the detector's records."""
        for index, event in report.late_events():
            self._pending_dead.append(self.store.dead_row(
                received_at, "late", event.event_id, LATE_FIELD, report.late_reason,
                payload(index), index if indexed else None))
        for item in report.followups:
            self._pending_records.append(("followup", (
                item.id, item.created_at, orjson.dumps(item.to_dict()))))
        for change in report.changes:
            self._pending_records.append(("change", (
                change.alert.id, change.state, change.at, orjson.dumps(change.to_dict()))))

    def _flush(self) -> None:
        """Store queued late dead letters and detector records in their own transaction.

        The events are durable in the log already (and a replay re-derives these rows),
        so a failure here is logged and retried with the next write rather than failing
        an acknowledged submission.
        """
        if not self._pending_dead and not self._pending_records:
            return
        try:
            self.store.add(self._pending_dead, self._pending_records)
        except StorageError:
            log.warning("could not store %d dead letters and %d alert/follow-up records "
                        "yet; will retry", len(self._pending_dead),
                        len(self._pending_records), exc_info=True)
            return
        self._pending_dead = []
        self._pending_records = []

    def _count(self, report: Report) -> None:
        stats = self._stats
        invalid = len(report.rejected)
        stats.events_received += report.size
        stats.invalid += invalid
        stats.accepted += report.accepted
        stats.late += report.late
        stats.duplicate += report.duplicates
        stats.dead_lettered += invalid + report.late

    def _snapshot(self) -> None:
        """Snapshot engine and detector and drop the log rows they cover (one transaction)."""
        data = self._engine.snapshot()
        seq = self.store.write_snapshot(
            self._clock(), data, msgspec.msgpack.encode(self._detector.state()),
            self._pending_dead, self._pending_records)
        self._pending_dead = []
        self._pending_records = []
        self._stats.log_rows = 0
        self._since_snapshot = 0
        self._stats.snapshots += 1
        self._snapshot_at = self._clock()
        log.info("snapshot at seq %d (%d bytes)", seq, len(data))

    def _try_snapshot(self) -> None:
        """A periodic snapshot; failing one only delays log pruning, so it is logged."""
        try:
            self._snapshot()
        except StorageError:
            log.exception("periodic snapshot failed; the log keeps everything meanwhile")

    def _retain(self) -> None:
        """Snapshot when the log is long (``snapshot_every``) or its oldest row may be
        older than ``retention.log_seconds``; expire dead letters by age (at most once
        a minute) and by total size. Failures are logged: the next write retries."""
        keep = self.retention
        now = self._clock()
        stale = (keep.log_seconds is not None and self._stats.log_rows > 0
                 and now - self._snapshot_at > keep.log_seconds)
        if self._since_snapshot >= self.snapshot_every or stale:
            self._try_snapshot()
        if stale:
            self._truncate_wal()  # the deleted rows' old pages leave the WAL too
        over = keep.dead_letter_bytes is not None and self.store.dead_bytes > \
            keep.dead_letter_bytes
        aged = keep.dead_letter_seconds is not None and now >= self._expire_at
        if not over and not aged:
            return
        self._expire_at = now + EXPIRE_EVERY
        before = None if keep.dead_letter_seconds is None else now - keep.dead_letter_seconds
        try:
            gone = self.store.expire_dead_letters(before, keep.dead_letter_bytes)
        except StorageError:
            log.exception("expiring dead letters failed; retried with the next write")
            return
        if gone:
            self._stats.dead_letters_expired += gone
            self._truncate_wal()
            log.info("%d dead letters expired (retention)", gone)

    def _truncate_wal(self) -> None:
        try:
            self.store.checkpoint()
        except StorageError:
            log.exception("truncating the WAL failed; retried after the next expiry")

    def maintain_blocking(self) -> None:
        """Apply the retention without a write (the service calls it every minute, so
        an idle runner keeps no raw data past its time either)."""
        with self._lock:
            if self._state == "open":
                self._retain()

    async def maintain(self) -> None:
        """:meth:`maintain_blocking` in a thread."""
        await asyncio.to_thread(self.maintain_blocking)

    def _log_command(self, kind: str, payload: bytes) -> None:
        self.store.append_command(kind, payload)
        self._stats.log_rows += 1
        self._since_snapshot += 1

    # -- pulses ------------------------------------------------------------------------

    def start_pulse_blocking(self, request: PulseRequest) -> None:
        """Start a study on the engine (``PulseError`` if invalid: nothing is logged), then
        log it; if logging fails the study is removed again and the error raised."""
        with self._lock:
            self._usable()
            payload = encode_pulse_start(request)
            apply_command(self._engine, PULSE_START, payload)
            try:
                self._log_command(PULSE_START, payload)
            except BaseException:
                self._engine.pulses.pop(request.pulse_id, None)
                raise

    def end_pulse_blocking(self, pulse_id: str) -> None:
        """End a study (``KeyError`` when unknown), durably; ending twice is a no-op."""
        with self._lock:
            self._usable()
            study = self._engine.pulses[pulse_id]
            if study.ended_at is not None:
                return
            self._engine.end_pulse(pulse_id)
            try:
                self._log_command(PULSE_END, pulse_id.encode("utf-8"))
            except BaseException:
                study.ended_at = None
                raise

    # -- follow-ups --------------------------------------------------------------------

    def update_followup_blocking(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up, logged as a command (replayed in order)."""
        with self._lock:
            self._usable()
            book = self._detector.followups
            found = book.get(update.id)
            if found is None:
                raise KeyError(f"no follow-up with id {update.id!r}")
            if found.status == "closed":
                return book.apply(update)  # a no-op, or the ValueError; nothing to log
            self._log_command(FOLLOWUP_UPDATE, update.encode())
            return book.apply(update)

    # -- erasure -----------------------------------------------------------------------

    def erase_customer_blocking(self, request: ErasureRequest) -> ErasureReport:
        """:meth:`erase_customer` without the thread hop."""
        customer_id = request.customer_id
        if not customer_id:
            raise ValueError("an erasure names the customer")
        with self._lock:
            self._usable()
            payload = encode_erase(request)
            self._log_command(ERASE, payload)  # durable first: a crash replays it
            erased = apply_command(self._engine, ERASE, payload)
            changed = self._detector.followups.erase_customer(customer_id)
            needles = _needles(customer_id)
            self._pending_dead = [row for row in self._pending_dead
                                  if not _holds(row[5], needles)]
            self._pending_records = [
                record for record in self._pending_records
                if not (record[0] == "followup" and _holds(record[1][2], needles))]
            removed = {**(erased.as_dict() if erased is not None else {}),
                       "followups": len(changed)}
            removed["dead_letters"] = self.store.erase(
                needles, [(f.id, f.created_at, orjson.dumps(f.to_dict())) for f in changed],
                (request.digest, request.by, request.at,
                 orjson.dumps(removed).decode()))
            # The snapshot covers the erase command and every logged event of the
            # customer: the log rows and older snapshots go; compact leaves no copy.
            self._snapshot()
            self.store.compact()
        log.info("erased customer %s (by %s): %s", request.digest, request.by, removed)
        return ErasureReport.of(request, "erased", removed)

    async def erase_customer(self, request: ErasureRequest) -> ErasureReport:
        """Erase a customer (``DELETE /v1/customers/{id}``): the ``erase`` command is
        logged, applied to the engine (history, baseline, journeys) and the follow-ups
        (personal fields blanked), the dead letters carrying the id are deleted, then a
        snapshot drops every log row and older snapshot, and the database is vacuumed
        and its WAL truncated: no byte of the id or the customer's comments is left in
        the data directory. Aggregates stay. Idempotent (again: nothing more removed)."""
        return await asyncio.to_thread(self.erase_customer_blocking, request)

    def erasures(self) -> list[dict[str, Any]]:
        """The audit trail of erasures, oldest first (digest, by, at, removed)."""
        with self._lock:
            self._usable()
            return [{"digest": digest, "by": by, "at": at, "removed": orjson.loads(removed)}
                    for digest, by, at, removed in self.store.erasures()]

    # -- reading -----------------------------------------------------------------------

    def read_blocking(self, query: Callable[[Engine], T]) -> T:
        """:meth:`read` without the thread hop."""
        with self._lock:
            self._usable()
            return query(self._engine)

    def dead_letters_blocking(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """:meth:`dead_letters` without the thread hop."""
        with self._lock:
            self._usable()
            rows = self.store.dead_letters(limit, offset)
        cap = self.dead_letter_max_bytes
        return [
            letter(kind=kind, field=field, reason=reason, received_at=at,
                   source=dead_source(HTTP, index=index),
                   kept=Kept(bytes(head or b""), size, digest), max_bytes=cap)
            for at, kind, field, reason, head, size, digest, index in rows
        ]

    def read_detector_blocking(self, query: Callable[[Detector], T]) -> T:
        """:meth:`read_detector` without the thread hop."""
        with self._lock:
            self._usable()
            return query(self._detector)

    def stats(self) -> dict[str, int]:
        """Counters for the exporter, since this process opened the runner.

        ``events_received``, ``invalid``, ``accepted``, ``late``, ``duplicate`` and
        ``dead_lettered`` count submissions (replayed rows are not counted again);
        ``snapshots`` counts snapshots written; ``log_rows`` is the current log length.
        """
        return dataclasses.asdict(self._stats)

    # -- the Runner protocol -----------------------------------------------------------

    async def submit(self, items: Sequence[Any], raw: ItemBytes | None = None,
                     backfill: bool = False) -> list[EventOutcome]:
        """Validate and durably accept events; one outcome each, in submission order.

        Answers only after the batch is committed to SQLite (``synchronous=FULL``).
        Raises :class:`StorageError` when it could not be stored; then nothing of the
        batch was stored or applied. ``raw(i)``: the bytes item ``i`` was received as,
        kept in its dead letter (without it, the item's JSON).
        """
        return await asyncio.to_thread(self.submit_blocking, list(items), raw, backfill)

    async def read(self, query: Callable[[Engine], T]) -> T:
        """Run a read-only ``query`` against the engine, never mid-batch."""
        return await asyncio.to_thread(self.read_blocking, query)

    def dead_letter_blocking(self, payload: bytes, field: str, reason: str) -> None:
        """:meth:`dead_letter` without the thread hop."""
        with self._lock:
            self._usable()
            self.store.add([self.store.dead_row(self._clock(), "bad_body", None, field,
                                                reason, payload, None)])
            self._stats.invalid += 1
            self._stats.dead_lettered += 1

    async def dead_letter(self, payload: bytes, field: str, reason: str) -> None:
        """Keep a body refused whole, with its reason, among the dead letters."""
        await asyncio.to_thread(self.dead_letter_blocking, payload, field, reason)

    async def consumer_lag(self) -> dict[int, int]:
        """Nothing is ever behind: a submission is applied before it is acknowledged."""
        return {}

    async def read_state(self, key: str | None, query: Callable[[Engine], T | None]) -> T | None:
        """Customers and journeys live in the one engine: the same as :meth:`read`."""
        return await self.read(query)

    async def read_detector(self, query: Callable[[Detector], T]) -> T:
        """Run a read-only ``query`` against the detector (alerts and follow-ups)."""
        return await asyncio.to_thread(self.read_detector_blocking, query)

    async def start_pulse(self, request: PulseRequest) -> None:
        """Start a pulse study durably; raises ``PulseError`` naming the bad field."""
        await asyncio.to_thread(self.start_pulse_blocking, request)

    async def end_pulse(self, pulse_id: str) -> None:
        """End a pulse study durably; raises ``KeyError`` when unknown."""
        await asyncio.to_thread(self.end_pulse_blocking, pulse_id)

    async def update_followup(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up durably (a logged command)."""
        return await asyncio.to_thread(self.update_followup_blocking, update)

    async def dead_letters(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Rejected and late events, newest first, with reasons and original payload."""
        return await asyncio.to_thread(self.dead_letters_blocking, limit, offset)

    async def ready(self) -> tuple[bool, str]:
        """``(True, "ok")`` once state is recovered; otherwise ``False`` and why."""
        if self._state == "open":
            return True, "ok"
        if self._failure:
            return False, self._failure
        return False, "not open yet" if self._state == "new" else "closed"
