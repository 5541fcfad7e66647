"""The Faust app of a touchstream worker, and ``run_worker(settings)`` that runs one.

``create_worker(settings)`` builds everything without touching the network or the
event loop (so it can be imported and inspected); ``run_worker`` checks and creates the
topics, then runs a Faust worker until SIGTERM/SIGINT, when it finishes the batch in
hand, checkpoints every partition and commits before exiting.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import start_http_server

from streams.engine.config import EngineConfig
from streams.worker.agents import Output, ScoresPublisher, TouchpointProcessor
from streams.worker.metrics import WorkerMetrics
from streams.worker.settings import WorkerSettings
from streams.worker.tables import CheckpointStore, TopicCheckpointStore
from streams.worker.topics import ensure_topics, faust_topic
from streams.worker.transport import BatchConsumer, BatchHandler, BatchTransport, Positioner

log = logging.getLogger(__name__)


class TouchstreamApp(faust.App):
    """A Faust app whose consumer hands batches to the worker, and that checkpoints on stop."""

    processor: TouchpointProcessor | None = None
    publisher: ScoresPublisher | None = None
    batch_handlers: dict[str, BatchHandler]
    positioners: dict[str, Positioner]

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        if not isinstance(consumer, BatchConsumer):
            raise RuntimeError(f"expected the batch consumer, got {type(consumer)}")
        consumer.batch_handlers.update(self.batch_handlers)
        consumer.positioners.update(self.positioners)
        return consumer

    async def on_stop(self) -> None:
        # Before Faust stops the fetcher, tables and producer: finish the batch in hand,
        # checkpoint every partition and commit (graceful SIGTERM).
        if self.processor is not None:
            await self.processor.shutdown()
        if self.publisher is not None:
            await self.publisher.stop()
        await super().on_stop()


@dataclass(frozen=True, slots=True)
class Worker:
    """The pieces of one worker process."""

    app: TouchstreamApp
    settings: WorkerSettings
    config: EngineConfig
    processor: TouchpointProcessor
    publisher: ScoresPublisher
    metrics: WorkerMetrics


def create_worker(settings: WorkerSettings, config: EngineConfig | None = None) -> Worker:
    """Build the Faust app, its topic, table, processor and timers (nothing runs yet)."""
    config = config or settings.load_engine_config()
    state_dir = settings.state_dir.resolve()
    app = TouchstreamApp(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=str(state_dir),
        # exactly_once is done by the worker itself (one transactional producer per
        # input partition, see agents.py), not by Faust's TransactionManager.
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        table_standby_replicas=settings.standby_replicas,
        broker_max_poll_records=settings.batch_max,
        consumer_max_fetch_size=settings.fetch_partition_bytes,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_host="127.0.0.1",
        producer_linger=0.005,
        producer_max_request_size=max(1_048_576, settings.checkpoint_chunk_bytes + 65_536),
        # aiokafka keeps one open batch per partition and makes send() wait until a full
        # one has gone out: with 16 KiB batches (the default) every partials record (tens
        # of KiB) waited for the previous one. Flushing took ~40% of a worker's time.
        producer_max_batch_size=max(1_048_576, settings.checkpoint_chunk_bytes + 65_536),
        stream_wait_empty=False,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 6),
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_request_timeout=max(90.0, settings.session_timeout + 5),
        consumer_group_instance_id=settings.group_instance_id,
        autodiscover=False,
        loghandlers=[],
    )
    touchpoints = faust_topic(app, settings.topic_touchpoints, settings.topic_partitions)
    app.topics.add(touchpoints)
    output = Output(app)
    checkpoints: CheckpointStore
    if settings.processing_guarantee == "exactly_once":
        checkpoints = TopicCheckpointStore(settings.bootstrap_servers,
                                           settings.checkpoint_changelog, output.send,
                                           settings.checkpoint_chunk_bytes)
    else:
        # One value per partition, read on assignment: a small block cache per
        # partition DB (Faust's default is large; see KAFKA-NOTES).
        options = ({"block_cache_size": 8 * 1024 * 1024, "write_buffer_size": 8 * 1024 * 1024}
                   if settings.store.startswith("rocksdb") else None)
        table = app.Table(settings.checkpoint_table, partitions=settings.topic_partitions,
                          key_type=bytes, value_type=bytes, options=options,
                          help="per-partition checkpoints (engine snapshot + input offset)")
        checkpoints = CheckpointStore(table, output.send, settings.checkpoint_chunk_bytes)
    metrics = WorkerMetrics()
    processor = TouchpointProcessor(app, settings, config, checkpoints, output, metrics)
    metrics.watch(processor)
    publisher = ScoresPublisher(app, settings, config, output)
    metrics.watch_detection(publisher)
    app.processor = processor
    app.publisher = publisher
    app.batch_handlers = {settings.topic_touchpoints: processor.handle}
    app.positioners = {settings.topic_touchpoints: processor.positions}

    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        await processor.on_revoked(set(args[0]))

    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        await processor.on_assigned(set(args[0]))

    app.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]  # mode stub
    app.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]  # mode stub

    # Periodic work runs in plain loops rather than ``app.timer``: a tick that waits for
    # the batch in hand is expected, not a drifting timer worth a warning.
    async def every(interval: float, work: Callable[[], Awaitable[None]]) -> None:
        while not app.should_stop:
            await asyncio.sleep(interval)
            await work()

    async def flush() -> None:
        await every(max(0.05, min(settings.flush_interval, 1.0) / 2), processor.tick)

    async def scores() -> None:
        await every(settings.scores_interval, publisher.tick)

    async def log_stats() -> None:
        log.info("worker %d: %s", os.getpid(), processor.stats_line())

    async def stats() -> None:
        await every(30.0, log_stats)

    for task in (flush, scores, stats):
        app.task(task)

    return Worker(app, settings, config, processor, publisher, metrics)


def run_worker(settings: WorkerSettings) -> None:
    """Check/create the topics, then run a worker until SIGTERM or SIGINT (blocking).

    Exits the process (``SystemExit``) when the worker stops, as Faust workers do.
    """
    config = settings.load_engine_config()
    created = ensure_topics(settings)
    if created:
        log.info("created topics: %s", ", ".join(created))
    worker = create_worker(settings, config)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, settings.metrics_host,
                          registry=worker.metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host,
                 settings.metrics_port)
    # Start-up objects never die: keep them out of collections. Engine state is long-
    # lived too and its hot objects are untracked, so what the young generation holds at
    # a collection is mostly the batch in hand: collect it rarely. Measured on 600k
    # events (gc_s in the shutdown line): 50,000 -> 200,000 objects took the time in
    # collections from 0.7-0.9 s to 0.3-0.4 s; one young collection takes ~60 ms.
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 10, 10)
    runner = faust.Worker(worker.app, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False)
    # At log levels of warn and above, Faust's terminal spinner sets the root logger to
    # DEBUG so that it spins on every record: every debug call of every library (one
    # per produced record in aiokafka) then builds a LogRecord. Measured: ~7% of the
    # worker's CPU at 30k events/s. No spinner: levels mean what they say.
    runner.spinner = None
    runner.execute_from_commandline()
