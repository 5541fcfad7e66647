"""One truth for alerts and follow-ups on Kafka (issue 16).

A planted incident on a real broker: the leader worker evaluates and publishes; two API
replicas read the alerts and follow-ups topics. Mid-incident the leader is SIGKILLed and
another worker takes over, and one replica is restarted. Every replica, the restarted one
included, and the topic itself must agree on alert ids and states, and the alert must go
on under its id after the leadership change (never re-open). Follow-ups equal the
embedded runner's for the same input, and a follow-up closed on one replica is closed on
the other.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_worker_alerts import DETECTION, _csat
from worker_support import (
    TEST_CONFIG,
    Workers,
    end_offsets,
    producer,
    read_all,
    worker_settings,
    write_config,
)

from streams.detection import Detector, FollowUpUpdate
from streams.embedded import EmbeddedRunner
from streams.worker.runner import KafkaRunner
from streams.worker.settings import WorkerSettings
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow


def traffic() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Three days of good CSAT on chat and phone, an hour where chat falls to 40%, then
    an hour and a half of good CSAT again: (history, incident, recovery), all past."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=76)
    history, incident, recovery, i = [], [], [], 0
    for hour in range(72):
        for k in range(20):
            at = start + timedelta(hours=hour, minutes=3 * k)
            for channel in ("chat", "phone"):
                history.append(_csat(i, at, channel, 5 if k < 17 else 2))
                i += 1
    for part, steps, bad in ((incident, 120, True), (recovery, 180, False)):
        first = start + timedelta(hours=72 if bad else 73)
        for k in range(steps):
            at = first + timedelta(seconds=30 * k)
            good = k % 5 < 2 if bad else k % 20 < 17
            part.append(_csat(i, at, "chat", 4 if good else 1))
            part.append(_csat(i + 1, at, "phone", 5 if k % 20 < 17 else 2))
            i += 2
    return history, incident, recovery


def send(settings: WorkerSettings, bootstrap: str, events: list[dict[str, Any]]) -> None:
    out = producer(bootstrap)
    for event in events:  # in time order, keyed by customer as producers must
        out.send(settings.topic_touchpoints, key=event["customer_id"].encode(),
                 value=orjson.dumps(event))
    out.flush()
    out.close()


def topic_states(bootstrap: str, settings: WorkerSettings) -> dict[str, str]:
    """Each alert id's latest state, as the alerts topic holds it."""
    return {orjson.loads(r.value)["id"]: orjson.loads(r.value)["state"]
            for r in read_all(bootstrap, settings.topic_alerts)}


def alerts_of(detector: Detector) -> dict[str, str]:
    return {a.id: a.state for a in detector.alerts.list()}


def followups_of(detector: Detector) -> dict[str, tuple[str, str, str]]:
    return {f.id: (f.event_id, f.owner, f.status) for f in detector.followups.list()}


async def settle(condition: Any, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        workers.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}\n{workers.logs()}")
        await asyncio.sleep(0.3)


async def test_replicas_and_a_new_leader_agree_on_alerts_and_followups(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    name = f"agree-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    detection_path = tmp_path / "detection.json"
    detection_path.write_text(DETECTION.model_dump_json(), encoding="utf-8")
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "w",
                               input_topic=f"{name}-touchpoints", partitions=3,
                               detection_config=detection_path)
    ensure_topics(settings)
    history, incident, recovery = traffic()
    events = history + incident + recovery
    workers = Workers(tmp_path)
    replicas = [KafkaRunner(settings, DETECTION), KafkaRunner(settings, DETECTION)]
    try:
        leader = workers.start("w1", settings, config_path)
        send(settings, kafka_bootstrap, history + incident[:120])  # half the incident
        for replica in replicas:
            await replica.start()

        async def firing() -> bool:
            return "firing" in topic_states(kafka_bootstrap, settings).values()

        await settle(firing, 120, "a firing alert on the topic", workers)
        (alert_id,) = [i for i, s in topic_states(kafka_bootstrap, settings).items()
                       if s == "firing"]

        async def agreed() -> bool:
            want = topic_states(kafka_bootstrap, settings)
            got = [await r.read_detector(alerts_of) for r in replicas]
            return all(g == want for g in got)

        await settle(agreed, 30, "replicas agreeing with the topic", workers)
        # The incident goes on while the alert fires: the merged view's watermark moves
        # past the alert's start, so an evaluator starting afresh would open it again at
        # its first evaluation, under a new id (ids hash the start time).
        send(settings, kafka_bootstrap, incident[120:160])
        await replicas[0].reader.wait_for_offsets(
            end_offsets(kafka_bootstrap, settings.topic_touchpoints), 60)
        # Mid-incident: the leader dies; another worker takes over; a replica restarts.
        leader.kill()
        workers.start("w2", settings, config_path)
        await replicas[1].stop()
        replicas[1] = KafkaRunner(settings, DETECTION)
        await replicas[1].start()
        assert await replicas[1].read_detector(alerts_of) == topic_states(kafka_bootstrap,
                                                                          settings)
        # The rest in steps of 9 minutes of event time, a second or two apart: the leader
        # evaluates once per round, at the watermark it has then.
        rest = incident[160:] + recovery
        for start in range(0, len(rest), 36):
            send(settings, kafka_bootstrap, rest[start:start + 36])
            await asyncio.sleep(1.5)

        async def resolved() -> bool:  # by the new leader, which only knows it from the topic
            return topic_states(kafka_bootstrap, settings).get(alert_id) == "resolved"

        await settle(resolved, 120, "the alert resolved by the new leader", workers)
        await settle(agreed, 30, "replicas agreeing after the takeover", workers)
        # The alert went on under its id: nothing re-opened for the same series.
        chat = [orjson.loads(r.value) for r in read_all(kafka_bootstrap,
                                                        settings.topic_alerts)]
        assert {c["id"] for c in chat if c["scope"] == {"channel": "chat"}} == {alert_id}, chat

        # Follow-ups: the same as the embedded runner makes of the same events.
        with EmbeddedRunner(tmp_path / "embedded", TEST_CONFIG, detection=DETECTION) as local:
            for start in range(0, len(events), 1000):
                local.submit_blocking(events[start:start + 1000])
            want = local.read_detector_blocking(followups_of)
        assert want

        async def followups_agree() -> bool:
            return all([await r.read_detector(followups_of) == want for r in replicas])

        await settle(followups_agree, 60, "follow-ups equal to the embedded runner's", workers)
        # Closing on one replica closes it on the other.
        target = sorted(want)[0]
        closed = await replicas[0].update_followup(FollowUpUpdate(
            target, "close", "ops", "called back", int(time.time())))
        assert closed.status == "closed"

        async def closed_everywhere() -> bool:
            found = [await r.read_detector(lambda d: d.followups.get(target))
                     for r in replicas]
            return all(f is not None and f.status == "closed" and f.note == "called back"
                       for f in found)

        await settle(closed_everywhere, 30, "the close visible on both replicas", workers)
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        for replica in replicas:
            await replica.stop()
        workers.kill_all()
