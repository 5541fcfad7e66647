"""Shared helpers for tests/faults: valid events, keys, and reading /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import read_scoreboard
from streams.engine.config import EngineConfig, Target

READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
JSON = {"content-type": "application/json"}

CONFIG = EngineConfig(
    scopes=((), ("channel",), ("segment",), ("channel", "segment")),
    targets=(Target(metric="csat", value=0.8),),
)


def event(i: int, **fields: Any) -> dict[str, Any]:
    """A valid csat event, ``i`` seconds after NOW, with overrides."""
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


def auth(key: str = WRITE) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post_raw(client: httpx.AsyncClient, body: bytes, key: str = WRITE
                   ) -> httpx.Response:
    return await client.post("/v1/events", content=body, headers={**auth(key), **JSON})


async def metrics(client: httpx.AsyncClient, app: Any, runner: Any) -> dict[str, Any]:
    """Refresh the scoreboard now (not on the 5 s loop), then scrape /metrics."""
    app.state.metrics.board = await runner.read(
        lambda engine: read_scoreboard(engine, app.state.settings.metrics_windows))
    text = (await client.get("/metrics")).text
    return {f.name: f for f in text_string_to_metric_families(text)}


async def outcome_count(client: httpx.AsyncClient, app: Any, runner: Any,
                        outcome: str) -> float:
    families = await metrics(client, app, runner)
    return sum(s.value for s in families["touchstream_ingest_events"].samples
               if s.name == "touchstream_ingest_events_total"
               and s.labels["outcome"] == outcome)


async def still_serving(client: httpx.AsyncClient, i: int) -> None:
    """A good event is still accepted and scored."""
    good = event(i, event_id=f"after-{i}")
    response = await client.post("/v1/events", json=good, headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    scores = await client.get("/v1/scores?window=24h", headers=auth(READ))
    assert scores.status_code == 200
