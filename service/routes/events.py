"""HTTP ingestion: one event or a batch, validated, acknowledged only once durable."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any, Literal, NoReturn

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from schemas import cloudevents
from schemas.decode import EventDecoder, EventError, Problem
from service.deps import ReadKey, RunnerDep, SettingsDep, WriteKey
from streams.deadletters import BodyItems, reencoded, split_body
from streams.runner import EventOutcome

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


class EventProblem(BaseModel):
    """One problem of a rejected event."""

    field: str = Field(description="Dotted path of the offending field (`$` for the whole "
                                   "event).", examples=["value"])
    reason: str = Field(description="What is wrong with it.",
                        examples=["Expected `int` <= 5"])


class EventResult(BaseModel):
    """What became of one submitted event."""

    index: int = Field(description="Its position in the submitted batch.")
    status: Literal["accepted", "duplicate", "late", "rejected"]
    event_id: str | None = Field(description="Its `event_id`, when it has one.")
    field: str | None = Field(description="`rejected`: the field of the first problem; "
                                          "`late`: `occurred_at`; otherwise null.")
    reason: str | None = Field(description="`rejected`: the reason of the first problem; "
                                           "`late`: why it is late; otherwise null.")
    problems: list[EventProblem] = Field(
        default_factory=list,
        description="`rejected` only: every problem of the event, in the schema's field "
                    "order (checks against the clock last); the first is `field` and "
                    "`reason`. Absent on other results.")


class EventsAnswer(BaseModel):
    """Counts by outcome, and one result per submitted event in submission order."""

    mode: Literal["live", "backfill"] = Field(description="How the batch was counted.")
    accepted: int
    duplicates: int
    late: int = Field(description="Live: older than the lateness horizon; backfill: older "
                                  "than anything the state keeps (too old). Kept with "
                                  "the reason, not counted.")
    rejected: int
    results: list[EventResult]


Mode = Annotated[Literal["live", "backfill"], Query(
    description="`live` (default): answers count up to the lateness horizon and may page. "
                "`backfill`: history loaded on purpose — counted in every window and "
                "calendar period the state still keeps (however old; older is `late`, "
                "too old), in customer histories and pulse baselines; opens no "
                "follow-up and never pages.")]


_DECODER = EventDecoder()
"""Finds every problem of an event the runner rejected (the runners keep the first)."""


def _problems(item: Any, outcome: EventOutcome) -> list[dict[str, str]]:
    """Every problem of a rejected item, the runner's own (its field and reason) first."""
    first: Problem = (outcome.field or "$", outcome.reason or "rejected")
    try:
        _DECODER.convert(item)
        found: tuple[Problem, ...] = ()
    except EventError as exc:
        found = exc.problems
    if not found or found[0] != first:  # another clock or limits than the runner's
        found = (first, *(p for p in found if p[0] != first[0]))
    return [{"field": field, "reason": reason} for field, reason in found]


def _results(items: list[Any], outcomes: list[EventOutcome]) -> list[dict[str, Any]]:
    """The answer's ``results``: rejected events with every problem they have."""
    results: list[dict[str, Any]] = []
    for o in outcomes:
        result: dict[str, Any] = {"index": o.index, "status": o.status,
                                  "event_id": o.event_id, "field": o.field,
                                  "reason": o.reason}
        if o.status == "rejected":
            result["problems"] = _problems(items[o.index], o)
        results.append(result)
    return results


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
             responses={200: {"model": EventsAnswer, "description": "One result per event"},
                        400: {"description": "Not JSON, or not an event batch"},
                        413: {"description": "Body or batch too large"}})
async def post_events(request: Request, runner: RunnerDep, settings: SettingsDep,
                      _: WriteKey, mode: Mode = "live") -> Response:
    """Validate and ingest events; idempotent on ``event_id``.

    Answers once every accepted event is durable, with one result per event in
    submission order: ``accepted``, ``duplicate`` (already counted), ``late`` (kept
    with its reason, not counted) or ``rejected`` (with every problem of the event in
    ``problems``, the first one also as ``field`` and ``reason``).
    """
    body = await request.body()
    backfill = mode == "backfill"
    binding = _cloudevents_mode(request)
    if binding is not None:
        return await _post_cloudevents(request, runner, settings.max_batch, body, binding,
                                       backfill)
    try:
        items = _items(body, settings.max_batch)
    except HTTPException as exc:
        if exc.status_code == 400:  # a body that holds no events is one rejection, kept
            detail: dict[str, Any] = exc.detail if isinstance(exc.detail, dict) else {}
            await _refuse(request, runner, body, str(detail.get("field", "$")),
                          str(detail.get("reason", "not an event batch")))
        raise
    outcomes = await runner.submit(items, BodyItems(body, items),  # dead letters: as sent
                                   backfill=backfill)
    counts = Counter(o.status for o in outcomes)
    # (finding every problem of many rejects takes a while: not on the event loop)
    results = (await asyncio.to_thread(_results, items, outcomes)
               if counts["rejected"] else _results(items, outcomes))
    return _answer(request, counts, results, mode)


def _answer(request: Request, counts: Counter[Any], results: list[dict[str, Any]],
            mode: str) -> Response:
    """Counts by outcome and one result per event, counted in the metrics. Documented by
    EventsAnswer, written as it is (validating 10,000 results against the model would
    cost more than ingesting them)."""
    request.app.state.metrics.observe_outcomes(counts)
    answer = {"mode": mode, "accepted": counts["accepted"], "duplicates": counts["duplicate"],
              "late": counts["late"], "rejected": counts["rejected"], "results": results}
    return Response(orjson.dumps(answer), media_type="application/json")


def _cloudevents_mode(request: Request) -> str | None:
    """``structured``, ``batch`` or ``binary`` for a CloudEvents request, else None."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == cloudevents.STRUCTURED:
        return "structured"
    if media == cloudevents.BATCH:
        return "batch"
    if "ce-specversion" in request.headers:
        return "binary"
    return None


async def _refuse(request: Request, runner: Any, body: bytes, field: str,
                  reason: str) -> NoReturn:
    """A body that holds no event: one rejection, kept as a dead letter, then 400."""
    request.app.state.metrics.observe_outcomes(Counter(rejected=1))
    await runner.dead_letter(body, field, reason)
    raise HTTPException(400, detail={"field": field, "reason": reason})


async def _post_cloudevents(request: Request, runner: Any, max_batch: int, body: bytes,
                            mode: str, backfill: bool) -> Response:
    """The HTTP binding of CloudEvents: each event mapped to the contract
    (``schemas.cloudevents``), then ingested as any other. One CloudEvent that is not
    counted answers 400 with the field and the reason; a batch answers per event."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        await _refuse(request, runner, body, "$" if mode != "binary" else "data",
                      f"not valid JSON ({exc})")
    if mode == "batch":
        if not isinstance(parsed, list):
            await _refuse(request, runner, body, "$", "a CloudEvents batch is a JSON array")
        if len(parsed) > max_batch:
            raise HTTPException(413, detail={"field": "$", "reason": f"{len(parsed)} events; "
                                             f"at most {max_batch} per request"})
        envelopes: list[Any] = parsed
        raws = split_body(body, len(parsed)) or [reencoded(e) for e in parsed]
    else:
        envelopes, raws = [parsed], [body]
    mapped: list[dict[str, Any] | EventError] = []
    for envelope in envelopes:
        try:
            mapped.append(cloudevents.to_event(
                cloudevents.binary_attributes(request.headers, "ce-"), envelope)
                if mode == "binary" else cloudevents.from_structured(envelope))
        except EventError as exc:
            mapped.append(exc)
    good = [i for i, m in enumerate(mapped) if not isinstance(m, EventError)]
    items = [mapped[i] for i in good]
    outcomes_of_good = (await runner.submit(items, lambda j: raws[good[j]], backfill=backfill)
                        if good else [])
    outcomes: list[EventOutcome] = [
        EventOutcome(i, "rejected", None, m.field, m.reason) if isinstance(m, EventError)
        else EventOutcome(i, "rejected") for i, m in enumerate(mapped)]
    for j, outcome in enumerate(outcomes_of_good):
        i = good[j]
        outcomes[i] = EventOutcome(i, outcome.status, outcome.event_id, outcome.field,
                                   outcome.reason)
    for i, m in enumerate(mapped):  # refused by the envelope: kept as sent
        if isinstance(m, EventError):
            await runner.dead_letter(raws[i], m.field, m.reason)
    counts = Counter(o.status for o in outcomes)
    results = _results([m if not isinstance(m, EventError) else envelopes[i]
                        for i, m in enumerate(mapped)], outcomes)
    for i, m in enumerate(mapped):
        if isinstance(m, EventError):
            results[i]["problems"] = [{"field": f, "reason": r} for f, r in m.problems]
    if mode != "batch" and outcomes[0].status == "rejected":
        request.app.state.metrics.observe_outcomes(counts)
        result = results[0]
        raise HTTPException(400, detail={"field": result["field"], "reason": result["reason"],
                                         "problems": result["problems"]})
    return _answer(request, counts, results, "backfill" if backfill else "live")


class DeadLetterSource(BaseModel):
    """Where a dead letter came from; every key present, null where it does not apply."""

    topic: str | None = Field(description="`http` for what came in over HTTP (embedded "
                                          "runner; the API on Kafka), else the Kafka input "
                                          "topic.")
    partition: int | None = Field(description="Kafka input partition.")
    offset: int | None = Field(description="Kafka input offset.")
    index: int | None = Field(description="The event's position in its HTTP batch (null "
                                          "for a body refused whole and Kafka records).")


class DeadLetter(BaseModel):
    """One dead letter: the same fields and words on both runners
    (`streams/deadletters.py`)."""

    kind: Literal["invalid", "late", "bad_body", "bad_command"] = Field(
        description="`invalid`: an event that failed validation; `late`: older than the "
                    "watermark minus the allowed lateness (kept, not counted); `bad_body`: "
                    "an HTTP body refused whole (400); `bad_command`: a control record "
                    "that cannot apply (Kafka).")
    field: str | None = Field(description="The offending field (`$`: the whole).")
    reason: str | None = Field(description="Why, as the POST answer said it.")
    received_at: str = Field(description="When it was received, ISO-8601 UTC.")
    source: DeadLetterSource
    size: int = Field(description="Bytes of the whole original payload.")
    sha256: str = Field(description="Hex SHA-256 of the whole original payload.")
    truncated: bool = Field(description="Whether `payload` holds less than `size` bytes.")
    payload: str = Field(description="The original bytes as received (an event in a batch: "
                                     "its own bytes in the body), the first "
                                     "`dead_letter_max_bytes` of them, as UTF-8 text "
                                     "(U+FFFD for bytes that are not UTF-8).")
    payload_base64: str | None = Field(description="The same bytes in base64 when "
                                                   "`payload` is not exact, else null.")


class DeadLetters(BaseModel):
    """A page of dead letters, newest first."""

    items: list[DeadLetter]
    limit: int
    offset: int


@router.get("/dead-letters", response_model=DeadLetters)
async def dead_letters(
    runner: RunnerDep,
    _: ReadKey,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Rejected and late events and refused bodies, newest first: kind, field, reason,
    when and where received, size and SHA-256 of the original bytes and the bytes
    themselves (capped at `dead_letter_max_bytes`)."""
    items = await runner.dead_letters(limit, offset)
    return {"items": items, "limit": limit, "offset": offset}
