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
from streams.deadletters import HTTP, ItemBytes, original
from streams.detection import (
    DetectionConfig,
    Detector,
    FollowUp,
    FollowUpBook,
    FollowUpUpdate,
)
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.runner import (
    PULSE_END,
    PULSE_START,
    EventOutcome,
    PulseRequest,
    RunnerUnavailable,
    apply_command,
    encode_pulse_start,
)
from streams.worker import records as rec
from streams.worker.alerts import DetectorReader, status_key
from streams.worker.reader import ScoresReader, read_dead_letters, read_partition_engine
from streams.worker.records import H_CONTROL
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
CONTROL_VISIBLE = 10.0
"""Seconds a pulse command waits for the workers' state to show it before answering."""
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

    async def submit(self, items: Sequence[Any],
                     raw: ItemBytes | None = None) -> list[EventOutcome]:
        """Validate, produce, and answer once the broker has acknowledged every event.

        ``raw(i)``: the bytes item ``i`` was received as. They are what is produced (to
        the input topic, or with the reason to the dead-letter topic), so a worker's
        late dead letter keeps the bytes the client sent; without ``raw``, an event's
        canonical JSON and a reject's JSON.
        """
        producer = self._require()
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
                value=encode(event) if raw is None or changed else raw(index)))
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

    async def _control(self, producer: AIOKafkaProducer, command: str, payload: bytes,
                       visible: Callable[[Engine], bool]) -> None:
        """Produce a control record to every input partition (acknowledged by all
        in-sync replicas), then wait up to ``CONTROL_VISIBLE`` seconds for ``visible``
        to hold on the merged view. Not visible in time is not a failure: the command
        is durable and the workers apply it when they reach it."""
        topic = self.settings.topic_touchpoints
        headers = [(H_CONTROL, command.encode())]
        sends = [await producer.send(topic, value=payload, partition=partition,
                                     headers=headers)
                 for partition in range(self.settings.topic_partitions)]
        await asyncio.gather(*sends)
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


def _dlq_headers(kind: str, field: str, reason: str,
                 index: int | None) -> list[tuple[str, bytes]]:
    """Headers of a dead letter the API writes itself (source topic ``http``)."""
    headers = [(rec.H_KIND, kind.encode()), (rec.H_FIELD, field.encode()),
               (rec.H_REASON, reason.encode()), (rec.H_TOPIC, HTTP.encode())]
    if index is not None:
        headers.append((rec.H_INDEX, str(index).encode()))
    return headers
