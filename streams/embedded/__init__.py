"""The embedded runner: one process, no broker, state in SQLite.

- :mod:`~streams.embedded.store`: the database — command log, snapshots, dead letters,
  the detector's records; rows only.
- :mod:`~streams.embedded.recovery`: the newest snapshot plus the log replayed in its
  batches.
- :mod:`~streams.embedded.runner`: the :class:`~streams.runner.Runner` around them and
  the shared ingest pipeline (:mod:`streams.pipeline`).
"""

from streams.deadletters import LATE_REASON
from streams.embedded.runner import EmbeddedRunner
from streams.embedded.store import DB_NAME, LOCK_NAME, STORAGE_VERSION, Retention, StorageError
from streams.pipeline import DETECT_EVERY, DUPLICATE_REASON

__all__ = [
    "DB_NAME",
    "DETECT_EVERY",
    "DUPLICATE_REASON",
    "LATE_REASON",
    "LOCK_NAME",
    "STORAGE_VERSION",
    "EmbeddedRunner",
    "Retention",
    "StorageError",
]
