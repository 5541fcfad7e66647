"""The embedded runner's storage: one SQLite database, an ordered command log, engine
snapshots, dead letters and the detector's records. It knows rows, not engines.

Tables (``<data_dir>/touchstream.db``):

- ``meta(key, value)``: the schema version and the engine configuration the state was
  built with; opening with another configuration is refused, never silently "fixed".
- ``log(seq, kind, payload, batch)``: ``kind`` is ``event`` or ``backfill`` (canonical
  event JSON, live or history loaded with ``backfill``) or a command (``pulse_start``,
  ``pulse_end``, ``followup_update``, ``erase``); ``batch`` is the first ``seq`` of the
  submission, so a replay re-forms the batches.
- ``snapshots(seq, taken_at, data, detector)``: engine and detector snapshots; ``seq``
  is the last log row they include.
- ``alert_changes``, ``followups``: what the detector produced, written once each
  (``INSERT OR IGNORE``: a replay that produces them again writes nothing).
- ``erasures(id, digest, by, at, removed)``: the audit trail of erasures (GDPR Art. 17):
  the customer's digest, never the id, who asked, when, and what went (JSON counts).
- ``dead_letters(id, received_at, kind, event_id, field, reason, payload, size, sha256,
  source_index)``: the dead-letter contract (``streams.deadletters``): ``payload`` is the
  first ``dead_letter_max_bytes`` of the bytes received, ``size`` and ``sha256`` those of
  all of them, ``source_index`` the event's position in its batch; late rows are unique
  per event id, so a replay that re-derives them does not write them twice. Storage
  version 1 (before the contract) is migrated in place on open.

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with ``synchronous=FULL``:
once :meth:`CommandLog.transaction` returns, the rows are on disk. A lock file
(``touchstream.lock``, ``flock``) keeps a second process off the directory: two writers
would interleave their sequence numbers.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import orjson

from schemas.redact import CommentPolicy
from streams.deadletters import keep
from streams.engine.config import EngineConfig
from streams.runner import RunnerUnavailable

log = logging.getLogger(__name__)

DB_NAME: Final = "touchstream.db"
LOCK_NAME: Final = "touchstream.lock"
STORAGE_VERSION: Final = "2"
MIGRATABLE: Final = ("1",)
"""Older storage versions ``open()`` migrates in place (1: dead letters before the
contract, without size, digest and batch index)."""

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
    "CREATE TABLE IF NOT EXISTS erasures (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "digest TEXT NOT NULL, by TEXT NOT NULL, at TEXT NOT NULL, removed TEXT NOT NULL)",
)
_INSERT_LOG: Final = "INSERT INTO log (seq, kind, payload, batch) VALUES (?, ?, ?, ?)"
_INSERT_DEAD: Final = (
    "INSERT OR IGNORE INTO dead_letters (received_at, kind, event_id, field, reason, payload, "
    "size, sha256, source_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHANGE: Final = (
    "INSERT OR IGNORE INTO alert_changes (alert_id, state, at, change) VALUES (?, ?, ?, ?)"
)
_INSERT_FOLLOWUP: Final = (
    "INSERT OR IGNORE INTO followups (id, created_at, record) VALUES (?, ?, ?)"
)
_MIGRATE_V1: Final = (
    "ALTER TABLE dead_letters ADD COLUMN size INTEGER",
    "ALTER TABLE dead_letters ADD COLUMN sha256 TEXT",
    "ALTER TABLE dead_letters ADD COLUMN source_index INTEGER",
)

DeadLetter = tuple[float, str, str | None, str | None, str, bytes, int, str, int | None]
"""A ``dead_letters`` row to insert: received_at, kind, event_id, field, reason, payload
(the first ``dead_letter_max_bytes``), size, sha256, source_index."""
Record = tuple[str, tuple[Any, ...]]
"""A detector record to store: ``("change", row)`` or ``("followup", row)``."""
EVENT: Final = "event"
BACKFILL: Final = "backfill"
"""The log kinds of event rows: live, and history loaded with ``backfill``."""
LogRow = tuple[int, str, bytes, int]
"""A log row: seq, kind, payload, batch."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the embedded runner keeps raw data; ``None``: no bound.

    ``log_seconds``: the most time an event stays in the command log (its raw form:
    comments as the policy kept them); past it the runner snapshots, which drops the
    log rows. ``dead_letter_seconds`` and ``dead_letter_bytes``: dead letters older go,
    and so do the oldest while their kept bytes exceed the bound (counted)."""

    log_seconds: float | None = 7 * 86_400
    dead_letter_seconds: float | None = 30 * 86_400
    dead_letter_bytes: int | None = 1 << 30

    def __post_init__(self) -> None:
        for name in ("log_seconds", "dead_letter_seconds", "dead_letter_bytes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None: no bound), not {value}")


class StorageError(RunnerUnavailable):
    """The data directory or database cannot be used; names the path and the reason.

    A :class:`~streams.runner.RunnerUnavailable` (``what`` is ``storage``): the API
    answers 503 without the path; the command line names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__("storage", reason, message=f"touchstream storage at {path}: {reason}")
        self.path = path


_OS_REASONS: Final = {
    errno.EACCES: "permission denied (the directory is not writable by this user)",
    errno.EPERM: "operation not permitted (the directory is not writable by this user)",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "not a directory (a path component is a file)",
    errno.EEXIST: "not a directory (a file is in the way)",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
}


def explain(exc: BaseException) -> str:
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


def _config_differences(stored: str, current: EngineConfig) -> list[str]:
    """Top-level configuration fields that differ between the stored and current config."""
    try:
        old = orjson.loads(stored)
    except orjson.JSONDecodeError:
        return ["(the stored configuration is unreadable)"]
    new = orjson.loads(current.model_dump_json())
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class CommandLog:
    """The SQLite database of one data directory. Not thread-safe: the runner holds a
    lock around every call. Every method raises :class:`StorageError` on failure."""

    def __init__(self, data_dir: Path, config: EngineConfig, dead_letter_max_bytes: int,
                 comments: CommentPolicy = "keep") -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self.config = config
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.comments = comments
        """The comment policy: dead letters keep their bytes with comments as it says."""
        self.next_seq = 1
        self.dead_bytes = 0
        """Payload bytes the dead letters keep (at most: ignored inserts count too)."""
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None

    # -- opening and closing ---------------------------------------------------------

    def open(self, created_at: float) -> None:
        """Lock the directory, open the database, create or check and migrate its schema.
        ``created_at`` (epoch seconds) is recorded in a new database's meta."""
        self._lock_directory()
        self._connect()
        self._prepare_schema(created_at)
        last = self.connection.execute("SELECT MAX(seq) FROM log").fetchone()[0]
        snap = self.connection.execute("SELECT MAX(seq) FROM snapshots").fetchone()[0]
        self.next_seq = max(int(last or 0), int(snap or 0)) + 1
        self.dead_bytes = int(self.connection.execute(
            "SELECT COALESCE(SUM(length(payload)), 0) FROM dead_letters").fetchone()[0])

    def release(self) -> None:
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

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection (tests reach into it on purpose)."""
        if self._conn is None:
            raise StorageError(self.path, "the database is not open")
        return self._conn

    def _lock_directory(self) -> None:
        """Create the directory and take the exclusive lock that keeps other processes off."""
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StorageError(self.data_dir, "not a directory (a file is in the way)")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.data_dir / LOCK_NAME, "a+b")  # held until release()
        except OSError as exc:
            raise StorageError(self.data_dir, explain(exc)) from exc
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
        # Deleted rows are overwritten with zeros, not left in free pages: an erased
        # customer's bytes must not outlive the erasure (see ``erase``).
        conn.execute("PRAGMA secure_delete=ON")

    def _prepare_schema(self, created_at: float) -> None:
        """Create the tables (one transaction) and check version and configuration."""
        conn = self.connection
        with self.transaction():
            for statement in _SCHEMA:
                conn.execute(statement)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("storage_version", STORAGE_VERSION),
                    ("config", self.config.model_dump_json()),
                    ("created_at", datetime.fromtimestamp(created_at, UTC).isoformat()),
                ])
                return
        self._check_meta(meta)
        if meta.get("storage_version") != STORAGE_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Storage version 1 to 2, in one transaction: the dead letters get their size,
        digest and (unknown: null) batch index; payloads are cut to the cap."""
        conn = self.connection
        with self.transaction():
            for statement in _MIGRATE_V1:
                conn.execute(statement)
            rows = conn.execute("SELECT id, payload FROM dead_letters").fetchall()
            for row_id, payload in rows:
                kept = keep(bytes(payload), self.dead_letter_max_bytes, self.comments)
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

    # -- transactions ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any error, which becomes
        a :class:`StorageError` when it comes from SQLite or the OS."""
        conn = self.connection
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
                raise StorageError(self.path, explain(exc)) from exc
            raise

    # -- the log -------------------------------------------------------------------------

    def append_events(self, payloads: Sequence[bytes], dead: Sequence[DeadLetter],
                      kind: str = EVENT) -> int:
        """Log a submission's events (one batch of ``kind``: ``event`` or ``backfill``) and
        its rejects, in one transaction; returns the batch's first ``seq``."""
        first = self.next_seq
        with self.transaction() as conn:
            conn.executemany(_INSERT_LOG, [
                (first + i, kind, payload, first) for i, payload in enumerate(payloads)
            ])
            conn.executemany(_INSERT_DEAD, dead)
        self.next_seq += len(payloads)
        self.dead_bytes += sum(len(row[5]) for row in dead)
        return first

    def append_command(self, kind: str, payload: bytes) -> int:
        """Log one command (a batch of its own); returns its ``seq``."""
        seq = self.next_seq
        with self.transaction() as conn:
            conn.execute(_INSERT_LOG, (seq, kind, payload, seq))
        self.next_seq += 1
        return seq

    def rows_after(self, seq: int) -> Iterator[LogRow]:
        """Log rows with ``seq`` greater than ``seq``, in order."""
        try:
            rows = self.connection.execute(
                "SELECT seq, kind, payload, batch FROM log WHERE seq > ? ORDER BY seq", (seq,))
            for row_seq, kind, payload, batch in rows:
                yield int(row_seq), str(kind), bytes(payload), int(batch)
        except sqlite3.Error as exc:
            raise StorageError(self.path, explain(exc)) from exc

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_time(self) -> float | None:
        """When the newest snapshot was taken (epoch seconds); the database's creation
        time without one. Every log row is younger."""
        row = self.connection.execute(
            "SELECT taken_at FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            return float(row[0])
        created = self.connection.execute(
            "SELECT value FROM meta WHERE key = 'created_at'").fetchone()
        return None if created is None else datetime.fromisoformat(created[0]).timestamp()

    def latest_snapshot(self) -> tuple[int, bytes, bytes | None] | None:
        """``(seq, engine data, detector data)`` of the newest snapshot, if any."""
        row = self.connection.execute(
            "SELECT seq, data, detector FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return int(row[0]), bytes(row[1]), None if row[2] is None else bytes(row[2])

    def write_snapshot(self, taken_at: float, data: bytes, detector: bytes,
                       dead: Sequence[DeadLetter], records: Sequence[Record]) -> int:
        """Store a snapshot of everything logged so far (with pending rows) and drop the
        log rows and older snapshots it covers, in one transaction; returns its seq."""
        seq = self.next_seq - 1
        with self.transaction() as conn:
            conn.executemany(_INSERT_DEAD, dead)
            self._insert_records(conn, records)
            conn.execute("INSERT OR REPLACE INTO snapshots (seq, taken_at, data, detector) "
                         "VALUES (?, ?, ?, ?)", (seq, taken_at, data, detector))
            conn.execute("DELETE FROM snapshots WHERE seq < ?", (seq,))
            conn.execute("DELETE FROM log WHERE seq <= ?", (seq,))
        self.dead_bytes += sum(len(row[5]) for row in dead)
        return seq

    # -- dead letters and records ----------------------------------------------------------

    def dead_row(self, received_at: float, kind: str, event_id: str | None,
                 field: str | None, reason: str, payload: bytes,
                 index: int | None) -> DeadLetter:
        """A ``dead_letters`` row keeping the first ``dead_letter_max_bytes`` of
        ``payload`` with the size and digest of all of it."""
        kept = keep(payload, self.dead_letter_max_bytes, self.comments)
        return (received_at, kind, event_id, field, reason, kept.head, kept.size,
                kept.sha256, index)

    def add(self, dead: Sequence[DeadLetter], records: Sequence[Record] = ()) -> None:
        """Store dead letters and detector records (each once) in one transaction."""
        with self.transaction() as conn:
            conn.executemany(_INSERT_DEAD, dead)
            self._insert_records(conn, records)
        self.dead_bytes += sum(len(row[5]) for row in dead)

    @staticmethod
    def _insert_records(conn: sqlite3.Connection, records: Sequence[Record]) -> None:
        conn.executemany(_INSERT_CHANGE, [row for kind, row in records if kind == "change"])
        conn.executemany(_INSERT_FOLLOWUP, [row for kind, row in records if kind == "followup"])

    def expire_dead_letters(self, before: float | None, max_bytes: int | None) -> int:
        """Delete dead letters received before ``before`` (epoch seconds), then the
        oldest while the kept bytes exceed ``max_bytes``; returns how many went."""
        gone = 0
        with self.transaction() as conn:
            if before is not None:
                gone += conn.execute("DELETE FROM dead_letters WHERE received_at < ?",
                                     (before,)).rowcount
            if max_bytes is not None:
                # The newest first, summed: every row from the first that crosses the
                # bound on is older than what fits.
                gone += conn.execute(
                    "DELETE FROM dead_letters WHERE id <= (SELECT id FROM (SELECT id, "
                    "SUM(length(payload)) OVER (ORDER BY id DESC) AS kept FROM "
                    "dead_letters) WHERE kept > ? ORDER BY id DESC LIMIT 1)",
                    (max_bytes,)).rowcount
            total = conn.execute(
                "SELECT COALESCE(SUM(length(payload)), 0) FROM dead_letters").fetchone()[0]
        self.dead_bytes = int(total)
        return gone

    # -- erasure -------------------------------------------------------------------------

    def erase(self, needles: Sequence[bytes], followups: Sequence[tuple[Any, ...]],
              audit: tuple[str, str, str, str]) -> int:
        """In one transaction: delete the dead letters whose kept bytes hold any of
        ``needles`` (the customer id as it may be written), replace the stored
        follow-ups with their scrubbed ``followups`` rows, and add the ``audit`` row
        (digest, by, at, removed as JSON). Returns the dead letters deleted.

        The log rows and snapshots holding the customer go with the snapshot the runner
        writes next; :meth:`compact` then leaves no copy in free pages or the WAL."""
        deleted = 0
        with self.transaction() as conn:
            for needle in needles:
                deleted += conn.execute(
                    "DELETE FROM dead_letters WHERE instr(payload, ?) > 0 "
                    "OR instr(CAST(event_id AS BLOB), ?) > 0", (needle, needle)).rowcount
            conn.executemany("INSERT OR REPLACE INTO followups (id, created_at, record) "
                             "VALUES (?, ?, ?)", followups)
            conn.execute("INSERT INTO erasures (digest, by, at, removed) VALUES (?, ?, ?, ?)",
                         audit)
        return deleted

    def compact(self) -> None:
        """Rewrite the database without free pages (``VACUUM``) and empty the WAL into it:
        nothing deleted survives in either file."""
        try:
            self.connection.execute("VACUUM")
        except sqlite3.Error as exc:
            raise StorageError(self.path, explain(exc)) from exc
        self.checkpoint()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (``wal_checkpoint(TRUNCATE)``):
        with ``secure_delete`` on, deleted rows then exist in neither file."""
        try:
            busy, _, _ = self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(self.path, explain(exc)) from exc
        if busy:
            raise StorageError(self.path, "the WAL could not be checkpointed (busy)")

    def erasures(self) -> list[tuple[str, str, str, str]]:
        """The audit trail, oldest first: digest, by, at, removed (JSON)."""
        rows = self.connection.execute(
            "SELECT digest, by, at, removed FROM erasures ORDER BY id").fetchall()
        return [(str(d), str(b), str(a), str(r)) for d, b, a, r in rows]

    def dead_letters(self, limit: int, offset: int) -> list[tuple[Any, ...]]:
        """Newest first: received_at, kind, field, reason, kept payload, size, sha256,
        source_index."""
        try:
            return self.connection.execute(
                "SELECT received_at, kind, field, reason, substr(payload, 1, ?), size, "
                "sha256, source_index FROM dead_letters ORDER BY id DESC LIMIT ? OFFSET ?",
                (max(self.dead_letter_max_bytes, 1), limit, offset)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(self.path, explain(exc)) from exc
