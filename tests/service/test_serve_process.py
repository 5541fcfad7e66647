"""``touchstream serve`` as a user runs it: a real process, real HTTP, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.kafka.broker import free_port

pytestmark = pytest.mark.slow

KEY = "process-test-key-0123456789"


class Server:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.log = data_dir.parent / f"serve-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TOUCHSTREAM_DATA_DIR": str(self.data_dir),
               "TOUCHSTREAM_PORT": str(self.port),
               "TOUCHSTREAM_API_KEYS": f"test:read+write+admin:{KEY}"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "serve"], env=env, stdout=out,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serve did not become ready:\n{self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", free_port())
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait()


def events(start: int, n: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=10)
    return [{"event_id": f"e-{i}", "occurred_at": (at + timedelta(seconds=i % 300)).isoformat(),
             "customer_id": f"c-{i % 50}", "touchpoint": "chat_support", "channel": "chat",
             "kind": "csat", "value": 1 + i % 5, "comment": "Ástarþakkir 🙏"}
            for i in range(start, start + n)]


def overall_n(client: httpx.Client) -> int:
    body = client.get("/v1/scores?window=24h").json()
    return int(body["items"][0]["n"]) if body["items"] else 0


def test_sigkill_after_acknowledged_writes_loses_nothing(server: Server) -> None:
    server.start()
    headers = {"Authorization": f"Bearer {KEY}"}
    acknowledged = 0
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        for batch in range(20):
            response = client.post("/v1/events", json={"events": events(batch * 250, 250)})
            assert response.status_code == 200, response.text
            acknowledged += response.json()["accepted"]
    assert acknowledged == 5000
    assert server.kill(signal.SIGKILL) == -signal.SIGKILL
    server.start()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        assert overall_n(client) == 5000
        again = client.post("/v1/events", json=events(0, 250)).json()
        assert again["duplicates"] == 250  # still remembered: idempotent across the crash
        assert overall_n(client) == 5000


def test_sigterm_drains_and_restarts_from_a_snapshot(server: Server) -> None:
    server.start()
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        client.post("/v1/events", json=events(0, 500)).raise_for_status()
    assert server.kill(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    assert "closed" in server.log.read_text()
    server.start()
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        assert overall_n(client) == 500
    assert "0 log rows replayed" in server.log.read_text().split("opened")[-1]


def test_simulate_and_replay_commands_against_a_running_service(server: Server,
                                                                 tmp_path: Path) -> None:
    server.start()
    env = {**os.environ, "TOUCHSTREAM_API_KEY": KEY}
    events_file = tmp_path / "sim.jsonl"
    simulated = subprocess.run(
        [sys.executable, "-m", "service", "simulate", "--to", str(events_file), "--no-live",
         "--rate", "20", "--duration", "60s", "--seed", "3"],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert simulated.returncode == 0, simulated.stderr
    lines = events_file.read_text(encoding="utf-8").splitlines()
    assert 900 < len(lines) < 1500  # ~20/s for 60 s
    replayed = subprocess.run(
        [sys.executable, "-m", "service", "replay", str(events_file), "--to", server.url],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert replayed.returncode == 0, replayed.stderr
    assert f"sent {len(lines):,}: accepted {len(lines):,}" in replayed.stdout
    again = subprocess.run(
        [sys.executable, "-m", "service", "replay", str(events_file), "--to", server.url],
        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert f"duplicates {len(lines):,}" in again.stdout  # replaying twice changes nothing
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert overall_n(c) > 0
