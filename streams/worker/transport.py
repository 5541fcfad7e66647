"""Batches beneath Faust: the consumer hands whole fetches to the worker, not events.

faust-streaming walks every record through its stream machinery (a ``Message``, an
``Event``, a queue, a task per delivery, acks) at ~60-110 µs of CPU per record, which
caps a worker near 5-15k events/s whatever the processing costs. This consumer keeps
everything else Faust does — the consumer group and its partition assignor (standbys,
leader), table recovery before a reassigned partition's records flow, flow control
during rebalances, offsets commits through its consumer thread — and replaces only the
fetch loop (``Consumer._drain_messages``): every fetched batch of the input topic goes,
per partition, straight to one ``BatchHandler`` call.

The input consumer always reads ``read_committed``, so events in aborted transactions
of a transactional producer are never counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)

BatchHandler = Callable[[Any, Sequence[Any], int], Awaitable[None]]
"""(topic partition, records, consumer generation) -> None."""


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = {}
        self.fetch_seconds = 0.0
        self.idle_seconds = 0.0

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Fetch batches until stopped; deliver each partition's records in one call.

        Mirrors Faust's loop where it matters: records are dropped when the flow
        stopped (rebalance) or the consumer generation changed while they were
        fetched, and only partitions that are active (not paused for recovery) count.
        Records of topics without a batch handler go the ordinary Faust way.
        """
        callback = self.callback
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        set_read_offset = self._read_offset.__setitem__
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                started = time.perf_counter()
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
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    if not batch:
                        continue
                    handler = self.batch_handlers.get(tp.topic)
                    if handler is not None:
                        await handler(tp, batch, generation)
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
