"""Fixtures for the fault tests: a real app over a real embedded runner in a temp dir.

Copied from tests/service/conftest.py on purpose (test directories do not import each
other); the helpers live in ``faults_support`` so their module name is unique.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from faults_support import ADMIN, CONFIG, READ, WRITE
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The shipped caps (10,000 events, 8 MiB) so the tests probe what users get.
    return Settings(
        data_dir=tmp_path / "data",
        api_keys=SecretStr(f"reader:read:{READ},writer:write+read:{WRITE},"
                           f"boss:admin+read+write:{ADMIN}"),
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
