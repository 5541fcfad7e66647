"""The worker's processing: touchpoint batches in; dead letters, partials, checkpoints
and scores out.

``TouchpointProcessor`` is the worker's agent. It is not an ``@app.agent`` stream: it
receives each fetched batch of one input partition from the batch consumer
(``streams.worker.transport``) and hands it to that partition's engine in one call.
Per partition it then, in this order:

1. produces dead letters (rejected and late events, original bytes, reason headers);
2. every ``flush_interval``: publishes the partition's changed buckets as absolute
   partial aggregates (with the input offset they reflect) to the partials topic;
3. every ``checkpoint_interval`` / ``checkpoint_events``: waits until everything from
   1 and 2 is acknowledged, then writes the checkpoint (engine snapshot + next input
   offset) to the ``checkpoints`` table, and only then commits the consumer offset.

Redelivery is harmless at every step: records below a state's offset are skipped, and
re-published partials are absolute. A crash loses only in-memory progress since the
last checkpoint, which is recomputed from the input. Only dead letters can repeat
(each carries its source partition and offset, so readers can drop repeats).

Table writes never happen inside a Faust stream here, so faust-streaming issue 497
(``TypeError`` on table writes inside ``stream.take()``) does not arise: checkpoints name
their changelog partition explicitly (``streams.worker.tables``).

``ScoresPublisher`` runs on the group leader: it reads the partials topic into a merged
view and publishes changed scores to the compacted scores topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka import TopicPartition as AIOKafkaTopicPartition
from faust.types import TP

from schemas.decode import EventDecoder
from streams.detection import Detector, scrubbed
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.pipeline import DETECT_EVERY
from streams.runner import ERASE, ErasureRequest, decode_erase
from streams.worker import records as rec
from streams.worker import scores as sc
from streams.worker.alerts import load_alerts
from streams.worker.metrics import WorkerMetrics, gc_clock
from streams.worker.partition import BatchReport, PartitionState
from streams.worker.reader import ScoresReader, read_compacted
from streams.worker.settings import WorkerSettings
from streams.worker.tables import CheckpointStore

log = logging.getLogger(__name__)

STALL_SECONDS = 5.0
"""A partition whose state stays behind the partition's end this long with nothing
delivered is sought back to its state's offset (once per state offset and end)."""


class Output:
    """Produces raw records through the Faust app's producer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def enqueue(self, topic: str, key: bytes | None, value: bytes | None,
                      partition: int | None, *, headers: list[tuple[str, bytes]] | None = None,
                      timestamp_ms: int | None = None) -> Awaitable[Any]:
        """Hand a record to the producer; await the result for the broker's acknowledgement."""
        fut: Awaitable[Any] = await self.app.producer.send(
            topic, key, value, partition,
            None if timestamp_ms is None else timestamp_ms / 1000.0, headers)
        return fut

    def producer(self) -> AIOKafkaProducer:
        """The app's aiokafka producer, for whole batches (``send_batch``)."""
        producer: AIOKafkaProducer = self.app.producer._ensure_producer()
        return producer

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int) -> int:
        """Produce one record, wait for the acknowledgement, return its offset."""
        metadata = await (await self.enqueue(topic, key, value, partition))
        return int(metadata.offset)


def erasures(records: Sequence[Any], start: int, end: int) -> list[ErasureRequest]:
    """The erasures among a batch's control records at offsets ``[start, end)`` (those
    the partition applied now: earlier ones are redeliveries, and one that could not
    apply is a dead letter, not an erasure)."""
    found = []
    for record in records:
        if (start <= record.offset < end and record.headers
                and rec.control_kind(record.headers) == ERASE):
            try:
                request = decode_erase(record.value or b"")
            except PulseError:
                continue
            if request.customer_id is not None:
                found.append(request)
    return found


class TouchpointProcessor:
    """Per-partition engines over the input topic's batches (see the module docstring)."""

    def __init__(self, app: Any, settings: WorkerSettings, config: EngineConfig,
                 checkpoints: CheckpointStore, output: Output,
                 metrics: WorkerMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics or WorkerMetrics()
        self.settings = settings
        self.config = config
        self.checkpoints = checkpoints
        self.output = output
        self.topic = settings.topic_touchpoints
        self.decoder = EventDecoder(comments=settings.comments)
        """Every partition's decoder: the comment policy applies before the engine, so
        partials, checkpoints and follow-ups never hold what it removes."""
        self.followup_rules = settings.load_detection_config(config).followups
        self.states: dict[int, PartitionState] = {}
        self.parked: dict[int, PartitionState] = {}
        self.owned: set[int] = set()
        self.positioned: set[int] = set()
        self.fed_at: dict[int, float] = {}
        """When each partition last had a batch delivered (or was positioned)."""
        self._repositioned: dict[int, tuple[int, int]] = {}
        self._stalls_checked = 0.0
        self.lock = asyncio.Lock()
        self.stopping = False
        self.totals: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._pending: dict[int, list[Awaitable[Any]]] = defaultdict(list)
        self._commit_wanted: dict[Any, int] = {}
        self._commit_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        gc_clock()  # time collections from the start
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self._txn: dict[int, AIOKafkaProducer] = {}

    # -- batches ---------------------------------------------------------------------

    async def handle(self, tp: Any, records: Sequence[Any], generation: int) -> bool:
        """Process one fetched batch of one input partition; ``False`` when the batch
        is not taken (the consumer then seeks back to it)."""
        partition = int(tp.partition)
        async with self.lock:
            if self.stopping:
                return True  # shutting down: where the fetch stands no longer matters
            if partition not in self.owned or generation != self.app.consumer_generation_id:
                self.totals["stale_batches"] += 1  # fetched before a rebalance
                return False
            state = await self._ensure_state(partition)
            if partition not in self.positioned:
                # Positions are set after every recovery (``positions``); this is the
                # safety net for a batch that reaches a partition never positioned.
                first = int(records[0].offset)
                log.info("partition %d: first fetch at offset %d, state at offset %d",
                         partition, first, state.next_offset)
                if first > state.next_offset:
                    # The fetch is ahead of the state: go back rather than skip events,
                    # and commit the state's offset first, so that Faust's own seeks to
                    # the committed offset cannot jump ahead again.
                    log.warning("partition %d: fetched from offset %d but the state "
                                "reflects offsets below %d; seeking back", partition, first,
                                state.next_offset)
                    if await self.app.consumer.commit_offsets(
                            {tp: state.next_offset}, self.settings.commit_timeout):
                        self.positioned.add(partition)
                    await self.app.consumer.seek(tp, state.next_offset)
                    return True
                self.positioned.add(partition)
            self.fed_at[partition] = time.monotonic()
            started, cpu = time.perf_counter(), time.thread_time()
            start = state.next_offset
            report = state.process(records)
            took = time.perf_counter() - started
            self.seconds["process"] += took
            self.seconds["process_cpu"] += time.thread_time() - cpu
            self.metrics.batch_seconds.observe(took)
            self.totals["batches"] += 1
            self._account(report)
            erased = erasures(records, start, state.next_offset) if report.commands else []
            if erased:  # the batch's follow-ups of the customer go out scrubbed (those
                # of events after the erasure too: a customer back in the same batch)
                gone = {e.customer_id for e in erased}
                report.followups = [scrubbed(f) if f.customer_id in gone else f
                                    for f in report.followups]
            dlq_partition = partition % self.settings.dead_letter_partitions
            for dead in report.dead_letters:
                value, headers = rec.scrub_dead_letter(
                    dead.value, dead.dlq_headers(self.topic, partition),
                    self.decoder.comments)
                self._pending[partition].append(await self._enqueue(
                    partition, self.settings.topic_dlq, dead.key, value, dlq_partition,
                    headers=headers, timestamp_ms=dead.timestamp_ms))
            if report.followups:  # compacted and keyed by id: repeats are harmless
                self._pending[partition] += await self._enqueue_batches(
                    partition, self.settings.topic_followups,
                    partition % self.settings.alerts_partitions,
                    [(item.id.encode(), orjson.dumps(item.to_dict()))
                     for item in report.followups])
            started = time.perf_counter()
            await self._maybe_flush(state, force=bool(erased))
            self.seconds["flush"] += time.perf_counter() - started
            if erased:
                await self._erased(state, erased)
            return True

    async def _erased(self, state: PartitionState, erased: list[ErasureRequest]) -> None:
        """After a batch with erasures: the checkpoint taken right after it (forced) no
        longer holds the customers, and the local store drops the replaced checkpoint's
        bytes (a RocksDB flush and full compaction), so the worker's state directory
        holds no byte of them either. The log names the digest, never the id."""
        compacted = await asyncio.to_thread(self.checkpoints.compact_local, state.partition)
        self.totals["erasures"] += len(erased)
        for request in erased:
            log.info("partition %d: erasure %s (by %s at %s) applied; checkpoint at offset "
                     "%d%s", state.partition, request.digest, request.by, request.at,
                     state.checkpointed_offset, ", local store compacted" if compacted else "")

    async def _ensure_state(self, partition: int) -> PartitionState:
        """The partition's state, loaded from its checkpoint when not in memory."""
        state = self.states.get(partition)
        if state is None:
            if self.exactly_once:
                # Fences any earlier owner of the partition and aborts its open
                # transaction before the checkpoint is read.
                await self._transactional(partition)
            await self.checkpoints.load(partition)
            state = self.states[partition] = self._activate(partition)
        state.followup_rules = self.followup_rules
        return state

    async def positions(self, partitions: set[int]) -> dict[int, int]:
        """Where each owned input partition must be read from: the offset its state
        reflects (the state is loaded from its checkpoint now; a partition without one
        starts at 0). Called by the consumer after every recovery, before records flow."""
        out: dict[int, int] = {}
        async with self.lock:
            for partition in sorted(partitions & self.owned):
                state = await self._ensure_state(partition)
                out[partition] = state.next_offset
                self.positioned.add(partition)
                self.fed_at[partition] = time.monotonic()
        return out

    async def _reposition_stalled(self) -> None:
        """The last line of defence for "nothing acknowledged is lost": a partition
        whose state is behind the partition's end (the consumer's high watermark) and
        that had nothing delivered for ``STALL_SECONDS`` is sought back to its state's
        offset. Offsets that hold no readable record (transaction markers, aborted
        records) also leave a state behind the end: one seek per (state offset, end)
        pair, then the gap is known to be unreadable."""
        now = time.monotonic()
        if now - self._stalls_checked < 1.0:
            return
        self._stalls_checked = now
        consumer = self.app.consumer
        self.totals["rewinds"] = getattr(consumer, "rewinds", 0)
        async with self.lock:
            for partition in sorted(self.positioned & self.owned):
                state = self.states.get(partition)
                if state is None or now - self.fed_at.get(partition, now) < STALL_SECONDS:
                    continue
                tp = TP(self.topic, partition)
                try:
                    end = consumer.highwater(tp)
                except Exception as exc:  # not assigned any more, or nothing fetched yet
                    log.debug("partition %d: no high watermark (%r)", partition, exc)
                    continue
                mark = (state.next_offset, end)
                if end is None or end <= state.next_offset \
                        or self._repositioned.get(partition) == mark:
                    continue
                self._repositioned[partition] = mark
                self.totals["repositioned"] += 1
                log.warning("partition %d: state at offset %d, partition ends at %d, nothing "
                            "delivered for %.0f s; seeking back to the state", partition,
                            state.next_offset, end, now - self.fed_at[partition])
                await consumer.seek(tp, state.next_offset)

    async def _enqueue(self, source: int, topic: str, key: bytes | None, value: bytes | None,
                       partition: int, *, headers: list[tuple[str, bytes]] | None = None,
                       timestamp_ms: int | None = None) -> Awaitable[Any]:
        """Produce a record caused by input partition ``source`` (in its transaction)."""
        if not self.exactly_once:
            return await self.output.enqueue(topic, key, value, partition, headers=headers,
                                             timestamp_ms=timestamp_ms)
        fut: Awaitable[Any] = await self._txn[source].send(
            topic, value, key=key, partition=partition, headers=headers,
            timestamp_ms=timestamp_ms)
        return fut

    async def _enqueue_batches(self, source: int, topic: str, partition: int,
                               records: list[tuple[bytes, bytes]]) -> list[Awaitable[Any]]:
        """Produce many records to one partition as whole batches (per record, the
        producer's ``send`` costs more than building the record)."""
        producer = self._txn[source] if self.exactly_once else self.output.producer()
        futures: list[Awaitable[Any]] = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a record of {len(value)} bytes exceeds a batch")
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _transactional(self, partition: int) -> AIOKafkaProducer:
        """The partition's transactional producer, started with an open transaction."""
        producer = self._txn.get(partition)
        if producer is None:
            s = self.settings
            producer = AIOKafkaProducer(
                bootstrap_servers=s.bootstrap_servers,
                client_id=f"{s.app_id}-txn-{partition}",
                transactional_id=f"{s.app_id}-touchstream-{partition}",
                enable_idempotence=True, acks="all", linger_ms=5,
                max_request_size=max(1_048_576, s.checkpoint_chunk_bytes + 65_536))
            await producer.start()  # InitProducerId: fences the previous owner
            await producer.begin_transaction()
            self._txn[partition] = producer
        return producer

    async def _stop_transactional(self, partition: int) -> None:
        producer = self._txn.pop(partition, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    def _activate(self, partition: int) -> PartitionState:
        """The partition's state, its checkpoint clock staggered by partition, so that
        partitions do not all checkpoint (and pause) at the same moment."""
        state = self._state_of(partition)
        share = partition / max(1, self.settings.topic_partitions)
        state.checkpointed_at -= share * self.settings.checkpoint_interval
        return state

    def _state_of(self, partition: int) -> PartitionState:
        """The partition's state: parked here if still current, else from its checkpoint."""
        parked = self.parked.pop(partition, None)
        stored = self.checkpoints.stored_offset(partition)
        if parked is not None and stored == parked.next_offset == parked.checkpointed_offset:
            log.info("partition %d: resuming kept state at offset %d", partition, stored)
            return parked
        data = self.checkpoints.read(partition)
        if data is None:
            log.info("partition %d: no checkpoint; starting from the beginning", partition)
            return PartitionState.fresh(partition, self.config, self.decoder)
        started = time.perf_counter()
        state = PartitionState.restore(partition, self.config, data, self.decoder)
        log.info("partition %d: restored checkpoint at offset %d (%d bytes, %.3f s)",
                 partition, state.next_offset, len(data), time.perf_counter() - started)
        return state

    def _account(self, report: BatchReport) -> None:
        t = self.totals
        t["records"] += report.records
        t["skipped"] += report.skipped
        t["accepted"] += report.accepted
        t["duplicates"] += report.duplicates
        t["late"] += report.late
        t["rejected"] += report.rejected
        t["commands"] += report.commands

    # -- flushing --------------------------------------------------------------------

    async def _maybe_flush(self, state: PartitionState, *, force: bool = False) -> None:
        started = time.perf_counter()
        if await self._flush_due(state, force=force):
            self.metrics.flush_seconds.observe(time.perf_counter() - started)

    async def _flush_due(self, state: PartitionState, *, force: bool) -> bool:
        """Flush what is due; whether anything was written."""
        now = time.monotonic()
        s = self.settings
        since = state.events_since_checkpoint
        if self.exactly_once:
            # Every flush is one transaction: dead letters, partials, the checkpoint and
            # the input offset become visible together, or not at all.
            if since > 0 and (force or since >= s.checkpoint_events
                              or now - state.published_at >= s.flush_interval):
                await self._commit_transaction(state)
                return True
            return False
        checkpoint = since > 0 and (force or since >= s.checkpoint_events
                                    or now - state.checkpointed_at >= s.checkpoint_interval)
        publish = state.has_unpublished and (checkpoint or force
                                             or now - state.published_at >= s.flush_interval)
        if publish:
            await self._publish(state)
        if checkpoint:
            await self._checkpoint(state)
        return publish or checkpoint

    async def _publish(self, state: PartitionState) -> None:
        pending = self._pending[state.partition]
        topic = self.settings.partials_topic
        for key, value in state.partial_records():
            pending.append(await self.output.enqueue(topic, key, value, state.partition))

    async def _drain(self, partition: int) -> None:
        pending, self._pending[partition] = self._pending[partition], []
        if pending:
            await asyncio.gather(*pending)

    async def _checkpoint(self, state: PartitionState) -> None:
        p = state.partition
        await self._drain(p)  # dead letters and partials first: the checkpoint covers them
        offset = state.next_offset
        started = time.perf_counter()
        data = state.checkpoint()
        await self.checkpoints.write(p, offset, data)
        state.mark_checkpointed(offset)
        self.totals["checkpoints"] += 1
        log.debug("partition %d: checkpoint at offset %d (%d bytes, %.3f s)", p, offset,
                  len(data), time.perf_counter() - started)
        self._want_commit({TP(self.topic, p): offset})

    async def _commit_transaction(self, state: PartitionState) -> None:
        p = state.partition
        producer = self._txn[p]
        pending = self._pending[p]
        for key, value in state.partial_records():
            pending.append(await producer.send(self.settings.partials_topic, value, key=key,
                                               partition=p))
        offset = state.next_offset

        async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> int:
            metadata = await (await producer.send(topic, value, key=key, partition=partition))
            return int(metadata.offset)

        events = await self.checkpoints.write(p, offset, state.checkpoint(), send=send)
        await self._drain(p)
        await producer.send_offsets_to_transaction(
            {AIOKafkaTopicPartition(self.topic, p): offset}, self.settings.app_id)
        await producer.commit_transaction()
        self.checkpoints.apply(events)
        state.mark_checkpointed(offset)
        self.totals["checkpoints"] += 1
        await producer.begin_transaction()

    async def tick(self) -> None:
        """Flush partitions that are due even when no new records arrive (one partition
        at a time, so batches of the others are taken in between)."""
        for partition in list(self.states):
            async with self.lock:
                state = self.states.get(partition)
                if self.stopping:
                    return
                if state is not None:
                    await self._maybe_flush(state)
            await asyncio.sleep(0)
        await self._reposition_stalled()

    # -- offsets commits (an optimization only: states carry their own offsets) --------

    def _want_commit(self, offsets: dict[Any, int]) -> None:
        if self.exactly_once:
            return  # offsets are committed inside each transaction
        self._commit_wanted.update(offsets)
        if self._commit_task is None or self._commit_task.done():
            self._commit_task = asyncio.ensure_future(self._commit_loop())

    async def _commit_loop(self) -> None:
        while self._commit_wanted:
            wanted, self._commit_wanted = self._commit_wanted, {}
            await self.app.consumer.commit_offsets(wanted, self.settings.commit_timeout)

    # -- rebalancing and shutdown ----------------------------------------------------

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Checkpoint and park the revoked partitions' states, then commit."""
        partitions = sorted(tp.partition for tp in revoked if tp.topic == self.topic)
        async with self.lock:
            done: dict[Any, int] = {}
            for p in partitions:
                self.owned.discard(p)
                self.positioned.discard(p)
                state = self.states.pop(p, None)
                if state is None:
                    continue
                try:
                    await asyncio.wait_for(self._maybe_flush(state, force=True),
                                           self.settings.commit_timeout)
                except Exception as exc:
                    log.warning("partition %d: checkpoint on revocation failed (%r); its "
                                "next owner resumes from the previous checkpoint", p, exc)
                    self._pending.pop(p, None)
                    continue
                self.parked[p] = state
                done[TP(self.topic, p)] = state.next_offset
            for p in partitions:
                await self._stop_transactional(p)
            if done and not self.exactly_once:
                await self.app.consumer.commit_offsets(done, self.settings.commit_timeout)

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Take the new assignment; forget parked states of partitions now elsewhere."""
        partitions = {int(tp.partition) for tp in assigned if tp.topic == self.topic}
        async with self.lock:
            self.owned = partitions
            for p in [p for p in self.parked if p not in partitions]:
                del self.parked[p]
            for p in [p for p in self.states if p not in partitions]:
                del self.states[p]
                self.positioned.discard(p)
            if self.exactly_once:
                # Fence the previous owners now, all partitions at once (each takes a
                # round trip to the transaction coordinator).
                await asyncio.gather(*(self._transactional(p) for p in sorted(partitions)))
        log.info("assigned input partitions %s", sorted(partitions))

    async def shutdown(self) -> None:
        """Graceful stop: finish the batch in hand, checkpoint every partition, commit."""
        async with self.lock:
            self.stopping = True
            done: dict[Any, int] = {}
            for p, state in sorted(self.states.items()):
                try:
                    await self._maybe_flush(state, force=True)
                    done[TP(self.topic, p)] = state.next_offset
                except Exception as exc:
                    log.error("partition %d: final checkpoint failed: %r", p, exc)
            for p in list(self._txn):
                await self._stop_transactional(p)
            if done and not self.exactly_once:
                await self.app.consumer.commit_offsets(done, self.settings.commit_timeout)
            if self._commit_task is not None:
                self._commit_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._commit_task
            log.info("shut down cleanly: checkpointed %s; %s",
                     {tp.partition: o for tp, o in done.items()}, self.stats_line())

    def stats_line(self) -> str:
        """A one-line summary for the log."""
        t = self.totals
        elapsed = time.monotonic() - self._started
        return (f"records={t['records']} accepted={t['accepted']} duplicates={t['duplicates']}"
                f" late={t['late']} rejected={t['rejected']} skipped={t['skipped']}"
                f" checkpoints={t['checkpoints']} stale_batches={t['stale_batches']}"
                f" rewinds={t['rewinds']} repositioned={t['repositioned']}"
                f" batches={t['batches']} process_s={self.seconds['process']:.1f}"
                f" (cpu {self.seconds['process_cpu']:.1f})"
                f" flush_s={self.seconds['flush']:.1f}"
                f" fetch_s={getattr(self.app.consumer, 'fetch_seconds', 0.0):.1f}"
                f" idle_s={getattr(self.app.consumer, 'idle_seconds', 0.0):.1f}"
                f" gc_s={gc_clock().summary()}"
                f" partitions={sorted(self.states)}"
                f" uptime={elapsed:.0f}s")


class ScoresPublisher:
    """On the group leader: merged partials in, changed scores out (compacted topic)."""

    def __init__(self, app: Any, settings: WorkerSettings, config: EngineConfig,
                 output: Output) -> None:
        self.app = app
        self.settings = settings
        self.config = config
        self.output = output
        self.reader: ScoresReader | None = None
        self.published: dict[bytes, bytes] = {}
        self._last_offsets: dict[int, int] | None = None
        self.lock = asyncio.Lock()
        self.rounds = 0
        self.detection = settings.load_detection_config(config)
        self.detector = Detector(self.detection)

    async def tick(self) -> None:
        """Publish a round if this worker leads the group; stop reading if it no longer does."""
        async with self.lock:
            if self.app.should_stop:
                return
            if not self.app.is_leader():
                if self.reader is not None:
                    log.info("no longer the group leader; scores publisher stops")
                    await self._stop()
                return
            try:
                if self.reader is None:
                    await self._start()
                await self._round()
            except Exception as exc:  # the next tick starts over; processing goes on
                log.warning("scores round failed (%r); retrying from the partials topic",
                            exc)
                await self._stop()

    async def _start(self) -> None:
        s = self.settings
        log.info("group leader: scores publisher starts (partials %s -> %s)",
                 s.partials_topic, s.topic_scores)
        # The alert book travels on the alerts topic: alerts open under the previous
        # leader go on under their ids.
        self.detector = Detector(self.detection)
        carried = await load_alerts(s, self.detector)
        log.info("group leader: %d alerts carried on from the alerts topic (%d open)",
                 carried, len(self.detector.alerts.active))
        reader = ScoresReader.from_settings(s, self.config)
        await reader.start()
        self.reader = reader
        self.published = {k: v for k, v in (await read_compacted(
            s.bootstrap_servers, s.topic_scores)).items() if k != sc.PROGRESS_KEY}
        self._last_offsets = None

    async def _stop(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            await reader.stop()

    async def _round(self) -> None:
        reader = self.reader
        assert reader is not None  # noqa: S101 - set by _start
        engine = reader.engine()
        offsets = reader.source_offsets()
        # In a thread: a round is CPU work in the processing worker's process, and must
        # not stall its partitions' loop (window by window, a step took 100-300 ms).
        # Only this publisher asks the reader for the engine, under its lock, so the
        # engine does not change meanwhile.
        records = await asyncio.to_thread(self._records, engine)
        changes: list[tuple[bytes, bytes | None]] = [
            (k, v) for k, v in records.items() if self.published.get(k) != v]
        changes += [(k, None) for k in self.published if k not in records]
        if not changes and offsets == self._last_offsets:
            return
        topic = self.settings.topic_scores
        futures = []
        for i, (k, v) in enumerate(changes):
            futures.append(await self.output.enqueue(topic, k, v, None))
            if i % 500 == 499:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
        await (await self.output.enqueue(topic, sc.PROGRESS_KEY,
                                         sc.progress_value(offsets, engine.watermark), None))
        self.published = records
        self._last_offsets = offsets
        self.rounds += 1
        log.debug("published %d score changes (offsets %s)", len(changes), offsets)
        await self._alerts(engine)

    def _records(self, engine: Engine) -> dict[bytes, bytes]:
        """Every score record of the merged view, keyed as on the scores topic."""
        records: dict[bytes, bytes] = {}
        for family, window in sc.windows(engine):
            for scope in self.config.scopes:
                records.update(sc.scope_records(engine, family, window, scope))
        return records

    async def _alerts(self, engine: Engine) -> None:
        """Evaluate the alert rules on the merged view; publish each state change with
        the alert's whole state (``AlertChange.record``), keyed by alert id.

        Only the group leader evaluates, so one change is published once; API replicas
        and the next leader read the alert book back from the topic
        (``streams.worker.alerts``).

        The evaluation runs in a thread: its first of an hour takes hundreds of ms at a
        thousand series, mostly in numpy (which lets the loop run meanwhile), and must
        not stall this worker's partitions. The merged engine does not change meanwhile
        (only this publisher, under its lock, brings it up to date).
        """
        watermark = engine.watermark
        if watermark is None or not self.detector.due(watermark, DETECT_EVERY):
            return
        changes = await asyncio.to_thread(self.detector.evaluate, engine, watermark)
        topic = self.settings.topic_alerts
        futures = [await self.output.enqueue(topic, c.alert.id.encode(),
                                             orjson.dumps(c.record()), None)
                   for c in changes]
        await asyncio.gather(*futures)
        if changes:
            log.info("published %d alert changes", len(changes))

    async def stop(self) -> None:
        """Stop reading (worker shutdown)."""
        async with self.lock:
            await self._stop()
