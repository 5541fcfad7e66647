"""Erasure on Kafka, as an auditor checks it (issue 21, item 1).

A real worker (``rocksdb://`` store) counts events of a customer with a distinctive id
and comment (non-ASCII); two of their answers are detractors, so they have follow-ups,
one closed by a person with a note naming them. ``DELETE /v1/customers/{id}`` on the API
(a ``KafkaRunner`` in this process) answers the audit record; then, once the worker has
checkpointed past the erasure and the broker's log cleaner has compacted the compacted
topics (their ``segment.ms``, ``min.cleanable.dirty.ratio``, ``delete.retention.ms`` and
``file.delete.delay.ms`` set small here, so the cleaner runs within its 15 s back-off),
every file of the worker's state directory and every log segment of the compacted
topics on the broker's data directory is scanned byte by byte: no byte of the id, the
comment or the note remains, and the scores are what they were.

The raw events stay on the input topic (a delete topic, never compacted) until its
retention (``TOUCHSTREAM_TOUCHPOINTS_RETENTION_MS``, 7 days) removes them; the dead-letter
topic likewise (30 days). Those are not scanned here: the README says so.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from worker_support import TEST_CONFIG, Workers, read_all, worker_settings, write_config

from deploy.kafka.broker import KafkaBroker
from service.app import create_app
from service.settings import Settings
from streams.runner import erasure_digest
from streams.worker.runner import KafkaRunner
from streams.worker.settings import WorkerSettings
from streams.worker.topics import ensure_topics, erasures_topic, topic_specs

pytestmark = pytest.mark.slow
KEY = "erasure-api-key-0123456789"
ERASURE_KEY = "erasure-hmac-secret-0123456789"
CUSTOMER = "kúnni-Þórunn-客户-Ω-0042"
COMMENT = "Hringið í mig — Þórunn Jónsdóttir, sími 555-1234, 电话很差 🙏"
NOTE = "Hringdi í Þórunni Jónsdóttur"
NEEDLES = [CUSTOMER, COMMENT, "Þórunn", "Þórunni", "Jónsdóttir", "电话很差"]
COMPACTED_TEST_CONFIG = {
    "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "1000",
    "file.delete.delay.ms": "100", "min.compaction.lag.ms": "0",
    "max.compaction.lag.ms": "1000",
}


def events(n: int, first: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=30)
    out = []
    for i in range(first, first + n):
        ours = i % 10 == 0 and first == 0
        event: dict[str, Any] = {
            "event_id": f"er-{i}", "occurred_at": (at + timedelta(seconds=i)).isoformat(),
            "customer_id": CUSTOMER if ours else f"c-{i % 37}", "touchpoint": "survey",
            "channel": ("chat", "phone", "web")[i % 3], "segment": ("smb", "enterprise")[i % 2],
            "kind": "nps", "value": (2 if i % 20 == 0 else 9) if ours else i % 11,
            "journey_id": f"jr-{CUSTOMER if ours else i % 37}", "journey_type": "support"}
        if ours:
            event["comment"] = COMMENT
        out.append(event)
    return out


def create_topics(settings: WorkerSettings) -> list[str]:
    """The worker's topics, the compacted ones set to compact within seconds; returns the
    compacted topics' names."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    compacted = []
    try:
        new = []
        for spec in topic_specs(settings):
            config = {"cleanup.policy": spec.cleanup, **spec.config}
            if spec.cleanup == "compact":
                config.update(COMPACTED_TEST_CONFIG)
                compacted.append(spec.name)
            new.append(NewTopic(spec.name, spec.partitions, 1, topic_configs=config))
        admin.create_topics(new)
    finally:
        admin.close()
    ensure_topics(settings)  # the worker's own checks accept them
    return compacted


def holding(paths: list[Path]) -> dict[str, list[str]]:
    """For each needle, the files under ``paths`` whose bytes hold it (UTF-8)."""
    files = [f for p in paths if p.exists() for f in p.rglob("*") if f.is_file()]
    found: dict[str, list[str]] = {}
    for f in files:
        try:
            data = f.read_bytes()
        except FileNotFoundError:  # a segment deleted while we looked
            continue
        for needle in NEEDLES:
            if needle.encode() in data:
                found.setdefault(needle, []).append(str(f))
    return found


async def wait_for(predicate: Any, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.logs()}")
        workers.check_alive()
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_an_erased_customer_leaves_no_byte_in_the_state_or_compacted_topics(
        kafka_broker: KafkaBroker, tmp_path: Path, guarantee: str) -> None:
    name = f"erase-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    state_dir = tmp_path / "w"
    settings = worker_settings(kafka_broker.bootstrap, name, state_dir,
                               input_topic=f"{name}-touchpoints", partitions=2,
                               engine_config=config_path, store="rocksdb://",
                               checkpoint_interval=1.0, standby_replicas=0,
                               processing_guarantee=guarantee)
    compacted = create_topics(settings)
    topic_dirs = [kafka_broker.kafka_log_dir / f"{topic}-{p}"
                  for topic in [*compacted, erasures_topic(settings)] for p in range(8)]
    workers = Workers(tmp_path)
    api = Settings(data_dir=tmp_path / "api", erasure_key=SecretStr(ERASURE_KEY),
                   api_keys=SecretStr(f"ops:read+write+admin+erase:{KEY}"))
    try:
        workers.start("w1", settings, config_path)
        runner = KafkaRunner(settings)
        await runner.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(api, runner, TEST_CONFIG,
                                                         CollectorRegistry())),
            base_url="http://t", headers={"Authorization": f"Bearer {KEY}"})
        try:
            batch = events(400, 0)
            body = (await client.post("/v1/events", json={"events": batch})).json()
            assert body["accepted"] == 400
            url = "/v1/customers/" + httpx.URL(path=CUSTOMER).raw_path.decode()

            async def counted() -> bool:
                found = await client.get(url)
                overall = (await client.get("/v1/scores?window=1h")).json()["items"]
                return (found.status_code == 200 and found.json()["signals"] == 40
                        and bool(overall) and overall[0]["n"] == 400)

            await wait_for(counted, 120, "the customer's 40 answers counted", workers)

            async def their_followups() -> list[dict[str, Any]]:
                items = (await client.get("/v1/followups?limit=1000")).json()["items"]
                return [f for f in items if f["customer_id"] == CUSTOMER]

            async def followed_up() -> bool:
                return len(await their_followups()) == 20

            await wait_for(followed_up, 60, "their 20 follow-ups", workers)
            first = (await their_followups())[0]["id"]
            closed = await client.post(f"/v1/followups/{first}/close", json={"note": NOTE})
            assert closed.status_code == 200, closed.text
            before = {w: (await client.get(f"/v1/scores?window={w}&scope=channel")).json()
                      for w in ("15m", "1h", "24h")}
            if guarantee == "at_least_once":  # exactly once: checkpoints read from the topic
                assert holding([state_dir]), "the worker's RocksDB holds the customer before"
            assert holding(topic_dirs), "the compacted topics hold the customer before"

            erased = await client.delete(url)
            assert erased.status_code == 200, erased.text
            record = erased.json()
            assert record["state"] == "erased"
            assert record["digest"] == erasure_digest(CUSTOMER, ERASURE_KEY.encode())
            assert record["by"] == "ops" and record["removed"]["followups"] >= 20
            assert CUSTOMER not in erased.text
            assert (await client.delete(url)).status_code == 200  # idempotent
            # The audit trail: asked, then done, each time; the digest, never the id.
            trail = read_all(kafka_broker.bootstrap, erasures_topic(settings))
            assert [json.loads(r.value)["state"] for r in trail] == \
                ["requested", "erased", "requested", "erased"]
            assert {(r.key, json.loads(r.value)["digest"], json.loads(r.value)["by"])
                    for r in trail} == {(record["digest"].encode(), record["digest"], "ops")}
            assert all(CUSTOMER.encode() not in r.value for r in trail)

            assert (await client.get(url)).status_code == 404
            assert await their_followups() == []
            scrubbed = (await client.get("/v1/followups?limit=1000")).json()["items"]
            mine = [f for f in scrubbed if f["id"] == first]
            assert mine and mine[0]["status"] == "closed" and mine[0]["note"] is None
            for window, scores in before.items():
                now = (await client.get(f"/v1/scores?window={window}&scope=channel")).json()
                assert [(s["scope"], s["metric"], s["n"], s["value"]) for s in now["items"]] \
                    == [(s["scope"], s["metric"], s["n"], s["value"])
                        for s in scores["items"]]
            assert f"erasure {record['digest']}" in workers.all[0].log_text()
            assert CUSTOMER not in workers.all[0].log_text()

            # More events, so that the worker checkpoints again and the segments that
            # hold the old records roll and become cleanable; then the cleaner runs.
            deadline = time.monotonic() + 150
            more = 1000
            while True:
                await client.post("/v1/events", json={"events": events(20, more)})
                more += 20
                left = holding([state_dir, *topic_dirs])
                if not left:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"still held after the cleaner's time: {left}\n"
                                         f"{workers.logs()}")
                workers.check_alive()
                await asyncio.sleep(2)
            sent = 400 + more - 1000  # the erased customer's answers still count

            async def all_counted() -> bool:
                now = (await client.get("/v1/scores?window=24h")).json()["items"]
                return bool(now) and now[0]["n"] == sent

            await wait_for(all_counted, 60, f"{sent} answers in 24 h", workers)
            await client.aclose()
        finally:
            await runner.stop()
        assert workers.all[0].terminate() == 0
        assert holding([state_dir, *topic_dirs]) == {}  # the final checkpoint too
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()
