"""CloudEvents on a real input topic: binary mode written by kcat (``ce_`` headers) and
structured mode written with the official SDK are counted by a real worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent
from cloudevents.kafka import to_structured
from kafka import KafkaProducer
from worker_support import TEST_CONFIG, Workers, end_offsets, worker_settings, write_config

from streams.worker.reader import ScoresReader
from streams.worker.topics import ensure_topics

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def data(i: int) -> dict[str, object]:
    return {"touchpoint": "support", "channel": "sms", "value": 1 + i % 5}


async def test_kcat_binary_and_sdk_structured_cloudevents_are_counted(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    if shutil.which("kcat") is None:
        pytest.fail("kcat is missing (apt-get install kcat)")
    name = f"ce-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "state", input_topic=topic,
                               partitions=2)
    ensure_topics(settings)
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    workers = Workers(tmp_path)
    try:
        workers.start("w1", settings, config_path)
        for i in range(5):  # binary mode: the attributes as ce_ headers, data as the value
            attributes = {"specversion": "1.0", "type": "io.touchstream.csat.v1",
                          "source": "/sms", "id": f"kcat-{i}", "subject": f"c-{i}",
                          "time": (NOW + timedelta(seconds=i)).isoformat()}
            headers = [arg for k, v in attributes.items() for arg in ("-H", f"ce_{k}={v}")]
            subprocess.run(["kcat", "-P", "-b", kafka_bootstrap, "-t", topic, "-k", f"c-{i}",
                            "-H", "content-type=application/json", *headers],
                           input=json.dumps(data(i)).encode(), check=True, timeout=60,
                           capture_output=True)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(5, 10):  # structured mode, as the SDK writes it
            message = to_structured(CloudEvent(
                {"type": "io.touchstream.csat.v1", "source": "/sms", "id": f"sdk-{i}",
                 "subject": f"c-{i}", "time": (NOW + timedelta(seconds=i)).isoformat(),
                 "datacontenttype": "application/json", "partitionkey": f"c-{i}"},
                data(i)))
            producer.send(topic, key=f"c-{i}".encode(), value=message.value,
                          headers=list(message.headers.items()))
        producer.flush()
        producer.close()
        async with ScoresReader.from_settings(settings, TEST_CONFIG) as reader:
            await reader.wait_for_offsets(end_offsets(kafka_bootstrap, topic), 60)
            assert reader.counters().get("accepted") == 10, reader.counters()
            assert reader.counters().get("rejected", 0) == 0
            (sms,) = reader.engine().scores("continuous", "1h", where={"channel": "sms"},
                                            metric="csat")
            assert sms.score.n == 10
    finally:
        workers.kill_all()
