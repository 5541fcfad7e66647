"""A worker killed with SIGKILL while the group rebalances: nothing lost, nothing twice.

Worker 1 consumes; worker 2 joins (a rebalance starts) and worker 1 is killed at once,
in the middle of handing partitions over. Worker 2 ends up with every partition,
restores what was checkpointed and replays the rest; more events follow. The merged
view must equal the oracle.
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

from streams.worker.reader import ScoresReader
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_sigkill_during_a_rebalance_loses_nothing(kafka_bootstrap: str, tmp_path: Path,
                                                        guarantee: str) -> None:
    name = f"rk-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=4, batch_max=50, checkpoint_events=400,
                               flush_interval=0.05, processing_guarantee=guarantee)
    ensure_topics(settings)
    items = make_stream(3000, seed=41)
    first, second = items[: len(items) // 2], items[len(items) // 2:]
    workers = Workers(tmp_path)
    try:
        w1 = workers.start("w1", settings, config_path)
        produced: list[Produced] = produce(kafka_bootstrap, topic, first)
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(end_offsets(kafka_bootstrap, topic), 60)
        workers.start("w2", settings, config_path)  # the group starts to rebalance ...
        produced += produce(kafka_bootstrap, topic, second[:500])
        w1.kill()  # ... and the first worker dies in the middle of it
        produced += produce(kafka_bootstrap, topic, second[500:])
        ends = end_offsets(kafka_bootstrap, topic)
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
