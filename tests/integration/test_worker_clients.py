"""Events from producers that are not ours are consumed correctly: kafka-python with
compression and headers, kafka-python transactions (aborted events never count, and
the offset gaps of transaction markers are harmless), records without a key, and
``kcat`` (librdkafka, a C client) when it is installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from worker_support import (
    TEST_CONFIG,
    Item,
    Produced,
    Workers,
    engine_differences,
    make_stream,
    oracle,
    produce,
    producer,
    worker_settings,
    write_config,
)

from streams.worker.reader import ScoresReader
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow

HAS_KCAT = shutil.which("kcat") is not None
# Snappy, LZ4 and zstd batches need cramjam in the consumer (aiokafka's codecs).
KCAT_CODEC = "lz4" if importlib.util.find_spec("cramjam") else "gzip"


def kcat_produce(bootstrap: str, topic: str, items: list[Item]) -> None:
    """Produce with kcat: keyed with the murmur2 partitioner, as Java clients key."""
    lines = b"".join((i.key or b"") + b"\t" + (i.value or b"") + b"\n" for i in items)
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-z", KCAT_CODEC,
         "-X", "partitioner=murmur2_random", "-H", "producer=kcat"],
        input=lines, check=True, timeout=60, capture_output=True)


async def test_events_from_foreign_producers_are_counted_once(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2)
    ensure_topics(settings)
    items = make_stream(1000, seed=31, duplicates=0.0, invalid=0.0, late=0)
    plain, committed, aborted, keyless, by_kcat, last = (
        items[:250], items[250:450], items[450:550], items[550:700], items[700:900],
        items[900:])
    workers = Workers(tmp_path)
    try:
        worker = workers.start("e1", settings, config_path)
        counted: list[Produced] = []
        # kafka-python, gzip batches, headers on every record.
        with_gzip = producer(kafka_bootstrap, compression_type="gzip", enable_idempotence=False,
                             acks=1)
        counted += produce(kafka_bootstrap, topic, plain, with_gzip,
                           headers=[("source", b"kafka-python"), ("trace", b"\x00\x01")])
        with_gzip.close()
        # kafka-python transactions: one committed, one aborted.
        txn = producer(kafka_bootstrap, transactional_id=f"{name}-txn")
        txn.init_transactions()
        txn.begin_transaction()
        counted += produce(kafka_bootstrap, topic, committed, txn)
        txn.commit_transaction()
        txn.begin_transaction()
        produce(kafka_bootstrap, topic, aborted, txn)
        txn.abort_transaction()
        txn.close()
        # No key at all: the producer spreads them; nothing may depend on the key.
        counted += produce(kafka_bootstrap, topic, [Item(None, i.value, i.kind)
                                                    for i in keyless])
        if HAS_KCAT:
            kcat_produce(kafka_bootstrap, topic, by_kcat)
            counted += [Produced(i, -1, -1) for i in by_kcat]
        # A last plain batch over many keys closes every partition with known offsets.
        tail = produce(kafka_bootstrap, topic, last)
        counted += tail
        wanted = {p: max(t.offset for t in tail if t.partition == p) + 1
                  for p in {t.partition for t in tail}}
        assert sorted(wanted) == [0, 1]

        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(wanted, 60)
            want = oracle(TEST_CONFIG, counted)
            # Keyless and kcat records land on any partition, so a customer's journey is
            # split across partitions: scores must agree, journeys cannot (they need the
            # customer as key, as the worker README says).
            assert engine_differences(reader.engine(), want, TEST_CONFIG, journeys=False) == []
            got = reader.counters()
            assert got["accepted"] == len(counted)
            assert got.get("duplicate", 0) == 0 and got.get("rejected", 0) == 0
        assert worker.terminate() == 0, worker.log_tail()
        if not HAS_KCAT:
            pytest.skip("kcat not installed (apt-get install kcat): its part was not run")
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()
