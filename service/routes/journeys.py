"""Journeys: one customer story across channels and stages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from service.deps import IdPath, ReadKey, RunnerDep
from service.views import journey_view
from streams.engine.engine import Engine

router = APIRouter(prefix="/v1/journeys", tags=["journeys"])


@router.get("/{journey_id}", responses={404: {"description": "Unknown or expired"}})
async def get_journey(journey_id: IdPath, runner: RunnerDep, _: ReadKey) -> dict[str, Any]:
    """Channels, touchpoints, stages reached, duration and journey score (0-100)."""

    def find(engine: Engine) -> dict[str, Any] | None:
        journey = engine.journeys.get(journey_id)
        return None if journey is None else journey.view()

    found = await runner.read_state(None, find)
    if found is None:
        raise HTTPException(404, detail=f"journey {journey_id!r} is unknown or expired")
    return journey_view(found)
