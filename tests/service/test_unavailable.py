"""A runner that cannot serve now: 503 with ``Retry-After``, on both runners.

The embedded runner over a closed store, the Kafka runner constructed but not started
(no broker is asked): every kind of request answers 503, ``Retry-After`` and the error
body ``{"detail": {"field": "$", "reason": ...}}``; ``/readyz`` says why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import ADMIN, CONFIG, auth, event

from deploy.kafka.broker import free_port
from service.app import create_app
from service.settings import Settings
from streams.embedded import EmbeddedRunner, StorageError
from streams.runner import RETRY_AFTER, RunnerUnavailable
from streams.worker.reader import ScoresReader
from streams.worker.runner import KafkaRunner
from streams.worker.settings import WorkerSettings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, api_keys=SecretStr(f"boss:admin+read+write:{ADMIN}"),
                    metrics_refresh_seconds=3600)


async def answers(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t",
            headers=auth(ADMIN)) as client:
        yield client


async def assert_unavailable(client: httpx.AsyncClient, reason_starts: str) -> None:
    requests = [client.post("/v1/events", json=[event(1)]),
                client.post("/v1/events", content=b"not json",
                            headers={"Content-Type": "application/json"}),
                client.get("/v1/scores", params={"window": "1h"}),
                client.get("/v1/customers/cus-1"),
                client.get("/v1/alerts"),
                client.get("/v1/dead-letters")]
    for request in requests:
        response = await request
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["Retry-After"] == str(RETRY_AFTER)
        detail = response.json()["detail"]
        assert detail["field"] == "$"
        assert detail["reason"].startswith(reason_starts), detail
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not ready"


async def test_a_closed_store_answers_503_with_retry_after(settings: Settings) -> None:
    runner = EmbeddedRunner(settings.data_dir, CONFIG)
    await runner.__aenter__()
    app = create_app(settings, runner, CONFIG, CollectorRegistry())
    await runner.__aexit__(None, None, None)  # closed under a serving app
    async for client in answers(app):
        await assert_unavailable(client, "storage unavailable: ")
        body = (await client.get("/v1/scores", params={"window": "1h"})).json()
        assert str(settings.data_dir) not in body["detail"]["reason"]  # no path to clients


async def test_a_kafka_runner_that_is_not_ready_answers_503_with_retry_after(
        settings: Settings, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # never asked: the runner is not started
    runner = KafkaRunner(WorkerSettings(kafka_bootstrap=nowhere, state_dir=tmp_path / "w"))
    app = create_app(settings, runner, runner.config, CollectorRegistry())
    async for client in answers(app):
        await assert_unavailable(client, "Kafka unavailable: the runner is not ready")
        assert (await client.get("/readyz")).json()["reason"] == "not started"


def test_storage_errors_are_runner_unavailable_and_name_the_path_in_their_text(
        tmp_path: Path) -> None:
    error = StorageError(tmp_path, "the disk is full")
    assert isinstance(error, RunnerUnavailable) and isinstance(error, RuntimeError)
    assert str(error) == f"touchstream storage at {tmp_path}: the disk is full"
    assert (error.answer, error.retry_after) == ("storage unavailable: the disk is full",
                                                 RETRY_AFTER)


def test_a_failed_reader_makes_the_merged_view_unavailable() -> None:
    reader = ScoresReader(["127.0.0.1:1"], "partials", CONFIG)
    reader._error = ConnectionError("broker gone")  # what its background loop records
    with pytest.raises(RunnerUnavailable, match="broker gone") as failed:
        reader.engine()
    assert failed.value.answer.startswith("merged view unavailable: the reader of")
