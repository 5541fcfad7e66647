"""The manifests start: the Helm chart's rendered worker and API containers, run as
processes against the real broker, take events and serve their scores.

The chart is rendered with its production values (a ConfigMap with an engine
configuration, an existing Secret for the keys, rocksdb state on a volume), pointed at
the test broker. Each pod's container runs as the kubelet would run it: the image's
environment (the Dockerfile's ENV) under the container's `env` — literal values, Secret
keys, the pod's name — then its `command` + `args`, with its volumes as directories (a
ConfigMap volume holds the ConfigMap's files). Pods have a network namespace each;
processes on one host do not, so the second worker's metrics port is moved (the only
change). Probes are called on the paths and ports the manifests name.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.kafka.broker import free_port
from tests.deploy.helm_support import (
    PRODUCTION_VALUES,
    by_kind,
    container,
    documents,
    one,
    secret_data,
    template,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
TOUCHSTREAM = str(Path(sys.executable).parent / "touchstream")
SECRET = "touchstream-api-keys"  # noqa: S105 - a Secret's name (apiKeys.existingSecret)


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.split("\nFROM ")[-1].splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


class Pod:
    """One pod of a rendered workload, as a process: argv, environment, volumes."""

    def __init__(self, docs: list[dict[str, Any]], workload: dict[str, Any], name: str,
                 root: Path, outside: dict[str, dict[str, str]]) -> None:
        self.name, self.spec, self.root = name, container(workload), root / name
        self.proc: subprocess.Popen[bytes] | None = None
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        claims = {c["metadata"]["name"]
                  for c in workload["spec"].get("volumeClaimTemplates", [])}
        config_maps = {d["metadata"]["name"]: d.get("data", {})
                       for d in by_kind(docs, "ConfigMap")}
        secret_values = secret_data(docs, outside)
        self.mounts: dict[str, Path] = {}
        for mount in self.spec.get("volumeMounts", []):
            local = self.root / "volumes" / mount["name"]
            local.mkdir(parents=True)
            volume = volumes.get(mount["name"])
            if volume is None:
                assert mount["name"] in claims, f"{name}: no volume {mount['name']}"
            elif "configMap" in volume:
                for file_name, text in config_maps[volume["configMap"]["name"]].items():
                    (local / file_name).write_text(text)
            elif "secret" in volume:
                values = secret_values[volume["secret"]["secretName"]]
                for item in volume["secret"].get("items") or [
                        {"key": k, "path": k} for k in values]:
                    (local / item["path"]).write_text(values[item["key"]])
            else:
                assert "emptyDir" in volume, volume
            self.mounts[mount["mountPath"]] = local
        env = image_env()
        for entry in self.spec["env"]:
            source = entry.get("valueFrom", {})
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[entry["name"]] = secret_values[ref["name"]][ref["key"]]
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[entry["name"]] = name
            else:
                pytest.fail(f"{name}: cannot resolve {entry}", pytrace=False)
        self.env = {k: self.local_path(v) for k, v in env.items()}
        self.ports = {p["name"]: p["containerPort"] for p in self.spec["ports"]}

    def local_path(self, value: str) -> str:
        """A container path as the directory standing for it here; absolute paths
        outside every volume land in a stand-in for the image's root filesystem."""
        if not value.startswith("/"):
            return value
        for mount_path, local in sorted(self.mounts.items(), key=lambda m: -len(m[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return str(local / value[len(mount_path):].lstrip("/"))
        return str(self.root / "rootfs" / value.lstrip("/"))

    def move_port(self, name: str, port: int) -> None:
        """Give a named container port, and the variable that sets it, another number."""
        old = str(self.ports[name])
        (variable,) = [k for k, v in self.env.items()
                       if k.startswith("TOUCHSTREAM_") and k.endswith("_PORT") and v == old]
        self.env[variable] = str(port)
        self.ports[name] = port

    def probe(self, kind: str) -> str:
        """The URL of the container's ``kind`` probe (httpGet) on this host."""
        get = self.spec[kind]["httpGet"]
        port = self.ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        return f"http://127.0.0.1:{port}{get['path']}"

    def start(self) -> None:
        argv = [*self.spec["command"], *self.spec.get("args", [])]
        assert argv[0] == "touchstream", argv  # the image's entrypoint
        workdir = self.root / "workdir"
        workdir.mkdir(parents=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
        with (self.root / "log.txt").open("ab") as log:
            self.proc = subprocess.Popen([TOUCHSTREAM, *argv[1:]], cwd=workdir,
                                         env={**base, **self.env}, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log_tail(self, lines: int = 60) -> str:
        path = self.root / "log.txt"
        text = path.read_text(errors="replace") if path.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet stops a container; SIGKILL after the grace period."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def wait_for(what: str, check: Callable[[], bool], pods: list[Pod], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        dead = [p for p in pods if not p.alive()]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(p.name for p in dead)} exited" if dead else "timed out"
            raise AssertionError(f"{what}: {why}\n" + "\n".join(p.log_tail() for p in pods))
        time.sleep(0.5)


def events(n: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=20)
    return [{"event_id": f"chart-{i}", "occurred_at": (at + timedelta(seconds=i)).isoformat(),
             "customer_id": f"c-{i % 50}", "touchpoint": "support",
             "channel": ("chat", "phone")[i % 2], "segment": "smb", "kind": "csat",
             "value": 5 if i % 4 else 2} for i in range(n)]


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.stop()


def test_the_rendered_worker_and_api_containers_score_events(
        kafka_bootstrap: str, tmp_path: Path, pods: list[Pod]) -> None:
    name = f"chart-{uuid.uuid4().hex[:8]}"
    api_port, metrics_port = free_port(), free_port()
    # What an operator sets for this cluster: its brokers (one node, so replication 1)
    # and names of its own; two workers (the autoscaler is off: no metrics API here).
    docs = documents(template([PRODUCTION_VALUES], {
        "kafka.bootstrap": kafka_bootstrap, "kafka.appId": name,
        "kafka.partitions": 4, "kafka.replication": 1,
        "kafka.topics.touchpoints": f"{name}-touchpoints",
        "kafka.topics.deadLetters": f"{name}.dlq", "kafka.topics.scores": f"{name}.scores",
        "kafka.topics.alerts": f"{name}.alerts", "kafka.topics.followups": f"{name}.followups",
        "autoscaling.enabled": False, "worker.replicas": 2,
        "api.port": api_port, "worker.metricsPort": metrics_port,
    }))
    key = secrets.token_hex(16)
    outside = {SECRET: {"api-keys": f"ops:read+write+admin:{key}"}}  # kubectl create secret
    workers = one(docs, "StatefulSet", "-worker")
    api = one(docs, "Deployment", "-api")
    base = workers["metadata"]["name"]
    for ordinal in range(workers["spec"]["replicas"]):
        pod = Pod(docs, workers, f"{base}-{ordinal}", tmp_path, outside)
        if ordinal:
            pod.move_port("metrics", free_port())
        pods.append(pod)
    api_pod = Pod(docs, api, f"{api['metadata']['name']}-0", tmp_path, outside)
    assert [p.env["TOUCHSTREAM_GROUP_INSTANCE_ID"] for p in pods] == \
        ["touchstream-worker-0", "touchstream-worker-1"]
    assert pods[0].env["TOUCHSTREAM_STORE"] == "rocksdb://"
    for pod in pods:
        pod.start()
    for pod in pods:  # the startup and liveness probes of the StatefulSet
        wait_for(f"{pod.name} {pod.probe('startupProbe')}",
                 lambda p=pod: httpx.get(p.probe("startupProbe"), timeout=2).status_code == 200,
                 pods, 120)
    pods.append(api_pod)
    api_pod.start()
    wait_for("the API's readiness probe",
             lambda: httpx.get(api_pod.probe("readinessProbe"), timeout=2).status_code == 200,
             pods, 180)
    assert httpx.get(api_pod.probe("livenessProbe"), timeout=2).status_code == 200

    url = f"http://127.0.0.1:{api_pod.ports['http']}"
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{url}/v1/scores", timeout=5).status_code == 401  # production: keys
    batch = events(400)
    posted = httpx.post(f"{url}/v1/events", json={"events": batch}, headers=headers, timeout=30)
    assert posted.status_code == 200 and posted.json()["accepted"] == 400, posted.text

    def scored() -> bool:
        items = httpx.get(f"{url}/v1/scores", params={"window": "1h", "scope": "channel",
                                                      "metric": "csat"},
                          headers=headers, timeout=5).json()["items"]
        return sorted((s["scope"]["channel"], s["n"]) for s in items) == \
            [("chat", 200), ("phone", 200)]

    wait_for("400 events scored by the workers, read through the API", scored, pods, 120)
    overall = httpx.get(f"{url}/v1/scores", params={"window": "1h", "metric": "csat"},
                        headers=headers, timeout=5).json()["items"][0]
    assert overall["n"] == 400 and overall["value"] == pytest.approx(0.75)
    assert overall["target"] == 0.85  # the engine configuration from the ConfigMap
    # Both workers take part: each serves its own metrics with some of the partitions
    # (the second may join after the first took all four; the group then rebalances).
    def owned() -> list[float]:
        counts = []
        for pod in pods[:2]:
            text = httpx.get(pod.probe("livenessProbe"), timeout=5).text
            match = re.search(r"^touchstream_worker_partitions (\S+)$", text, re.MULTILINE)
            assert match, pod.log_tail()
            counts.append(float(match.group(1)))
        return counts

    wait_for("both workers own partitions",
             lambda: sum(counts := owned()) == 4 and min(counts) >= 1, pods, 120)
    # The state volume holds the rocksdb store.
    assert any(pods[0].mounts["/var/lib/touchstream/state"].rglob("*")), "no state written"
    # Key rotation: the kubelet swaps the Secret's files in place; the API follows
    # without a restart (the old key is refused, the new one served).
    rotated = secrets.token_hex(16)
    keys_dir = api_pod.mounts["/etc/touchstream/keys"]
    (keys_dir / "api-keys.new").write_text(f"ops:read+write+admin:{rotated}")
    (keys_dir / "api-keys.new").replace(keys_dir / "api-keys")

    def status(with_key: str) -> int:
        return httpx.get(f"{url}/v1/scores", headers={"Authorization": f"Bearer {with_key}"},
                         timeout=5).status_code

    wait_for("the rotated key served", lambda: status(rotated) == 200, pods, 30)
    assert status(key) == 401
    # SIGTERM: the API drains and exits by the signal (uvicorn re-raises it); the
    # workers checkpoint every partition and exit 0.
    assert api_pod.stop() in (0, -signal.SIGTERM), api_pod.log_tail()
    assert "Application shutdown complete" in api_pod.log_tail()
    for pod in pods[:2]:
        assert pod.stop() == 0, pod.log_tail()
