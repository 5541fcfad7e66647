"""What the workers made of records produced to the input topic.

A broker's acknowledgement says a record is stored, not that it counted. Around a
send, ``before`` notes the input topic's end offsets, the dead-letter topic's end
offsets and the workers' counters (from the partials meta, once the merged view has
reached those ends); ``after`` waits until the merged view has reached the new ends and
reads the difference of the counters (accepted, duplicate, late, rejected), and the
reasons of the dead letters whose source lies in the sent offset range. Records that
other producers wrote into the same range meanwhile are counted too, and said so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.engine.config import EngineConfig
from streams.worker import records as rec
from streams.worker.reader import ScoresReader, read_to, topic_ends
from streams.worker.settings import WorkerSettings


class OutcomesUnknown(Exception):
    """The workers' outcome cannot be known (no workers, not caught up in time, ...)."""


@dataclass(frozen=True, slots=True)
class Marks:
    """Where the input and dead-letter topics ended, and the counters there."""

    input_ends: dict[int, int]
    dlq_ends: dict[int, int]
    counters: dict[str, int]


@dataclass(slots=True)
class Outcomes:
    """The workers' counts of the records in ``[before, after)`` of the input topic."""

    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    late_reasons: Counter[str] = field(default_factory=Counter)


def _consumer(settings: WorkerSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                            enable_auto_commit=False, isolation_level="read_committed")


async def _counters_at(settings: WorkerSettings, config: EngineConfig,
                       ends: dict[int, int], timeout: float) -> dict[str, int]:
    """The workers' counters once their merged view reflects the input up to ``ends``."""
    reader = ScoresReader.from_settings(settings, config)
    try:
        await reader.start(timeout)
        try:
            await reader.wait_for_offsets(ends, timeout)
        except TimeoutError as exc:
            raise OutcomesUnknown(f"the workers have not reached the end of "
                                  f"{settings.topic_touchpoints} within {timeout:.0f} s "
                                  f"({exc})") from None
        return reader.counters()
    finally:
        await reader.stop()


async def before(settings: WorkerSettings, config: EngineConfig,
                 timeout: float = 30.0) -> Marks:
    """Note where things stand before sending."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        try:
            input_ends = await topic_ends(consumer, settings.topic_touchpoints, timeout)
            dlq_ends = await topic_ends(consumer, settings.topic_dlq, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise OutcomesUnknown(str(exc)) from None
    finally:
        await consumer.stop()
    try:
        counters = await _counters_at(settings, config, input_ends, timeout)
    except (RuntimeError, TimeoutError) as exc:  # no partials topic: no workers yet
        raise OutcomesUnknown(str(exc)) from None
    return Marks(input_ends, dlq_ends, counters)


async def after(settings: WorkerSettings, config: EngineConfig, marks: Marks,
                timeout: float = 120.0) -> Outcomes:
    """Wait for the workers to reach what was sent; what they made of it."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        ends = await topic_ends(consumer, settings.topic_touchpoints, timeout)
        counters = await _counters_at(settings, config, ends, timeout)
        found = Outcomes(records=sum(ends[p] - marks.input_ends.get(p, 0) for p in ends))
        for name, key in (("accepted", "accepted"), ("duplicates", "duplicate"),
                          ("late", "late"), ("rejected", "rejected")):
            setattr(found, name, counters.get(key, 0) - marks.counters.get(key, 0))
        await _reasons(consumer, settings, marks, ends, found, timeout)
        return found
    finally:
        await consumer.stop()


async def _reasons(consumer: AIOKafkaConsumer, settings: WorkerSettings, marks: Marks,
                   ends: dict[int, int], found: Outcomes, timeout: float) -> None:
    """Dead letters written since ``marks`` whose source is the sent range, by reason."""
    dlq_ends = await topic_ends(consumer, settings.topic_dlq, timeout)
    tps = [TopicPartition(settings.topic_dlq, p) for p in dlq_ends]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, marks.dlq_ends.get(tp.partition, 0))
    try:
        letters = await read_to(consumer, settings.topic_dlq, dlq_ends, timeout)
    except TimeoutError:
        raise OutcomesUnknown(f"the dead letters were not read in {timeout:.0f} s") from None
    for record in letters:
        headers = {k: bytes(v).decode("utf-8", "replace") for k, v in (record.headers or ())}
        if headers.get(rec.H_TOPIC) != settings.topic_touchpoints:
            continue
        partition = int(headers.get(rec.H_PARTITION, "-1"))
        offset = int(headers.get(rec.H_OFFSET, "-1"))
        if not marks.input_ends.get(partition, 0) <= offset < ends.get(partition, 0):
            continue
        reason = f"{headers.get(rec.H_FIELD) or '$'}: {headers.get(rec.H_REASON)}"
        kind = headers.get(rec.H_KIND)
        (found.late_reasons if kind == "late" else found.reasons)[reason] += 1
