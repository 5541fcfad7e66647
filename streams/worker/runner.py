"""The Kafka runner: the API's view of a deployment of faust-streaming workers.

Ingestion validates each event and produces it (its own bytes as they stood in the
request body) to the ``touchpoints`` topic keyed by ``customer_id`` (acks from every
in-sync replica, idempotent producer) and answers once the broker has acknowledged it;
rejects go to the dead-letter topic with the reason in headers. Reads come from a
``ScoresReader``: the compacted partials topic materialized into a merged engine, so
every API replica that has caught up gives the same answers. Duplicate and late
decisions are the workers', so ingestion answers ``accepted`` (or ``rejected``) only.
Pulse studies are started and ended by control records written into every input
partition; their counts come back summed through the merged view. Alerts and follow-ups
are read from their topics (``streams.worker.alerts``): the group leader is the only
evaluator, so every API replica shows the alert ids and states that were published (and
paged); closing or assigning a follow-up writes its status record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from schemas.decode import EventDecoder, EventError, encode
from schemas.modes import BACKFILL, MODE_HEADER
from streams.deadletters import HTTP, ItemBytes, original
from streams.detection import (
    DetectionConfig,
    Detector,
    FollowUp,
    FollowUpBook,
    FollowUpUpdate,
    scrubbed,
)
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.runner import (
    ERASE,
    PULSE_END,
    PULSE_START,
    ErasureReport,
    ErasureRequest,
    EventOutcome,
    PulseRequest,
    RunnerUnavailable,
    apply_command,
    decode_erase,
    encode_erase,
    encode_pulse_start,
)
from streams.worker import records as rec
from streams.worker.alerts import DetectorReader, status_key
from streams.worker.reader import ScoresReader, read_dead_letters, read_partition_engine
from streams.worker.records import H_CONTROL
from streams.worker.settings import WorkerSettings
from streams.worker.topics import erasures_topic

log = logging.getLogger(__name__)
T = TypeVar("T")
CONTROL_VISIBLE = 10.0
"""Seconds a pulse command waits for the workers' state to show it before answering."""
ERASE_COMPLETE = 30.0
"""Seconds ``DELETE /v1/customers/{id}`` waits for every partition's checkpoint to pass
its erasure before answering 202 (``erasing``); the rest goes on in the background."""
ERASE_BACKGROUND = 900.0
"""Seconds an erasure answered 202 keeps waiting for the checkpoints in the background,
to scrub the follow-ups once more."""
STATE_TTL = 5.0
"""Seconds a partition's checkpointed engine is reused for customer/journey reads."""


def _partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


class KafkaRunner:
    """:class:`~streams.runner.Runner` over Kafka topics and the workers' merged view."""

    def __init__(self, settings: WorkerSettings, detection: DetectionConfig | None = None,
                 decoder: EventDecoder | None = None) -> None:
        self.settings = settings
        self.config = settings.load_engine_config()
        self.reader = ScoresReader.from_settings(settings)
        self._decoder = decoder or EventDecoder(comments=settings.comments)
        self._alerts = DetectorReader(settings, detection if detection is not None
                                      else DetectionConfig())
        self._producer: AIOKafkaProducer | None = None
        self._failure = "not started"
        self._states: dict[int, tuple[Engine | None, float]] = {}
        self._ends: AIOKafkaConsumer | None = None
        self._erasing: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float = 60.0) -> None:
        """Connect the producer and catch the merged view up with the partials topic."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers, acks="all",
            enable_idempotence=True, linger_ms=5)
        await self._producer.start()
        await self.reader.start(timeout)
        await self._alerts.start(timeout)
        self._ends = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers,
                                      group_id=None, enable_auto_commit=False)
        await self._ends.start()
        self._failure = ""

    async def stop(self) -> None:
        """Stop the readers and the producer (flushing it)."""
        for task in list(self._erasing):
            task.cancel()
        await self._alerts.stop()
        await self.reader.stop()
        if self._ends is not None:
            await self._ends.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._failure = "stopped"

    def _require(self) -> AIOKafkaProducer:
        """The producer; :class:`RunnerUnavailable` (503) before ``start``, after
        ``stop``, or once the merged view's reader has failed."""
        if self._producer is None or self._failure:
            raise RunnerUnavailable("Kafka", f"the runner is not ready ({self._failure})")
        self.reader.engine()  # RunnerUnavailable when its reader has failed
        return self._producer

    async def submit(self, items: Sequence[Any], raw: ItemBytes | None = None,
                     backfill: bool = False) -> list[EventOutcome]:
        """Validate, produce, and answer once the broker has acknowledged every event.

        ``raw(i)``: the bytes item ``i`` was received as. They are what is produced (to
        the input topic, or with the reason to the dead-letter topic), so a worker's
        late dead letter keeps the bytes the client sent; without ``raw``, an event's
        canonical JSON and a reject's JSON. ``backfill``: the events carry the mode
        header (``records.H_MODE``), so the workers count them as history.
        """
        producer = self._require()
        mode = [(MODE_HEADER, BACKFILL)] if backfill else None
        outcomes: list[EventOutcome] = []
        sends: list[asyncio.Future[Any]] = []
        for index, item in enumerate(items):
            try:
                event = self._decoder.convert(item)
            except EventError as exc:
                event_id = item.get("event_id") if isinstance(item, dict) else None
                outcomes.append(EventOutcome(index, "rejected",
                                             event_id if isinstance(event_id, str) else None,
                                             exc.field, exc.reason))
                value, headers = rec.scrub_dead_letter(
                    original(items, raw, index),
                    _dlq_headers("invalid", exc.field, exc.reason, index),
                    self._decoder.comments)
                sends.append(await producer.send(self.settings.topic_dlq, value=value,
                                                 headers=headers))
                continue
            outcomes.append(EventOutcome(index, "accepted", event.event_id))
            # The bytes the client sent, unless the comment policy changed the event:
            # then its canonical JSON, so that the input topic never holds the comment.
            changed = (self._decoder.comments != "keep" and isinstance(item, dict)
                       and item.get("comment") != event.comment)
            sends.append(await producer.send(
                self.settings.topic_touchpoints, key=event.customer_id.encode(),
                value=encode(event) if raw is None or changed else raw(index),
                headers=mode))
        await asyncio.gather(*sends)
        return outcomes

    async def read(self, query: Callable[[Engine], T]) -> T:
        """Run ``query`` on the merged engine of every partition."""
        self._require()
        return query(self.reader.engine())

    async def dead_letter(self, payload: bytes, field: str, reason: str) -> None:
        """Send a body refused whole to the dead-letter topic, with its reason."""
        producer = self._require()
        await (await producer.send(self.settings.topic_dlq, value=payload,
                                   headers=_dlq_headers("bad_body", field, reason, None)))

    async def consumer_lag(self) -> dict[int, int]:
        """Per input partition: the topic's end offset minus the offset the merged view
        reflects, i.e. what the workers have not yet turned into readable state."""
        if self._ends is None:
            return {}
        parts = [TopicPartition(self.settings.topic_touchpoints, p)
                 for p in range(self.settings.topic_partitions)]
        ends = await self._ends.end_offsets(parts)
        have = self.reader.source_offsets()
        return {tp.partition: max(0, end - have.get(tp.partition, 0)) for tp, end in ends.items()}

    async def read_state(self, key: str | None, query: Callable[[Engine], T | None]) -> T | None:
        """Customers and journeys live in their input partition's state: route ``key``
        (a customer id) to its partition the way producers do (murmur2), or look in
        every partition when there is no key (journeys). Each partition's engine comes
        from its last checkpoint (at most ``checkpoint_interval`` old), cached briefly."""
        self._require()
        count = self.settings.topic_partitions
        partitions = range(count) if key is None else [_partition_of(key, count)]
        for partition in partitions:
            engine = await self._partition_engine(partition)
            found = None if engine is None else query(engine)
            if found is not None:
                return found
        return None

    async def _partition_engine(self, partition: int) -> Engine | None:
        cached = self._states.get(partition)
        if cached is not None and time.monotonic() - cached[1] < STATE_TTL:
            return cached[0]
        loaded = await read_partition_engine(self.settings, partition, self.config)
        engine = None if loaded is None else loaded[0]
        self._states[partition] = (engine, time.monotonic())
        return engine

    async def read_detector(self, query: Callable[[Detector], T]) -> T:
        """Alerts and follow-ups as the topics hold them: the group leader's alert
        changes, the workers' follow-ups and the status records written here."""
        self._require()
        return query(self._alerts.detector)

    async def update_followup(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up: its whole state after the change goes to the
        follow-ups topic as its status record (acknowledged by every in-sync replica);
        answers once this replica's view shows it (or after ``CONTROL_VISIBLE`` s)."""
        producer = self._require()
        found = self._alerts.detector.followups.get(update.id)
        if found is None:
            raise KeyError(f"no follow-up with id {update.id!r}")
        if found.status == "closed" and update.action == "close":
            return found
        scratch = FollowUpBook()
        scratch.mirror(replace(found))
        changed = scratch.apply(update)  # KeyError/ValueError as on the embedded runner
        await (await producer.send(self.settings.topic_followups, key=status_key(update.id),
                                   value=orjson.dumps(changed.to_dict())))

        def visible() -> bool:
            now = self._alerts.detector.followups.get(update.id)
            return now is not None and (now.status, now.updated_at, now.assignee) == (
                changed.status, changed.updated_at, changed.assignee)

        if not await self._alerts.wait_until(visible, CONTROL_VISIBLE):
            log.warning("follow-up %s update is durable but not yet visible", update.id)
        return changed

    async def start_pulse(self, request: PulseRequest) -> None:
        """Start a study: validate it, then write a ``pulse_start`` control record into
        every input partition (each worker applies it between the events around it, so
        replays give the same counts) and wait briefly until the merged view shows it.

        Raises ``PulseError`` naming the field for an invalid study or an id in use.
        """
        producer = self._require()
        payload = encode_pulse_start(request)
        apply_command(Engine(self.config), PULSE_START, payload)  # the workers' checks
        if request.pulse_id in self.reader.engine().pulses:
            raise PulseError("pulse_id", f"a study with id {request.pulse_id!r} exists")
        await self._control(producer, PULSE_START, payload,
                            lambda e: request.pulse_id in e.pulses)

    async def end_pulse(self, pulse_id: str) -> None:
        """End a study (``KeyError`` when the merged view does not know it) with a
        ``pulse_end`` control record in every input partition; ending twice is a no-op."""
        producer = self._require()
        study = self.reader.engine().pulses.get(pulse_id)
        if study is None:
            raise KeyError(pulse_id)
        if not study.active:
            return

        def ended(engine: Engine) -> bool:
            found = engine.pulses.get(pulse_id)
            return found is not None and not found.active

        await self._control(producer, PULSE_END, pulse_id.encode("utf-8"), ended)

    async def erase_customer(self, request: ErasureRequest) -> ErasureReport:
        """Erase a customer (``DELETE /v1/customers/{id}``, issue 21).

        1. An ``erase`` control record (``encode_erase(request)``) into every input
           partition, acknowledged by all in-sync replicas: each worker applies it where
           it sits in its partition (``apply_command``: ``Engine.erase_customer``), so a
           replay gives the same state; a worker checkpoints the partition right after
           an erasure and compacts its local store (``agents.TouchpointProcessor``).
        2. The customer's follow-ups on the compacted follow-ups topic re-published with
           their personal fields blanked (``streams.detection.scrubbed``), under the same
           key and partition, so compaction drops the old records; again once every
           partition's checkpoint has passed the erasure (a worker restarted from an
           older checkpoint may have re-published some before it met the erasure).
        3. The checkpoint changelog needs no tombstone: each partition's new checkpoint
           replaces the old one under the same key (chunks of the old one are
           tombstoned), and compaction drops the old bytes.

        Answers ``erased`` once every partition's checkpoint has passed the erasure
        (within ``ERASE_COMPLETE`` seconds), else ``erasing`` (202) and finishes in the
        background. ``removed``: follow-up records scrubbed, partitions the erasure was
        written to. Idempotent: a repeated erasure is applied again as a no-op.

        The audit trail: the request (``state`` ``requested``) goes to the erasures topic
        (``topics.erasures_topic``, kept forever, keyed by the digest) before anything
        else — an erasure that cannot be audited is not made — and the report after.
        """
        producer = self._require()
        customer_id = request.customer_id
        if customer_id is None:
            raise ValueError("an erasure without a customer id has nothing to erase")
        payload = encode_erase(request)
        decode_erase(payload)  # the workers' checks
        await self._audit(producer, request.digest, {
            "digest": request.digest, "by": request.by, "at": request.at,
            "state": "requested", "removed": {}})
        marks = await self._changelog_ends()
        offsets = await self._produce_control(producer, ERASE, payload)
        self._states.clear()
        scrubbed_keys = await self._scrub_followups(producer, customer_id)
        done = await self._checkpointed(offsets, marks, ERASE_COMPLETE)
        if done:
            scrubbed_keys |= await self._scrub_followups(producer, customer_id)
        else:
            task = asyncio.create_task(self._finish_erasure(customer_id, offsets, marks))
            self._erasing.add(task)
            task.add_done_callback(self._erasing.discard)
            log.warning("erasure %s is durable; the workers have not checkpointed past it "
                        "in %.0f s (are they running?): finishing in the background",
                        request.digest, ERASE_COMPLETE)
        self._states.clear()
        report = ErasureReport.of(request, "erased" if done else "erasing",
                                  {"followups": len(scrubbed_keys), "partitions": len(offsets)})
        await self._audit(producer, request.digest, report.to_dict())
        return report

    async def _audit(self, producer: AIOKafkaProducer, digest: str,
                     record: dict[str, Any]) -> None:
        """One record of the erasure audit trail, acknowledged by all in-sync replicas."""
        await (await producer.send(erasures_topic(self.settings), key=digest.encode(),
                                   value=orjson.dumps(record)))

    async def _finish_erasure(self, customer_id: str, offsets: dict[int, int],
                              marks: dict[int, int]) -> None:
        """The end of an erasure answered 202: wait longer for the checkpoints, then
        scrub the follow-ups once more."""
        try:
            producer = self._require()
            if await self._checkpointed(offsets, marks, ERASE_BACKGROUND):
                await self._scrub_followups(producer, customer_id)
                self._states.clear()
                log.info("an erasure answered 202 has completed")
            else:
                log.error("an erasure is durable, but the workers have not checkpointed "
                          "past it in %.0f s: its follow-ups were scrubbed once only; "
                          "erase again once the workers run", ERASE_BACKGROUND)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("finishing an erasure failed; erase again to complete it")

    async def _changelog_ends(self) -> dict[int, int]:
        """The checkpoint changelog's end offsets now: checkpoints written after an
        erasure was produced are read from there."""
        consumer = self._ends
        if consumer is None:
            raise RunnerUnavailable("Kafka", "the runner is not started")
        topic = self.settings.checkpoint_changelog
        tps = [TopicPartition(topic, p) for p in range(self.settings.topic_partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: end for tp, end in ends.items()}

    async def _checkpointed(self, offsets: dict[int, int], marks: dict[int, int],
                            timeout: float) -> bool:
        """Whether, within ``timeout`` seconds, every input partition's checkpoint
        passes its offset in ``offsets`` (a manifest written after ``marks``, the
        changelog's ends before the erasure, reflecting a later input offset)."""
        from streams.worker.tables import manifest_offset

        waiting = dict(offsets)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed")
        await consumer.start()
        try:
            topic = self.settings.checkpoint_changelog
            tps = [TopicPartition(topic, p) for p in marks]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, marks[tp.partition])
            deadline = time.monotonic() + timeout
            while waiting and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        found = manifest_offset(record.key, record.value)
                        if found is not None and found[1] > waiting.get(found[0], found[1]):
                            del waiting[found[0]]
        finally:
            await consumer.stop()
        return not waiting

    async def _scrub_followups(self, producer: AIOKafkaProducer,
                               customer_id: str) -> set[tuple[int, bytes]]:
        """Re-publish the customer's follow-ups on the follow-ups topic with their
        personal fields blanked, each under its key in its partition (the workers'
        records and the status records alike); the (partition, key) pairs scrubbed."""
        topic = self.settings.topic_followups
        found = await _latest_by_key(self.settings.bootstrap_servers, topic)
        sends = []
        done: set[tuple[int, bytes]] = set()
        for (partition, key), value in found.items():
            try:
                item = FollowUp.from_dict(orjson.loads(value))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if item.customer_id != customer_id:
                continue
            sends.append(await producer.send(topic, key=key, partition=partition,
                                             value=orjson.dumps(scrubbed(item).to_dict())))
            done.add((partition, key))
        await asyncio.gather(*sends)
        return done

    async def _produce_control(self, producer: AIOKafkaProducer, command: str,
                               payload: bytes) -> dict[int, int]:
        """Produce a control record to every input partition, acknowledged by all
        in-sync replicas; the offset it got in each."""
        topic = self.settings.topic_touchpoints
        headers = [(H_CONTROL, command.encode())]
        sends = [await producer.send(topic, value=payload, partition=partition,
                                     headers=headers)
                 for partition in range(self.settings.topic_partitions)]
        return {int(m.partition): int(m.offset) for m in await asyncio.gather(*sends)}

    async def _control(self, producer: AIOKafkaProducer, command: str, payload: bytes,
                       visible: Callable[[Engine], bool]) -> None:
        """Produce a control record to every input partition (acknowledged by all
        in-sync replicas), then wait up to ``CONTROL_VISIBLE`` seconds for ``visible``
        to hold on the merged view. Not visible in time is not a failure: the command
        is durable and the workers apply it when they reach it."""
        await self._produce_control(producer, command, payload)
        deadline = time.monotonic() + CONTROL_VISIBLE
        while time.monotonic() < deadline:
            if visible(self.reader.engine()):
                return
            await asyncio.sleep(0.05)
        log.warning("%s is durable but not yet visible in the merged view after %.0f s "
                    "(are the workers running?)", command, CONTROL_VISIBLE)

    async def dead_letters(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """The newest dead letters from the topic (offset pages within the newest)."""
        self._require()
        found = await read_dead_letters(self.settings, limit + offset)
        return found[offset: offset + limit]

    async def ready(self) -> tuple[bool, str]:
        """Ready once the producer is connected and the merged view has caught up."""
        if self._failure:
            return False, self._failure
        try:
            self.reader.engine()
        except RunnerUnavailable as exc:  # the reader's own failure, reported as the reason
            return False, exc.answer
        except Exception as exc:
            return False, f"merged view unavailable: {exc}"
        return True, f"ok (merged view of {len(self.reader.source_offsets())} partitions)"


async def _latest_by_key(bootstrap_servers: list[str], topic: str,
                         timeout: float = 60.0) -> dict[tuple[int, bytes], bytes]:
    """A compacted topic's latest value per (partition, key), read to its end."""
    from streams.worker.reader import topic_partitions

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic,
                                                                         timeout)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[tuple[int, bytes], bytes] = {}
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic!r} not read to its end in {timeout} s")
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        latest.pop((tp.partition, record.key), None)
                    else:
                        latest[(tp.partition, record.key)] = record.value
        return latest
    finally:
        await consumer.stop()


def _dlq_headers(kind: str, field: str, reason: str,
                 index: int | None) -> list[tuple[str, bytes]]:
    """Headers of a dead letter the API writes itself (source topic ``http``)."""
    headers = [(rec.H_KIND, kind.encode()), (rec.H_FIELD, field.encode()),
               (rec.H_REASON, reason.encode()), (rec.H_TOPIC, HTTP.encode())]
    if index is not None:
        headers.append((rec.H_INDEX, str(index).encode()))
    return headers
