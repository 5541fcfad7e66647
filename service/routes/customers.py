"""Customers measured against their own history, and erased on request."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from service.deps import EraseKey, IdPath, ReadKey, RunnerDep, SettingsDep
from service.views import customer_view
from streams.runner import ErasureRequest

router = APIRouter(prefix="/v1/customers", tags=["customers"])
audit = logging.getLogger("touchstream.audit")
"""The audit trail of erasures: one JSON line each (``digest``, ``by``, ``at``,
``state``, ``removed``), never the customer's id."""


@router.get("/{customer_id}", responses={404: {"description": "Never seen"}})
async def get_customer(customer_id: IdPath, runner: RunnerDep, _: ReadKey) -> dict[str, Any]:
    """A customer's personal baseline, recent trend and at-risk flag (scores 0-100)."""
    found = await runner.read_state(customer_id,
                                    lambda engine: engine.customers.get(customer_id))
    if found is None:
        raise HTTPException(404, detail=f"customer {customer_id!r} has not been seen")
    return customer_view(found)


@router.delete("/{customer_id}", responses={
    200: {"description": "Erased: the audit record (digest of the id, who, when, what went)"},
    202: {"description": "Erasure durable, not yet complete everywhere (`state`: "
                         "`erasing`): the runner finishes it in order"},
    403: {"description": "The key lacks the `erase` scope"}})
async def erase_customer(customer_id: IdPath, runner: RunnerDep, settings: SettingsDep,
                         key: EraseKey, response: Response) -> dict[str, Any]:
    """Erase a customer's data on request (GDPR Art. 17): their history and baseline,
    journeys, stored events and comments, and the personal fields of their follow-ups.
    Aggregates (counts, sums, every score) stay: they are anonymous.

    Needs the `erase` scope. Idempotent: erasing again (or a customer never seen)
    answers the same way, removing nothing more. The answer is the audit record, also
    logged (logger `touchstream.audit`): `digest` names the customer (HMAC-SHA256 under
    `TOUCHSTREAM_ERASURE_KEY`), never the id; `by` is the key's name, `at` when."""
    request = ErasureRequest.new(customer_id, key.name, settings.erasure_secret())
    report = await runner.erase_customer(request)
    record: dict[str, Any] = report.to_dict()
    audit.info("erasure %s", json.dumps(record, sort_keys=True))
    if report.state == "erasing":
        response.status_code = 202
    return record
