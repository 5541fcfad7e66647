"""What the commands say when they work: labelled summaries, reasons grouped, fresh
simulator ids per run, the demo's targets, and readiness only once the history is in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from deploy.kafka.broker import free_port
from service import cli
from service.app import create_app
from service.demo import demo_detection, demo_engine_config
from service.settings import Settings
from service.traffic import demo_feed
from streams.detection import default_detection
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig
from streams.sources.simulator import SEGMENTS
from streams.sources.sinks import HttpSink, SendReport


def touchstream(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=True)


def event(event_id: str, at: datetime, value: int) -> dict[str, Any]:
    return {"event_id": event_id, "occurred_at": at.isoformat(), "customer_id": "c-1",
            "touchpoint": "support", "channel": "chat", "kind": "csat", "value": value}


def wait_ready(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("serve did not become ready")


def ids(path: Path) -> list[str]:
    return [json.loads(line)["event_id"] for line in path.read_text().splitlines()]


def test_simulate_sends_fresh_ids_per_run_and_the_same_with_a_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        out = touchstream("simulate", "--to", f"{name}.jsonl", "--no-live", "--duration",
                          "60s", cwd=tmp_path)
        assert "--seed repeats a run" in out.stdout
    assert len(ids(tmp_path / "a.jsonl")) > 100
    assert not set(ids(tmp_path / "a.jsonl")) & set(ids(tmp_path / "b.jsonl"))
    for name in ("c", "d"):
        touchstream("simulate", "--to", f"{name}.jsonl", "--no-live", "--duration", "60s",
                    "--seed", "5", cwd=tmp_path)
    assert ids(tmp_path / "c.jsonl") == ids(tmp_path / "d.jsonl")


def test_a_summary_of_duplicates_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    cli._summary(SendReport(sent=40, duplicates=40), repeat_hint="events.jsonl was sent "
                                                                 "there before")
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "sent 40: accepted 0, duplicates 40, late 0, rejected 0",
        "every event was a duplicate: the destination had these event ids already "
        "(events.jsonl was sent there before)",
    ]
    cli._summary(SendReport(sent=40, duplicates=39, accepted=1), repeat_hint="x")
    assert "every event" not in capsys.readouterr().out


def test_the_summary_groups_rejects_and_lates_by_reason(
        capsys: pytest.CaptureFixture[str]) -> None:
    body = {"results": [
        {"status": "accepted"},
        {"status": "late", "field": "occurred_at", "reason": "older than the watermark"},
        {"status": "late", "field": "occurred_at", "reason": "older than the watermark"},
        {"status": "rejected", "field": "value", "reason": "Expected `int` <= 5"},
        {"status": "rejected", "field": "segment", "reason": "is required"},
        {"status": "rejected", "field": "value", "reason": "Expected `int` <= 5"},
    ]}
    report = HttpSink._read(body, 6)
    assert report.late_reasons == Counter({"occurred_at: older than the watermark": 2})
    total = SendReport().add(report).add(report)
    cli._summary(total, repeat_hint="x")
    assert capsys.readouterr().out.splitlines() == [
        "sent 12: accepted 2, duplicates 0, late 4, rejected 6",
        "  rejected       4  value: Expected `int` <= 5",
        "  rejected       2  segment: is required",
        "  late           4  occurred_at: older than the watermark",
    ]


def test_replay_to_a_server_summarises_by_reason_without_request_logs(
        tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    server = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        now = datetime.now(UTC).replace(microsecond=0)
        lines = [event(f"ok-{i}", now, 5) for i in range(30)]
        lines += [event(f"late-{i}", now - timedelta(days=40), 4) for i in range(3)]
        lines += [event("bad-0", now, 7), event("bad-1", now, 9)]
        (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
        key = (tmp_path / "data" / "dev-api-key").read_text().strip()
        env["TOUCHSTREAM_API_KEY"] = key
        args = [sys.executable, "-m", "service", "replay", "events.jsonl", "--to",
                f"http://127.0.0.1:{port}"]
        first = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=60, check=True)
        again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=60, check=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    summary = [line for line in first.stdout.splitlines() if not line.startswith("sending")]
    assert summary == [
        "replaying events.jsonl to http://127.0.0.1:" + str(port),
        "sent 35: accepted 30, duplicates 0, late 3, rejected 2",
        "  rejected       2  value: Expected `int` <= 5",
        "  late           3  occurred_at: older than the watermark minus the lateness "
        "horizon (3024000 s, 35 days)",
    ]
    assert "HTTP Request" not in first.stderr + first.stdout
    # The late ones were never counted, so they are not remembered: late again.
    assert "sent 35: accepted 0, duplicates 30, late 3, rejected 2" in again.stdout


def test_airline_bands_are_labelled(tmp_path: Path) -> None:
    sample = tmp_path / "airline.csv"
    with (Path(__file__).resolve().parents[2] / "datasets" / "airline-satisfaction.csv"
          ).open(encoding="utf-8") as source:
        sample.write_text("".join(next(source) for _ in range(301)), encoding="utf-8")
    out = touchstream("airline", "--path", str(sample), cwd=tmp_path).stdout
    assert "flight journeys by number of channels used" in out
    assert "channels" in out and "journey score (0-100)" in out
    assert "{'" not in out  # no bare dict


def test_the_demo_targets_differ_by_segment_and_offering() -> None:
    config = demo_engine_config()
    by = {(t.metric, t.segment, t.offering): t.value for t in config.targets}
    segments = {s.name for s in SEGMENTS}
    offerings = {o for s in SEGMENTS for o in s.offerings}
    assert {seg for (_, seg, _) in by if seg} <= segments
    assert {off for (_, _, off) in by if off} <= offerings
    # Expectations differ: the same CSAT meets the budget target, not the enterprise one.
    assert by[("csat", "budget", None)] < by[("csat", "standard", None)] < \
        by[("csat", "enterprise", None)]
    assert by[("csat", None, "basic")] < by[("csat", None, "premium")]
    assert config.model_copy(update={"targets": ()}) == EngineConfig()
    rules = demo_detection(config)
    assert sorted(r.metric for r in rules.targets) == ["csat", "nps"]
    assert all(r.scopes == (("segment",),) for r in rules.targets)
    assert rules.drops == default_detection(config).drops  # the chat drop still pages


async def test_readyz_waits_for_the_simulated_history(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_keys=SecretStr("r:read:reader-key-0123456789"))
    async with EmbeddedRunner(tmp_path, EngineConfig()) as runner:
        app: FastAPI = create_app(settings, runner, EngineConfig(), CollectorRegistry())
        app.state.loading = "loading 1:00:00 of simulated history"
        seen: list[int] = []

        def loaded() -> None:
            app.state.loading = None
            seen.append(1)

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            before = await client.get("/readyz")
            assert before.status_code == 503
            assert before.json() == {"status": "not ready",
                                     "reason": "loading 1:00:00 of simulated history"}
            feed = asyncio.create_task(demo_feed(runner, 2.0, [], timedelta(hours=1),
                                              on_history=loaded))
            for _ in range(600):
                if seen:
                    break
                await asyncio.sleep(0.05)
            assert seen, "the history never finished"
            history_n = await runner.read(lambda e: e.counters["accepted"])
            assert history_n > 5000  # an hour at 2/s, all in before ready
            assert (await client.get("/readyz")).status_code == 200
            feed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await feed
