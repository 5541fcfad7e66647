"""The Compose files, loaded by the Compose specification's own loader (compose-go, as
`docker compose` loads them; deploy/compose/check): schema, interpolation, paths and
consistency. Then what `docker compose up` relies on: the shipped Prometheus rules,
Alertmanager and Grafana files mounted from where they are, pinned images, settings
that exist, secrets that must come from the environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import run, tool
from touchstream_stack import require

from deploy import toolchain
from service.settings import Settings
from streams.worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
SECRETS = {"TOUCHSTREAM_API_KEYS": "ops:read+write+admin:0123456789abcdef01234567",
           "GRAFANA_ADMIN_PASSWORD": "grafana-test-password"}
KNOWN_ENV = ({f"TOUCHSTREAM_{n.upper()}" for n in Settings.model_fields}
             | {f"TOUCHSTREAM_{n.upper()}" for n in WorkerSettings.model_fields}
             | {"TOUCHSTREAM_HEALTH_URL"})  # read by the image's HEALTHCHECK


def load(name: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the loader on deploy/compose/<name>."""
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    clean.update(env or {})
    binary = tool(toolchain.compose_check)
    result = subprocess.run([str(binary), str(COMPOSE_DIR / name)], capture_output=True,
                            text=True, env=clean, timeout=60, check=False)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    code, out, err = load("compose.yaml", SECRETS)
    assert code == 0, err
    loaded: dict[str, Any] = json.loads(out)
    return loaded


def test_the_kafka_deployment_has_every_service(project: dict[str, Any]) -> None:
    services = project["services"]
    assert sorted(services) == ["alertmanager", "api", "grafana", "kafka", "prometheus",
                                "simulator", "simulator-history", "worker-1", "worker-2"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in ("worker-1", "worker-2"):
        assert services[name]["command"] == ["worker"]
        assert services[name]["environment"]["TOUCHSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["api"]["command"] == ["api"]
    for name in ("worker-1", "worker-2", "api", "simulator-history", "simulator"):
        assert Path(services[name]["build"]["context"]) == REPO  # the repository's Dockerfile
        assert services[name]["image"] == "touchstream:0.1.0"
    # Topics exist once a worker is healthy (its metrics server starts after creating
    # them) and Kafka does not create topics: the API and the simulator wait for that.
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in ("api", "simulator-history"):
        assert services[name]["depends_on"]["worker-1"]["condition"] == "service_healthy"
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["TOUCHSTREAM_HEALTH_URL"] == \
            f"http://127.0.0.1:{env['TOUCHSTREAM_METRICS_PORT']}/metrics"
    for name in ("simulator-history", "simulator"):
        assert services[name]["restart"] == "no"  # one-shot
        assert "kafka://kafka:9092/touchpoints" in services[name]["command"]


def test_images_are_pinned_and_ports_are_local(project: dict[str, Any]) -> None:
    for name, service in project["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)


def test_workers_and_api_agree_on_kafka_settings(project: dict[str, Any]) -> None:
    services = project["services"]
    shared = ("TOUCHSTREAM_KAFKA_BOOTSTRAP", "TOUCHSTREAM_APP_ID", "TOUCHSTREAM_TOPIC_PARTITIONS")
    views = {name: tuple(services[name]["environment"][k] for k in shared)
             for name in ("worker-1", "worker-2", "api")}
    assert len(set(views.values())) == 1, views
    ids = {services[n]["environment"]["TOUCHSTREAM_GROUP_INSTANCE_ID"]
           for n in ("worker-1", "worker-2")}
    assert len(ids) == 2  # static members need distinct ids
    for name, service in services.items():
        names = {k for k in service.get("environment") or {} if k.startswith("TOUCHSTREAM_")}
        assert names <= KNOWN_ENV, (name, names - KNOWN_ENV)


def test_the_shipped_files_are_mounted_from_where_they_are(project: dict[str, Any]) -> None:
    mounts = {(name, v["target"]): Path(v["source"])
              for name, service in project["services"].items()
              for v in service.get("volumes", []) if v["type"] == "bind"}
    deploy = REPO / "deploy"
    assert mounts[("prometheus", "/etc/prometheus/rules")] == deploy / "prometheus" / "rules"
    assert mounts[("alertmanager", "/etc/alertmanager/alertmanager.yml")] == \
        deploy / "alertmanager" / "alertmanager.yml"
    assert mounts[("grafana", "/var/lib/grafana/dashboards/touchstream")] == \
        deploy / "grafana" / "dashboards"
    for source in mounts.values():
        assert source.exists(), source
    # The dashboard provider reads the directory the dashboards are mounted on.
    provider = yaml.safe_load((deploy / "grafana" / "provisioning" / "dashboards" /
                               "touchstream.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == \
        "/var/lib/grafana/dashboards/touchstream"
    assert project["services"]["grafana"]["environment"]["PROMETHEUS_URL"] == \
        "http://prometheus:9090"


def test_the_compose_prometheus_config_is_the_shipped_one_with_compose_targets(
        tmp_path: Path) -> None:
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    compose = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert compose["rule_files"] == shipped["rule_files"]
    assert [j["job_name"] for j in compose["scrape_configs"]] == \
        [j["job_name"] for j in shipped["scrape_configs"]]
    # promtool checks it with the rules where the container finds them.
    promtool = require("promtool", "prometheus")
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "rules").symlink_to(REPO / "deploy" / "prometheus" / "rules")
    result = run([promtool, "check", "config", tmp_path / "prometheus.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_must_come_from_the_environment() -> None:
    code, _, err = load("compose.yaml")
    assert code != 0
    assert "TOUCHSTREAM_API_KEYS" in err and "GRAFANA_ADMIN_PASSWORD" in err
    assert "0123456789abcdef" not in (COMPOSE_DIR / "compose.yaml").read_text()


def test_the_embedded_variant_is_one_container_with_a_volume() -> None:
    code, out, err = load("compose.embedded.yaml")
    assert code == 0, err
    project = json.loads(out)
    (service,) = project["services"].values()
    assert service["command"][0] == "serve"
    (volume,) = service["volumes"]
    assert (volume["type"], volume["target"]) == ("volume", "/var/lib/touchstream")
    assert list(project["volumes"]) == [volume["source"]]


@pytest.mark.parametrize("name", ["simulator-history", "simulator"])
def test_the_simulator_commands_run(project: dict[str, Any], name: str,
                                    tmp_path: Path) -> None:
    """The one-shot simulators' own arguments, run by the real CLI into a file instead
    of Kafka, for a shorter span (the only changes): 10 minutes of history unpaced, or
    3 seconds live."""
    argv = list(project["services"][name]["command"])
    out = tmp_path / "events.jsonl"
    argv[argv.index("--to") + 1] = str(out)
    live = "--no-live" not in argv
    argv[argv.index("--duration") + 1] = "3s" if live else "10m"
    touchstream = str(Path(sys.executable).parent / "touchstream")
    result = run([touchstream, *argv], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    sent = len(out.read_text().splitlines())
    assert sent >= (20 if live else 2000), (sent, result.stdout)  # at 20/s, or 5/s
