"""The real alert path for tests: ``touchstream serve``, Prometheus and Alertmanager
(Debian's packages) and a webhook receiver, all on loopback with free ports.

Prometheus and Alertmanager run with the shipped configuration; the test copies change
only what a test must: targets and ports, the scrape/evaluation interval (1 s), the
grouping waits (1 s) and the webhook host (the receiver path, which names the receiver,
is kept). Every process logs to a file that the conftest attaches to a failing test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from deploy.alertmanager.webhook_echo import Notification, WebhookEcho
from deploy.kafka.broker import free_port

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTMANAGER_DIR = REPO / "deploy" / "alertmanager"
GRAFANA_DIR = REPO / "deploy" / "grafana"
SHIPPED_WEBHOOK = "http://127.0.0.1:9095"
KEY = "deploy-test-key-0123456789"

T = TypeVar("T")


def require(binary: str, package: str) -> str:
    """The path of ``binary``; skip without it, but fail under CI=true."""
    found = shutil.which(binary)
    if found is None:
        reason = f"{binary} not installed (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool; the result carries stdout and stderr as text."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def poll(what: str, check: Callable[[], T | None], timeout: float,
         interval: float = 0.2, diagnostics: Callable[[], str] | None = None) -> T:
    """Call ``check`` until it returns something not None (then return it)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            found = check()
            if found is not None:
                return found
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            more = "\n" + diagnostics() if diagnostics else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}{more}",
                        pytrace=False)
        time.sleep(interval)


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        """Poll ``url`` until it answers 200; fail with the log if the process exits."""
        def ready() -> bool | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n"
                            f"{self.tail()}", pytrace=False)
            try:
                return True if httpx.get(url, timeout=1).status_code == 200 else None
            except httpx.HTTPError:
                return None

        poll(f"{self.name} at {url}", ready, timeout, interval=0.1, diagnostics=self.tail)

    def tail(self, lines: int = 80) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ------------------------------------------------------------------ configuration


def prometheus_config(*, port: int, service: str, alertmanager: str) -> dict[str, Any]:
    """The shipped prometheus.yml, pointed at this test's processes, at 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s",
                            evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    for am in config["alerting"]["alertmanagers"]:
        am["static_configs"] = [{"targets": [alertmanager]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["touchstream"]["static_configs"][0]["targets"] = [service]
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    return config


def alertmanager_config(webhook: str) -> dict[str, Any]:
    """The shipped alertmanager.yml with its webhooks on ``webhook`` and 1 s waits."""
    config: dict[str, Any] = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith(SHIPPED_WEBHOOK + "/"), hook["url"]
            hook["url"] = webhook + hook["url"].removeprefix(SHIPPED_WEBHOOK)
    return config


def engine_config() -> dict[str, Any]:
    """Defaults, plus CSAT targets so that target and gap series exist."""
    return {"targets": [{"metric": "csat", "value": 0.85},
                        {"metric": "csat", "value": 0.9, "segment": "enterprise"}]}


def detection_config() -> dict[str, Any]:
    """A CSAT drop rule per channel that fires at once (hold 0) on small samples, and a
    below-target rule on the same scopes (which the drop inhibits in Alertmanager)."""
    return {
        "drops": [{"name": "csat-drop-1h", "metric": "csat", "scopes": [["channel"]],
                   "min_n_window": 30, "min_n_baseline": 100, "hold_seconds": 0,
                   "clear_seconds": 0, "severity": "critical", "owner": "support"}],
        "targets": [{"name": "csat-below-target", "metric": "csat", "scopes": [["channel"]],
                     "min_n": 30, "hold_seconds": 0, "clear_seconds": 0,
                     "severity": "warning", "owner": "support"}],
    }


# ----------------------------------------------------------------------- events


def _event(i: int, at: datetime, channel: str, value: int) -> dict[str, Any]:
    return {"event_id": f"{channel}-{i}", "occurred_at": at.isoformat(),
            "customer_id": f"cus-{i % 97}", "segment": ("enterprise", "smb")[i % 2],
            "touchpoint": f"support_{channel}", "channel": channel, "owner": "support",
            "journey_type": "technical_problem", "stage": "respond",
            "kind": "csat", "value": value}


def baseline_events(now: datetime) -> list[dict[str, Any]]:
    """Seven days of hourly CSAT (4 answers per hour per channel, 90% satisfied), ending
    an hour before ``now``; ascending in time."""
    start = (now - timedelta(days=7, hours=1)).replace(minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = []
    hour = 0
    while start + timedelta(hours=hour + 1) <= now - timedelta(hours=1):
        for quarter in range(4):
            at = start + timedelta(hours=hour, minutes=15 * quarter)
            i = hour * 4 + quarter
            for channel in ("chat", "phone"):
                out.append(_event(i, at, channel, 2 if i % 10 == 0 else 5))
        hour += 1
    return out


def drop_events(now: datetime) -> list[dict[str, Any]]:
    """The last hour: chat falls to 20% satisfied, phone stays at 90%."""
    out = []
    for j in range(60):
        at = now - timedelta(minutes=59) + timedelta(seconds=58 * j)
        out.append(_event(100_000 + j, at, "chat", 5 if j % 5 == 0 else 2))
        out.append(_event(100_000 + j, at, "phone", 2 if j % 10 == 0 else 5))
    return out


def recovery_events(now: datetime, n: int = 600) -> list[dict[str, Any]]:
    """Satisfied chat answers just ahead of ``now`` (within the 15 min the API allows),
    so that event time enters a new minute and the detector evaluates again."""
    return [_event(200_000 + k, now + timedelta(seconds=30 + k * 60 / n), "chat", 5)
            for k in range(n)]


# ------------------------------------------------------------------------ stack


@dataclass
class Stack:
    """The running processes and how to reach them."""

    root: Path
    webhook: WebhookEcho
    processes: list[Process] = field(default_factory=list)
    service: str = ""
    prometheus: str = ""
    alertmanager: str = ""

    def logs(self) -> str:
        """Every process's log tail and every notification: attached to failures."""
        parts = [p.tail() for p in self.processes]
        parts.append("--- webhook notifications ---")
        parts += [n.summary() for n in self.webhook.notifications]
        return "\n".join(parts)

    # -- service

    def post_events(self, events: list[dict[str, Any]], batch: int = 1000) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=self.service, headers=headers, timeout=30) as client:
            for k in range(0, len(events), batch):
                chunk = events[k:k + batch]
                response = client.post("/v1/events", json={"events": chunk})
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["accepted"] == len(chunk), (body, self.logs())

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        """The detector's view: GET /v1/alerts."""
        response = httpx.get(f"{self.service}/v1/alerts", params=params, timeout=10,
                             headers={"Authorization": f"Bearer {KEY}"})
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    # -- Prometheus

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query; the whole API answer (status, data or error)."""
        response = httpx.post(f"{self.prometheus}/api/v1/query", data={"query": expr},
                              timeout=10)
        answer: dict[str, Any] = response.json()
        return answer

    def rules(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/rules", timeout=10)
        response.raise_for_status()
        return [rule for group in response.json()["data"]["groups"]
                for rule in group["rules"]]

    # -- Alertmanager

    def am_alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Alertmanager's alerts (with status.state and inhibitedBy) matching labels."""
        matchers = [f'{k}="{v}"' for k, v in filters.items()]
        response = httpx.get(f"{self.alertmanager}/api/v2/alerts",
                             params=[("filter", m) for m in matchers], timeout=10)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def am_post(self, labels: dict[str, str], *, resolved: bool = False,
                annotations: dict[str, str] | None = None) -> None:
        """Send an alert to Alertmanager as Prometheus does (resolved: endsAt now)."""
        now = datetime.now(UTC)
        ends = now if resolved else now + timedelta(minutes=5)
        alert = {"labels": labels, "annotations": annotations or {},
                 "startsAt": (now - timedelta(minutes=3)).isoformat(),
                 "endsAt": ends.isoformat()}
        response = httpx.post(f"{self.alertmanager}/api/v2/alerts", json=[alert], timeout=10)
        assert response.status_code == 200, response.text

    def notification(self, predicate: Callable[[Notification], bool], what: str,
                     timeout: float = 30) -> Notification:
        found = self.webhook.wait_for(predicate, timeout)
        if found is None:
            pytest.fail(f"no webhook notification {what} within {timeout:.0f}s\n"
                        f"{self.logs()}", pytrace=False)
        return found


@contextlib.contextmanager
def start_stack(root: Path) -> Iterator[Stack]:
    """Start everything (in parallel), yield, and stop everything whatever happens."""
    prometheus_bin = require("prometheus", "prometheus")
    alertmanager_bin = require("prometheus-alertmanager", "prometheus-alertmanager")
    webhook = WebhookEcho().start()
    stack = Stack(root, webhook)
    try:
        serve_port, prom_port, am_port = free_port(), free_port(), free_port()
        stack.service = f"http://127.0.0.1:{serve_port}"
        stack.prometheus = f"http://127.0.0.1:{prom_port}"
        stack.alertmanager = f"http://127.0.0.1:{am_port}"
        (root / "engine.json").write_text(json.dumps(engine_config()))
        (root / "detection.json").write_text(json.dumps(detection_config()))
        # JSON is YAML: the test copies are written as JSON.
        (root / "prometheus.yml").write_text(json.dumps(prometheus_config(
            port=prom_port, service=f"127.0.0.1:{serve_port}",
            alertmanager=f"127.0.0.1:{am_port}"), indent=1))
        (root / "alertmanager.yml").write_text(json.dumps(alertmanager_config(webhook.url),
                                                          indent=1))
        env = {**os.environ,
               "TOUCHSTREAM_DATA_DIR": str(root / "data"),
               "TOUCHSTREAM_PORT": str(serve_port),
               "TOUCHSTREAM_API_KEYS": f"test:read+write+admin:{KEY}",
               "TOUCHSTREAM_METRICS_REFRESH_SECONDS": "1",
               "TOUCHSTREAM_ENGINE_CONFIG": str(root / "engine.json"),
               "TOUCHSTREAM_DETECTION_CONFIG": str(root / "detection.json")}
        serve = Process("touchstream serve", [sys.executable, "-m", "service", "serve"],
                        root / "serve.log", env=env)
        prometheus = Process("prometheus", [
            prometheus_bin, f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}"], root / "prometheus.log")
        alertmanager = Process("alertmanager", [
            alertmanager_bin, f"--config.file={root / 'alertmanager.yml'}",
            f"--storage.path={root / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
            "--log.level=debug"], root / "alertmanager.log")
        stack.processes = [serve, prometheus, alertmanager]
        for process in stack.processes:
            process.start()
        serve.wait_ready(f"{stack.service}/readyz")
        prometheus.wait_ready(f"{stack.prometheus}/-/ready")
        alertmanager.wait_ready(f"{stack.alertmanager}/-/ready")
        yield stack
    finally:
        for process in reversed(stack.processes):
            process.stop()
        webhook.stop()


# ------------------------------------------------------------------- expressions


def rule_expressions() -> dict[str, str]:
    """Every expression in the shipped rule files, keyed by a readable name."""
    out = {}
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for i, rule in enumerate(group["rules"]):
                name = rule.get("record") or rule["alert"]
                out[f"{path.name}:{group['name']}:{i}:{name}"] = rule["expr"]
    return out


# What Grafana would substitute in the dashboard's queries.
GRAFANA_VALUES = {
    "job": "touchstream", "metric": "csat", "window": "1h", "scope": "channel",
    "channel": ".*", "touchpoint": ".*", "segment": ".*", "owner": ".*",
    "__rate_interval": "15s", "__interval": "5s", "__range": "5m",
}
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.S)


def substitute(expr: str) -> str:
    """Replace Grafana variables with the values above (unknown ones raise KeyError)."""
    return _VARIABLE.sub(lambda m: GRAFANA_VALUES[m.group(1) or m.group(2)], expr)


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression in a dashboard (panels, variables, annotations), keyed by
    where it is. ``label_values(selector, label)`` variables become ``selector``."""
    out: dict[str, str] = {}

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            found = _LABEL_VALUES.match(variable["query"].strip())
            assert found, f"variable {variable['name']}: unsupported query"
            out[f"variable {variable['name']}"] = found.group(1) or "up"
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out[f"annotation {annotation['name']!r}"] = annotation["expr"]
    return out
