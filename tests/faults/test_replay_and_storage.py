"""Replaying a file twice changes no score; a runner that cannot write answers 503 with
the reason and loses nothing.

Storage faults at start (read-only directory, a file in the way, a corrupt database, a
full disk on write) are covered against the runner itself in tests/streams/test_embedded.py;
here they are checked through the API.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from faults_support import CONFIG, NOW, READ, auth, event, still_serving
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.metrics import read_scoreboard
from streams.embedded import EmbeddedRunner, StorageError
from streams.sources.files import jsonl_events, write_jsonl
from streams.sources.simulator import Simulator


def _canonical(value: Any) -> Any:
    """NaN made comparable, timestamps of the computation dropped."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k != "computed_at"}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    simulator = Simulator(seed=8, rate=20.0, start=NOW - timedelta(hours=2), customers=300)
    path = tmp_path / "events.jsonl"
    assert write_jsonl(simulator.events(n=3_000), path) == 3_000
    return path


def _batches(path: Path, size: int = 500) -> list[list[Any]]:
    items = [orjson.loads(line) for _, line in jsonl_events(path)]
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_replaying_a_file_twice_changes_no_score_in_the_runner(
    tmp_path: Path, event_file: Path,
) -> None:
    windows = ("continuous:1h", "continuous:24h", "periodic:day")
    with EmbeddedRunner(tmp_path / "data", CONFIG) as runner:
        first = [o.status for b in _batches(event_file) for o in runner.submit_blocking(b)]
        assert first.count("accepted") > 2_500
        once = _canonical(runner.read_blocking(
            lambda e: read_scoreboard(e, windows).scores))
        second = [o.status for b in _batches(event_file) for o in runner.submit_blocking(b)]
        twice = _canonical(runner.read_blocking(
            lambda e: read_scoreboard(e, windows).scores))
    assert once and twice == once
    assert "accepted" not in second
    assert second.count("duplicate") == first.count("accepted")


async def test_replaying_a_file_twice_changes_no_score_through_the_api(
    client: httpx.AsyncClient, event_file: Path,
) -> None:
    async def replay() -> list[dict[str, Any]]:
        for batch in _batches(event_file):
            response = await client.post("/v1/events", json=batch, headers=auth())
            assert response.status_code == 200
        views = []
        for query in ("window=24h", "scope=channel&window=24h&limit=1000",
                      "scope=segment&window=1h&limit=1000"):
            got = await client.get(f"/v1/scores?{query}", headers=auth(READ))
            views.append(_canonical(got.json()))
        return views

    once = await replay()
    assert once[0]["items"] and once[1]["total"] > 1
    assert await replay() == once


async def test_a_write_the_disk_refuses_is_503_with_the_reason(
    client: httpx.AsyncClient, runner: EmbeddedRunner,
) -> None:
    """SQLite answers SQLITE_FULL once ``max_page_count`` is reached, as on a full disk
    (the same technique as tests/streams/test_embedded.py)."""
    await client.post("/v1/events", json=[event(i) for i in range(20)], headers=auth())
    before = (await client.get("/v1/scores?window=24h", headers=auth(READ))).json()
    assert runner.store.connection is not None  # reaching into the one connection on purpose
    pages = runner.store.connection.execute("PRAGMA page_count").fetchone()[0]
    runner.store.connection.execute(f"PRAGMA max_page_count={pages}")
    big = [event(100 + i, event_id=f"full-{i}", comment="x" * 3000) for i in range(300)]
    response = await client.post("/v1/events", json=big, headers=auth())
    assert response.status_code == 503, response.text
    assert "disk is full" in response.json()["detail"]["reason"]
    assert response.headers["retry-after"]
    after = (await client.get("/v1/scores?window=24h", headers=auth(READ))).json()
    assert _canonical(after) == _canonical(before)  # nothing half-applied
    runner.store.connection.execute("PRAGMA max_page_count=1073741823")
    retried = await client.post("/v1/events", json=big, headers=auth())
    assert retried.json()["accepted"] == 300  # the client's retry is whole
    await still_serving(client, 1)


async def test_a_runner_that_is_not_open_is_503_with_the_reason(
    tmp_path: Path, settings: Any,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    runner = EmbeddedRunner(blocker, CONFIG)
    with pytest.raises(StorageError, match="not a directory"):
        runner.open()
    app = create_app(settings, runner, CONFIG, CollectorRegistry())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and "not a directory" in ready.json()["reason"]
        for response in (
            await c.post("/v1/events", json=[event(1)], headers=auth()),
            await c.get("/v1/scores", headers=auth(READ)),
            await c.get("/v1/dead-letters", headers=auth(READ)),
        ):
            assert response.status_code == 503, response.text
            assert "not a directory" in response.json()["detail"]["reason"]
