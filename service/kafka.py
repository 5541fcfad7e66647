"""``touchstream api``: the HTTP API over a Kafka deployment of workers."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from service.app import create_app
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
    settings = with_development_key(settings)
    runner = KafkaRunner(worker, detection=settings.load_detection_config(
        worker.load_engine_config()))
    await runner.start()
    app = create_app(settings, runner, runner.config, on_shutdown=runner.stop)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port,
                                           log_level="info", server_header=False))
    log.info("touchstream API over Kafka %s on http://%s:%d", worker.kafka_bootstrap,
             settings.host, settings.port)
    await server.serve()


def serve(settings: Settings, worker: WorkerSettings) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(settings, worker))
