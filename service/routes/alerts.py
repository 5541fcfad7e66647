"""Alerts (drops, scores below target, drifts) and the follow-ups of the closed loop."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from service.deps import IdPath, ReadKey, RunnerDep, WriteKey
from streams.detection import Detector, FollowUpUpdate, detection_state

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


@router.get("/detection")
async def detection(
    runner: RunnerDep,
    _: ReadKey,
    rule: Filter = None,
    metric: Filter = None,
    holds: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    """Each series a sequential drop rule watches: its evidence so far (the CUSUM
    ``llr`` against its ``threshold``; ``evidence`` = their ratio, 1 pages), the drop
    size and start behind it, and ``decision_hours``, the time to a decision at the
    current volume if that drop is real and goes on. Closest to paging first.
    ``sequential_rules`` names the configured sequential drop rules (empty: every drop
    rule uses the window test, the default, and nothing is listed)."""
    config, restarts = await runner.read_detector(lambda d: (d.config, d.restarts()))
    items = await runner.read(lambda engine: detection_state(engine, config,
                                                             restarts=restarts))
    items = [i for i in items if (rule is None or i["rule"] == rule)
             and (metric is None or i["metric"] == metric)
             and (holds is None or i.get("holds", False) == holds)]
    items.sort(key=lambda i: -i.get("evidence", -1.0))
    return {"items": items[offset: offset + limit], "total": len(items), "limit": limit,
            "offset": offset,
            "sequential_rules": [r.name for r in config.drops if r.test == "sequential"]}


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


class CloseIn(BaseModel):
    """Closing a follow-up: what was done."""

    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=4000)


class AssignIn(BaseModel):
    """Assigning a follow-up to a person."""

    model_config = ConfigDict(extra="forbid")
    assignee: str = Field(min_length=1, max_length=128)
    note: str = Field(default="", max_length=4000)


_FOLLOWUP_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown follow-up"},
    409: {"description": "The follow-up is closed"},
}


async def _update(runner: RunnerDep, update: FollowUpUpdate) -> dict[str, Any]:
    try:
        item = await runner.update_followup(update)
    except KeyError:
        raise HTTPException(404, detail=f"follow-up {update.id!r} is unknown or expired") \
            from None
    except ValueError as exc:
        raise HTTPException(409, detail=str(exc)) from None
    return item.to_dict()


@router.post("/followups/{followup_id}/close", responses=_FOLLOWUP_ERRORS)
async def close_followup(followup_id: IdPath, body: CloseIn, runner: RunnerDep,
                         key: WriteKey) -> dict[str, Any]:
    """Close a follow-up with a note; who closed it is the calling key's name. Closing a
    closed follow-up changes nothing. It then leaves ``touchstream_followups_open``."""
    return await _update(runner, FollowUpUpdate(followup_id, "close", key.name, body.note,
                                                 int(time.time())))


@router.post("/followups/{followup_id}/assign", responses=_FOLLOWUP_ERRORS)
async def assign_followup(followup_id: IdPath, body: AssignIn, runner: RunnerDep,
                          key: WriteKey) -> dict[str, Any]:
    """Assign an open follow-up to a person, with a note; who assigned it is the calling
    key's name."""
    return await _update(runner, FollowUpUpdate(followup_id, "assign", key.name, body.note,
                                                int(time.time()), body.assignee))
