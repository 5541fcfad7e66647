"""`touchstream replay --to kafka://...` says what the workers made of the events, not
only what the broker stored: accepted, duplicates, late and rejected with reasons, read
back from the workers' counters and dead letters; or that it cannot know."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from worker_support import (
    REPO_ROOT,
    TEST_CONFIG,
    Workers,
    settings_env,
    wait_until,
    worker_settings,
    write_config,
)

from streams.worker.topics import ensure_topics


def events_file(path: Path) -> dict[str, int]:
    """A file of 60 good events (10 of them sent twice), 5 invalid and 3 far too old."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    lines: list[dict[str, Any]] = []
    for i in range(60):
        lines.append({"event_id": f"r-{i}", "occurred_at": (now + timedelta(seconds=i)
                                                             ).isoformat(),
                      "customer_id": f"c-{i % 9}", "touchpoint": "support",
                      "channel": "chat", "kind": "csat", "value": 1 + i % 5})
    lines += lines[:10]  # the same ids again: duplicates
    for i in range(5):
        lines.append({**lines[i], "event_id": f"bad-{i}", "value": 9})  # csat is 1..5
    for i in range(3):  # older than any lateness the engine allows
        lines.append({**lines[i], "event_id": f"old-{i}",
                      "occurred_at": (now - timedelta(days=400)).isoformat()})
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return {"accepted": 60, "duplicates": 10, "rejected": 5, "late": 3}


def replay(path: Path, to: str, env: dict[str, str], *extra: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "service", "replay", str(path), "--to", to, *extra],
        cwd=REPO_ROOT, env={**env, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_replay_summary_reports_what_the_workers_counted(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    name = f"truth-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2)
    ensure_topics(settings)
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    env = settings_env(settings, config_path)
    path = tmp_path / "events.jsonl"
    want = events_file(path)

    # No worker has ever run for this deployment: the summary says it cannot know.
    other = worker_settings(kafka_bootstrap, f"{name}-none", tmp_path / "none",
                            input_topic=f"{name}-none-touchpoints", partitions=1)
    ensure_topics(other)
    unknown = replay(path, f"kafka://{kafka_bootstrap}/{other.topic_touchpoints}",
                     settings_env(other, config_path), "--wait", "5")
    assert "stored by the broker 78, refused 0" in unknown
    assert "what the workers counted is unknown" in unknown
    assert "Updating subscribed topics" not in unknown  # no consumer chatter

    workers = Workers(tmp_path)
    try:
        worker = workers.start("w1", settings, config_path)
        wait_until(lambda: "assigned input partitions" in worker.log_text(), 60,
                   worker.log_text)
        out = replay(path, f"kafka://{kafka_bootstrap}/{topic}", env, "--wait", "120")
        line = re.search(r"counted by the workers: accepted (\d+), duplicates (\d+), "
                         r"late (\d+), rejected (\d+)", out)
        assert line, out
        assert tuple(map(int, line.groups())) == (
            want["accepted"], want["duplicates"], want["late"], want["rejected"]), out
        assert re.search(r"rejected\s+5\s+value: Expected `int` <= 5", out), out
        assert re.search(r"late\s+3\s+occurred_at: ", out), out
        assert "others sent meanwhile" not in out
        # The same file again: every counted event's id is known now; the late ones were
        # never counted, so they are not remembered: late again.
        again = replay(path, f"kafka://{kafka_bootstrap}/{topic}", env, "--wait", "120")
        assert "counted by the workers: accepted 0, duplicates 70, late 3, rejected 5" in again
    finally:
        workers.kill_all()
