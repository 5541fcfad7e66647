"""Topics from settings: created when missing, a clear error when a layout does not fit."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from worker_support import REPO_ROOT, settings_env, worker_settings

from streams.worker.settings import WorkerSettings
from streams.worker.topics import TopicLayoutError, ensure_topics, topic_specs


def _settings(bootstrap: str, tmp_path: Path, **overrides: Any) -> WorkerSettings:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    return worker_settings(bootstrap, name, tmp_path, input_topic=f"{name}-touchpoints",
                           partitions=4, **overrides)


def _create(bootstrap: str, name: str, partitions: int, config: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
    finally:
        admin.close()


def test_missing_topics_are_created_with_their_layout(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, scores_partitions=2)
    created = ensure_topics(settings)
    specs = topic_specs(settings)
    assert sorted(created) == sorted(s.name for s in specs)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(created)}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs])["topic"]
    finally:
        admin.close()
    for spec in specs:
        assert described[spec.name] == spec.partitions
        assert configs[spec.name]["cleanup.policy"]["value"] == spec.cleanup
    assert described[settings.topic_touchpoints] == 4
    assert described[settings.topic_scores] == 2
    assert configs[settings.topic_touchpoints]["retention.ms"]["value"] == str(
        settings.touchpoints_retention_ms)
    # A second start finds everything in place and creates nothing.
    assert ensure_topics(settings) == []


def test_an_input_topic_with_other_partitions_is_refused(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    _create(kafka_bootstrap, settings.topic_touchpoints, 3, {})
    with pytest.raises(TopicLayoutError, match=rf"'{settings.topic_touchpoints}' \(input "
                                               r"events\) has 3 partitions, settings say 4"):
        ensure_topics(settings)


def test_a_scores_topic_that_is_not_compacted_is_refused(kafka_bootstrap: str,
                                                         tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    _create(kafka_bootstrap, settings.topic_scores, settings.scores_partitions,
            {"cleanup.policy": "delete"})
    _create(kafka_bootstrap, settings.topic_touchpoints, 4, {"cleanup.policy": "compact"})
    with pytest.raises(TopicLayoutError) as caught:
        ensure_topics(settings)
    message = str(caught.value)
    assert f"'{settings.topic_scores}' (scores) must be compacted" in message
    assert f"'{settings.topic_touchpoints}' (input events) must not be compacted" in message


def test_missing_topics_without_creation_are_an_error(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path, create_topics=False)
    with pytest.raises(TopicLayoutError, match="does not exist and TOUCHSTREAM_CREATE_TOPICS"):
        ensure_topics(settings)


def test_the_worker_process_exits_with_the_layout_error(kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, tmp_path)
    _create(kafka_bootstrap, settings.topic_touchpoints, 2, {})
    env = settings_env(settings, None)
    result = subprocess.run([sys.executable, "-m", "streams.worker"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "has 2 partitions, settings say 4" in result.stderr


def test_bad_settings_exit_with_the_field_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env["TOUCHSTREAM_TOPIC_PARTITIONS"] = "0"
    result = subprocess.run([sys.executable, "-m", "streams.worker"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3  # a wrong setting, as `touchstream` says it
    assert "topic_partitions" in result.stderr
