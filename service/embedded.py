"""``touchstream serve``: the embedded runner behind the API, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import uvicorn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr

from schemas.decode import EventDecoder
from service.app import create_app
from service.cli_errors import bind, storage_error
from service.settings import Settings
from service.traffic import demo_feed, format_duration
from streams.detection import DetectionConfig
from streams.embedded import EmbeddedRunner, Retention, StorageError
from streams.engine.config import EngineConfig
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
    log.warning("no TOUCHSTREAM_API_KEYS set: development key (read, write, admin, erase) "
                "is in %s", settings.data_dir / DEV_KEY_FILE)
    spec = f"dev:read+write+admin+erase:{key}"
    return settings.model_copy(update={"api_keys": SecretStr(spec)})


def embedded_runner(settings: Settings, config: EngineConfig,
                    detection: DetectionConfig) -> EmbeddedRunner:
    """The embedded runner the settings describe (not opened yet): its data directory,
    snapshot cadence, dead-letter cap, retention, and the comment policy (``comments``)
    in its decoder, so that its log, snapshots and follow-ups hold comments only as the
    policy keeps them."""
    return EmbeddedRunner(settings.data_dir, config,
                          decoder=EventDecoder(comments=settings.comments),
                          snapshot_every=settings.snapshot_every,
                          detection=detection,
                          dead_letter_max_bytes=settings.dead_letter_max_bytes,
                          retention=retention(settings))


def retention(settings: Settings) -> Retention:
    """The embedded runner's retention from the shared settings (-1: no bound)."""
    def bound(value: int, scale: float = 1.0) -> float | None:
        return None if value < 0 else value * scale

    size = bound(settings.dlq_retention_bytes)
    return Retention(log_seconds=bound(settings.touchpoints_retention_ms, 1e-3),
                     dead_letter_seconds=bound(settings.dlq_retention_ms, 1e-3),
                     dead_letter_bytes=None if size is None else int(size))


class StorageCollector(Collector):
    """The embedded runner's storage counters for Prometheus (``EmbeddedRunner.stats``)."""

    def __init__(self, runner: EmbeddedRunner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        stats = self.runner.stats()
        yield CounterMetricFamily(
            "touchstream_dead_letters_expired",
            "Dead letters deleted by retention (age or the total bound), oldest first.",
            value=stats["dead_letters_expired"])
        yield CounterMetricFamily("touchstream_snapshots", "Engine snapshots written.",
                                  value=stats["snapshots"])
        yield GaugeMetricFamily("touchstream_log_rows",
                                "Rows in the command log since the last snapshot.",
                                value=stats["log_rows"])


MAINTAIN_EVERY = 60.0
"""Seconds between the runner's retention checks when no write comes."""


async def maintain(runner: EmbeddedRunner, every: float = MAINTAIN_EVERY) -> None:
    """Apply the retention every ``every`` seconds, writes or not (a failure is logged)."""
    while True:
        await asyncio.sleep(every)
        try:
            await runner.maintain()
        except Exception:  # the next round retries; serving goes on
            log.exception("retention check failed")


async def run(settings: Settings, simulate: float = 0.0, drops: Sequence[Drop] = (),
              history: timedelta = timedelta(hours=24), *,
              config: EngineConfig | None = None,
              detection: DetectionConfig | None = None) -> None:
    """Bind the address, open the state, serve until SIGINT/SIGTERM, then drain and close.

    The address is bound first, so a port in use fails before any state is touched, and
    "serving" is logged only once the server accepts connections. uvicorn stops
    accepting, finishes in-flight requests and runs the app's shutdown, which closes
    the runner (final snapshot), so the next start replays nothing. The process then
    exits by the signal it got, as uvicorn re-raises it. With ``simulate``, ``/readyz``
    answers 503 until the simulated history is loaded.
    """
    sock = bind(settings.host, settings.port)
    try:
        try:
            settings = with_development_key(settings)
        except OSError as exc:  # the data directory cannot hold the key
            raise storage_error(settings.data_dir, exc.strerror or str(exc)) from exc
        config = config if config is not None else settings.load_engine_config()
        if detection is None:
            detection = settings.load_detection_config(config)
        try:
            runner = embedded_runner(settings, config, detection)
            await asyncio.to_thread(runner.open)
        except StorageError as exc:
            raise storage_error(exc.path, exc.reason) from exc
        await _serve(settings, runner, config, sock, simulate, list(drops), history)
    finally:
        sock.close()


async def _serve(settings: Settings, runner: EmbeddedRunner, config: EngineConfig,
                 sock: socket.socket, simulate: float, drops: list[Drop],
                 history: timedelta) -> None:
    feed: asyncio.Task[None] | None = None
    upkeep = asyncio.create_task(maintain(runner))

    async def shutdown() -> None:
        # Stop the simulated feed and the upkeep first, then close the state (final
        # snapshot).
        for task in (feed, upkeep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.to_thread(runner.close)

    try:
        app = create_app(settings, runner, config, on_shutdown=shutdown)
        app.state.registry.register(StorageCollector(runner))
        server = uvicorn.Server(uvicorn.Config(
            app, log_level="info", proxy_headers=False, server_header=False,
        ))
        if simulate > 0:
            app.state.loading = (f"loading {format_duration(history)} of simulated history"
                                 if history > timedelta(0) else None)
            feed = asyncio.create_task(demo_feed(
                runner, simulate, drops, history,
                on_history=lambda: setattr(app.state, "loading", None)))

            def stopped(task: asyncio.Task[None]) -> None:
                if task.cancelled() or task.exception() is None:
                    return
                log.error("simulated traffic stopped: %r", task.exception())
                if app.state.loading:  # /readyz tells why it will never be ready
                    app.state.loading = f"simulated history failed: {task.exception()!r}"

            feed.add_done_callback(stopped)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            host, port = sock.getsockname()[:2]
            log.info("touchstream serving on http://%s:%d (docs at /docs, data in %s%s)",
                     host, port, settings.data_dir,
                     "; ready once the simulated history is loaded" if simulate > 0 else "")
        await serving
    finally:
        upkeep.cancel()
        await asyncio.to_thread(runner.close)  # idempotent; the app's shutdown closed it


def serve(settings: Settings, simulate: float = 0.0, drops: Sequence[Drop] = (),
          history: timedelta = timedelta(hours=24), *,
          config: EngineConfig | None = None,
          detection: DetectionConfig | None = None) -> None:
    """Blocking entry point for the CLI."""
    asyncio.run(run(settings, simulate, drops, history, config=config, detection=detection))
