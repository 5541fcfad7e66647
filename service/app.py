"""The FastAPI application: ``create_app(settings, runner)`` builds it; nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import KeyRing, require
from service.metrics import ServiceMetrics, read_alerts, read_scoreboard
from service.ratelimit import TokenBuckets
from service.routes import (
    alerts,
    customers,
    docs,
    events,
    health,
    journeys,
    pulses,
    scores,
    ui,
)
from service.settings import Settings
from streams.engine.config import EngineConfig
from streams.runner import Runner, RunnerUnavailable

log = logging.getLogger(__name__)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before reading them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = (b'{"detail":{"field":"$","reason":"request body over '
                + str(self.limit).encode() + b' bytes"}}')
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def _refresh_loop(app: FastAPI, runner: Runner, settings: Settings) -> None:
    metrics: ServiceMetrics = app.state.metrics
    while True:
        try:
            started = time.perf_counter()
            board = await runner.read(
                lambda engine: read_scoreboard(engine, settings.metrics_windows))
            await runner.read_detector(functools.partial(read_alerts, board=board))
            board.consumer_lag = await runner.consumer_lag()
            metrics.board = board
            metrics.refresh_seconds.observe(time.perf_counter() - started)
        except Exception:  # a failed refresh must not stop the exporter; it is logged
            log.exception("scoreboard refresh failed")
        await asyncio.sleep(settings.metrics_refresh_seconds)


_FIELD_ERROR: dict[str, Any] = {
    "title": "FieldError",
    "type": "object",
    "required": ["field", "reason"],
    "properties": {
        "field": {"type": "string", "description": "the offending field ($ for the body)"},
        "reason": {"type": "string", "description": "why it was refused"},
    },
}


def create_app(
    settings: Settings,
    runner: Runner,
    engine_config: EngineConfig,
    registry: CollectorRegistry | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The API over ``runner``; metrics go to ``registry`` (a fresh one by default).

    ``on_shutdown`` runs after the server has drained its requests, while the process
    is still ours: uvicorn re-raises SIGTERM once its shutdown completes, so closing
    the runner after ``serve()`` returns would be too late.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_refresh_loop(app, runner, settings))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if on_shutdown is not None:
                await on_shutdown()

    app = FastAPI(
        title="touchstream",
        version="0.1.0",
        summary="Live customer-experience monitoring: scores, journeys, customers, pulses.",
        lifespan=lifespan,
        docs_url=None,  # served from installed files by routes/docs.py, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runner = runner
    app.state.registry = registry or CollectorRegistry()
    app.state.metrics = service_metrics = ServiceMetrics(app.state.registry,
                                                         engine_config.scope_dimensions())
    app.state.keyring = KeyRing(
        settings.keys(), path=settings.api_keys_file,
        on_reload=lambda ok: service_metrics.key_reloads.labels("ok" if ok else "failed").inc())
    app.state.limiter = (TokenBuckets(settings.rate_limit, settings.rate_burst)
                         if settings.rate_limit > 0 else None)

    # Every route behind a key may also answer these (service/auth.py, the runner).
    behind_a_key: dict[int | str, dict[str, Any]] = {
        429: {"description": "The key is over its rate limit; `Retry-After` says when to "
                             "try again"},
        503: {"description": "The runner cannot serve now (storage, Kafka or the merged "
                             "view unavailable); `Retry-After` says when to try again"}}
    for module in (health, scores, journeys, customers, pulses, events, alerts, ui, docs):
        app.include_router(module.router, responses=None if module in (health, ui, docs)
                           else behind_a_key)

    metrics_deps = [] if settings.public_metrics else [Depends(require("read"))]

    @app.get("/metrics", tags=["health"], dependencies=metrics_deps,
             response_class=Response)
    async def metrics() -> Response:
        """Prometheus exposition: scores, alerts and pipeline health."""
        return Response(generate_latest(app.state.registry), media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, with 422 bodies as this app writes them: field + reason."""
        if app.openapi_schema is None:
            schema = default_openapi()
            schemas = schema.get("components", {}).get("schemas", {})
            if "ValidationError" in schemas:
                schemas["ValidationError"] = _FIELD_ERROR
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, Any]] = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "$",
             "reason": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(RunnerUnavailable)
    async def unavailable(request: Request, exc: RunnerUnavailable) -> JSONResponse:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": {"field": "$", "reason": exc.answer}},
                            status_code=503, headers={"Retry-After": str(exc.retry_after)})

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
