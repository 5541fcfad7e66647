"""The scripted Kafka broker works as the streaming app needs it to.

Keyed partitioning, transactions (exactly-once needs read_committed to hide aborted
writes) and durability across a broker restart, with the two client libraries the
project uses: kafka-python (producers, admin) and aiokafka (faust's consumer).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer

if TYPE_CHECKING:
    from deploy.kafka.broker import KafkaBroker
    from tests.integration.conftest import TopicFactory


def _producer(bootstrap: str, **config: object) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        **config,
    )


def _consume_all(
    bootstrap: str, topic: str, expected: int, *, isolation_level: str = "read_uncommitted"
) -> list[str]:
    """Read `topic` from the beginning until `expected` values arrived (or 20 s passed)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
        consumer_timeout_ms=20_000,
    )
    values: list[str] = []
    try:
        for record in consumer:
            values.append(record.value.decode())
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


async def test_keyed_messages_round_trip(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    """1,000 keyed messages in, the same 1,000 out; one key always lands on one partition."""
    topic = topic_factory(3, prefix="keyed")
    sent = {f"value-{i}": f"customer-{i % 37}" for i in range(1000)}
    producer = _producer(kafka_bootstrap)
    try:
        futures = [
            producer.send(topic, key=key.encode(), value=value.encode())
            for value, key in sent.items()
        ]
        producer.flush(timeout=30)
        sent_partitions = {future.get(timeout=10).partition for future in futures}
    finally:
        producer.close()
    assert sent_partitions == {0, 1, 2}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"keyed-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: dict[str, str] = {}
    partitions_by_key: defaultdict[str, set[int]] = defaultdict(set)
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        key, value = record.key.decode(), record.value.decode()
                        assert value not in received, f"duplicate {value}"
                        received[value] = key
                        partitions_by_key[key].add(tp.partition)
    finally:
        await consumer.stop()

    assert received == sent
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())
    assert {p for parts in partitions_by_key.values() for p in parts} == {0, 1, 2}


def test_read_committed_hides_aborted_transaction(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """A committed batch is visible to read_committed consumers; an aborted one is not."""
    topic = topic_factory(1, prefix="txn")
    producer = _producer(kafka_bootstrap, transactional_id=f"txn-{uuid.uuid4().hex[:8]}")
    committed = [f"committed-{i}" for i in range(10)]
    aborted = [f"aborted-{i}" for i in range(10)]
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for value in committed:
            producer.send(topic, key=b"k", value=value.encode())
        producer.commit_transaction()

        producer.begin_transaction()
        for value in aborted:
            producer.send(topic, key=b"k", value=value.encode())
        producer.flush()  # the aborted records really reach the log
        producer.abort_transaction()

        producer.begin_transaction()  # a committed end marker after the aborted batch
        producer.send(topic, key=b"k", value=b"end")
        producer.commit_transaction()
    finally:
        producer.close()

    everything = committed + aborted + ["end"]
    assert _consume_all(kafka_bootstrap, topic, len(everything)) == everything
    visible = _consume_all(kafka_bootstrap, topic, 11, isolation_level="read_committed")
    assert visible == [*committed, "end"]


def test_data_survives_restart(kafka_broker: KafkaBroker, topic_factory: TopicFactory) -> None:
    """After a broker restart the old records are still there and new produces work."""
    topic = topic_factory(2, prefix="restart")
    before = [f"before-{i}" for i in range(100)]
    producer = _producer(kafka_broker.bootstrap)
    try:
        for value in before:
            producer.send(topic, key=value.encode(), value=value.encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    port = kafka_broker.port

    kafka_broker.restart()

    assert kafka_broker.running and kafka_broker.port == port
    after = [f"after-{i}" for i in range(10)]
    producer = _producer(kafka_broker.bootstrap)
    try:
        for value in after:
            producer.send(topic, key=value.encode(), value=value.encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    values = _consume_all(kafka_broker.bootstrap, topic, len(before) + len(after))
    assert sorted(values) == sorted(before + after)
