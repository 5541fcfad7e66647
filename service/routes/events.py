"""HTTP ingestion: one event or a batch, validated, acknowledged only once durable."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query, Request

from service.deps import ReadKey, RunnerDep, SettingsDep, WriteKey

router = APIRouter(prefix="/v1", tags=["events"])

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "description": "A batch {\"events\": [...]}, a JSON array of events, or one "
                           "event object (see schemas/touchpoint-event.v1.schema.json).",
            "oneOf": [
                {"type": "object", "required": ["events"],
                 "properties": {"events": {"type": "array", "items": {"type": "object"}}}},
                {"type": "array", "items": {"type": "object"}},
                {"type": "object", "required": ["event_id", "kind"],
                 "not": {"required": ["events"]}},
            ],
        }}},
    }
}


def _items(body: bytes, max_batch: int) -> list[Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, detail={"field": "$", "reason": f"not valid JSON ({exc})"}) \
            from None
    if isinstance(data, dict) and "events" in data:
        items = data["events"]
        if not isinstance(items, list):
            raise HTTPException(400, detail={"field": "events", "reason": "must be an array"})
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items = [data]
    else:
        raise HTTPException(400, detail={"field": "$",
                                         "reason": "expected an event, an array or {events}"})
    if len(items) > max_batch:
        raise HTTPException(413, detail={"field": "events",
                                         "reason": f"{len(items)} events; at most {max_batch} "
                                                   "per request"})
    return items


@router.post("/events", openapi_extra=_BODY_SCHEMA,
             responses={400: {"description": "Not JSON, or not an event batch"},
                        413: {"description": "Body or batch too large"}})
async def post_events(request: Request, runner: RunnerDep, settings: SettingsDep,
                      _: WriteKey) -> dict[str, Any]:
    """Validate and ingest events; idempotent on ``event_id``.

    Answers once every accepted event is durable, with one result per event in
    submission order: ``accepted``, ``duplicate`` (already counted), ``late`` (kept
    with its reason, not counted) or ``rejected`` (with the field and the reason).
    """
    body = await request.body()
    try:
        items = _items(body, settings.max_batch)
    except HTTPException as exc:
        if exc.status_code == 400:  # a body that holds no events is one rejection, kept
            request.app.state.metrics.observe_outcomes(Counter(rejected=1))
            detail: dict[str, Any] = exc.detail if isinstance(exc.detail, dict) else {}
            await runner.dead_letter(body, str(detail.get("field", "$")),
                                     str(detail.get("reason", "not an event batch")))
        raise
    outcomes = await runner.submit(items)
    counts = Counter(o.status for o in outcomes)
    request.app.state.metrics.observe_outcomes(counts)
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "late": counts["late"],
        "rejected": counts["rejected"],
        "results": [
            {"index": o.index, "status": o.status, "event_id": o.event_id,
             "field": o.field, "reason": o.reason}
            for o in outcomes
        ],
    }


@router.get("/dead-letters")
async def dead_letters(
    runner: RunnerDep,
    _: ReadKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Rejected and late events, newest first, with their reasons and original payload."""
    items = await runner.dead_letters(limit, offset)
    return {"items": items, "limit": limit, "offset": offset}
