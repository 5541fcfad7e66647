"""``touchstream api``: the HTTP API over a Kafka deployment of workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from service.app import create_app
from service.cli_errors import CliError, Exit, bind
from service.embedded import with_development_key
from service.settings import Settings
from streams.worker.runner import KafkaRunner
from streams.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


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
        app = create_app(settings, runner, runner.config, on_shutdown=runner.stop)
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
