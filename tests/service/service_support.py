"""Constants and helpers shared by the service tests (a uniquely named module, so
that ``from service_support import ...`` never picks up another directory's conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
