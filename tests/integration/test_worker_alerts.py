"""A real drop produced to Kafka pages through the alerts topic: the leader worker's
detector publishes every alert state change, with its evidence and attribution; the
partition workers publish a follow-up for every answer that needs a human."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_support import TEST_CONFIG, Workers, producer, read_all, worker_settings, write_config

from streams.detection import DetectionConfig, DropRule, FollowUpRule
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow

DETECTION = DetectionConfig(
    drops=(DropRule(name="csat-drop", metric="csat", scopes=(("channel",),), hold_seconds=0,
                    min_n_window=50, min_n_baseline=100, severity="critical",
                    owner="support"),),
    followups=(FollowUpRule(name="unhappy", condition="very_dissatisfied",
                            segments=("enterprise",), owner="account-team"),),
)


def traffic() -> list[dict[str, Any]]:
    """Three days of good CSAT on chat and phone, then an hour where chat falls to 40%."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    out, i = [], 0
    for hour in range(72, 0, -1):
        for k in range(20):
            at = now - timedelta(hours=hour) + timedelta(minutes=3 * k)
            for channel in ("chat", "phone"):
                out.append(_csat(i, at, channel, 5 if k < 17 else 2))
                i += 1
    for k in range(120):
        at = now + timedelta(seconds=30 * k)
        out.append(_csat(i, at, "chat", 4 if k % 5 < 2 else 1))
        out.append(_csat(i + 1, at, "phone", 5 if k % 20 < 17 else 2))
        i += 2
    return out


def _csat(i: int, at: datetime, channel: str, value: int) -> dict[str, Any]:
    return {"event_id": f"a-{i}", "occurred_at": at.isoformat(), "customer_id": f"c-{i % 61}",
            "touchpoint": "support", "channel": channel, "segment": "enterprise",
            "kind": "csat", "value": value}


def test_a_drop_on_kafka_is_published_to_the_alerts_topic(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    name = f"alerts-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    detection_path = tmp_path / "detection.json"
    detection_path.write_text(DETECTION.model_dump_json(), encoding="utf-8")
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "w",
                               input_topic=f"{name}-touchpoints", partitions=3,
                               detection_config=detection_path)
    ensure_topics(settings)
    workers = Workers(tmp_path)
    try:
        worker = workers.start("w1", settings, config_path)
        send = producer(kafka_bootstrap)
        for event in traffic():  # in time order, keyed by customer as producers must
            send.send(settings.topic_touchpoints, key=event["customer_id"].encode(),
                      value=orjson.dumps(event))
        send.flush()
        send.close()
        deadline = time.monotonic() + 90
        firing: list[dict[str, Any]] = []
        while not firing:
            workers.check_alive()
            assert time.monotonic() < deadline, "no firing alert published\n" + workers.logs()
            changes = [orjson.loads(r.value) for r in read_all(kafka_bootstrap,
                                                               settings.topic_alerts)]
            firing = [c for c in changes if c["state"] == "firing"]
            time.sleep(0.5)
        (alert,) = firing
        assert (alert["rule"], alert["scope"], alert["owner"], alert["severity"]) == (
            "csat-drop", {"channel": "chat"}, "support", "critical")
        assert alert["evidence"]["window_score"] == pytest.approx(0.4, abs=0.05)
        assert alert["evidence"]["q"] < 0.05
        assert alert["attribution_summary"]
        # Every very dissatisfied answer became exactly one follow-up, owned and open.
        want = {e["event_id"] for e in traffic() if e["value"] <= 2}
        records = read_all(kafka_bootstrap, settings.topic_followups)
        items = {r.key: orjson.loads(r.value) for r in records}  # compacted: latest per id
        assert {f["event_id"] for f in items.values()} == want
        assert {(f["owner"], f["status"]) for f in items.values()} == {("account-team", "open")}
        assert worker.terminate() == 0, worker.log_tail()
    except BaseException:
        print(workers.logs())  # noqa: T201 - shown on failure
        raise
    finally:
        workers.kill_all()
