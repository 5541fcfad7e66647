"""One dead-letter contract on both runners (streams/deadletters.py).

The same bad input goes to the embedded runner's API and to the Kafka runner's API (a
real worker process behind it, against the session broker): invalid events of several
kinds, a late event, text in Icelandic, Persian and Greek, an event over the payload cap
and a body refused whole with bytes that are not UTF-8. ``GET /v1/dead-letters`` must
answer the same dead letters on both, field by field — kind, field, reason, size,
sha256, payload, payload_base64, truncated — each payload the event's own bytes as they
stood in the body (or their first ``dead_letter_max_bytes``); ``source`` differs by
runner only where the late event came from (the HTTP batch on one, the input topic on
the other) and is checked for shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from worker_support import TEST_CONFIG, Workers, worker_settings, write_config

from service.app import create_app
from service.settings import Settings
from streams.deadletters import KINDS, payload_bytes, split_body
from streams.embedded import EmbeddedRunner
from streams.worker.runner import KafkaRunner
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow
KEY = "dead-letter-key-0123456789"
CAP = 1000  # dead_letter_max_bytes on both runners
SOURCE_KEYS = ["topic", "partition", "offset", "index"]
NOW = datetime.now(UTC)


def event(event_id: str, minutes_ago: float, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id,
            "occurred_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
            "customer_id": "c-1", "touchpoint": "support", "channel": "chat",
            "segment": "smb", "kind": "csat", "value": 4, **fields}


FIRST = orjson.dumps({"events": [event("w-1", 5)]})  # moves the watermark
# Written by hand: spaces, line breaks and raw (unescaped) non-ASCII text, as a client may.
BAD = b"".join([
    b'{"events": [\n  ',
    orjson.dumps(event("ice", 6, value=9, comment="Þjónustan var frábær, takk!")),
    b' ,\n  ',
    orjson.dumps({k: v for k, v in event(
        "fa", 6, comment="پشتیبانی عالی بود، ممنون").items() if k != "customer_id"},
        option=orjson.OPT_INDENT_2),
    b',\n  ',
    orjson.dumps(event("el", 6, kind="mood", comment="Η εξυπηρέτηση ήταν εξαιρετική")),
    b',\n  ',
    orjson.dumps(event("late", 40 * 24 * 60, comment="Seint — دیر — αργά")),  # 40 days behind
    b',\n  ',
    orjson.dumps(event("big", 6, comment="Ευχαριστώ πολύ! " * 300)),  # over 4000 and CAP
    b',\n  ',
    orjson.dumps(event("ok", 4)),
    b"\n]}",
])
NOT_JSON = b'csat=5&comment=caf\xe9 \xff\xfe'  # Latin-1 bytes: not UTF-8, not JSON


async def post_all(client: httpx.AsyncClient, wait_first: Any = None) -> None:
    headers = {"Content-Type": "application/json"}
    answer = (await client.post("/v1/events", content=FIRST, headers=headers)).json()
    assert answer["accepted"] == 1, answer
    if wait_first is not None:
        await wait_first()
    answer = (await client.post("/v1/events", content=BAD, headers=headers)).json()
    statuses = [r["status"] for r in answer["results"]]
    assert statuses[:3] == ["rejected"] * 3 and statuses[4:] == ["rejected", "accepted"]
    assert (await client.post("/v1/events", content=NOT_JSON, headers=headers)
            ).status_code == 400


def key(letter: dict[str, Any]) -> tuple[str, str, str]:
    return (letter["kind"], letter["field"] or "", letter["sha256"])


def check_contract(letters: list[dict[str, Any]]) -> None:
    """Every letter: the contract's fields, and its payload the bytes as sent."""
    sent = split_body(BAD, 6)
    assert sent is not None
    originals = {hashlib.sha256(b).hexdigest(): b for b in [*sent, NOT_JSON]}
    for got in letters:
        assert list(got) == ["kind", "field", "reason", "received_at", "source", "size",
                             "sha256", "truncated", "payload", "payload_base64"]
        assert got["kind"] in KINDS and list(got["source"]) == SOURCE_KEYS
        assert datetime.fromisoformat(got["received_at"]).utcoffset() == timedelta(0)
        original = originals[got["sha256"]]  # the digest of exactly what was sent
        assert got["size"] == len(original)
        assert payload_bytes(got) == original[:CAP]
        assert got["truncated"] == (len(original) > CAP)


async def test_both_runners_keep_the_same_dead_letters(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "api", api_keys=SecretStr(f"ops:read+write:{KEY}"),
                        dead_letter_max_bytes=CAP)
    auth = {"Authorization": f"Bearer {KEY}"}

    # -- embedded --------------------------------------------------------------------
    with EmbeddedRunner(tmp_path / "embedded", TEST_CONFIG,
                        dead_letter_max_bytes=settings.dead_letter_max_bytes) as embedded:
        app = create_app(settings, embedded, TEST_CONFIG, CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t", headers=auth) as client:
            await post_all(client)
            mine = (await client.get("/v1/dead-letters")).json()["items"]

    # -- Kafka -----------------------------------------------------------------------
    name = f"dlc-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    worker = worker_settings(kafka_bootstrap, name, tmp_path / "w",
                             input_topic=f"{name}-touchpoints", partitions=1,
                             engine_config=config_path, dead_letter_max_bytes=CAP)
    ensure_topics(worker)
    workers = Workers(tmp_path)
    try:
        workers.start("w1", worker, config_path)
        kafka = KafkaRunner(worker)
        await kafka.start()
        try:
            app = create_app(settings, kafka, TEST_CONFIG, CollectorRegistry())
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://t", headers=auth) as client:

                async def counted(n: int) -> None:
                    deadline = time.monotonic() + 90
                    while kafka.reader.counters().get("accepted", 0) < n:
                        workers.check_alive()
                        assert time.monotonic() < deadline, workers.logs()
                        await asyncio.sleep(0.2)

                await post_all(client, lambda: counted(1))
                await counted(2)  # the batch after the late event is in the view
                theirs: list[dict[str, Any]] = []
                deadline = time.monotonic() + 60
                while len(theirs) < len(mine):
                    assert time.monotonic() < deadline, (theirs, workers.logs())
                    await asyncio.sleep(0.5)
                    theirs = (await client.get("/v1/dead-letters")).json()["items"]
        finally:
            await kafka.stop()
        assert workers.all[0].terminate() == 0
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()

    # -- the same letters ------------------------------------------------------------
    assert sorted(d["kind"] for d in mine) == [
        "bad_body", "invalid", "invalid", "invalid", "invalid", "late"]
    check_contract(mine)
    check_contract(theirs)
    compared = ["kind", "field", "reason", "size", "sha256", "truncated", "payload",
                "payload_base64"]
    assert ([{k: d[k] for k in compared} for d in sorted(mine, key=key)]
            == [{k: d[k] for k in compared} for d in sorted(theirs, key=key)])
    by_kind = {(d["kind"], d["source"]["index"]): d for d in mine}
    assert set(by_kind) == {("bad_body", None), ("invalid", 0), ("invalid", 1),
                            ("invalid", 2), ("late", 3), ("invalid", 4)}
    assert by_kind[("invalid", 4)]["truncated"]
    assert by_kind[("bad_body", None)]["payload_base64"] is not None  # not UTF-8
    for d in mine:  # everything came in over HTTP
        assert d["source"] == {"topic": "http", "partition": None, "offset": None,
                               "index": d["source"]["index"]}
    for d in theirs:
        if d["kind"] == "late":  # the worker's: where it sits in the input topic
            assert d["source"]["topic"] == worker.topic_touchpoints
            assert d["source"]["partition"] == 0 and isinstance(d["source"]["offset"], int)
            assert d["source"]["index"] is None
        else:  # the API's: the batch position, as on the embedded runner
            mirror = next(m for m in mine if key(m) == key(d))
            assert d["source"] == mirror["source"]
