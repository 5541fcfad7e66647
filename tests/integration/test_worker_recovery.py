"""A worker killed with SIGKILL mid-stream and restarted loses nothing and counts
nothing twice: its state comes back from the last checkpoint, the events after it are
read again, and partial aggregates it had already published are simply replaced.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_worker_pipeline import until
from worker_support import (
    TEST_CONFIG,
    Produced,
    Workers,
    counts,
    dead_letter_problems,
    end_offsets,
    engine_differences,
    make_stream,
    oracle,
    produce,
    read_all,
    wait_until,
    worker_settings,
    write_config,
)

from streams.worker.reader import ScoresReader, read_partition_engine
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow

RESTORED = re.compile(r"partition (\d+): restored checkpoint at offset (\d+)")
READING_FROM = re.compile(r"partition (\d+) of \S+: reading from offset (\d+)")


def reading_from(log: str) -> dict[int, int]:
    """Where the worker positioned each input partition after its first recovery."""
    found: dict[int, int] = {}
    for p, o in READING_FROM.findall(log):
        found.setdefault(int(p), int(o))
    return found


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic``."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_sigkill_mid_stream_then_restart_equals_the_oracle(
        kafka_bootstrap: str, tmp_path: Path, guarantee: str) -> None:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    # Small batches and checkpoints by event count only: partials run ahead of the
    # checkpoints, so a kill always leaves published work that must be redone.
    settings = worker_settings(
        kafka_bootstrap, name, tmp_path / "state", input_topic=topic, partitions=3,
        batch_max=40, checkpoint_events=300, checkpoint_interval=600.0, flush_interval=0.05,
        group_instance_id=f"{name}-worker-0", processing_guarantee=guarantee)
    ensure_topics(settings)
    items = make_stream(4000, seed=23)
    phase1, phase2 = items[: len(items) // 3], items[len(items) // 3:]
    workers = Workers(tmp_path)
    try:
        first = workers.start("c1", settings, config_path)
        produced: list[Produced] = produce(kafka_bootstrap, topic, phase1)
        ends1 = end_offsets(kafka_bootstrap, topic)
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(ends1, 60)
            sending = asyncio.create_task(asyncio.to_thread(produce, kafka_bootstrap, topic,
                                                            phase2))
            # Kill as soon as the worker is into the second phase.
            await until(lambda: any(reader.source_offsets().get(p, 0) > o
                                    for p, o in ends1.items()), 60,
                        lambda: "worker never got into phase 2\n" + first.log_tail())
            first.kill()
            # Everything the killed worker had published (the reader lags a little: read
            # the partials topic to its end first; nobody publishes until the restart).
            await reader.catch_up(30)
            published_at_kill = reader.source_offsets()
            produced += await sending
            ends = end_offsets(kafka_bootstrap, topic)
            mid_stream = any(published_at_kill[p] < ends[p] for p in ends)
            second = workers.start("c2", settings, config_path)
            await reader.wait_for_offsets(ends, 90)
            workers.check_alive()

            # At least once: the restart resumed from checkpoints behind what was already
            # published; those events were processed twice, and must count once.
            # Exactly once: partials and checkpoints commit together, so the restart
            # never resumes behind a state that was visible (the reader may have lagged
            # the last commit before the kill, hence >=).
            restored = {int(p): int(o) for p, o in RESTORED.findall(second.log_text())}
            assert restored, second.log_tail()
            if guarantee == "at_least_once":
                assert any(o < published_at_kill[p] for p, o in restored.items()), (
                    restored, published_at_kill)
            else:
                assert all(o >= published_at_kill[p] for p, o in restored.items()), (
                    restored, published_at_kill)
            print(f"killed mid-stream: {mid_stream}; published at kill "  # noqa: T201
                  f"{published_at_kill}; restored {restored}; ends {ends}")

            want = oracle(TEST_CONFIG, produced)
            kinds = counts(produced)
            assert engine_differences(reader.engine(), want, TEST_CONFIG) == []
            got = reader.counters()
            assert (got["accepted"], got["duplicate"], got["late"], got["rejected"]) == (
                kinds["valid"], kinds["duplicate"], kinds["late"], kinds["invalid"])
        # Dead letters: at least once, repeats after the kill are allowed (they carry
        # their source offset), missing ones are not; exactly once, no repeats either.
        dead = read_all(kafka_bootstrap, settings.topic_dlq)
        assert dead_letter_problems(dead, produced, topic,
                                    repeats=guarantee == "at_least_once") == []
        assert second.terminate() == 0, second.log_tail()
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()


async def test_sigterm_checkpoints_so_a_restart_resumes_where_it_stopped(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2, checkpoint_interval=600.0,
                               checkpoint_events=1_000_000)
    ensure_topics(settings)
    workers = Workers(tmp_path)
    try:
        first = workers.start("d1", settings, config_path)
        # Two streams back to back in event time (the second may not fall behind the
        # first's watermark, or lateness would depend on which partition saw what).
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        produced = produce(kafka_bootstrap, topic, make_stream(
            600, seed=5, late=0, start=base, span=timedelta(hours=2)))
        ends = end_offsets(kafka_bootstrap, topic)
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(ends, 60)
        assert first.terminate() == 0, first.log_tail()
        # The only checkpoints were written on SIGTERM, at the end of the input, and the
        # group's offsets committed there: the restart resumes exactly there.
        assert committed_offsets(kafka_bootstrap, settings.app_id, topic) == ends
        second = workers.start("d2", settings, config_path)
        more = produce(kafka_bootstrap, topic, make_stream(
            200, seed=6, late=0, first_id=10_000, start=base + timedelta(hours=2),
            span=timedelta(minutes=30)))
        ends_after = end_offsets(kafka_bootstrap, topic)
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(ends_after, 60)
            assert engine_differences(reader.engine(), oracle(TEST_CONFIG, produced + more),
                                      TEST_CONFIG) == []
        restored = {int(p): int(o) for p, o in RESTORED.findall(second.log_text())}
        assert restored == ends, second.log_tail()
        assert reading_from(second.log_text()) == ends, second.log_tail()
        assert second.terminate() == 0, second.log_tail()
        # Each partition's full engine (customers, journeys) reads back from its
        # checkpoint, as the API will for per-customer questions.
        want = oracle(TEST_CONFIG, produced + more)
        accepted = 0
        for p, end in ends_after.items():
            found = await read_partition_engine(settings, p, TEST_CONFIG)
            assert found is not None
            engine, offset = found
            assert offset == end
            accepted += engine.counters["accepted"]
        assert accepted == want.counters["accepted"]
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()


async def test_a_committed_offset_ahead_of_the_state_is_not_trusted(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """The group's offsets say "all read" but no state exists (say the checkpoint topic
    was lost): the worker goes back to the state's own offset instead of skipping."""
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient
    from kafka.errors import CoordinatorNotAvailableError
    from kafka.structs import OffsetAndMetadata

    name = f"ts-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2)
    ensure_topics(settings)
    produced = produce(kafka_bootstrap, topic, make_stream(400, seed=9))
    ends = end_offsets(kafka_bootstrap, topic)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)

    def commit_ahead() -> bool:
        try:
            admin.alter_group_offsets(settings.app_id, {
                TopicPartition(topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in ends.items()})
        except CoordinatorNotAvailableError:  # a new group's coordinator is loading
            return False
        return True

    try:
        wait_until(commit_ahead, 30, lambda: "group coordinator never became available")
    finally:
        admin.close()
    workers = Workers(tmp_path)
    try:
        worker = workers.start("f1", settings, config_path)
        # Nothing new arrives, so the worker only reads the log again if it went back.
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            more = produce(kafka_bootstrap, topic, make_stream(
                20, seed=10, late=0, first_id=50_000, start=datetime.now(UTC).replace(
                    microsecond=0) - timedelta(minutes=20), span=timedelta(minutes=10)))
            await reader.wait_for_offsets(end_offsets(kafka_bootstrap, topic), 60)
            assert engine_differences(reader.engine(), oracle(TEST_CONFIG, produced + more),
                                      TEST_CONFIG) == []
        # Whatever the group's offsets say, each partition is read from its state's
        # offset: 0, as there is no state.
        assert reading_from(worker.log_text()) == {0: 0, 1: 0}, worker.log_tail()
        assert worker.terminate() == 0, worker.log_tail()
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()
