"""The comment policy and the Kafka retention settings: from the environment and from the
shared TOML file, for the API and the workers alike; the dead-letter topic's size bound
and the retention of the input topic where the topics are specified."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from service.settings import Settings
from streams.worker.settings import WorkerSettings
from streams.worker.topics import MIN_SEGMENT_BYTES, dlq_size_config, topic_specs


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TOUCHSTREAM_")]:
        monkeypatch.delenv(name)


def test_comments_are_kept_unless_configured() -> None:
    assert Settings().comments == "keep"
    assert WorkerSettings().comments == "keep"


def test_the_environment_sets_the_policy_for_the_api_and_the_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_COMMENTS", "redact")
    assert Settings().comments == "redact"
    assert WorkerSettings().comments == "redact"


def test_one_toml_file_sets_the_policy_and_the_retention(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "touchstream.toml"
    path.write_text('comments = "drop"\ntouchpoints_retention_ms = 3600000\n'
                    "dlq_retention_ms = 7200000\ndlq_retention_bytes = 600000000\n",
                    encoding="utf-8")
    monkeypatch.setenv("TOUCHSTREAM_CONFIG", str(path))
    assert Settings().comments == "drop"
    worker = WorkerSettings()
    assert worker.comments == "drop"
    assert (worker.touchpoints_retention_ms, worker.dlq_retention_ms,
            worker.dlq_retention_bytes) == (3_600_000, 7_200_000, 600_000_000)
    monkeypatch.setenv("TOUCHSTREAM_COMMENTS", "redact")  # the environment beats the file
    assert WorkerSettings().comments == "redact"
    assert Settings().comments == "redact"


def test_an_unknown_policy_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHSTREAM_COMMENTS", "shred")
    with pytest.raises(pydantic.ValidationError, match="comments"):
        WorkerSettings()


def test_the_dead_letter_topic_is_bounded_in_all_and_the_input_kept_as_configured() -> None:
    settings = WorkerSettings(topic_partitions=6, touchpoints_retention_ms=86_400_000,
                              dlq_retention_ms=604_800_000, dlq_retention_bytes=600 << 20)
    specs = {s.role: s for s in topic_specs(settings)}
    assert specs["input events"].config["retention.ms"] == "86400000"
    assert "retention.bytes" not in specs["input events"].config
    dlq = specs["dead letters"].config
    assert dlq["retention.ms"] == "604800000"
    retention, segment = int(dlq["retention.bytes"]), int(dlq["segment.bytes"])
    # per partition: closed segments beyond retention.bytes go, plus the open segment
    assert 6 * (retention + segment) == 600 << 20
    assert segment >= MIN_SEGMENT_BYTES and retention >= segment


def test_dead_letter_size_shares() -> None:
    assert dlq_size_config(-1, 6) == {}
    tiny = dlq_size_config(1000, 4)  # below the floor: two minimal segments a partition
    assert tiny == {"retention.bytes": str(MIN_SEGMENT_BYTES),
                    "segment.bytes": str(MIN_SEGMENT_BYTES)}
    big = dlq_size_config(1 << 30, 1)
    assert int(big["segment.bytes"]) == 1 << 27
    assert int(big["retention.bytes"]) == (1 << 30) - (1 << 27)
