"""Customers measured against their own history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from service.deps import IdPath, ReadKey, RunnerDep
from service.views import customer_view

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}", responses={404: {"description": "Never seen"}})
async def get_customer(customer_id: IdPath, runner: RunnerDep, _: ReadKey) -> dict[str, Any]:
    """A customer's personal baseline, recent trend and at-risk flag (scores 0-100)."""
    found = await runner.read_state(customer_id,
                                    lambda engine: engine.customers.get(customer_id))
    if found is None:
        raise HTTPException(404, detail=f"customer {customer_id!r} has not been seen")
    return customer_view(found)
