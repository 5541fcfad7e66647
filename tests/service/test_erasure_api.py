"""``DELETE /v1/customers/{id}`` (issue 21, item 1): the `erase` scope, the audit record
(digest, who, when; never the id), 200 or 202, idempotent. The runner here wraps the
real embedded runner with an erasure applied to an engine of its own, so the route is
tested apart from either runner's storage (the Kafka runner's own test:
tests/integration/test_erasure_kafka.py)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import ADMIN, CONFIG, READ, WRITE, auth, event

from schemas.decode import EventDecoder
from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner
from streams.engine.engine import Engine
from streams.runner import ERASE, ErasureReport, ErasureRequest, apply_command, encode_erase

ERASER = "erase-key-0123456789"
SECRET = "an-erasure-secret-of-some-length"  # noqa: S105 - a test key
CUSTOMER = "kúnni-Þórunn-42"


class ErasingRunner:
    """The embedded runner, and an erasure applied to ``engine``."""

    def __init__(self, inner: EmbeddedRunner, engine: Engine) -> None:
        self.inner = inner
        self.engine = engine
        self.state: Any = "erased"
        self.requests: list[ErasureRequest] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def erase_customer(self, request: ErasureRequest) -> ErasureReport:
        self.requests.append(request)
        removed = apply_command(self.engine, ERASE, encode_erase(request))
        assert removed is not None
        return ErasureReport.of(request, self.state, removed.as_dict())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, erasure_key=SecretStr(SECRET), api_keys=SecretStr(
        f"reader:read:{READ},writer:write+read:{WRITE},boss:admin+read+write:{ADMIN},"
        f"dpo:erase:{ERASER}"))


@pytest.fixture
async def runner(settings: Settings) -> AsyncIterator[ErasingRunner]:
    engine = Engine(CONFIG)
    decoder = EventDecoder()
    engine.ingest([decoder.convert(event(i, customer_id=CUSTOMER)) for i in range(3)])
    async with EmbeddedRunner(settings.data_dir, CONFIG) as inner:
        yield ErasingRunner(inner, engine)


@pytest.fixture
async def client(settings: Settings, runner: ErasingRunner) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings, runner, CONFIG, CollectorRegistry())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://touchstream.test") as c:
        yield c


def _url(customer_id: str) -> str:
    return "/v1/customers/" + httpx.URL(path=customer_id).raw_path.decode()


async def test_only_the_erase_scope_erases(client: httpx.AsyncClient,
                                           runner: ErasingRunner) -> None:
    assert (await client.delete(_url(CUSTOMER))).status_code == 401
    for key in (READ, WRITE, ADMIN):  # admin does not imply erase
        answer = await client.delete(_url(CUSTOMER), headers=auth(key))
        assert answer.status_code == 403, answer.text
        assert "erase" in answer.json()["detail"]
    assert runner.requests == []
    assert runner.engine.customers.get(CUSTOMER) is not None


async def test_the_answer_is_the_audit_record_and_names_no_id(
        client: httpx.AsyncClient, runner: ErasingRunner,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="touchstream.audit")
    answer = await client.delete(_url(CUSTOMER), headers=auth(ERASER))
    assert answer.status_code == 200, answer.text
    record = answer.json()
    want = hmac.new(SECRET.encode(), CUSTOMER.encode(), hashlib.sha256).hexdigest()
    assert record["digest"] == f"hmac-sha256:{want}"
    assert record["by"] == "dpo"
    assert record["state"] == "erased"
    assert record["removed"] == {"customers": 1, "journeys": 0}
    assert record["at"].endswith("+00:00")
    assert CUSTOMER not in answer.text and "Þórunn" not in answer.text
    (request,) = runner.requests
    assert request.customer_id == CUSTOMER and request.digest == record["digest"]
    assert runner.engine.customers.get(CUSTOMER) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "touchstream.audit"]
    assert len(lines) == 1 and want in lines[0] and "dpo" in lines[0]
    assert "Þórunn" not in lines[0] and CUSTOMER not in lines[0]

    # Idempotent: the same answer, nothing more removed; the digest is the same.
    again = await client.delete(_url(CUSTOMER), headers=auth(ERASER))
    assert again.status_code == 200
    assert again.json()["digest"] == record["digest"]
    assert again.json()["removed"] == {"customers": 0, "journeys": 0}
    never = await client.delete(_url("never-seen"), headers=auth(ERASER))
    assert never.status_code == 200 and never.json()["removed"]["customers"] == 0


async def test_an_erasure_not_yet_complete_is_202(client: httpx.AsyncClient,
                                                  runner: ErasingRunner) -> None:
    runner.state = "erasing"
    answer = await client.delete(_url(CUSTOMER), headers=auth(ERASER))
    assert answer.status_code == 202
    assert answer.json()["state"] == "erasing"


async def test_ids_are_checked_like_every_id(client: httpx.AsyncClient) -> None:
    answer = await client.delete(_url("x" * 129), headers=auth(ERASER))
    assert answer.status_code == 422
