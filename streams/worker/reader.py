"""Read the merged view from Kafka: the partials topic, materialized, for the API.

``ScoresReader`` consumes the compacted partials topic from its beginning (no consumer
group, every partition), keeps the latest partial per (source partition, bucket) in a
``MergedView`` and answers with a merged ``Engine``::

    reader = ScoresReader.from_settings(WorkerSettings())
    await reader.start()                    # returns once caught up with the topic
    engine = reader.engine()                # windows, scores, vectors of all partitions
    engine.scores("continuous", "1h", scope=("channel",))
    await reader.stop()

The scores leader runs the same reader to publish ``touchstream.scores``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.deadletters import Kept, keep, letter, source
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.runner import RunnerUnavailable
from streams.worker import records as rec
from streams.worker.merge import MergedView
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class TopicFollower:
    """Reads topics from their beginning (no consumer group, every partition), hands
    each keyed record to ``_apply`` and keeps following them in the background."""

    def __init__(self, bootstrap_servers: list[str], topics: list[str], *,
                 client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics
        self.client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._error: BaseException | None = None

    def _apply(self, topic: str, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    async def start(self, timeout: float = 60.0) -> None:
        """Assign every partition from the beginning and read up to the current end."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        self._consumer = consumer
        try:
            tps = [TopicPartition(topic, p) for topic in self.topics
                   for p in await topic_partitions(consumer, topic, timeout)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            await self.catch_up(timeout)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"follower:{self.topics}")

    async def catch_up(self, timeout: float = 60.0) -> None:
        """Read until every partition's position reaches the end offset seen at the call."""
        consumer = self._require()
        tps = list(consumer.assignment())
        ends: Mapping[TopicPartition, int] = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while True:
            behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
            if not behind:
                return
            if self._task is not None:  # the background loop is reading; wait for it
                self._raise_error()
                await asyncio.sleep(0.02)
            else:
                await self._poll(0.2)
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {self.topics} not read to their end in "
                                   f"{timeout} s (behind on {behind})")

    async def _poll(self, timeout: float) -> int:
        consumer = self._require()
        batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=5000)
        n = 0
        for records in batches.values():
            for record in records:
                if record.key is None:
                    continue
                self._apply(record.topic, record.key, record.value)
                n += 1
        if n:
            self._changed.set()
        return n

    async def _run(self) -> None:
        try:
            while True:
                await self._poll(0.5)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("reader of %s stopped: %r", self.topics, exc)
            self._error = exc

    def _raise_error(self) -> None:
        """:class:`RunnerUnavailable` (a ``RuntimeError``) once the background reader
        has failed: the view stopped following its topics."""
        if self._error is not None:
            raise RunnerUnavailable(
                "merged view", f"the reader of {self.topics} failed "
                               f"({type(self._error).__name__}: {self._error})") from self._error

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("reader not started")
        return self._consumer

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``condition`` to hold after new records."""
        deadline = time.monotonic() + timeout
        while not condition():
            self._raise_error()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True


class ScoresReader(TopicFollower):
    """A live, merged view of every partition's partial aggregates."""

    def __init__(self, bootstrap_servers: list[str], topic: str, config: EngineConfig,
                 *, client_id: str = "touchstream-reader") -> None:
        super().__init__(bootstrap_servers, [topic], client_id=client_id)
        self.topic = topic
        self.config = config
        self.view = MergedView(config)

    @classmethod
    def from_settings(cls, settings: WorkerSettings,
                      config: EngineConfig | None = None) -> ScoresReader:
        """A reader of the partials topic named by ``settings``."""
        return cls(settings.bootstrap_servers, settings.partials_topic,
                   config or settings.load_engine_config(),
                   client_id=f"{settings.app_id}-reader")

    def _apply(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.view.apply(key, value)

    async def __aenter__(self) -> ScoresReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- answers ---------------------------------------------------------------------

    def engine(self) -> Engine:
        """The merged engine (read-only; rebuilt after changes)."""
        self._raise_error()
        return self.view.engine()

    def source_offsets(self) -> dict[int, int]:
        """Per input partition, the next input offset the view reflects."""
        return self.view.source_offsets()

    def counters(self) -> dict[str, int]:
        """Accepted, duplicate, late and rejected events, summed over partitions."""
        return self.view.counters()

    async def wait_for_offsets(self, offsets: Mapping[int, int], timeout: float) -> None:
        """Wait until the view reflects at least ``offsets`` (input partition -> offset)."""
        deadline = time.monotonic() + timeout
        while True:
            self._raise_error()
            have = self.source_offsets()
            missing = {p: (have.get(p), o) for p, o in offsets.items() if have.get(p, 0) < o}
            if not missing:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    "merged view not caught up: partition -> (has, wants) " + repr(missing))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))


async def read_compacted(bootstrap_servers: list[str], topic: str,
                         timeout: float = 60.0) -> dict[bytes, bytes]:
    """A compacted topic's latest value per key, read from the beginning to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic, timeout)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic!r} not read to its end in {timeout} s")
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        latest.pop(record.key, None)
                    else:
                        latest[record.key] = record.value
        return latest
    finally:
        await consumer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> list[int]:
    """The partition numbers of ``topic``, waiting for it to exist (metadata refreshes)."""
    deadline = time.monotonic() + timeout
    while True:
        # A consumer without subscriptions keeps no metadata for the topic; ask the
        # cluster for everything.
        cluster = await consumer._client.fetch_all_metadata()
        found = cluster.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {topic!r} not found in {timeout} s")
        await asyncio.sleep(0.2)


async def topic_ends(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> dict[int, int]:
    """Each partition's end offset (waiting for the topic to exist)."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic, timeout)]
    return {tp.partition: int(offset) for tp, offset in (await consumer.end_offsets(tps)).items()}


async def read_to(consumer: AIOKafkaConsumer, topic: str, ends: Mapping[int, int],
                  timeout: float) -> list[Any]:
    """The records of ``topic`` from where the (assigned, sought) consumer stands up to
    ``ends``; TimeoutError when that takes longer than ``timeout``."""
    tps = [TopicPartition(topic, p) for p in ends]
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while any([await consumer.position(tp) < ends[tp.partition] for tp in tps]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic} not read in {timeout} s")
        for records in (await consumer.getmany(timeout_ms=200)).values():
            found.extend(records)
    return found


async def read_partition_engine(settings: WorkerSettings, partition: int,
                                config: EngineConfig | None = None) -> tuple[Engine, int] | None:
    """One input partition's whole engine (journeys, customers, dedupe state included)
    from its last checkpoint, and the input offset it reflects; ``None`` without one.

    The partition of a customer is the producer's: murmur2 of the customer id, as
    ``kafka.partitioner.DefaultPartitioner`` computes it.
    """
    from streams.worker.partition import PartitionState
    from streams.worker.tables import TopicCheckpointStore

    async def no_send(topic: str, key: bytes, value: bytes | None, p: int) -> int:
        raise RuntimeError("read-only checkpoint store")

    store = TopicCheckpointStore(settings.bootstrap_servers, settings.checkpoint_changelog,
                                 no_send, settings.checkpoint_chunk_bytes)
    await store.load(partition)
    data = store.read(partition)
    if data is None:
        return None
    state = PartitionState.restore(partition, config or settings.load_engine_config(), data)
    return state.engine, state.next_offset


async def dead_letters_expired(settings: WorkerSettings, timeout: float = 30.0) -> int:
    """How many dead letters the broker has deleted from the dead-letter topic, by its
    retention (``retention.ms``, ``retention.bytes``: the oldest first): the sum of its
    partitions' first offsets. The topic is never compacted, so every offset below the
    first was a record deleted (with ``exactly_once``, transaction markers take offsets
    too: then an upper bound)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic_dlq, p)
               for p in await topic_partitions(consumer, settings.topic_dlq, timeout)]
        begins = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return sum(int(offset) for offset in begins.values())


async def read_dead_letters(settings: WorkerSettings, limit: int = 100,
                            timeout: float = 30.0) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters (all partitions), newest first, in the
    dead-letter contract (``streams.deadletters``): the topic keeps each record's whole
    original bytes; the answer keeps ``settings.dead_letter_max_bytes`` of them, with
    the size and digest of all."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None,
        enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        ends = await topic_ends(consumer, settings.topic_dlq, timeout)
        tps = [TopicPartition(settings.topic_dlq, p) for p in ends]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:  # the last `limit` of each partition is enough
            consumer.seek(tp, max(begins[tp], ends[tp.partition] - limit))
        found = await read_to(consumer, settings.topic_dlq, ends, timeout)
    finally:
        await consumer.stop()
    found.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
    cap = settings.dead_letter_max_bytes
    return [dead_letter_of(r.headers, r.value, r.timestamp, cap) for r in found[:limit]]


def dead_letter_of(raw_headers: Any, value: bytes | None, timestamp_ms: int,
                   max_bytes: int) -> dict[str, Any]:
    """One dead-letter record (``touchstream.*`` headers, original bytes) as the
    contract's dict; records written before the contract (``touchstream.status``) too."""
    headers = {k: bytes(v).decode("utf-8", "replace") for k, v in (raw_headers or ())}

    def number(key: str) -> int | None:
        text = headers.get(key)
        return int(text) if text is not None and text.lstrip("-").isdigit() else None

    field = headers.get(rec.H_FIELD)
    kept = keep(value, max_bytes)
    size, digest = number(rec.H_SIZE), headers.get(rec.H_SHA256)
    if size is not None and digest is not None:  # a scrubbed value: the original's
        kept = Kept(kept.head, size, digest)
    return letter(
        kind=headers.get(rec.H_KIND) or headers.get(rec.H_STATUS) or "invalid",
        field=field, reason=headers.get(rec.H_REASON), received_at=timestamp_ms / 1000,
        source=source(headers.get(rec.H_TOPIC), number(rec.H_PARTITION),
                      number(rec.H_OFFSET), number(rec.H_INDEX)),
        kept=kept, max_bytes=max_bytes)
