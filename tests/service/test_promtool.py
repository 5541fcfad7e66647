"""The exposition passes ``promtool check metrics`` (Prometheus's own linter)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import httpx
import pytest
from service_support import WRITE, auth, event

from service.metrics import read_scoreboard

pytestmark = pytest.mark.integration


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


async def test_exposition_passes_promtool(client: httpx.AsyncClient, app: Any,
                                          runner: Any) -> None:
    tool = promtool()
    await client.post("/v1/events", json=[event(i) for i in range(30)]
                      + [event(100 + i, channel="phone", segment="Þjónusta", kind="nps",
                               value=i % 11) for i in range(30)], headers=auth(WRITE))
    app.state.metrics.board = await runner.read(
        lambda engine: read_scoreboard(engine, app.state.settings.metrics_windows))
    text = (await client.get("/metrics")).text
    assert 'segment="Þjónusta"' in text
    checked = subprocess.run([tool, "check", "metrics"], input=text.encode(),
                             capture_output=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert checked.stdout.decode().strip() == ""  # no lint findings at all
