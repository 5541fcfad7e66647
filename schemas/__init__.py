"""The touchstream event contract: models, decoding, and the published JSON Schema."""

from schemas.decode import EventDecoder, EventError, TimeLimits, encode
from schemas.event import (
    CLOUDEVENT_TYPE,
    KINDS,
    OUTCOMES,
    SCHEMA_VERSION,
    STAGES,
    Ces,
    Csat,
    Nps,
    Outcome,
    Rating,
    Sentiment,
    TouchpointEvent,
    to_cloudevent,
)

__all__ = [
    "CLOUDEVENT_TYPE",
    "KINDS",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "STAGES",
    "Ces",
    "Csat",
    "EventDecoder",
    "EventError",
    "Nps",
    "Outcome",
    "Rating",
    "Sentiment",
    "TimeLimits",
    "TouchpointEvent",
    "encode",
    "to_cloudevent",
]
