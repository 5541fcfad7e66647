"""The broker stops and restarts mid-stream: the worker reconnects and loses nothing.

A dedicated broker (not the session's, which other tests share) is restarted on the same
ports and data directory while a worker is consuming; the merged view must still equal
the oracle over every valid event produced before and after the restart.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from worker_support import (
    TEST_CONFIG,
    Produced,
    Workers,
    end_offsets,
    engine_differences,
    make_stream,
    oracle,
    produce,
    worker_settings,
    write_config,
)

from deploy.kafka.broker import KafkaBroker
from streams.worker.reader import ScoresReader
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow


async def test_broker_restart_mid_stream_loses_nothing(kafka_broker: KafkaBroker,
                                                       tmp_path: Path) -> None:
    broker = KafkaBroker(data_dir=tmp_path / "broker")
    broker.start()
    try:
        bootstrap = broker.bootstrap
        name = f"br-{uuid.uuid4().hex[:8]}"
        topic = f"{name}-touchpoints"
        config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
        settings = worker_settings(bootstrap, name, tmp_path / "state", input_topic=topic,
                                   partitions=3)
        ensure_topics(settings)
        items = make_stream(2000, seed=31)
        first, second = items[: len(items) // 2], items[len(items) // 2:]
        workers = Workers(tmp_path)
        try:
            workers.start("w1", settings, config_path)
            produced: list[Produced] = produce(bootstrap, topic, first)
            async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
                await reader.wait_for_offsets(end_offsets(bootstrap, topic), 60)
            broker.restart()  # same ports, same data: the worker must ride it out
            workers.check_alive()
            produced += produce(bootstrap, topic, second)
            ends = end_offsets(bootstrap, topic)
            async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
                await reader.wait_for_offsets(ends, 120)
                workers.check_alive()
                assert engine_differences(reader.engine(), oracle(TEST_CONFIG, produced),
                                          TEST_CONFIG) == []
        except BaseException:
            print(workers.logs())  # noqa: T201 - shown on failure
            raise
        finally:
            workers.kill_all()
    finally:
        broker.close()
