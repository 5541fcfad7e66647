"""The embedded runner: exact outcomes, dead letters, and nothing acknowledged lost.

Recovery is checked three ways: a clean close and reopen, a "crash" in process (the
runner is dropped without ``close()``: no final snapshot, the log alone must carry the
state), and a real ``SIGKILL`` of a child process that is writing as fast as it can.
State is compared with an engine that was fed the same batches and never stopped.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import hashlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from embedded_writer import CONFIG as WRITER_CONFIG
from embedded_writer import make_item

from schemas import EventDecoder, encode
from streams.deadletters import BodyItems, payload_bytes, split_body
from streams.embedded import DB_NAME, LATE_REASON, EmbeddedRunner, StorageError
from streams.engine.config import EngineConfig
from streams.engine.dedupe import digest
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.runner import PulseRequest

NOW = int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp())
START = NOW - 6 * 3600  # event 0's time in the unit tests
CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",)), allowed_lateness=600,
                      lateness_horizon=600)
WRITER = Path(__file__).with_name("embedded_writer.py")


def clock() -> float:
    return float(NOW)


def item(i: int, at: int | None = None, **fields: Any) -> dict[str, Any]:
    """A valid csat event ``at`` seconds after START (default ``i``), with overrides."""
    base: dict[str, Any] = {
        "event_id": f"e-{i}",
        "occurred_at": datetime.fromtimestamp(START + (i if at is None else at), UTC).isoformat(),
        "customer_id": f"c-{i % 5}",
        "touchpoint": "support",
        "channel": ("chat", "phone", "web")[i % 3],
        "segment": ("smb", "enterprise")[i % 2],
        "kind": "csat",
        "value": 1 + i * 3 % 5,
    }
    if i % 4 == 0:
        base.update(journey_id=f"j-{i // 12}", journey_type="fix", stage="respond",
                    journey_end=i % 12 == 8)
    base.update(fields)
    return base


def batches(n_batches: int, size: int, start: int = 0) -> list[list[dict[str, Any]]]:
    return [[item(start + b * size + j) for j in range(size)] for b in range(n_batches)]


def runner_on(path: Path, config: EngineConfig = CONFIG, **kw: Any) -> EmbeddedRunner:
    return EmbeddedRunner(path, config, clock=clock, **kw)


def _plain(x: Any) -> Any:
    """NaN compares unequal to itself; make it comparable."""
    return None if isinstance(x, float) and math.isnan(x) else x


def view(engine: Engine) -> dict[str, Any]:
    """Everything observable about an engine, in a form ``==`` can compare."""
    out: dict[str, Any] = {
        "counters": dict(engine.counters), "watermark": engine.watermark,
        "seen": engine.seen.buckets(), "journeys": engine.journeys.state(),
        "customers": engine.customers.state(),
        "pulses": [p.state() for p in engine.pulses.values()],
    }
    for family in ("continuous", "periodic"):
        for name in engine.window_names(family):  # type: ignore[arg-type]
            for scope in engine.config.scopes:
                out[f"{family}/{name}/{scope}"] = [
                    (s.scope, s.metric, s.score.n, _plain(s.score.value), _plain(s.score.low),
                     _plain(s.score.high), s.latest_event,
                     None if s.previous is None else (s.previous.n, _plain(s.previous.value)))
                    for s in engine.scores(family, name, scope=scope)  # type: ignore[arg-type]
                ]
    return out


def state(runner: EmbeddedRunner) -> dict[str, Any]:
    return runner.read_blocking(view)


def reference(config: EngineConfig, steps: list[list[dict[str, Any]] | PulseRequest | str],
              now: float = NOW) -> dict[str, Any]:
    """An engine that never stopped, fed the same batches and pulse commands directly."""
    decoder = EventDecoder(clock=lambda: now)
    engine = Engine(config)
    for step in steps:
        if isinstance(step, PulseRequest):
            engine.start_pulse(step.pulse_id, step.name, step.filter, step.start, step.end,
                               step.baseline_start, step.baseline_end)
        elif isinstance(step, str):
            engine.end_pulse(step)
        else:
            engine.ingest([decoder.convert(x) for x in step])
    return view(engine)


# A "crash" in process: ``del r`` then ``gc.collect()`` drops the runner without
# ``close()`` -- no final snapshot, so the log alone must carry the state (what SQLite
# itself sees on a real kill is the SIGKILL test's business).


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path / DB_NAME) as conn:
        return conn.execute(sql, params).fetchall()


PULSE = PulseRequest("chat-study", "chat after pricing", {"channel": ["chat"]},
                     START + 100, START + 10_000, START - 1000, START + 100)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[EmbeddedRunner]:
    with runner_on(tmp_path) as r:
        yield r


# -- outcomes and dead letters ---------------------------------------------------------

def test_outcomes_in_order_dead_letters_and_stats(runner: EmbeddedRunner) -> None:
    first = [
        item(0, at=1000),                   # accepted, sets the watermark
        item(1, value=9),                   # invalid: csat is 1-5
        item(0, at=1000),                   # duplicate inside the batch
        {"kind": "nps", "customer_id": "x"},  # invalid: required fields missing
        item(2, at=0),                      # 1000 s behind the watermark: late (600 allowed)
        item(3, at=500),                    # 500 s behind: accepted
        item(4, at=7 * 3600),               # an hour ahead of the clock: invalid
    ]
    outcomes = runner.submit_blocking(first)
    assert [(o.index, o.status, o.event_id) for o in outcomes] == [
        (0, "accepted", "e-0"), (1, "rejected", "e-1"), (2, "duplicate", "e-0"),
        (3, "rejected", None), (4, "late", "e-2"), (5, "accepted", "e-3"),
        (6, "rejected", "e-4"),
    ]
    assert (outcomes[1].field, outcomes[1].reason) == ("value", "Expected `int` <= 5")
    assert outcomes[3].field and outcomes[3].reason == "is required"
    assert outcomes[4].field == "occurred_at" and LATE_REASON in (outcomes[4].reason or "")
    assert outcomes[6].field == "occurred_at" and "in the future" in (outcomes[6].reason or "")
    assert outcomes[2].field is None and outcomes[0].reason is None

    again = runner.submit_blocking([item(0, at=1000), item(2, at=0), item(5, at=900)])
    # (a late event was never counted, so it is not remembered: late again)
    assert [o.status for o in again] == ["duplicate", "late", "accepted"]

    letters = runner.dead_letters_blocking(limit=10, offset=0)
    assert [(d["kind"], d["field"]) for d in letters] == [
        ("late", "occurred_at"), ("invalid", "occurred_at"), ("invalid", outcomes[3].field),
        ("invalid", "value")]
    assert [d["source"] for d in letters] == [  # newest first; positions in their batch
        {"topic": "http", "partition": None, "offset": None, "index": i} for i in (4, 6, 3, 1)]
    assert letters[3]["reason"] == "Expected `int` <= 5"
    assert orjson.loads(letters[3]["payload"]) == first[1]  # the original JSON
    assert orjson.loads(letters[2]["payload"]) == first[3]
    assert orjson.loads(letters[0]["payload"])["event_id"] == "e-2"
    assert letters[0]["reason"] == f"{LATE_REASON} (600 s)"
    assert letters[0]["received_at"] == "2026-03-01T12:00:00.000+00:00"
    assert runner.dead_letters_blocking(limit=2, offset=3) == letters[3:]

    assert runner.stats() == {
        "events_received": 10, "accepted": 3, "invalid": 3, "late": 2, "duplicate": 2,
        "dead_lettered": 5, "dead_letters_expired": 0, "snapshots": 0, "log_rows": 7,
    }  # (the late event's two arrivals keep one dead letter: unique per event id)
    counters = runner.read_blocking(lambda e: dict(e.counters))
    assert (counters["accepted"], counters["late"], counters["duplicate"]) == (3, 2, 2)


def test_an_all_invalid_batch_is_stored_as_dead_letters_only(runner: EmbeddedRunner) -> None:
    outcomes = runner.submit_blocking([{"nope": 1}, 42, "text"])
    assert [o.status for o in outcomes] == ["rejected"] * 3
    assert all(o.field for o in outcomes)
    payloads = [d["payload"] for d in runner.dead_letters_blocking(10, 0)]
    assert payloads == ['"text"', "42", '{"nope":1}']
    assert runner.stats()["log_rows"] == 0


def test_dead_letters_keep_the_bytes_as_sent_capped_with_size_and_digest(
    tmp_path: Path,
) -> None:
    late = item(2, at=0, comment="Þökk fyrir — سپاس — Ευχαριστώ")
    body = (b'[ ' + orjson.dumps(item(0, at=1000)) + b',\n  {"event_id":"bad", "value" : 9},'
            + b" " + orjson.dumps(late, option=orjson.OPT_INDENT_2) + b", "
            + orjson.dumps(item(3, value=7, comment="x" * 300)) + b"]")
    items = orjson.loads(body)
    sent = split_body(body, len(items))
    assert sent is not None
    with runner_on(tmp_path, dead_letter_max_bytes=200) as r:
        outcomes = r.submit_blocking(items, BodyItems(body, items))
        assert [o.status for o in outcomes] == ["accepted", "rejected", "late", "rejected"]
        letters = r.dead_letters_blocking(10, 0)
    for got, index in zip(letters, (2, 3, 1), strict=True):  # newest (late: after) first
        original = sent[index]
        assert got["source"]["index"] == index
        assert (got["size"], got["sha256"]) == (len(original),
                                               hashlib.sha256(original).hexdigest())
        assert payload_bytes(got) == original[:200]
        assert got["truncated"] == (len(original) > 200)
    assert letters[0]["kind"] == "late" and b"\n  " in payload_bytes(letters[0])  # as sent
    assert letters[1]["truncated"] and len(payload_bytes(letters[1])) == 200
    stored = rows(tmp_path, "SELECT length(payload), size FROM dead_letters ORDER BY id")
    assert stored == [(len(sent[1]), len(sent[1])), (200, len(sent[3])), (200, len(sent[2]))]


def test_a_version_1_directory_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    with runner_on(tmp_path) as r:
        r.submit_blocking([item(0)])
    with sqlite3.connect(tmp_path / DB_NAME) as conn:  # as touchstream wrote it before
        conn.execute("DROP TABLE dead_letters")
        conn.execute("CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     "received_at REAL NOT NULL, kind TEXT NOT NULL, event_id TEXT, "
                     "field TEXT, reason TEXT NOT NULL, payload BLOB NOT NULL)")
        conn.execute("INSERT INTO dead_letters (received_at, kind, event_id, field, reason, "
                     "payload) VALUES (?, 'invalid', NULL, 'value', 'r', ?)",
                     (NOW, b"y" * 300))
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'storage_version'")
    with runner_on(tmp_path, dead_letter_max_bytes=100) as again:
        (old,) = again.dead_letters_blocking(10, 0)
        assert (old["kind"], old["size"], old["truncated"]) == ("invalid", 300, True)
        assert old["sha256"] == hashlib.sha256(b"y" * 300).hexdigest()
        assert old["payload"] == "y" * 100 and old["source"]["index"] is None
        assert state(again)["counters"]["accepted"] == 1
    assert rows(tmp_path, "SELECT value FROM meta WHERE key = 'storage_version'") == [("2",)]
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'storage_version'")
    with pytest.raises(StorageError, match="storage version '3' is not '2'"):
        runner_on(tmp_path).open()


# -- recovery ------------------------------------------------------------------------

def test_close_and_reopen_keeps_every_score(tmp_path: Path) -> None:
    with runner_on(tmp_path) as r:
        for batch in batches(6, 25):
            r.submit_blocking(batch)
        before = state(r)
    assert rows(tmp_path, "SELECT COUNT(*) FROM log") == [(0,)]  # the final snapshot covers it
    assert len(rows(tmp_path, "SELECT seq FROM snapshots")) == 1
    with runner_on(tmp_path) as again:
        assert state(again) == before
        assert again.stats()["log_rows"] == 0


def test_crash_without_close_recovers_events_and_pulses_from_the_log(tmp_path: Path) -> None:
    steps: list[Any] = []
    r = runner_on(tmp_path)
    r.open()
    r.start_pulse_blocking(PULSE)
    steps.append(PULSE)
    for batch in batches(3, 30):
        r.submit_blocking(batch)
        steps.append(batch)
    r.end_pulse_blocking(PULSE.pulse_id)
    steps.append(PULSE.pulse_id)
    late = [item(500, at=10), item(501)]  # one late, one accepted
    r.submit_blocking(late)
    steps.append(late)
    before = state(r)
    letters = r.dead_letters_blocking(100, 0)
    assert r.stats()["snapshots"] == 0
    del r
    gc.collect()

    with runner_on(tmp_path) as again:
        after = state(again)
        assert after == before
        assert after == reference(CONFIG, steps)
        assert after["pulses"][0]["ended_at"] is not None
        # the replay re-derived the late event but did not store it twice
        assert again.dead_letters_blocking(100, 0) == letters


def test_a_crash_between_commit_and_late_dead_letter_is_repaired_by_replay(
    tmp_path: Path,
) -> None:
    r = runner_on(tmp_path)
    r.open()
    r.submit_blocking([item(0, at=5000), item(1, at=0)])
    assert [d["kind"] for d in r.dead_letters_blocking(10, 0)] == ["late"]
    del r
    gc.collect()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:  # as if killed before the 2nd commit
        conn.execute("DELETE FROM dead_letters")
    with runner_on(tmp_path) as again:
        (letter,) = again.dead_letters_blocking(10, 0)
        assert (letter["kind"], letter["field"]) == ("late", "occurred_at")
        assert orjson.loads(letter["payload"])["event_id"] == "e-1"


def test_snapshots_prune_the_log_and_snapshot_plus_tail_equals_never_stopping(
    tmp_path: Path,
) -> None:
    steps: list[Any] = []
    r = runner_on(tmp_path, snapshot_every=50)
    r.open()
    for n, batch in enumerate(batches(12, 20)):
        if n == 4:
            r.start_pulse_blocking(PULSE)
            steps.append(PULSE)
        r.submit_blocking(batch)
        steps.append(batch)
    stats = r.stats()
    assert stats["snapshots"] == 4  # after 60, 120, 180 and 240 logged rows (+1 pulse)
    assert stats["log_rows"] == 0  # the 4th snapshot came right after the last batch
    (snapshot_seq,) = rows(tmp_path, "SELECT seq FROM snapshots")[0]
    assert rows(tmp_path, "SELECT COUNT(*) FROM snapshots") == [(1,)]
    assert rows(tmp_path, "SELECT COUNT(*) FROM log WHERE seq <= ?",
                snapshot_seq) == [(0,)]
    tail = [item(1000 + i) for i in range(30)]
    r.submit_blocking(tail)  # a tail after the last snapshot
    steps.append(tail)
    assert rows(tmp_path, "SELECT COUNT(*) FROM log") == [(r.stats()["log_rows"],)]
    assert r.stats()["log_rows"] > 0
    before = state(r)
    del r
    gc.collect()

    with runner_on(tmp_path, snapshot_every=50) as again:
        assert state(again) == before == reference(CONFIG, steps)
        # sequence numbers keep rising after pruning: new rows land after the snapshot
        again.submit_blocking([item(2000)])
        (max_seq,) = rows(tmp_path, "SELECT MAX(seq) FROM log")[0]
        assert max_seq > snapshot_seq


def test_replay_keeps_the_submission_batches(tmp_path: Path) -> None:
    """The engine prunes its dedupe table between batches, so whether a resent old id is
    a duplicate or late depends on where the batches ended: the replay must re-form
    them, never merge or split them."""
    config = CONFIG.model_copy(update={"dedupe_horizon": 600})
    first = [item(i, at=i) for i in range(2048)]  # enough ids to trigger a prune after it
    second = [item(0, at=0)]  # e-0 was pruned: late now; a duplicate had it been in `first`
    merged = reference(config, [first + second])
    r = runner_on(tmp_path, config)
    r.open()
    r.submit_blocking(first)
    assert [o.status for o in r.submit_blocking(second)] == ["late"]
    before = state(r)
    del r
    gc.collect()
    with runner_on(tmp_path, config) as again:
        after = state(again)
    assert after == before == reference(config, [first, second])
    assert (after["counters"]["late"], after["counters"].get("duplicate", 0)) == (1, 0)
    assert merged["counters"]["duplicate"] == 1  # the batching is observable


def test_a_long_replay_is_snapshotted_on_open(tmp_path: Path) -> None:
    r = runner_on(tmp_path)
    r.open()
    for batch in batches(4, 30):
        r.submit_blocking(batch)
    del r
    gc.collect()
    with runner_on(tmp_path, snapshot_every=100) as again:
        assert again.stats()["snapshots"] == 1
        assert rows(tmp_path, "SELECT COUNT(*) FROM log") == [(0,)]


# -- pulses ---------------------------------------------------------------------------

def test_pulse_commands_are_validated_before_they_are_logged(runner: EmbeddedRunner) -> None:
    runner.start_pulse_blocking(PULSE)
    logged = runner.stats()["log_rows"]
    with pytest.raises(PulseError) as clash:
        runner.start_pulse_blocking(PULSE)
    assert clash.value.field == "pulse_id"
    bad = PulseRequest("p2", "x", {"colour": ["red"]}, 0, 10, 0, 10)
    with pytest.raises(PulseError) as unknown:
        runner.start_pulse_blocking(bad)
    assert unknown.value.field == "filter.colour"
    with pytest.raises(KeyError):
        runner.end_pulse_blocking("nope")
    assert runner.stats()["log_rows"] == logged
    runner.end_pulse_blocking(PULSE.pulse_id)
    runner.end_pulse_blocking(PULSE.pulse_id)  # ending twice changes nothing, logs nothing
    assert runner.stats()["log_rows"] == logged + 1


def test_a_pulse_whose_log_write_fails_is_rolled_back(
    runner: EmbeddedRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(kind: str, payload: bytes) -> None:
        raise StorageError(runner.path, "the disk is full (simulated)")

    monkeypatch.setattr(runner, "_log_command", fail)
    with pytest.raises(StorageError, match="disk is full"):
        runner.start_pulse_blocking(PULSE)
    assert runner.read_blocking(lambda e: dict(e.pulses)) == {}
    monkeypatch.undo()
    runner.start_pulse_blocking(PULSE)
    monkeypatch.setattr(runner, "_log_command", fail)
    with pytest.raises(StorageError):
        runner.end_pulse_blocking(PULSE.pulse_id)
    assert runner.read_blocking(lambda e: e.pulses[PULSE.pulse_id].active)


# -- storage failures -----------------------------------------------------------------

def test_a_full_disk_fails_the_whole_batch_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    """``max_page_count`` makes SQLite answer exactly as on a full disk (SQLITE_FULL,
    "database or disk is full") without needing a tiny file system."""
    r = runner_on(tmp_path)
    r.open()
    r.submit_blocking(batches(1, 50)[0])
    before, stats = state(r), r.stats()
    assert r.store.connection is not None  # the test reaches into the one connection on purpose
    pages = r.store.connection.execute("PRAGMA page_count").fetchone()[0]
    r.store.connection.execute(f"PRAGMA max_page_count={pages}")
    big = [item(100 + i, comment="x" * 3000) for i in range(200)] + [{"bad": 1}]
    with pytest.raises(StorageError, match="disk is full") as failed:
        r.submit_blocking(big)
    assert str(tmp_path / DB_NAME) in str(failed.value)
    assert state(r) == before and r.stats() == stats  # nothing applied, nothing counted
    assert r.dead_letters_blocking(10, 0) == []  # the rejects were rolled back too
    r.store.connection.execute("PRAGMA max_page_count=1073741823")
    assert [o.status for o in r.submit_blocking(big[:3])] == ["accepted"] * 3
    after = state(r)
    del r, failed  # the exception's traceback still references the runner
    gc.collect()
    with runner_on(tmp_path) as again:
        assert state(again) == after


def test_a_path_under_a_file_is_refused_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for data_dir in (blocker, blocker / "data"):
        r = runner_on(data_dir)
        with pytest.raises(StorageError, match="not a directory") as err:
            r.open()
        assert str(data_dir) in str(err.value)
        ok, reason = asyncio.run(r.ready())
        assert not ok and "not a directory" in reason


_READ_ONLY_CHILD = """
import sys
from pathlib import Path
from streams.embedded import EmbeddedRunner, StorageError
from streams.engine.config import EngineConfig
try:
    EmbeddedRunner(Path(sys.argv[1]), EngineConfig()).open()
except StorageError as exc:
    print(exc)
    raise SystemExit(3)
"""


def _without_dac_override() -> None:
    """In the child before exec: drop the capabilities that let root ignore file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set, so the
    exec'd Python runs as a root that ``chmod`` does stop."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_read_only_directory_is_refused_clearly(tmp_path: Path) -> None:
    """The suite runs as root, and chmod does not stop root: so the runner is opened by a
    child process whose capability bounding set lacks the override capabilities (when
    not root, the mode bits apply anyway). Running as ``nobody`` instead fails earlier,
    because the interpreter lives under /root. The directory already holds a database,
    so this covers "recover from a directory this process can no longer write"."""
    data = tmp_path / "data"
    with runner_on(data) as r:
        r.submit_blocking([item(0)])
    for f in data.iterdir():
        f.chmod(0o444)
    data.chmod(0o555)  # noqa: S103 - read-only on purpose
    try:
        child = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_CHILD, str(data)], capture_output=True,
            text=True, timeout=30,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here ({exc})")
    finally:
        data.chmod(0o755)  # noqa: S103 - to clean up
    assert child.returncode == 3, child.stderr
    assert str(data) in child.stdout
    assert "permission denied" in child.stdout and "not writable" in child.stdout
    assert "Traceback" not in child.stderr


@pytest.mark.parametrize("damage", ["garbage file", "bad snapshot", "bad log row"])
def test_a_corrupt_database_is_a_storage_error_not_a_traceback(tmp_path: Path,
                                                               damage: str) -> None:
    with runner_on(tmp_path) as r:
        r.submit_blocking(batches(1, 10)[0])
    if damage == "garbage file":
        (tmp_path / DB_NAME).write_bytes(b"\x00garbage\xff" * 4096)
        expected = "corrupt"
    elif damage == "bad snapshot":
        with sqlite3.connect(tmp_path / DB_NAME) as conn:
            conn.execute("UPDATE snapshots SET data = x'c1c1c1'")
        expected = "snapshot at seq 10 cannot be restored"
    else:
        r = runner_on(tmp_path)
        r.open()
        r.submit_blocking([item(50)])
        del r
        gc.collect()
        with sqlite3.connect(tmp_path / DB_NAME) as conn:
            conn.execute("UPDATE log SET payload = x'7b7b7b'")
        expected = "log row 11 is corrupt"
    broken = runner_on(tmp_path)
    with pytest.raises(StorageError, match=expected) as err:
        broken.open()
    assert str(tmp_path) in str(err.value)
    with pytest.raises(StorageError):
        broken.submit_blocking([item(1)])


def test_another_configuration_is_refused_and_nothing_is_dropped(tmp_path: Path) -> None:
    with runner_on(tmp_path) as r:
        r.submit_blocking(batches(1, 10)[0])
        before = state(r)
    other = CONFIG.model_copy(update={"allowed_lateness": 900})
    with pytest.raises(StorageError, match="different engine configuration") as err:
        runner_on(tmp_path, other).open()
    assert "allowed_lateness" in str(err.value) and "scopes" not in str(err.value)
    with runner_on(tmp_path) as again:
        assert state(again) == before


def test_a_second_runner_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with runner_on(tmp_path):
        with pytest.raises(StorageError, match="in use by another touchstream runner"):
            runner_on(tmp_path).open()
    with runner_on(tmp_path) as later:
        assert later.stats()["log_rows"] == 0


# -- the async face -------------------------------------------------------------------

async def test_the_async_runner_protocol(tmp_path: Path) -> None:
    r = runner_on(tmp_path)
    assert await r.ready() == (False, "not open yet")
    async with r:
        assert await r.ready() == (True, "ok")
        outcomes = await r.submit(tuple(item(i) for i in range(3)))
        assert [o.status for o in outcomes] == ["accepted"] * 3
        assert await r.read(lambda e: e.counters["accepted"]) == 3
        await r.start_pulse(PULSE)
        await r.end_pulse(PULSE.pulse_id)
        with pytest.raises(KeyError):
            await r.end_pulse("nope")
        await r.submit([item(9, value=0)])
        assert [d["field"] for d in await r.dead_letters(10, 0)] == ["value"]
    assert await r.ready() == (False, "closed")
    with pytest.raises(StorageError, match="closed"):
        await r.submit([item(4)])


# -- a real SIGKILL ---------------------------------------------------------------------

def _overall_csat(events: list[dict[str, Any]]) -> tuple[int, float]:
    values = [e["value"] for e in events if e["kind"] == "csat"]
    return len(values), sum(v >= 4 for v in values) / len(values)


def _write_then_kill(data: Path, base: int, batch: int, snapshot_every: int,
                     kill_after: int, delay: float, tmp_path: Path) -> tuple[int, int]:
    """Run the writer until it acknowledged ``kill_after`` more events, let it run on for
    ``delay`` seconds, SIGKILL it; return (events it recovered at start, acknowledged)."""
    err = tmp_path / "child.err"
    with err.open("a") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(WRITER), str(data), str(base), str(batch),
             str(snapshot_every)],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
        watchdog = threading.Timer(15, child.kill)
        watchdog.start()
        try:
            assert child.stdout is not None
            started = int(child.stdout.readline().removeprefix("start "))
            acknowledged = started
            for line in child.stdout:
                acknowledged = int(line)
                if acknowledged >= started + kill_after:
                    break
            time.sleep(delay)  # so the kill lands anywhere: validating, committing, applying
            os.kill(child.pid, signal.SIGKILL)
            for line in child.stdout.read().split():  # acknowledged before it died
                acknowledged = int(line)
            child.wait(10)
        finally:
            watchdog.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == -signal.SIGKILL, err.read_text()
    assert acknowledged >= started + kill_after
    return started, acknowledged


@pytest.mark.parametrize(("batch", "snapshot_every", "delays"), [
    pytest.param(100, 10_000_000, (0.0, 0.004, 0.011), id="log-only"),
    pytest.param(250, 700, (0.002, 0.0, 0.007), id="with-snapshots"),
])
def test_sigkill_mid_stream_loses_nothing_acknowledged(
    tmp_path: Path, batch: int, snapshot_every: int, delays: tuple[float, ...]
) -> None:
    """Three kill/restart cycles on one directory: each restart recovers from what the
    kill left (WAL included) and must hold every event acknowledged before it."""
    base = int(time.time()) - 3 * 86_400
    data = tmp_path / "data"
    acknowledged = 0
    for delay in delays:
        started, acknowledged_now = _write_then_kill(
            data, base, batch, snapshot_every, 1_000, delay, tmp_path)
        assert acknowledged <= started <= acknowledged + batch  # nothing acknowledged lost
        assert started % batch == 0  # a batch is durable whole or not at all
        acknowledged = acknowledged_now

    logged = rows(data, "SELECT seq, kind, payload FROM log ORDER BY seq")
    snapshots = rows(data, "SELECT seq FROM snapshots")
    with EmbeddedRunner(data, WRITER_CONFIG, snapshot_every=snapshot_every) as runner:
        recovered = state(runner)
        seen = {d for digests in recovered["seen"].values() for d in digests}
        durable = len(seen)
        # every acknowledged event is there; at most the one in-flight batch more,
        # and never part of a batch
        assert {digest(f"k-{i}") for i in range(acknowledged)} <= seen
        assert acknowledged <= durable <= acknowledged + batch
        assert durable % batch == 0
        assert seen == {digest(f"k-{i}") for i in range(durable)}
        assert recovered["counters"]["accepted"] == durable

    events = [make_item(i, base) for i in range(durable)]
    steps: list[Any] = [events[i : i + batch] for i in range(0, durable, batch)]
    assert recovered == reference(WRITER_CONFIG, steps, now=time.time())
    (overall,) = [s for s in recovered["continuous/7d/()"] if s[1] == "csat"]
    n, share = _overall_csat(events)  # brute force, no engine
    assert overall[2] == n and overall[3] == pytest.approx(share)

    if snapshots:  # the log was pruned to what the newest snapshot does not cover
        (snapshot_seq,) = snapshots[0]
        assert all(seq > snapshot_seq for seq, _, _ in logged)
        assert len(logged) < snapshot_every + batch
    else:  # the log alone holds every durable event, byte for byte as validated
        decoder = EventDecoder()
        assert [bytes(p) for _, _, p in logged] == [
            encode(decoder.convert(e)) for e in events]
    assert snapshots or snapshot_every > durable
