"""Workers as separate processes against the real broker: every valid event counted once.

One input topic with six partitions is consumed by two independent deployments: "a"
with one worker (at least once), "b" with a second worker joining mid-stream (exactly
once; a rebalance hands state over through the checkpoint topic and fences the previous
owner's transactions). Both must equal the oracle — a fresh Engine over exactly the
valid events — and so each other.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_support import (
    TEST_CONFIG,
    Produced,
    Workers,
    counts,
    dead_letter_problems,
    end_offsets,
    engine_differences,
    latest_by_key,
    make_stream,
    oracle,
    produce,
    read_all,
    worker_settings,
    write_config,
)

from streams.worker.reader import ScoresReader, read_dead_letters
from streams.worker.scores import PROGRESS_KEY, score_records
from streams.worker.settings import WorkerSettings
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow

ASSIGNED = re.compile(r"assigned input partitions \[([0-9, ]+)\]")


async def until(condition: Callable[[], Any], timeout: float, describe: Callable[[], str],
                interval: float = 0.1) -> Any:
    """Poll ``condition`` (without blocking the event loop) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {describe()}")
        await asyncio.sleep(interval)


def last_assignment(log: str) -> list[int]:
    found = ASSIGNED.findall(log)
    return [int(x) for x in found[-1].split(",")] if found else []


def scores_progress(bootstrap: str, settings: WorkerSettings) -> dict[int, int]:
    latest = latest_by_key(read_all(bootstrap, settings.topic_scores))
    progress = latest.get(PROGRESS_KEY)
    if progress is None:
        return {}
    return {int(p): o for p, o in orjson.loads(progress)["source_offsets"].items()}


def check_scores_topic(bootstrap: str, settings: WorkerSettings, want: Any) -> None:
    latest = latest_by_key(read_all(bootstrap, settings.topic_scores))
    latest.pop(PROGRESS_KEY, None)
    expected = score_records(want, TEST_CONFIG)
    assert set(latest) == set(expected), (
        f"score keys differ: missing {sorted(set(expected) - set(latest))[:5]}, "
        f"extra {sorted(set(latest) - set(expected))[:5]}")
    for key, value in expected.items():
        assert orjson.loads(latest[key]) == orjson.loads(value), key


async def test_one_and_two_workers_count_every_valid_event_once(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    a = worker_settings(kafka_bootstrap, f"{name}-a", tmp_path / "a", input_topic=topic,
                        partitions=6)
    b = worker_settings(kafka_bootstrap, f"{name}-b", tmp_path / "b", input_topic=topic,
                        partitions=6, processing_guarantee="exactly_once")
    assert topic in ensure_topics(a)
    assert topic not in ensure_topics(b)  # exists, and fits
    items = make_stream(3000, seed=11)
    first, second = items[: len(items) // 2], items[len(items) // 2:]
    workers = Workers(tmp_path)
    try:
        workers.start("a1", a, config_path)
        b1 = workers.start("b1", b, config_path)
        produced: list[Produced] = produce(kafka_bootstrap, topic, first)
        async with ScoresReader.from_settings(a, TEST_CONFIG) as reader_a, \
                ScoresReader.from_settings(b, TEST_CONFIG) as reader_b:
            await reader_b.wait_for_offsets(end_offsets(kafka_bootstrap, topic), 60)
            workers.check_alive()
            # A second worker joins deployment b mid-stream: a rebalance moves partitions,
            # their state travels through the checkpoint table.
            b2 = workers.start("b2", b, config_path)
            await until(lambda: last_assignment(b2.log_text()), 60,
                        lambda: "b2 never got partitions\n" + workers.logs())
            produced += produce(kafka_bootstrap, topic, second)
            ends = end_offsets(kafka_bootstrap, topic)
            await reader_a.wait_for_offsets(ends, 60)
            await reader_b.wait_for_offsets(ends, 60)
            workers.check_alive()

            want = oracle(TEST_CONFIG, produced)
            kinds = counts(produced)
            assert want.counters["accepted"] == kinds["valid"]
            assert want.counters["duplicate"] == kinds["duplicate"]
            assert want.counters["late"] == kinds["late"]
            for reader in (reader_a, reader_b):
                assert engine_differences(reader.engine(), want, TEST_CONFIG) == []
                got = reader.counters()
                assert got["accepted"] == kinds["valid"]
                assert got["duplicate"] == kinds["duplicate"]
                assert got["late"] == kinds["late"]
                assert got["rejected"] == kinds["invalid"]

        # Both workers of b really worked: each owned partitions at the end, and the
        # partitions b2 took over were restored from b1's checkpoints.
        b2_partitions = last_assignment(b2.log_text())
        assert sorted(b2_partitions + last_assignment(b1.log_text())) == list(range(6))
        assert re.search(r"partition \d: restored checkpoint at offset [1-9]", b2.log_text()), \
            b2.log_tail()

        newest = await read_dead_letters(a, limit=10_000)
        assert {(d["source"]["partition"], d["source"]["offset"]) for d in newest} == {
            (p.partition, p.offset) for p in produced if p.item.kind in ("invalid", "late")}
        for settings in (a, b):
            dead = read_all(kafka_bootstrap, settings.topic_dlq)
            assert dead_letter_problems(dead, produced, topic, repeats=False) == []
            await until(lambda s=settings: all(  # type: ignore[misc]
                scores_progress(kafka_bootstrap, s).get(p, 0) >= o for p, o in ends.items()),
                30, lambda s=settings: f"scores of {s.app_id} never caught up: "  # type: ignore[misc]
                f"{scores_progress(kafka_bootstrap, s)} < {ends}", interval=0.3)
            check_scores_topic(kafka_bootstrap, settings, want)

        # Graceful stop: checkpoint, commit, exit 0.
        for worker in workers.all:
            assert worker.terminate() == 0, worker.log_tail()
            assert "shut down cleanly" in worker.log_text(), worker.log_tail()
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()
