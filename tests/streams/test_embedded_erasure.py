"""Erasure on the embedded runner (issue 21), as an auditor checks it: through the API,
then every byte of the data directory (SQLite database, WAL, everything) is scanned for
the customer's id and comments. Scores stay as they were; the audit trail names the
customer by digest only; the erasure survives a restart and a crash."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from streams.detection import DetectionConfig, FollowUpRule
from streams.embedded import EmbeddedRunner
from tests.service.service_support import CONFIG, READ, WRITE, auth, event

ERASER = "erase-key-0123456789"
CUSTOMER = "kúnni-Þórunn-42"
OTHER = "cus-keep"
COMMENTS = ("Þjónustan var hræðileg, hringið í mig", "خدمات بسیار بد بود",
            "Η εξυπηρέτηση ήταν απαίσια")
DETECTION = DetectionConfig(followups=(FollowUpRule(name="unhappy",
                                                    condition="very_dissatisfied"),))


def needles() -> list[bytes]:
    """Every way the id or a comment could stand in a file: UTF-8 and JSON escapes."""
    out = []
    for text in (CUSTOMER, *COMMENTS):
        out += [text.encode(), orjson.dumps(text)[1:-1],
                json.dumps(text)[1:-1].encode("ascii")]
    return out


def found_in(directory: Path) -> list[str]:
    """Files under ``directory`` holding any needle, byte by byte."""
    hits = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.name}: {n!r}" for n in needles() if n in data]
    return hits


def traffic() -> list[dict[str, Any]]:
    ours = [event(i, event_id=f"erase-{i}", customer_id=CUSTOMER, value=1,
                  comment=COMMENTS[i % 3], journey_id="j-erase", journey_type="fix",
                  stage="respond")
            for i in range(6)]
    theirs = [event(100 + i, customer_id=OTHER if i % 2 else f"cus-{i}", value=1 + i % 5,
                    comment="fine") for i in range(30)]
    return ours + theirs


def settings_on(path: Path) -> Settings:
    return Settings(data_dir=path, api_keys=SecretStr(
        f"reader:read:{READ},writer:write+read:{WRITE},dpo:erase:{ERASER}"))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedRunner]]:
    settings = settings_on(tmp_path)
    async with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION,
                              snapshot_every=20) as runner:
        app: FastAPI = create_app(settings, runner, CONFIG, CollectorRegistry())
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client, runner


def url(customer_id: str) -> str:
    return "/v1/customers/" + httpx.URL(path=customer_id).raw_path.decode()


async def scores(client: httpx.AsyncClient) -> Any:
    answer = await client.get("/v1/scores?window=24h", headers=auth(READ))
    assert answer.status_code == 200
    body = answer.json()
    for item in body["items"]:
        item.pop("computed_at")  # wall-clock time of the answer, not of the data
    return body


async def test_no_byte_of_the_customer_is_left_and_scores_stay(
        served: tuple[httpx.AsyncClient, EmbeddedRunner], tmp_path: Path) -> None:
    client, runner = served
    posted = await client.post("/v1/events", json=traffic(), headers=auth(WRITE))
    assert posted.status_code == 200, posted.text
    # A dead letter that carries the id (an invalid value) and the comment.
    bad = event(50, event_id="erase-bad", customer_id=CUSTOMER, value=99,
                comment=COMMENTS[0])
    assert (await client.post("/v1/events", json=[bad], headers=auth(WRITE))).status_code \
        == 200
    assert runner.stats()["snapshots"] >= 1  # older snapshots hold the customer too
    assert found_in(tmp_path)  # the scan finds what is there (it can fail)
    assert (await client.get(url(CUSTOMER), headers=auth(READ))).status_code == 200
    followups = (await client.get("/v1/followups?limit=1000", headers=auth(READ))).json()
    assert any(f["customer_id"] == CUSTOMER for f in followups["items"])
    before = await scores(client)

    answer = await client.delete(url(CUSTOMER), headers=auth(ERASER))
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["state"] == "erased"
    assert record["removed"]["customers"] == 1 and record["removed"]["journeys"] == 1
    assert record["removed"]["followups"] == 6 and record["removed"]["dead_letters"] == 1
    assert CUSTOMER not in answer.text

    assert found_in(tmp_path) == []
    assert await scores(client) == before
    assert (await client.get(url(CUSTOMER), headers=auth(READ))).status_code == 404
    assert (await client.get(url(OTHER), headers=auth(READ))).status_code == 200
    followups = (await client.get("/v1/followups?limit=1000", headers=auth(READ))).json()
    assert len(followups["items"]) >= 6  # kept, anonymous
    assert not any(f["customer_id"] == CUSTOMER for f in followups["items"])
    (trail,) = runner.erasures()
    assert trail["digest"] == record["digest"] and trail["by"] == "dpo"

    # Idempotent: nothing more to remove, the trail grows.
    again = (await client.delete(url(CUSTOMER), headers=auth(ERASER))).json()
    assert again["digest"] == record["digest"]
    assert again["removed"] == {"customers": 0, "journeys": 0, "followups": 0,
                                "dead_letters": 0}
    assert len(runner.erasures()) == 2
    # Later traffic is unaffected and the directory stays clean.
    more = [event(200 + i, customer_id=OTHER, value=4) for i in range(5)]
    assert (await client.post("/v1/events", json=more, headers=auth(WRITE))).json()[
        "accepted"] == 5
    assert found_in(tmp_path) == []


def test_the_erasure_survives_a_restart_and_a_crash(tmp_path: Path) -> None:
    """Reopened (after close, and after a crash right after the erasure: no final
    snapshot), the customer is still gone and the scores are the same."""
    from schemas.decode import EventDecoder  # noqa: PLC0415
    from streams.runner import ErasureRequest  # noqa: PLC0415

    def state(runner: EmbeddedRunner) -> tuple[Any, ...]:
        return runner.read_blocking(lambda e: (
            e.customers.get(CUSTOMER), e.counters.copy(), e.watermark,
            e.journeys.summary()))

    items = traffic()
    runner = EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION, decoder=EventDecoder())
    runner.open()
    runner.submit_blocking(items)
    runner.erase_customer_blocking(ErasureRequest.new(CUSTOMER, "dpo", None))
    runner.submit_blocking([event(300, customer_id=CUSTOMER, value=5)])  # comes back
    after = state(runner)
    assert after[0] is not None and after[0]["signals"] == 1  # a new history: one answer
    runner._release()  # a crash: no final snapshot, the log holds the last batch
    del runner
    gc.collect()
    with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as again:
        assert state(again) == after
        assert len(again.erasures()) == 1
    with EmbeddedRunner(tmp_path, CONFIG, detection=DETECTION) as third:
        assert state(third) == after
