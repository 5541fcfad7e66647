"""Alerts (drops, scores below target, drifts) and the follow-ups of the closed loop."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from service.deps import IdPath, ReadKey, RunnerDep
from streams.engine.detect import Detector

router = APIRouter(prefix="/v1", tags=["alerts"])

Filter = Annotated[str | None, Query(max_length=64)]


@router.get("/alerts")
async def list_alerts(
    runner: RunnerDep,
    _: ReadKey,
    state: Literal["pending", "firing", "resolved"] | None = None,
    owner: Filter = None,
    severity: Filter = None,
    rule: Filter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Active and recent alerts, newest first; filter by state, owner, severity, rule."""

    def query(detector: Detector) -> list[dict[str, Any]]:
        found = detector.alerts.list(state=state, owner=owner, severity=severity, rule=rule)
        return [a.to_dict() for a in found]

    items = await runner.read_detector(query)
    page = items[offset: offset + limit]
    return {"items": page, "total": len(items), "limit": limit, "offset": offset}


@router.get("/alerts/{alert_id}", responses={404: {"description": "Unknown alert"}})
async def get_alert(alert_id: IdPath, runner: RunnerDep, _: ReadKey) -> dict[str, Any]:
    """One alert with its evidence: both windows' n and scores, the effect, p and q."""

    def query(detector: Detector) -> dict[str, Any] | None:
        found = detector.alerts.get(alert_id)
        return None if found is None else found.to_dict()

    alert = await runner.read_detector(query)
    if alert is None:
        raise HTTPException(404, detail=f"alert {alert_id!r} is unknown or expired")
    return alert


@router.get("/followups")
async def list_followups(
    runner: RunnerDep,
    _: ReadKey,
    status: Literal["open", "closed"] | None = None,
    owner: Filter = None,
    segment: Filter = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Single answers that need a human (detractors in key segments, unresolved
    contacts), each with an owner."""

    def query(detector: Detector) -> list[dict[str, Any]]:
        return [f.to_dict() for f in
                detector.followups.list(status=status, owner=owner, segment=segment)]

    items = await runner.read_detector(query)
    return {"items": items[offset: offset + limit], "total": len(items), "limit": limit,
            "offset": offset}
