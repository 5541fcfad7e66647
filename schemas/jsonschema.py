"""Generate the published JSON Schema from the event models.

Run ``python -m schemas.jsonschema`` after changing a model; a test fails while the
committed file and the models disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.cloudevents import MAPPING
from schemas.event import SCHEMA_VERSION, TouchpointEvent

SCHEMA_PATH = Path(__file__).with_name(f"touchpoint-event.v{SCHEMA_VERSION}.schema.json")


def build_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of one touchpoint event."""
    schema: dict[str, Any] = msgspec.json.schema(TouchpointEvent)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://touchstream.dev/schemas/touchpoint-event.v{SCHEMA_VERSION}.schema.json",
        "title": f"touchstream touchpoint event, version {SCHEMA_VERSION}",
        "description": MAPPING,
        **schema,
    }


def render_schema() -> str:
    """The schema as committed: sorted keys, two-space indent, trailing newline."""
    return json.dumps(build_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
