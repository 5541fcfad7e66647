"""The embedded runner: one process, no broker, state in SQLite.

Durability comes from an ordered command log, not from saving the engine after every
request. ``submit`` validates a batch, appends the valid events to the ``log`` table
and the rejects to ``dead_letters`` in ONE transaction, commits (``synchronous=FULL``
in WAL mode, so the commit is on disk), and only then applies the batch to the
in-memory :class:`~streams.engine.engine.Engine` and answers. Pulse commands go
through the same log. A process killed at any point therefore loses nothing it
acknowledged: on ``open()`` the newest snapshot is restored and every later log row is
replayed in order, in the same batches, which reproduces the same engine state
(dedupe, lateness and journey timeouts included) as if the process had never stopped.

Every ``snapshot_every`` logged events, and on ``close()``, the engine is snapshotted
and the log rows it covers are deleted, in one transaction, so recovery time stays
bounded.

Tables (``<data_dir>/touchstream.db``):

- ``meta(key, value)``: the schema version and the engine configuration the state was
  built with; opening with another configuration is refused, never silently "fixed".
- ``log(seq, kind, payload, batch)``: ``kind`` is ``event`` (canonical event JSON),
  ``pulse_start`` (a :class:`PulseRequest` as JSON) or ``pulse_end`` (the pulse id);
  ``batch`` is the first ``seq`` of the submission, so replay re-forms the batches.
- ``snapshots(seq, taken_at, data)``: engine snapshots; ``seq`` is the last log row
  they include.
- ``dead_letters(id, received_at, kind, event_id, field, reason, payload, size, sha256,
  source_index)``: the dead-letter contract (``streams.deadletters``): ``invalid``
  events, ``late`` events (unique per event id, so a replay that re-derives them does
  not write them twice) and ``bad_body`` bodies refused whole; ``payload`` is the first
  ``dead_letter_max_bytes`` of the bytes received (an event's own bytes in its batch
  body), ``size`` and ``sha256`` those of all of them, ``source_index`` the event's
  position in its batch. Storage version 1 (before the contract) is migrated in place
  on open: its rows get their size and digest, payloads are cut to the cap.

A lock file (``touchstream.lock``, ``flock``) keeps a second process off the same
directory: two writers would interleave their log sequence numbers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, TypeVar

import msgspec
import orjson

from schemas.decode import EventDecoder, EventError, encode
from schemas.event import TouchpointEvent
from streams.deadletters import (
    DEFAULT_MAX_BYTES,
    HTTP,
    LATE_FIELD,
    LATE_REASON,  # noqa: F401 - re-exported (tests, callers)
    ItemBytes,
    Kept,
    keep,
    late_reason,
    letter,
    original,
)
from streams.deadletters import source as dead_source
from streams.detection import DetectionConfig, Detector, FollowUp, FollowUpUpdate
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine, IngestResult
from streams.engine.pulses import PulseError
from streams.runner import (
    FOLLOWUP_UPDATE,
    PULSE_END,
    PULSE_START,
    EventOutcome,
    PulseRequest,
    RunnerUnavailable,
    apply_command,
    encode_pulse_start,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_NAME: Final = "touchstream.db"
LOCK_NAME: Final = "touchstream.lock"
STORAGE_VERSION: Final = "2"
MIGRATABLE: Final = ("1",)
"""Older storage versions ``open()`` migrates in place (1: dead letters before the
contract, without size, digest and batch index)."""
DUPLICATE_REASON: Final = "event_id already received"

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "payload BLOB NOT NULL, batch INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, taken_at REAL NOT NULL, "
    "data BLOB NOT NULL, detector BLOB)",
    "CREATE TABLE IF NOT EXISTS alert_changes (alert_id TEXT NOT NULL, state TEXT NOT NULL, "
    "at INTEGER NOT NULL, change BLOB NOT NULL, PRIMARY KEY (alert_id, state, at))",
    "CREATE TABLE IF NOT EXISTS followups (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, "
    "record BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "received_at REAL NOT NULL, kind TEXT NOT NULL, event_id TEXT, field TEXT, "
    "reason TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER, sha256 TEXT, "
    "source_index INTEGER)",
    "CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_late ON dead_letters (event_id) "
    "WHERE kind = 'late'",
)
_INSERT_LOG: Final = "INSERT INTO log (seq, kind, payload, batch) VALUES (?, ?, ?, ?)"
_INSERT_DEAD: Final = (
    "INSERT OR IGNORE INTO dead_letters (received_at, kind, event_id, field, reason, payload, "
    "size, sha256, source_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MIGRATE_V1: Final = (
    "ALTER TABLE dead_letters ADD COLUMN size INTEGER",
    "ALTER TABLE dead_letters ADD COLUMN sha256 TEXT",
    "ALTER TABLE dead_letters ADD COLUMN source_index INTEGER",
)

_INSERT_CHANGE: Final = (
    "INSERT OR IGNORE INTO alert_changes (alert_id, state, at, change) VALUES (?, ?, ?, ?)"
)
_INSERT_FOLLOWUP: Final = (
    "INSERT OR IGNORE INTO followups (id, created_at, record) VALUES (?, ?, ?)"
)
DETECT_EVERY: Final = 60
"""Event-time seconds between detector evaluations (replays evaluate at the same points)."""

DeadLetter = tuple[float, str, str | None, str | None, str, bytes, int, str, int | None]
"""A ``dead_letters`` row to insert: received_at, kind, event_id, field, reason, payload
(the first ``dead_letter_max_bytes``), size, sha256, source_index."""

State = Literal["new", "open", "closed", "failed"]


class StorageError(RunnerUnavailable):
    """The data directory or database cannot be used; names the path and the reason.

    A :class:`~streams.runner.RunnerUnavailable` (``what`` is ``storage``): the API
    answers 503 without the path; the command line names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("storage", reason, message=f"touchstream storage at {path}: {reason}")
        self.path = path


# -- error translation -----------------------------------------------------------------

_OS_REASONS: Final = {
    errno.EACCES: "permission denied (the directory is not writable by this user)",
    errno.EPERM: "operation not permitted (the directory is not writable by this user)",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "not a directory (a path component is a file)",
    errno.EEXIST: "not a directory (a file is in the way)",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
}


def _explain(exc: BaseException) -> str:
    """A human reason for a storage failure, keeping the original message."""
    if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
        return f"{_OS_REASONS[exc.errno]} ({exc.strerror or exc})"
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        lowered = text.lower()
        if "full" in lowered:
            return f"the disk is full ({text})"
        if "readonly" in lowered or "read-only" in lowered:
            return f"the database or its directory is read-only ({text})"
        if "unable to open" in lowered:
            return f"cannot open the database file; is the directory writable? ({text})"
        if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
            return f"the database is corrupt or not a touchstream database ({text})"
        return f"database error ({text})"
    if isinstance(exc, msgspec.DecodeError | ValueError):
        return f"the stored state is corrupt ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _item_event_id(item: object) -> str | None:
    """The ``event_id`` of a rejected item when it has a usable one, for the outcome."""
    if isinstance(item, dict):
        value = item.get("event_id")
        if isinstance(value, str):
            return value[:128]
    return None


def _config_differences(stored: str, current: EngineConfig) -> list[str]:
    """Top-level configuration fields that differ between the stored and current config."""
    try:
        old = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return ["(the stored configuration is unreadable)"]
    new = orjson.loads(current.model_dump_json())
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclasses.dataclass(slots=True)
class _Stats:
    """Per-process counters for the exporter (``log_rows`` is a gauge)."""

    events_received: int = 0
    accepted: int = 0
    invalid: int = 0
    late: int = 0
    duplicate: int = 0
    dead_lettered: int = 0
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
    ) -> None:
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be at least 1")
        if dead_letter_max_bytes < 0:
            raise ValueError("dead_letter_max_bytes must not be negative")
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.config = config
        self.snapshot_every = snapshot_every
        self._clock = clock
        self._decoder = decoder if decoder is not None else EventDecoder(clock=clock)
        self._replay_decoder = msgspec.json.Decoder(TouchpointEvent)
        self._lock = threading.Lock()
        self._engine = Engine(config)
        self.detection = detection if detection is not None else DetectionConfig()
        self._detector = Detector(self.detection)
        self._detector.check(self._engine)
        self._pending_records: list[tuple[str, tuple[Any, ...]]] = []
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._state: State = "new"
        self._failure = ""
        self._next_seq = 1
        self._since_snapshot = 0
        self._pending_late: list[DeadLetter] = []
        self._stats = _Stats()

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
                self._lock_directory()
                self._connect()
                self._prepare_schema()
                replayed = self._recover()
            except BaseException as exc:
                self._release()
                self._state = "failed"
                self._failure = f"open failed: {exc}"
                if isinstance(exc, StorageError):
                    raise
                if isinstance(exc, OSError | sqlite3.Error | msgspec.DecodeError | ValueError):
                    raise StorageError(self.path, _explain(exc)) from exc
                raise
            self._state = "open"
            log.info("opened %s: %d log rows replayed in %.3f s, watermark %s",
                     self.path, replayed, time.perf_counter() - started,
                     self._engine.watermark)
            if self._since_snapshot >= self.snapshot_every:
                self._try_snapshot()

    def close(self) -> None:
        """Write a final snapshot (so the next start replays nothing) and close the DB.

        A failing final snapshot is logged and re-raised after the database is closed;
        the log still holds everything, so the next ``open()`` recovers by replay.
        """
        with self._lock:
            if self._state != "open":
                self._release()
                self._state = "closed"
                return
            try:
                if self._stats.log_rows or self._pending_late:
                    self._snapshot()
            except StorageError:
                log.exception("final snapshot failed; the log keeps everything and the "
                              "next open() replays it")
                raise
            finally:
                self._release()
                self._state = "closed"
                log.info("closed %s", self.path)

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

    def _lock_directory(self) -> None:
        """Create the directory and take the exclusive lock that keeps other processes off."""
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StorageError(self.data_dir, "not a directory (a file is in the way)")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.data_dir / LOCK_NAME, "a+b")  # held until close()
        except OSError as exc:
            raise StorageError(self.data_dir, _explain(exc)) from exc
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise StorageError(self.data_dir, "in use by another touchstream runner "
                                              f"(it holds {LOCK_NAME})") from None
        self._lock_file = lock_file

    def _connect(self) -> None:
        """Open the one connection: WAL journal, ``synchronous=FULL``, explicit transactions."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(self.path, f"cannot switch the database to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")

    def _prepare_schema(self) -> None:
        """Create the tables (one transaction) and check version and configuration."""
        conn = self._db()
        with self._transaction():
            for statement in _SCHEMA:
                conn.execute(statement)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("storage_version", STORAGE_VERSION),
                    ("config", self.config.model_dump_json()),
                    ("created_at", datetime.fromtimestamp(self._clock(), UTC).isoformat()),
                ])
                return
        self._check_meta(meta)
        if meta.get("storage_version") != STORAGE_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Storage version 1 to 2, in one transaction: the dead letters get their size,
        digest and (unknown: null) batch index; payloads are cut to the cap."""
        conn = self._db()
        with self._transaction():
            for statement in _MIGRATE_V1:
                conn.execute(statement)
            rows = conn.execute("SELECT id, payload FROM dead_letters").fetchall()
            for row_id, payload in rows:
                kept = keep(bytes(payload), self.dead_letter_max_bytes)
                conn.execute("UPDATE dead_letters SET payload = ?, size = ?, sha256 = ? "
                             "WHERE id = ?", (kept.head, kept.size, kept.sha256, row_id))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'storage_version'",
                         (STORAGE_VERSION,))
        log.info("%s: storage version 1 migrated to %s (%d dead letters)", self.path,
                 STORAGE_VERSION, len(rows))

    def _check_meta(self, meta: dict[str, str]) -> None:
        version = meta.get("storage_version")
        if version != STORAGE_VERSION and version not in MIGRATABLE:
            raise StorageError(self.path, f"storage version {version!r} is not "
                                          f"{STORAGE_VERSION!r}; this touchstream cannot read it")
        stored = meta.get("config", "")
        try:
            # The horizons may change between runs (``EngineConfig.same_state``).
            same = EngineConfig.stored(stored).same_state(self.config)
        except ValueError:
            same = False
        if not same:
            fields = ", ".join(_config_differences(stored, self.config))
            raise StorageError(
                self.path,
                "the state was built with a different engine configuration (differs in: "
                f"{fields}); start with the original configuration, or point data_dir at a "
                "new directory. Nothing was changed or dropped.",
            )

    def _release(self) -> None:
        """Close the connection and drop the directory lock (idempotent)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                log.exception("closing %s failed", self.path)
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- recovery --------------------------------------------------------------------

    def _recover(self) -> int:
        """Restore the newest snapshot, then replay the log after it; returns rows replayed."""
        conn = self._db()
        row = conn.execute(
            "SELECT seq, data, detector FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        snapshot_seq = 0
        if row is not None:
            snapshot_seq = int(row[0])
            try:
                self._engine = Engine.restore(self.config, bytes(row[1]))
                if row[2] is not None:
                    self._detector.restore(msgspec.msgpack.decode(bytes(row[2])))
            except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
                raise StorageError(self.path, f"snapshot at seq {snapshot_seq} cannot be "
                                              f"restored ({exc})") from exc
        replayed, late = self._replay(snapshot_seq)
        last = conn.execute("SELECT MAX(seq) FROM log").fetchone()[0]
        self._next_seq = max(snapshot_seq, int(last or 0)) + 1
        self._stats.log_rows = replayed
        self._since_snapshot = replayed
        if late:
            with self._transaction():
                conn.executemany(_INSERT_DEAD, late)
        self._flush_records()
        return replayed

    def _replay(self, after: int) -> tuple[int, list[DeadLetter]]:
        """Apply every log row with ``seq > after`` in order, re-forming the batches.

        Batches are replayed exactly as they were submitted, never split or merged:
        the engine sweeps journey timeouts and prunes its dedupe table per batch, so
        the same batches are what makes the replay reproduce the same state.
        """
        rows = self._db().execute(
            "SELECT seq, kind, payload, batch FROM log WHERE seq > ? ORDER BY seq", (after,))
        count = 0
        late: list[DeadLetter] = []
        pending: list[tuple[TouchpointEvent, bytes]] = []
        pending_batch: int | None = None
        for seq, kind, payload, batch in rows:
            count += 1
            if pending and (kind != "event" or batch != pending_batch):
                late += self._replay_events(pending)
                pending = []
            if kind == "event":
                pending.append((self._decode_logged(seq, payload), bytes(payload)))
                pending_batch = batch
            else:
                self._replay_command(seq, kind, bytes(payload))
        if pending:
            late += self._replay_events(pending)
        return count, late

    def _decode_logged(self, seq: int, payload: bytes) -> TouchpointEvent:
        try:
            event: TouchpointEvent = self._replay_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StorageError(self.path, f"log row {seq} is corrupt ({exc})") from exc
        return event

    def _replay_events(self, batch: list[tuple[TouchpointEvent, bytes]]) -> list[DeadLetter]:
        """Ingest one logged batch; return its late dead letters (re-derived, not stored)."""
        result = self._engine.ingest([event for event, _ in batch])
        self._detect([event for event, _ in batch], result)
        payloads = {id(event): payload for event, payload in batch}
        now = self._clock()
        return [self._late_row(now, e, payloads[id(e)]) for e in result.late]

    def _replay_command(self, seq: int, kind: str, payload: bytes) -> None:
        if kind == FOLLOWUP_UPDATE:
            try:
                self._detector.followups.apply(FollowUpUpdate.decode(payload))
            except (KeyError, ValueError) as exc:  # e.g. no longer kept: nothing to redo
                log.warning("log row %d (%s) not applied: %s", seq, kind, exc)
            return
        try:
            apply_command(self._engine, kind, payload)
        except PulseError as exc:
            raise StorageError(self.path, f"log row {seq} ({kind}) cannot be replayed "
                                          f"({exc})") from exc

    # -- writing -----------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(self.path, "the database is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any error, which becomes
        a :class:`StorageError` when it comes from SQLite or the OS."""
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed on %s", self.path)
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(self.path, _explain(exc)) from exc
            raise

    def _usable(self) -> None:
        """Refuse work unless open and healthy."""
        if self._state != "open":
            reason = self._failure or f"the runner is {self._state}, not open"
            raise StorageError(self.path, reason)

    def _dead_row(self, received_at: float, kind: str, event_id: str | None,
                  field: str | None, reason: str, payload: bytes,
                  index: int | None) -> DeadLetter:
        kept = keep(payload, self.dead_letter_max_bytes)
        return (received_at, kind, event_id, field, reason, kept.head, kept.size,
                kept.sha256, index)

    def _late_row(self, received_at: float, event: TouchpointEvent, payload: bytes,
                  index: int | None = None) -> DeadLetter:
        """A late event's row: ``payload`` the bytes received (on replay, where only the
        log's canonical JSON is left, those; the row written at submission wins)."""
        return self._dead_row(received_at, "late", event.event_id, LATE_FIELD,
                              late_reason(self.config.lateness_horizon), payload, index)

    def _validate(self, items: Sequence[Any], received_at: float, raw: ItemBytes | None = None
                  ) -> tuple[list[EventOutcome | None], list[tuple[int, TouchpointEvent, bytes]],
                             list[DeadLetter]]:
        """Decode every item: valid events with their canonical JSON, rejects with reasons."""
        outcomes: list[EventOutcome | None] = [None] * len(items)
        valid: list[tuple[int, TouchpointEvent, bytes]] = []
        dead: list[DeadLetter] = []
        for index, item in enumerate(items):
            try:
                event = self._decoder.convert(item)
            except EventError as exc:
                event_id = _item_event_id(item)
                outcomes[index] = EventOutcome(index, "rejected", event_id, exc.field,
                                               exc.reason)
                dead.append(self._dead_row(received_at, "invalid", event_id, exc.field,
                                           exc.reason, original(items, raw, index), index))
                continue
            valid.append((index, event, encode(event)))
        return outcomes, valid, dead

    def submit_blocking(self, items: Sequence[Any],
                        raw: ItemBytes | None = None) -> list[EventOutcome]:
        """:meth:`submit` without the thread hop, for scripts and benchmarks."""
        received_at = self._clock()
        outcomes, valid, dead = self._validate(items, received_at, raw)
        with self._lock:
            self._usable()
            first = self._next_seq
            with self._transaction() as conn:
                conn.executemany(_INSERT_LOG, [
                    (first + i, "event", payload, first) for i, (_, _, payload) in enumerate(valid)
                ])
                conn.executemany(_INSERT_DEAD, dead)
            self._next_seq += len(valid)
            self._stats.log_rows += len(valid)
            self._since_snapshot += len(valid)
            result = self._ingest([event for _, event, _ in valid], first)
            self._resolve(outcomes, valid, result, received_at, items, raw)
            self._flush_records()
            self._count(len(items), len(dead), result)
            if self._since_snapshot >= self.snapshot_every:
                self._try_snapshot()
        return [o for o in outcomes if o is not None]

    def _ingest(self, events: list[TouchpointEvent], first_seq: int) -> IngestResult:
        """Apply committed events; a failure here leaves memory behind the log, so the
        runner stops taking work until restarted (recovery replays the log)."""
        try:
            result = self._engine.ingest(events)
            self._detect(events, result)
            return result
        except Exception as exc:
            self._state = "failed"
            self._failure = (f"the engine failed applying log rows from seq {first_seq} "
                             f"({exc}); restart to recover from the log")
            log.exception("engine failure; runner stopped: %s", self._failure)
            raise

    def _resolve(self, outcomes: list[EventOutcome | None],
                 valid: list[tuple[int, TouchpointEvent, bytes]], result: IngestResult,
                 received_at: float, items: Sequence[Any], raw: ItemBytes | None) -> None:
        """Fill in accepted/duplicate/late outcomes by identity; store the late ones
        (with the bytes they were received as)."""
        late = {id(e) for e in result.late}
        duplicates = {id(e) for e in result.duplicates}
        late_rows: list[DeadLetter] = []
        for index, event, _ in valid:
            if id(event) in late:
                late_rows.append(self._late_row(received_at, event,
                                                original(items, raw, index), index))
                outcomes[index] = EventOutcome(index, "late", event.event_id, "occurred_at",
                                               late_rows[-1][4])
            elif id(event) in duplicates:
                outcomes[index] = EventOutcome(index, "duplicate", event.event_id,
                                               reason=DUPLICATE_REASON)
            else:
                outcomes[index] = EventOutcome(index, "accepted", event.event_id)
        if late_rows:
            self._pending_late += late_rows
            self._flush_late()

    def _detect(self, events: list[TouchpointEvent], result: IngestResult) -> None:
        """Follow-ups for the batch, then the alert rules when event time has moved on.

        Runs identically on submit and on replay (same batches, same watermarks), so a
        recovered detector is the one that never stopped; the records it produces are
        stored with ``INSERT OR IGNORE`` so a replay does not write them twice.
        """
        duplicates = {id(e) for e in result.duplicates}
        fresh = [e for e in events if id(e) not in duplicates]
        if fresh:
            for item in self._detector.follow_up(fresh):
                self._pending_records.append(("followup", (
                    item.id, item.created_at, orjson.dumps(item.to_dict()))))
        watermark = self._engine.watermark
        if watermark is not None and self._detector.due(watermark, DETECT_EVERY):
            for change in self._detector.evaluate(self._engine, watermark):
                self._pending_records.append(("change", (
                    change.alert.id, change.state, change.at, orjson.dumps(change.to_dict()))))

    def _flush_records(self) -> None:
        """Store pending alert changes and follow-ups; retried with the next write on failure."""
        if not self._pending_records:
            return
        try:
            with self._transaction() as conn:
                self._write_records(conn)
        except StorageError:
            log.warning("could not store %d alert/follow-up records yet; will retry",
                        len(self._pending_records), exc_info=True)

    def _write_records(self, conn: sqlite3.Connection) -> None:
        conn.executemany(_INSERT_CHANGE,
                         [row for kind, row in self._pending_records if kind == "change"])
        conn.executemany(_INSERT_FOLLOWUP,
                         [row for kind, row in self._pending_records if kind == "followup"])
        self._pending_records = []

    def _flush_late(self) -> None:
        """Store late dead letters in their own small transaction.

        The events themselves are already durable in the log (and a replay re-derives
        these rows), so a failure here is logged and retried with the next write
        rather than failing an acknowledged submission.
        """
        try:
            with self._transaction() as conn:
                conn.executemany(_INSERT_DEAD, self._pending_late)
        except StorageError:
            log.warning("could not store %d late dead letters yet; will retry",
                        len(self._pending_late), exc_info=True)
            return
        self._pending_late = []

    def _count(self, received: int, invalid: int, result: IngestResult) -> None:
        stats = self._stats
        stats.events_received += received
        stats.invalid += invalid
        stats.accepted += result.accepted
        stats.late += len(result.late)
        stats.duplicate += len(result.duplicates)
        stats.dead_lettered += invalid + len(result.late)

    def _snapshot(self) -> None:
        """Snapshot the engine and drop the log rows it covers, in one transaction."""
        data = self._engine.snapshot()
        detector = msgspec.msgpack.encode(self._detector.state())
        seq = self._next_seq - 1
        with self._transaction() as conn:
            conn.executemany(_INSERT_DEAD, self._pending_late)
            self._write_records(conn)
            conn.execute("INSERT OR REPLACE INTO snapshots (seq, taken_at, data, detector) "
                         "VALUES (?, ?, ?, ?)", (seq, self._clock(), data, detector))
            conn.execute("DELETE FROM snapshots WHERE seq < ?", (seq,))
            conn.execute("DELETE FROM log WHERE seq <= ?", (seq,))
        self._pending_late = []
        self._stats.log_rows = 0
        self._since_snapshot = 0
        self._stats.snapshots += 1
        log.info("snapshot at seq %d (%d bytes)", seq, len(data))

    def _try_snapshot(self) -> None:
        """A periodic snapshot; failing one only delays log pruning, so it is logged."""
        try:
            self._snapshot()
        except StorageError:
            log.exception("periodic snapshot failed; the log keeps everything meanwhile")

    def _log_command(self, kind: str, payload: bytes) -> None:
        seq = self._next_seq
        with self._transaction() as conn:
            conn.execute(_INSERT_LOG, (seq, kind, payload, seq))
        self._next_seq += 1
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
            try:
                rows = self._db().execute(
                    "SELECT received_at, kind, field, reason, substr(payload, 1, ?), size, "
                    "sha256, source_index FROM dead_letters ORDER BY id DESC LIMIT ? OFFSET ?",
                    (max(self.dead_letter_max_bytes, 1), limit, offset)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(self.path, _explain(exc)) from exc
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

    async def submit(self, items: Sequence[Any],
                     raw: ItemBytes | None = None) -> list[EventOutcome]:
        """Validate and durably accept events; one outcome each, in submission order.

        Answers only after the batch is committed to SQLite (``synchronous=FULL``).
        Raises :class:`StorageError` when it could not be stored; then nothing of the
        batch was stored or applied. ``raw(i)``: the bytes item ``i`` was received as,
        kept in its dead letter (without it, the item's JSON).
        """
        return await asyncio.to_thread(self.submit_blocking, list(items), raw)

    async def read(self, query: Callable[[Engine], T]) -> T:
        """Run a read-only ``query`` against the engine, never mid-batch."""
        return await asyncio.to_thread(self.read_blocking, query)

    def dead_letter_blocking(self, payload: bytes, field: str, reason: str) -> None:
        """:meth:`dead_letter` without the thread hop."""
        with self._lock:
            self._usable()
            row = self._dead_row(self._clock(), "bad_body", None, field, reason, payload, None)
            with self._transaction() as conn:
                conn.execute(_INSERT_DEAD, row)
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
