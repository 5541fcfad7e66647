"""The HTTP API over Kafka: events posted to the API reach a real worker, scores come back.

A worker runs as its own process against the real broker; the API runs in this process
over a ``KafkaRunner`` (producer + merged view of the partials topic), as
``touchstream api`` would. Two API runners read the same topic and must agree.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from worker_support import TEST_CONFIG, Workers, worker_settings, write_config

from deploy.kafka.broker import free_port
from schemas import EventDecoder
from service.app import create_app
from service.settings import Settings
from streams.engine.engine import Engine
from streams.worker.runner import KafkaRunner
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow
KEY = "kafka-api-key-0123456789"


def events(n: int, first: int = 0) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=20)
    return [{"event_id": f"k-{i}", "occurred_at": (at + timedelta(seconds=i)).isoformat(),
             "customer_id": f"c-{i % 40}", "touchpoint": "support",
             "channel": ("chat", "phone", "web")[i % 3],
             "segment": ("smb", "enterprise")[i % 2], "kind": "csat", "value": 1 + i % 5,
             "journey_id": f"jr-{i % 40}", "journey_type": "support_case",
             "comment": "Þakka þér 🙏" if i % 10 == 0 else None}
            for i in range(first, first + n)]


async def wait_for(predicate: Any, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.logs()}")
        workers.check_alive()
        await asyncio.sleep(0.2)


async def test_events_posted_to_the_api_are_scored_by_the_workers(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"api-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    metrics_port = free_port()
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "w",
                               input_topic=f"{name}-touchpoints", partitions=3,
                               engine_config=config_path, metrics_port=metrics_port,
                               metrics_host="127.0.0.1")
    ensure_topics(settings)
    workers = Workers(tmp_path)
    api_settings = Settings(data_dir=tmp_path / "api",
                            api_keys=SecretStr(f"ops:read+write+admin:{KEY}"))
    try:
        workers.start("w1", settings, config_path)
        first, second = KafkaRunner(settings), KafkaRunner(settings)
        await first.start()
        await second.start()
        try:
            apps = [create_app(api_settings, r, TEST_CONFIG, CollectorRegistry())
                    for r in (first, second)]
            clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a),
                                         base_url="http://t",
                                         headers={"Authorization": f"Bearer {KEY}"})
                       for a in apps]
            batch = events(600) + [{"event_id": "bad", "kind": "csat", "value": 9}]
            body = (await clients[0].post("/v1/events", json={"events": batch})).json()
            assert (body["accepted"], body["rejected"]) == (600, 1)
            assert body["results"][-1]["field"] is not None

            want = Engine(TEST_CONFIG)
            decoder = EventDecoder()
            want.ingest([decoder.convert(e) for e in batch[:600]])
            expected = [(s.scope, s.metric, s.score.n, round(s.score.value, 12))
                        for s in want.scores("continuous", "1h", scope=("channel",))]

            async def caught_up() -> bool:
                overall = (await clients[1].get("/v1/scores?window=1h")).json()["items"]
                return bool(overall) and overall[0]["n"] == 600

            await wait_for(caught_up, 90, "the merged view to hold 600 events", workers)
            for client in clients:  # every replica answers alike
                await wait_for(lambda c=client: _n(c), 60, "replica", workers)
                got = (await client.get("/v1/scores?window=1h&scope=channel")).json()["items"]
                assert [(s["scope"], s["metric"], s["n"], round(s["value"], 12))
                        for s in got] == expected
                assert (await client.get("/readyz")).status_code == 200
            assert await first.consumer_lag() == {0: 0, 1: 0, 2: 0}  # caught up
            # Per-customer and per-journey state lives in the partitions' checkpoints.
            async def customer_seen() -> bool:
                found = await clients[1].get("/v1/customers/c-7")
                return found.status_code == 200 and found.json()["signals"] == 15

            await wait_for(customer_seen, 60, "customer c-7 in its partition", workers)
            assert (await clients[0].get("/v1/customers/nobody")).status_code == 404

            async def journey_seen() -> bool:
                return (await clients[0].get("/v1/journeys/jr-3")).status_code == 200

            await wait_for(journey_seen, 60, "journey jr-3", workers)
            journey = (await clients[0].get("/v1/journeys/jr-3")).json()
            assert journey["events"] == 600 // 40 and journey["customer_id"] == "c-3"
            letters = (await clients[0].get("/v1/dead-letters")).json()["items"]
            assert any(d["kind"] == "invalid" and d["field"] == "value" for d in letters)
            await _pulse_study(clients, workers)
            await _worker_metrics(metrics_port)
            for client in clients:
                await client.aclose()
        finally:
            await first.stop()
            await second.stop()
        assert workers.all[0].terminate() == 0
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()


async def _pulse_study(clients: list[httpx.AsyncClient], workers: Workers) -> None:
    """A study started on one replica is counted by the workers and read on the other,
    the answers already in the partitions' state included (each partition seeds it from
    its own buckets); ended, it stops counting; its id cannot be reused."""
    now = datetime.now(UTC)
    study = {"pulse_id": "chat-week", "name": "Chat — Παρασκευή", "filter": {"channel": ["chat"]},
             "start": (now - timedelta(hours=2)).isoformat(),
             "end": (now + timedelta(hours=1)).isoformat(),
             "baseline_start": (now - timedelta(days=3)).isoformat(),
             "baseline_end": (now - timedelta(days=2)).isoformat()}
    started = await clients[0].post("/v1/pulses", json=study)
    assert started.status_code == 201, started.text  # the workers applied it within 10 s
    assert started.json()["state"] == "running"
    assert started.json()["study_source"] == "state"
    again = await clients[1].post("/v1/pulses", json=study)
    assert again.status_code == 409 and again.json()["detail"]["field"] == "pulse_id"

    async def counted(n: int) -> bool:
        got = (await clients[1].get("/v1/pulses/chat-week")).json()
        return [(r["metric"], r["study"]["n"]) for r in got["results"]] == [("csat", n)]

    # The 600 events before the study lie in its span, already in the state: their 200
    # chat answers count (seeded), and the 100 of the 300 after it (chat: every third).
    await wait_for(lambda: counted(200), 60, "the study to seed 200 chat answers", workers)
    assert (await clients[0].post("/v1/events", json=events(300, 600))).json()["accepted"] == 300
    await wait_for(lambda: counted(300), 60, "the study to count 300 chat answers", workers)
    ended = await clients[1].delete("/v1/pulses/chat-week")
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert ended.json()["name"] == "Chat — Παρασκευή"
    assert (await clients[0].post("/v1/events", json=events(30, 900))).json()["accepted"] == 30

    async def all_scored() -> bool:
        items = (await clients[0].get("/v1/scores?window=1h")).json()["items"]
        return bool(items) and items[0]["n"] == 930

    await wait_for(all_scored, 60, "930 events scored", workers)
    assert await counted(300)  # ended: the 10 later chat answers are not in it
    listed = (await clients[0].get("/v1/pulses?state=ended")).json()
    assert [p["pulse_id"] for p in listed["items"]] == ["chat-week"]
    assert (await clients[0].delete("/v1/pulses/nobody")).status_code == 404


async def _worker_metrics(port: int) -> None:
    """The worker's own /metrics: every record it took in, by outcome, and its timings."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    records = {dict(k[1])["outcome"]: v for k, v in samples.items()
               if k[0] == "touchstream_worker_records_total"}
    # 930 events; a start and an end of the study in each of 3 partitions.
    assert records == {"accepted": 930, "duplicate": 0, "late": 0, "rejected": 0,
                       "skipped": 0, "command": 6}
    assert samples[("touchstream_worker_partitions", ())] == 3
    assert samples[("touchstream_worker_batch_seconds_count", ())] >= 3
    offsets = [v for k, v in samples.items() if k[0] == "touchstream_worker_input_offset"]
    assert sorted(offsets) != [] and sum(offsets) == 930 + 6


async def _n(client: httpx.AsyncClient) -> bool:
    items = (await client.get("/v1/scores?window=1h")).json()["items"]
    return bool(items) and items[0]["n"] == 600
