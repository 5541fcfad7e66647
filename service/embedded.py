"""``touchstream serve``: the embedded runner behind the API, served by uvicorn."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    """Open the state, serve until SIGINT/SIGTERM, then drain and close the state.

    uvicorn stops accepting, finishes in-flight requests and runs the app's shutdown;
    only then is the runner closed (final snapshot), so nothing acknowledged is lost
    and the next start recovers quickly.
    """
    config = settings.load_engine_config()
    async with EmbeddedRunner(settings.data_dir, config,
                              snapshot_every=settings.snapshot_every) as runner:
        app = create_app(settings, runner, config)
        server = uvicorn.Server(uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info",
            proxy_headers=False, server_header=False,
        ))
        log.info("touchstream serving on http://%s:%d (docs at /docs, data in %s)",
                 settings.host, settings.port, settings.data_dir)
        await server.serve()


def serve(settings: Settings) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(settings))
