"""Batches beneath Faust: the consumer hands whole fetches to the worker, not events.

faust-streaming walks every record through its stream machinery (a ``Message``, an
``Event``, a queue, a task per delivery, acks) at ~60-110 µs of CPU per record, which
caps a worker near 5-15k events/s whatever the processing costs. This consumer keeps
everything else Faust does — the consumer group and its partition assignor (standbys,
leader), table recovery before a reassigned partition's records flow, flow control
during rebalances, offsets commits through its consumer thread — and replaces only the
fetch loop (``Consumer._drain_messages``): every fetched batch of the input topic goes,
per partition, straight to one ``BatchHandler`` call.

Positions are explicit, never left to the group offset:

- after every recovery (Faust's ``perform_seek``, right before records flow again),
  each partition of a batch topic is sought to where its ``Positioner`` says: the
  offset its state reflects, or the beginning when it has none;
- a fetched batch that is not delivered, for any reason (flow stopped, generation
  changed, partition paused, the handler refusing it), has already moved the fetch
  position past it: its partition is sought back to the batch's first offset at once;
- a batch whose fetch began before a seek of its partition may predate the seek: it is
  not delivered, and the partition is sought again to where that seek went.

Faust passes its live set of active partitions to aiokafka; when recovery empties that
set during a fetch, aiokafka reads the empty set as "every partition" (faust-streaming
0.15.3 with aiokafka 0.14). The fetch here is given a copy.

The input consumer always reads ``read_committed``, so events in aborted transactions
of a transactional producer are never counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)

BatchHandler = Callable[[Any, Sequence[Any], int], Awaitable[bool]]
"""(topic partition, records, consumer generation) -> whether the records were taken
(``False``: not processed, the partition is sought back to them)."""

Positioner = Callable[[set[int]], Awaitable[dict[int, int]]]
"""Assigned partitions of a topic -> the offset each must be read from."""


class BatchConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, reading committed records only."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        # Faust asks the broker to hold fetches up to 1.5 s; measured here, a fetch
        # that waits stalls the whole batch loop. 100 ms bounds such a stall.
        consumer._fetch_max_wait_ms = 100
        return consumer


class BatchConsumer(driver.Consumer):
    """Faust's consumer with a batch fetch loop for topics that have a batch handler."""

    batch_handlers: dict[str, BatchHandler]
    positioners: dict[str, Positioner]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = {}
        self.positioners = {}
        self.fetch_seconds = 0.0
        self.idle_seconds = 0.0
        self.rewinds = 0
        """Partitions sought back because a fetched batch was not delivered."""
        self._seeks = 0
        self._last_seek: dict[Any, tuple[int, int]] = {}
        """Per partition: (seek count when it was last sought, the offset it went to)."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- positions -------------------------------------------------------------------

    def _sought(self, tp: Any, offset: int) -> None:
        self._seeks += 1
        self._last_seek[tp] = (self._seeks, offset)

    async def _seek(self, partition: Any, offset: int) -> None:
        """Seek in the consumer's own thread. aiokafka's seek drops the partition's
        fetched records; Faust seeks from the app's thread, where it raced the consumer
        thread reading those records (a ``KeyError`` in aiokafka's ``fetched_records``
        that crashed the worker, found by the random-kill test)."""
        self._sought(partition, offset)
        thread = self._thread

        async def seek() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek)

    async def seek_wait(self, partitions: Mapping[Any, int]) -> None:
        for tp, offset in partitions.items():
            self._sought(tp, offset)
        await super().seek_wait(partitions)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = await super().seek_to_committed()
        for tp, offset in committed.items():
            if offset and offset > 0:  # aiokafka seeks only these
                self._sought(tp, offset)
        return committed

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, then every partition of a batch topic
        to the offset its positioner gives (called before records flow again)."""
        await super().perform_seek()
        assigned = self.assignment()
        for topic, positioner in self.positioners.items():
            tps = {tp.partition: tp for tp in assigned if tp.topic == topic}
            if not tps:
                continue
            positions = await positioner(set(tps))
            for partition, offset in sorted(positions.items()):
                log.info("partition %d of %s: reading from offset %d", partition, topic,
                         offset)
                await self.seek(tps[partition], offset)

    async def _rewind(self, tp: Any, batch: Sequence[Any], fetch_began: int) -> None:
        """Seek ``tp`` back so the undelivered ``batch`` is fetched again: to where the
        last seek went when that seek came after the fetch began, else to the batch's
        first offset. A partition no longer assigned needs nothing."""
        seek_count, target = self._last_seek.get(tp, (0, 0))
        offset = target if seek_count > fetch_began else int(batch[0].offset)
        if tp not in self.assignment():
            return
        try:
            await self.seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: its next owner positions it
            log.info("%s: seek back to %d skipped (%s: %s)", tp, offset,
                     type(exc).__name__, exc)
            return
        self.rewinds += 1
        log.info("%s: %d fetched records not delivered; sought back to %d", tp,
                  len(batch), offset)

    # -- the fetch loop --------------------------------------------------------------

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        # A copy: Faust's set changes under the fetch, and aiokafka takes an empty set
        # for "every partition" (see the module docstring).
        snapshot = None if active_partitions is None else set(active_partitions)
        if snapshot is not None and not snapshot:
            return {}
        return await super()._getmany(snapshot, timeout)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch batches until stopped; deliver each partition's records in one call.

        Mirrors Faust's loop where it matters: records are not delivered when the flow
        stopped (rebalance) or the consumer generation changed while they were fetched,
        and only partitions that are active (not paused for recovery) count. Unlike
        Faust's, every batch not delivered is fetched again (``_rewind``). Records of
        topics without a batch handler go the ordinary Faust way.
        """
        callback = self.callback
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        set_read_offset = self._read_offset.__setitem__
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                started = time.perf_counter()
                fetch_began = self._seeks
                records, active = await self._wait_next_records(1.0)
                if records:
                    self.fetch_seconds += time.perf_counter() - started
                else:
                    self.idle_seconds += time.perf_counter() - started
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                generation = self.app.consumer_generation_id
                for tp, batch in records.items():
                    if not batch:
                        continue
                    if (not self.flow_active
                            or self.app.consumer_generation_id != generation
                            or not (active is None or tp in active
                                    or tp in self._buffered_partitions)
                            or self._last_seek.get(tp, (0, 0))[0] > fetch_began):
                        await self._rewind(tp, batch, fetch_began)
                        continue
                    handler = self.batch_handlers.get(tp.topic)
                    if handler is not None:
                        if not await handler(tp, batch, generation):
                            await self._rewind(tp, batch, fetch_began)
                            continue
                    else:
                        for record in batch:
                            await callback(self._to_message(tp, record))
                    set_read_offset(tp, batch[-1].offset)
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("broker stopped the consumer; shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("batch fetch loop failed: %r", exc)
            raise

    async def commit_offsets(self, offsets: dict[Any, int], timeout: float) -> bool:
        """Commit offsets for assigned partitions; failures are logged, never fatal.

        Offsets are only where fetching resumes: the worker's state carries its own
        offset, so a lost or stale commit costs re-reading, never correctness.
        (Faust's own ``_commit`` crashes the app on a failed commit.)
        """
        thread = cast(BatchConsumerThread, self._thread)

        async def commit() -> bool:
            consumer = thread._ensure_consumer()
            from aiokafka.structs import OffsetAndMetadata

            assigned = thread.assignment()
            wanted = {driver.ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
                      for tp, offset in offsets.items() if tp in assigned}
            if not wanted:
                return False
            try:
                await asyncio.wait_for(consumer.commit(wanted), timeout)
            except Exception as exc:  # rebalancing, coordinator moved, timeout
                log.info("offset commit skipped (%s: %s)", type(exc).__name__, exc)
                return False
            return True

        try:
            return bool(await asyncio.wait_for(thread.call_thread(commit), timeout + 1))
        except Exception as exc:
            log.info("offset commit skipped (%s: %s)", type(exc).__name__, exc)
            return False


class BatchTransport(driver.Transport):
    """The aiokafka transport with the batch consumer."""

    Consumer = BatchConsumer
