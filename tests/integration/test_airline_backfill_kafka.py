"""Issue 18's airline backfill, as a user does it: the airline survey CSV (389,640
events, all in January 2026) is backfilled with ``touchstream replay --backfill`` into a
live Kafka deployment (two workers) while ``touchstream simulate --live`` sends today's
traffic. The January scores read over HTTP equal pandas over the file, the replay's
summary says what the workers counted, and nothing pages about January."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from test_kafka_replay_summary import replay
from worker_support import REPO_ROOT, Workers, settings_env, worker_settings, write_config

from service.app import create_app
from service.settings import Settings
from streams.engine.config import EngineConfig
from streams.sources.airline import DEFAULT_PATH, TOUCHPOINTS
from streams.worker.runner import KafkaRunner
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow
KEY = "airline-key-0123456789"
CONFIG = EngineConfig(scopes=((), ("touchpoint",), ("segment",), ("channel",)))
CLASSES = {"Business": "business", "Eco": "eco", "Eco Plus": "eco_plus"}


async def test_the_airline_history_backfilled_into_a_live_deployment(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    frame = pd.read_csv(DEFAULT_PATH)
    name = f"airline-{uuid.uuid4().hex[:8]}"
    config_path = write_config(tmp_path / "engine.json", CONFIG)
    settings = worker_settings(kafka_bootstrap, name, tmp_path / "w",
                               input_topic=f"{name}-touchpoints", partitions=3,
                               engine_config=config_path)
    ensure_topics(settings)
    env = settings_env(settings, config_path)
    to = f"kafka://{kafka_bootstrap}/{settings.topic_touchpoints}"
    workers = Workers(tmp_path)
    live: subprocess.Popen[bytes] | None = None
    runner = KafkaRunner(settings)
    try:
        workers.start("w1", settings, config_path)
        workers.start("w2", settings, config_path)
        live = subprocess.Popen(  # noqa: S603 - our own CLI: today's traffic, paced
            [sys.executable, "-m", "service", "simulate", "--to", to, "--rate", "20",
             "--duration", "30m", "--live", "--wait", "0"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5)
        said = replay(DEFAULT_PATH, to, env, "--backfill", "--wait", "240")
        assert "as history (backfill)" in said, said
        assert f"stored by the broker {15 * len(frame):,}, refused 0" in said, said
        counted = re.search(r"counted by the workers: accepted ([\d,]+), duplicates "
                            r"([\d,]+), too old ([\d,]+), rejected ([\d,]+)", said)
        assert counted is not None, said + workers.logs()
        accepted, duplicates, too_old, rejected = (int(g.replace(",", ""))
                                                   for g in counted.groups())
        # The simulated traffic sent meanwhile is counted in the same range.
        assert accepted >= 15 * len(frame) and (duplicates, too_old, rejected) == (0, 0, 0)

        await runner.start()
        app = create_app(Settings(data_dir=tmp_path / "api",
                                  api_keys=SecretStr(f"ops:read:{KEY}")),
                         runner, CONFIG, CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t",
                                     headers={"Authorization": f"Bearer {KEY}"}) as client:

            async def january(scope: str, metric: str) -> dict[str, Any]:
                answer = await client.get("/v1/scores", params={
                    "family": "periodic", "window": "month", "period": "2026-01",
                    "scope": scope, "metric": metric})
                assert answer.status_code == 200, answer.text
                return {item["scope"][scope]: item for item in answer.json()["items"]}

            deadline = time.monotonic() + 60
            while True:  # the API's merged view catches up with the workers
                seat = (await january("touchpoint", "rating:1-5")).get("seat")
                if seat and seat["n"] == int((frame["Seat comfort"] != 0).sum()):
                    break
                assert time.monotonic() < deadline, f"{seat}\n{workers.logs()}"
                await asyncio.sleep(0.5)
            touchpoints = await january("touchpoint", "rating:1-5")
            for tp in TOUCHPOINTS:
                answers = frame[tp.column]
                rated = answers[answers != 0]
                got = touchpoints[tp.touchpoint]
                assert got["n"] == len(rated), tp.column
                assert got["value"] == pytest.approx(rated.mean(), rel=1e-12), tp.column
            verdicts = await january("segment", "rating:1-2")
            for cls, segment in CLASSES.items():
                rows = frame[frame["Class"] == cls]
                assert verdicts[segment]["n"] == len(rows)
                assert verdicts[segment]["share"] == pytest.approx(
                    (rows["satisfaction"] == "satisfied").mean(), rel=1e-12)
            alerts = (await client.get("/v1/alerts")).json()["items"]
            assert not [a for a in alerts if "2026-01" in str(a)], alerts
        workers.check_alive()
    finally:
        if live is not None:
            live.terminate()
            live.wait(timeout=30)
        await runner.stop()
        workers.kill_all()
