"""KafkaSink against the real broker: simulated events go in, the same records come out."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
from kafka import KafkaConsumer

from streams.sources.simulator import Simulator
from streams.sources.sinks import KafkaSink, pump

if TYPE_CHECKING:
    from tests.integration.conftest import TopicFactory


async def test_kafka_sink_delivers_keyed_compact_json(kafka_bootstrap: str,
                                                      topic_factory: TopicFactory) -> None:
    topic = topic_factory(3, prefix="sink")
    events = list(Simulator(seed=17, rate=20).events(500))
    async with KafkaSink(kafka_bootstrap, topic) as sink:
        report = await pump(events, sink, batch_size=120)
    assert (report.sent, report.accepted, report.rejected) == (500, 500, 0)

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=10_000)
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) == len(events):
                break
    finally:
        consumer.close()

    assert len(records) == 500
    by_id = {e["event_id"]: e for e in events}
    got: dict[str, Any] = {}
    partitions: dict[str, set[int]] = defaultdict(set)
    order: dict[int, list[str]] = defaultdict(list)
    for record in records:
        event = orjson.loads(record.value)
        got[event["event_id"]] = event
        assert record.key == event["customer_id"].encode("utf-8")
        assert record.value == orjson.dumps(by_id[event["event_id"]])  # compact, as sent
        partitions[event["customer_id"]].add(record.partition)
        order[record.partition].append(event["event_id"])
    assert got == by_id
    assert all(len(p) == 1 for p in partitions.values())  # one customer, one partition
    assert len(order) > 1
    sent_position = {e["event_id"]: i for i, e in enumerate(events)}
    for ids in order.values():  # each partition holds its events in the order sent
        positions = [sent_position[i] for i in ids]
        assert positions == sorted(positions)
