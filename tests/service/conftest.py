"""A real app over a real embedded runner (SQLite in a temp dir), driven in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig, Target

READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

CONFIG = EngineConfig(
    scopes=((), ("channel",), ("segment",), ("channel", "segment")),
    targets=(Target(metric="csat", value=0.8), Target(metric="csat", value=0.9,
                                                      segment="enterprise")),
)


def event(i: int, **fields: Any) -> dict[str, Any]:
    """A valid event, ``i`` seconds after NOW, with overrides."""
    base: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "occurred_at": (NOW + timedelta(seconds=i)).isoformat(),
        "customer_id": f"cus-{i % 7}",
        "touchpoint": "support",
        "channel": "chat",
        "segment": "enterprise",
        "kind": "csat",
        "value": 5 if i % 4 else 2,
    }
    base.update(fields)
    return base


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


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
