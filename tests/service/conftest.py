"""A real app over a real embedded runner (SQLite in a temp dir), driven in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import ADMIN, CONFIG, READ, WRITE, auth, event  # noqa: F401

from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        api_keys=SecretStr(f"reader:read:{READ},writer:write+read:{WRITE},"
                           f"boss:admin+read+write:{ADMIN}"),
        max_batch=500,
        max_body_bytes=256 * 1024,
    )


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[EmbeddedRunner]:
    async with EmbeddedRunner(settings.data_dir, CONFIG) as r:
        yield r


@pytest.fixture
def app(settings: Settings, runner: EmbeddedRunner) -> FastAPI:
    return create_app(settings, runner, CONFIG, CollectorRegistry())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://touchstream.test"
    ) as c:
        yield c
