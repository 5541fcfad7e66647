"""The settings base (``streams.settings``): one TOML file for the API and the workers,
under the environment and the arguments; unknown keys are errors naming them; the
engine and detection configuration loaders, once for both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from service.cli_errors import Exit
from service.settings import Settings
from streams.detection import DetectionConfig, default_detection
from streams.engine.config import EngineConfig
from streams.settings import TouchstreamSettings
from streams.worker.settings import WorkerSettings

SHARED = """\
# one file for `touchstream api` and `touchstream worker`
port = 9191
max_batch = 77
kafka_bootstrap = "kafka-a:9092, kafka-b:9092"
app_id = "eu-prod"
topic_touchpoints = "eu.touchpoints"
topic_partitions = 12
flush_interval = 0.25
create_topics = false
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TOUCHSTREAM_")]:
        monkeypatch.delenv(name)


def config_file(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "touchstream.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("TOUCHSTREAM_CONFIG", str(path))
    return path


def test_a_worker_reads_its_settings_from_the_toml_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file(tmp_path, SHARED + f'engine_config = "{tmp_path / "engine.json"}"\n',
                monkeypatch)
    worker = WorkerSettings()
    assert worker.bootstrap_servers == ["kafka-a:9092", "kafka-b:9092"]
    assert (worker.app_id, worker.topic_touchpoints, worker.topic_partitions) == (
        "eu-prod", "eu.touchpoints", 12)
    assert (worker.flush_interval, worker.create_topics) == (0.25, False)
    assert worker.partials_topic == "eu-prod-partials"
    assert worker.engine_config == tmp_path / "engine.json"


def test_the_api_and_the_worker_share_one_file_each_taking_its_own_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file(tmp_path, SHARED, monkeypatch)
    api, worker = Settings(), WorkerSettings()
    assert (api.port, api.max_batch, api.kafka_bootstrap) == (
        9191, 77, "kafka-a:9092, kafka-b:9092")
    assert worker.topic_partitions == 12
    assert not hasattr(worker, "port") and not hasattr(api, "topic_partitions")


def test_environment_beats_the_file_and_arguments_beat_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file(tmp_path, SHARED, monkeypatch)
    monkeypatch.setenv("TOUCHSTREAM_TOPIC_PARTITIONS", "3")
    monkeypatch.setenv("TOUCHSTREAM_KAFKA_BOOTSTRAP", "local:9092")
    worker = WorkerSettings()
    assert (worker.topic_partitions, worker.kafka_bootstrap) == (3, "local:9092")
    assert worker.app_id == "eu-prod"  # not in the environment: from the file
    assert WorkerSettings(topic_partitions=5).topic_partitions == 5
    assert WorkerSettings().topic_touchpoints == "eu.touchpoints"


def test_without_a_file_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = WorkerSettings()
    assert (worker.topic_partitions, worker.app_id) == (6, "touchstream")


@pytest.mark.parametrize("settings_class", [Settings, WorkerSettings])
def test_an_unknown_key_is_an_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        settings_class: type[TouchstreamSettings]) -> None:
    path = config_file(tmp_path, SHARED + "topic_partiions = 4\n[touchstream]\nport = 1\n",
                       monkeypatch)
    with pytest.raises(ValueError, match="unknown setting") as failed:
        settings_class()
    message = str(failed.value)
    assert "'topic_partiions'" in message and "'touchstream'" in message
    assert str(path) in message and "'port'" not in message


def test_the_file_must_be_toml_and_a_value_must_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file(tmp_path, "topic_partitions = = 3\n", monkeypatch)
    with pytest.raises(ValueError, match="is not valid TOML"):
        WorkerSettings()
    config_file(tmp_path, "topic_partitions = 0\n", monkeypatch)
    with pytest.raises(pydantic.ValidationError, match="topic_partitions"):
        WorkerSettings()


def test_the_shared_file_may_hold_every_setting_of_every_process() -> None:
    keys = TouchstreamSettings.file_keys()
    assert set(Settings.model_fields) | set(WorkerSettings.model_fields) <= keys
    assert {"engine_config", "detection_config", "port", "topic_partitions"} <= keys


# -- the loaders, once for both ------------------------------------------------------


@pytest.mark.parametrize("settings_class", [Settings, WorkerSettings])
def test_the_loaders_are_the_bases(settings_class: type[TouchstreamSettings]) -> None:
    assert settings_class.load_engine_config is TouchstreamSettings.load_engine_config
    assert settings_class.load_detection_config is TouchstreamSettings.load_detection_config


def test_without_files_the_loaders_give_the_defaults() -> None:
    settings = WorkerSettings()
    engine = settings.load_engine_config()
    assert engine == EngineConfig()
    assert settings.load_detection_config(engine) == default_detection(engine)


def test_the_loaders_read_the_json_files(tmp_path: Path) -> None:
    engine = EngineConfig(scopes=((), ("channel",)), timezone="Europe/Oslo")
    engine_path = tmp_path / "engine.json"
    engine_path.write_text(engine.model_dump_json(), encoding="utf-8")
    detection = DetectionConfig()
    detection_path = tmp_path / "detection.json"
    detection_path.write_text(detection.model_dump_json(), encoding="utf-8")
    settings = Settings(engine_config=engine_path, detection_config=detection_path)
    assert settings.load_engine_config() == engine
    assert settings.load_detection_config(engine) == detection


def test_the_loaders_refuse_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "engine.json"
    bad.write_text(json.dumps({"scopes": [[]], "no_such_field": 1}), encoding="utf-8")
    with pytest.raises(pydantic.ValidationError, match="no_such_field"):
        WorkerSettings(engine_config=bad).load_engine_config()
    with pytest.raises(FileNotFoundError):
        WorkerSettings(detection_config=tmp_path / "none.json").load_detection_config(
            EngineConfig())


# -- the command line: a wrong file is exit 3 (a setting), one line naming the key ----


@pytest.mark.parametrize("command", ["worker", "api", "serve"])
def test_the_commands_refuse_an_unknown_key_with_exit_3(tmp_path: Path, command: str) -> None:
    path = tmp_path / "touchstream.toml"
    path.write_text(SHARED + "topic_partiions = 4\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env["TOUCHSTREAM_CONFIG"] = str(path)
    result = subprocess.run([sys.executable, "-m", "service", command], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == Exit.CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"touchstream {command}: TOUCHSTREAM_CONFIG: "), line
    assert "'topic_partiions'" in line and "README: Configuration" in line
