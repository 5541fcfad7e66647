"""``touchstream api``: the HTTP API over a Kafka deployment of workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from service.app import create_app
from service.cli_errors import CliError, Exit, bind
from service.embedded import with_development_key
from service.settings import Settings
from streams.worker.reader import dead_letters_expired
from streams.worker.runner import KafkaRunner
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)

EXPIRED_EVERY = 60.0
"""Seconds between readings of how many dead letters the broker has deleted."""


class DeadLetterCollector(Collector):
    """``touchstream_dead_letters_expired_total`` on Kafka, as the embedded runner gives
    it: dead letters deleted by the dead-letter topic's retention (age or the total
    bound), oldest first, as last read by :func:`watch_dead_letters`."""

    def __init__(self) -> None:
        self.expired: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.expired is not None:
            yield CounterMetricFamily(
                "touchstream_dead_letters_expired",
                "Dead letters deleted by retention (age or the total bound), oldest first.",
                value=self.expired)


async def watch_dead_letters(worker: WorkerSettings, collector: DeadLetterCollector,
                             every: float = EXPIRED_EVERY) -> None:
    """Read the dead-letter topic's deletions into ``collector`` every ``every`` seconds
    (a failure is logged; the next round retries)."""
    while True:
        try:
            collector.expired = await dead_letters_expired(worker)
        except Exception:  # the broker away for a while: serving goes on
            log.warning("could not read the dead-letter topic's first offsets",
                        exc_info=True)
        await asyncio.sleep(every)


async def run(settings: Settings, worker: WorkerSettings) -> None:
    """Catch up with the workers' merged view, then serve until SIGTERM.

    Any number of these can run side by side: each reads the same compacted topic, so
    they answer alike once caught up; ingestion goes to the ``touchpoints`` topic.
    """
    sock = bind(settings.host, settings.port)  # a port in use fails before Kafka is asked
    try:
        settings = with_development_key(settings)
        runner = KafkaRunner(worker, detection=settings.load_detection_config(
            worker.load_engine_config()))
        try:
            await runner.start()
        except Exception as exc:  # aiokafka's connection and metadata errors, timeouts
            with contextlib.suppress(Exception):  # what did start is stopped again
                await runner.stop()
            raise CliError(f"cannot reach Kafka at {worker.kafka_bootstrap}: "
                           f"{type(exc).__name__}: {exc}",
                           "start the broker and workers, or fix TOUCHSTREAM_KAFKA_BOOTSTRAP",
                           Exit.DESTINATION) from exc
        expired = DeadLetterCollector()
        watching = asyncio.create_task(watch_dead_letters(worker, expired))

        async def shutdown() -> None:
            watching.cancel()
            await runner.stop()

        app = create_app(settings, runner, runner.config, on_shutdown=shutdown)
        app.state.registry.register(expired)
        server = uvicorn.Server(uvicorn.Config(app, log_level="info", server_header=False))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            host, port = sock.getsockname()[:2]
            log.info("touchstream API over Kafka %s serving on http://%s:%d",
                     worker.kafka_bootstrap, host, port)
        await serving
    finally:
        sock.close()


def serve(settings: Settings, worker: WorkerSettings) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(settings, worker))
