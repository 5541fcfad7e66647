"""``touchstream serve``: the embedded runner behind the API, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from service.traffic import demo_feed
from streams.embedded import EmbeddedRunner
from streams.sources.simulator import Drop

log = logging.getLogger(__name__)


DEV_KEY_FILE = "dev-api-key"


def development_key(data_dir: Path) -> str:
    """A key with every scope for a development instance that has none configured.

    Kept in ``<data_dir>/dev-api-key`` (mode 0600) so that it survives restarts; never
    used outside ``development``, where keys must come from the environment.
    """
    path = data_dir / DEV_KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(key + "\n", encoding="utf-8")
    return key


def with_development_key(settings: Settings) -> Settings:
    """The settings, plus a development key when none is configured."""
    if settings.keys() or settings.environment != "development":
        return settings
    key = development_key(settings.data_dir)
    log.warning("no TOUCHSTREAM_API_KEYS set: development key (read, write, admin) is in "
                "%s", settings.data_dir / DEV_KEY_FILE)
    return settings.model_copy(update={"api_keys": SecretStr(f"dev:read+write+admin:{key}")})


async def run(settings: Settings, simulate: float = 0.0, drops: Sequence[Drop] = (),
              history: timedelta = timedelta(hours=24)) -> None:
    """Open the state, serve until SIGINT/SIGTERM, then drain and close the state.

    uvicorn stops accepting, finishes in-flight requests and runs the app's shutdown,
    which closes the runner (final snapshot), so the next start replays nothing. The
    process then exits by the signal it got, as uvicorn re-raises it.
    """
    settings = with_development_key(settings)
    config = settings.load_engine_config()
    detection = settings.load_detection_config(config)
    async with EmbeddedRunner(settings.data_dir, config, snapshot_every=settings.snapshot_every,
                              detection=detection) as runner:
        feed: asyncio.Task[None] | None = None

        async def shutdown() -> None:
            # Stop the simulated feed first, then close the state (final snapshot).
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed
            await asyncio.to_thread(runner.close)

        app = create_app(settings, runner, config, on_shutdown=shutdown)
        server = uvicorn.Server(uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info",
            proxy_headers=False, server_header=False,
        ))
        log.info("touchstream serving on http://%s:%d (docs at /docs, data in %s)",
                 settings.host, settings.port, settings.data_dir)
        if simulate > 0:
            feed = asyncio.create_task(demo_feed(runner, simulate, list(drops), history))
        await server.serve()

def serve(settings: Settings, simulate: float = 0.0, drops: Sequence[Drop] = (),
          history: timedelta = timedelta(hours=24)) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(settings, simulate, drops, history))
