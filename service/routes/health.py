"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import RunnerDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: answers while the process serves requests; checks nothing external."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready, with the reason"}})
async def readyz(runner: RunnerDep) -> JSONResponse:
    """Ready: state recovered and the store or broker reachable."""
    ok, reason = await runner.ready()
    return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason},
                        status_code=200 if ok else 503)
