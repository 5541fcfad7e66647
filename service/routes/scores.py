"""Live scores: by scope and window, against targets; and journeys by channel count."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from service.deps import ReadKey, RunnerDep, SettingsDep
from service.views import num, scope_score_view
from streams.engine.engine import Engine, ScopeScore, WindowRef

router = APIRouter(prefix="/v1/scores", tags=["scores"])

Dim = Annotated[str | None, Query(max_length=64)]


def _where(channel: Dim = None, touchpoint: Dim = None, segment: Dim = None,
           offering: Dim = None, journey_type: Dim = None, stage: Dim = None,
           owner: Dim = None, contact: Dim = None, program: Dim = None,
           source: Dim = None) -> dict[str, str]:
    """Dimension filters (``channel=chat&segment=enterprise``): the scope value picked."""
    return {k: v for k, v in {
        "channel": channel, "touchpoint": touchpoint, "segment": segment,
        "offering": offering, "journey_type": journey_type, "stage": stage,
        "owner": owner, "contact": contact, "program": program, "source": source,
    }.items() if v is not None}


Where = Annotated[dict[str, str], Depends(_where)]


@router.get("", responses={404: {"description": "No such window, or no such configured "
                                                 "scope"}})
async def list_scores(
    runner: RunnerDep,
    settings: SettingsDep,
    _: ReadKey,
    where: Where,
    family: Literal["continuous", "periodic", "pulse"] = "continuous",
    window: Annotated[str, Query(max_length=64, description="e.g. 15m, 1h, 24h, 7d, "
                                 "day, week, month, quarter; with family=pulse, a pulse "
                                 "study id")] = "1h",
    scope: Annotated[str | None, Query(
        max_length=200,
        description="List every value of a scope: dimensions, comma separated "
                    "(e.g. channel or channel,segment). Without it and without "
                    "dimension filters: the overall scope.")] = None,
    metric: Annotated[str | None, Query(max_length=32)] = None,
    period: Annotated[str | None, Query(
        max_length=16,
        description="With family=periodic: a past calendar period instead of the "
                    "current one, as the window's label names it (2026-01-31, "
                    "2026-W05, 2026-01, 2026-Q1), as long as the state keeps it")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Scores of one window with n, interval, target, gap, bounds and freshness.

    Filter by dimension values (``channel=chat&segment=enterprise`` picks that exact
    scope value) or list a whole scope (``scope=channel``). Pages with limit/offset.
    ``family=pulse&window=<study id>``: the study's scores per metric, its filter as the
    scope and its baseline as ``previous``.
    """
    dims = None if scope is None else tuple(d.strip() for d in scope.split(",") if d.strip())
    limit = min(limit, settings.max_page)

    if family == "pulse" and (where or dims):
        raise HTTPException(422, detail=[{  # shaped like every other 422
            "field": "scope" if dims else next(iter(where)),
            "reason": "a pulse study's filter is its scope: family=pulse takes no scope "
                      "or dimension filters"}])

    def query(engine: Engine) -> tuple[list[dict[str, Any]], int]:
        computed = time.time()
        if family == "pulse":
            found = _pulse_scores(engine, window, metric)
        else:
            found = engine.scores(family, window, where=where or None, scope=dims,
                                  metric=metric, period=period)
        page = found[offset : offset + limit]
        return [scope_score_view(s, computed) for s in page], len(found)

    try:
        items, total = await runner.read(query)
    except KeyError as exc:
        raise HTTPException(404, detail=str(exc.args[0])) from None
    following = offset + len(items)
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": following if following < total else None,
    }


@router.get("/series", responses={404: {"description": "No such step or configured scope, "
                                                    "or more points than one answer holds"}})
async def score_series(
    runner: RunnerDep,
    _: ReadKey,
    where: Where,
    step: Annotated[str, Query(max_length=16, description="1m, 1h (the sliding windows' "
                               "buckets), day, week, month or quarter")] = "1h",
    scope: Annotated[str | None, Query(max_length=200, description="List every value "
                                       "of a scope (e.g. channel)")] = None,
    metric: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339; default: the "
                                            "oldest bucket kept")] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive; default: "
                                            "now (the watermark)")] = None,
) -> dict[str, Any]:
    """A score's trend: per bucket of ``step``, its n and interval, over the kept range.

    The live page draws its trends from it. Filters and ``scope`` work as in
    ``GET /v1/scores``; buckets without answers are points with ``n`` 0 and no value.
    """
    dims = None if scope is None else tuple(d.strip() for d in scope.split(",") if d.strip())

    def seconds(at: datetime | None) -> int | None:
        if at is None:
            return None
        return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())

    def query(engine: Engine) -> list[dict[str, Any]]:
        found = engine.score_series(step, where=where or None, scope=dims, metric=metric,
                                    since=seconds(since), until=seconds(until))
        return [{
            "scope": s.scope,
            "metric": s.metric,
            "points": [{"start": start.isoformat().replace("+00:00", "Z"),
                        "end": end.isoformat().replace("+00:00", "Z"),
                        "value": num(sc.value), "n": sc.n, "low": num(sc.low),
                        "high": num(sc.high)} for start, end, sc in s.points],
        } for s in found]

    try:
        items = await runner.read(query)
    except KeyError as exc:
        raise HTTPException(404, detail=str(exc.args[0])) from None
    return {"step": step, "items": items}


def _pulse_scores(engine: Engine, pulse_id: str, metric: str | None) -> list[ScopeScore]:
    """A pulse study's results as scores of a ``pulse`` window against its baseline."""
    study = engine.pulses.get(pulse_id)
    if study is None:
        raise KeyError(f"no pulse study {pulse_id!r} (GET /v1/pulses lists them)")
    scope = {dim: ",".join(values) for dim, values in study.filter.items()}
    ref = WindowRef("pulse", pulse_id, datetime.fromtimestamp(study.start, UTC),
                    datetime.fromtimestamp(study.end, UTC), study.name)
    out = []
    for name, current, baseline in study.results():
        if metric is not None and name != metric:
            continue
        target = engine.target(name, scope)
        gap = None if target is None or current.n == 0 else current.value - target
        out.append(ScopeScore(scope, name, current, ref, target, gap, None, baseline))
    return out


@router.get("/journeys")
async def journey_scores(
    runner: RunnerDep,
    _: ReadKey,
    journey_type: Annotated[str, Query(max_length=64)] = "all",
) -> dict[str, Any]:
    """Ended journeys' scores (0-100) by number of channels used: 1, 2, 3, 4+."""

    def query(engine: Engine) -> dict[str, Any]:
        bands = engine.journeys.by_channel_count(journey_type)
        return {
            "journey_type": journey_type,
            "journey_types": engine.journeys.journey_types(),
            "open_journeys": engine.journeys.open_count,
            "by_channel_count": {
                band: {k: num(v) if isinstance(v, float) else v for k, v in stats.items()}
                for band, stats in bands.items()
            },
        }

    return await runner.read(query)
