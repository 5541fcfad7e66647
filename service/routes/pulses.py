"""Pulse studies: targeted, time-boxed measurements against a baseline."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from service.deps import AdminKey, IdPath, ReadKey, RunnerDep
from service.views import pulse_view
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError
from streams.runner import PulseRequest

router = APIRouter(prefix="/v1/pulses", tags=["pulses"])


class PulseIn(BaseModel):
    """A study to start: which events (filter), when, and the baseline to compare with."""

    model_config = ConfigDict(extra="forbid")

    pulse_id: Annotated[str, Field(min_length=1, max_length=64,
                                   pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    filter: dict[str, Annotated[list[Annotated[str, Field(max_length=64)]],
                                Field(min_length=1, max_length=100)]] = Field(
        default_factory=dict, max_length=10,
        examples=[{"segment": ["enterprise"], "channel": ["chat"]}])
    start: AwareDatetime
    end: AwareDatetime
    baseline_start: AwareDatetime
    baseline_end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> PulseIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.baseline_end <= self.baseline_start:
            raise ValueError("baseline_end must be after baseline_start")
        return self


def _seconds(at: datetime) -> int:
    return int(at.timestamp())


@router.post("", status_code=201, responses={
    202: {"description": "Started durably; not yet visible in the state the API reads"},
    409: {"description": "Id exists"}, 422: {"description": "Invalid study"}})
async def start_pulse(body: PulseIn, runner: RunnerDep, response: Response,
                      _: AdminKey) -> dict[str, Any]:
    """Start a study; it counts matching events inside its span and baseline span:
    those already in the state when its filter is a configured scope
    (``baseline_source``: ``state``), else only those that arrive from now on
    (``live only``, with ``baseline_note`` saying why)."""
    pulse_id = body.pulse_id or uuid.uuid4().hex[:12]
    request = PulseRequest(
        pulse_id, body.name, body.filter, _seconds(body.start), _seconds(body.end),
        _seconds(body.baseline_start), _seconds(body.baseline_end),
    )
    try:
        await runner.start_pulse(request)
    except PulseError as exc:
        error = {"field": exc.field, "reason": exc.reason}
        if exc.field == "pulse_id":
            raise HTTPException(409, detail=error) from None
        raise HTTPException(422, detail=[error]) from None  # shaped like every other 422
    found = await _find(runner, pulse_id)
    if found is None:
        # Durably started, not yet in the state the API reads (Kafka workers apply the
        # command when they reach it): say so rather than pretend it failed.
        response.status_code = 202
        return {"pulse_id": pulse_id, "name": body.name, "filter": body.filter,
                "start": body.start.isoformat(), "end": body.end.isoformat(),
                "baseline_start": body.baseline_start.isoformat(),
                "baseline_end": body.baseline_end.isoformat(), "state": "starting",
                "ended_at": None, "baseline_source": None,
                "baseline_note": "not applied yet: the workers have not reached the study",
                "study_source": None, "study_note": None, "counted": None, "results": []}
    return found


@router.get("")
async def list_pulses(
    runner: RunnerDep,
    _: ReadKey,
    state: Annotated[str | None, Query(pattern="^(running|ended)$")] = None,
) -> dict[str, Any]:
    """Every study, running and ended, with results."""

    def query(engine: Engine) -> list[dict[str, Any]]:
        return [pulse_view(p) for p in engine.pulses.values()]

    items = await runner.read(query)
    if state is not None:
        items = [p for p in items if p["state"] == state]
    return {"items": items, "total": len(items)}


async def _find(runner: Any, pulse_id: str) -> dict[str, Any] | None:
    def query(engine: Engine) -> dict[str, Any] | None:
        study = engine.pulses.get(pulse_id)
        return None if study is None else pulse_view(study)

    found: dict[str, Any] | None = await runner.read(query)
    return found


async def _get(runner: Any, pulse_id: str) -> dict[str, Any]:
    found = await _find(runner, pulse_id)
    if found is None:
        raise HTTPException(404, detail=f"pulse study {pulse_id!r} does not exist")
    return found


@router.get("/{pulse_id}", responses={404: {"description": "Unknown study"}})
async def get_pulse(pulse_id: IdPath, runner: RunnerDep, _: ReadKey) -> dict[str, Any]:
    """A study's results against its baseline, per metric."""
    return await _get(runner, pulse_id)


@router.delete("/{pulse_id}", responses={404: {"description": "Unknown study"}})
async def end_pulse(pulse_id: IdPath, runner: RunnerDep, _: AdminKey) -> dict[str, Any]:
    """End a study: it stops counting; its results stay readable."""
    try:
        await runner.end_pulse(pulse_id)
    except (KeyError, PulseError):
        raise HTTPException(404, detail=f"pulse study {pulse_id!r} does not exist") from None
    return await _get(runner, pulse_id)
