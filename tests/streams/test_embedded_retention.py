"""Retention on the embedded runner (issue 21, items 2-3): raw events leave the command
log (and the files, byte by byte) once older than ``touchpoints_retention_ms``; dead
letters go by age and, oldest first, past a total size, and are counted; the settings
map to the runner, and the exporter shows the count."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.embedded import StorageCollector, retention
from service.settings import Settings
from streams.embedded import EmbeddedRunner, Retention
from streams.engine.config import EngineConfig

START = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
CONFIG = EngineConfig(scopes=((),))
COMMENT = "Kæri Jón, þjónustan var frábær — سپاس"


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def event(i: int, at: float, **fields: Any) -> dict[str, Any]:
    base = {"event_id": f"e-{i}", "customer_id": f"c-{i}", "touchpoint": "support",
            "channel": "chat", "kind": "csat", "value": 4, "comment": COMMENT,
            "occurred_at": datetime.fromtimestamp(at, UTC).isoformat()}
    base.update(fields)
    return base


def holds(directory: Path, text: str) -> list[str]:
    needle = text.encode()
    return [p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_raw_events_leave_the_log_and_the_files_after_their_time(tmp_path: Path) -> None:
    clock = Clock()
    keep = Retention(log_seconds=7 * DAY, dead_letter_seconds=None, dead_letter_bytes=None)
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, retention=keep) as runner:
        runner.submit_blocking([event(i, clock.now - 60) for i in range(20)])
        assert runner.stats()["log_rows"] == 20
        assert holds(tmp_path, COMMENT)  # the log holds the raw events (the control)
        clock.now += 6 * DAY
        runner.maintain_blocking()
        assert runner.stats()["log_rows"] == 20  # not yet
        clock.now += 1 * DAY + 1
        runner.maintain_blocking()
        assert runner.stats()["log_rows"] == 0 and runner.stats()["snapshots"] == 1
        assert holds(tmp_path, COMMENT) == []  # not in the database, nor in the WAL
        assert runner.read_blocking(lambda e: e.counters["accepted"]) == 20
        # A write checks too: the next old log is snapshotted by a submission.
        runner.submit_blocking([event(100, clock.now - 60)])
        clock.now += 8 * DAY
        runner.submit_blocking([event(101, clock.now - 60, comment="later")])
        assert runner.stats()["snapshots"] == 2


def test_dead_letters_expire_by_age_and_are_counted(tmp_path: Path) -> None:
    clock = Clock()
    keep = Retention(log_seconds=None, dead_letter_seconds=30 * DAY, dead_letter_bytes=None)
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, retention=keep) as runner:
        runner.submit_blocking([event(i, clock.now, value=9) for i in range(5)])
        clock.now += 20 * DAY
        runner.submit_blocking([event(10 + i, clock.now, value=9, comment="newer")
                                for i in range(3)])
        assert len(runner.dead_letters_blocking(100, 0)) == 8
        clock.now += 10 * DAY + 120
        runner.maintain_blocking()
        kept = runner.dead_letters_blocking(100, 0)
        assert len(kept) == 3 and all("newer" in d["payload"] for d in kept)
        assert runner.stats()["dead_letters_expired"] == 5
        assert holds(tmp_path, COMMENT) == []


def test_dead_letters_are_bounded_in_all_oldest_first(tmp_path: Path) -> None:
    clock = Clock()
    bound = 4000
    keep = Retention(log_seconds=None, dead_letter_seconds=None, dead_letter_bytes=bound)
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, retention=keep) as runner:
        for batch in range(10):
            runner.submit_blocking([event(batch * 10 + i, clock.now, value=9,
                                          comment=f"batch {batch:02d}")
                                    for i in range(5)])
        kept = runner.dead_letters_blocking(1000, 0)
        size = sum(d["size"] for d in kept)
        assert size <= bound < size + kept[-1]["size"] * 6  # full, yet under the bound
        batches = sorted({d["payload"].split("batch ")[1][:2] for d in kept})
        assert batches[-1] == "09" and batches[0] > "00"  # the oldest went first
        expired = runner.stats()["dead_letters_expired"]
        assert expired == 50 - len(kept)
        registry = CollectorRegistry()
        registry.register(StorageCollector(runner))
        text = generate_latest(registry).decode()
        assert f"touchstream_dead_letters_expired_total {float(expired)}" in text
    with EmbeddedRunner(tmp_path, CONFIG, clock=clock, retention=keep) as again:
        assert len(again.dead_letters_blocking(1000, 0)) == len(kept)  # the bound held


def test_the_settings_give_the_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_TOUCHPOINTS_RETENTION_MS", str(2 * DAY * 1000))
    monkeypatch.setenv("TOUCHSTREAM_DLQ_RETENTION_MS", "-1")
    monkeypatch.setenv("TOUCHSTREAM_DLQ_RETENTION_BYTES", "123456")
    assert retention(Settings()) == Retention(log_seconds=2 * DAY, dead_letter_seconds=None,
                                              dead_letter_bytes=123456)
    defaults = retention(Settings.model_construct(**{
        k: f.default for k, f in Settings.model_fields.items()}))
    assert defaults == Retention()  # the runner's defaults are the settings' defaults
    with pytest.raises(ValueError, match="log_seconds must be positive"):
        Retention(log_seconds=0)
