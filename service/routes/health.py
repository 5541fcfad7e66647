"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.deps import RunnerDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: answers while the process serves requests; checks nothing external."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready, with the reason"}})
async def readyz(request: Request, runner: RunnerDep) -> JSONResponse:
    """Ready: state recovered, the store or broker reachable, and (with ``serve
    --simulate``) the simulated history loaded, so that scores describe now."""
    ok, reason = await runner.ready()
    loading: str | None = getattr(request.app.state, "loading", None)
    if ok and loading:
        ok, reason = False, loading
    return JSONResponse({"status": "ready" if ok else "not ready", "reason": reason},
                        status_code=200 if ok else 503)
