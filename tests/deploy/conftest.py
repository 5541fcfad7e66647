"""Fixtures for the deploy tests: one running alert path (service, Prometheus,
Alertmanager, webhook) per session, and its logs attached to any test that fails."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from touchstream_stack import Stack, baseline_events, drop_events, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The alert path, running, after a week of steady CSAT and a bad last hour in chat.

    Events are posted in ascending time (the engine refuses events older than its
    watermark minus an hour); the drop arrives in one batch, whose newer watermark
    makes the detector evaluate.
    """
    with start_stack(tmp_path_factory.mktemp("alert-path")) as running:
        now = datetime.now(UTC)
        running.post_events(baseline_events(now))
        running.post_events(drop_events(now))
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure, attach the logs of every process of the stack to the report."""
    outcome = yield
    report = outcome.get_result()
    running = getattr(item, "funcargs", {}).get("stack")
    if report.failed and isinstance(running, Stack):
        report.sections.append(("alert path logs", running.logs()))
