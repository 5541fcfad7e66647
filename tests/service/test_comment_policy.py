"""The comment policy on the embedded runner the service builds (``touchstream serve``):
with ``comments = "redact"`` no e-mail address or phone number reaches the data
directory — the SQLite database, its WAL, snapshots — as an auditor scans it, byte by
byte, after a snapshot; with ``drop`` no comment does; with ``keep`` the comment is
there (the scan finds what it looks for)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import CONFIG, WRITE, auth, event

from service.app import create_app
from service.embedded import embedded_runner
from service.settings import Settings
from streams.detection import DetectionConfig
from streams.embedded import EmbeddedRunner

EMAIL = "sigridur.jonsdottir@example.is"
PHONE = "+354 555 1234"
PERSIAN_PHONE = "۰۹۱۲ ۳۴۵ ۶۷۸۹"
SECRETS = [EMAIL, PHONE, PERSIAN_PHONE, "555 1234", "sigridur.jonsdottir", "۳۴۵ ۶۷۸۹"]
KEPT = "Þjónustan var hæg"
"""Comment text that is not personal: redaction keeps it."""


def _comment(i: int) -> str:
    return f"{KEPT} ({i}). Hringið í {PHONE} eða {EMAIL}; شماره من {PERSIAN_PHONE} است"


def _scan(directory: Path, needles: Iterable[str]) -> dict[str, list[str]]:
    """Every file under ``directory`` that holds one of ``needles``, byte for byte."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for needle in needles:
            if needle.encode("utf-8") in data:
                found.setdefault(needle, []).append(path.name)
    return found


@asynccontextmanager
async def _service(tmp_path: Path, policy: str
                   ) -> AsyncIterator[tuple[httpx.AsyncClient, EmbeddedRunner, Path]]:
    """The embedded runner as ``touchstream serve`` builds it, behind the real app."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, comments=policy, snapshot_every=10,
                        api_keys=SecretStr(f"writer:write+read:{WRITE}"))
    runner = embedded_runner(settings, CONFIG, DetectionConfig())
    await asyncio.to_thread(runner.open)
    app = create_app(settings, runner, CONFIG, CollectorRegistry())
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t.test") as client:
            yield client, runner, data_dir
    finally:
        await asyncio.to_thread(runner.close)


async def _post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    answer = await client.post("/v1/events", json=events, headers=auth(WRITE))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_with_redact_no_e_mail_or_phone_reaches_the_data_directory(
        tmp_path: Path) -> None:
    async with _service(tmp_path, "redact") as (client, runner, data_dir):
        # 30 events in three batches, detractors among them (follow-ups), each batch
        # followed by a snapshot (every 10 events)
        for first in (0, 10, 20):
            body = await _post(client, [event(i, comment=_comment(i), value=1 + i % 5)
                                        for i in range(first, first + 10)])
            assert body["accepted"] == 10
        assert runner.stats()["snapshots"] >= 2
        files = {p.name for p in data_dir.iterdir()}
        assert any(name.endswith("-wal") for name in files), files  # the WAL is scanned
        assert _scan(data_dir, SECRETS) == {}
        assert _scan(data_dir, [KEPT]) != {}  # what is not personal is still there
    # closed: final snapshot, WAL checkpointed into the database
    assert _scan(data_dir, SECRETS) == {}


async def test_with_drop_no_comment_reaches_the_data_directory(tmp_path: Path) -> None:
    async with _service(tmp_path, "drop") as (client, _, data_dir):
        body = await _post(client, [event(i, comment=_comment(i)) for i in range(25)])
        assert body["accepted"] == 25
        assert _scan(data_dir, [*SECRETS, KEPT]) == {}
    assert _scan(data_dir, [*SECRETS, KEPT]) == {}


async def test_with_keep_the_scan_finds_the_comments(tmp_path: Path) -> None:
    """The control: the scan would see a comment if one were stored."""
    async with _service(tmp_path, "keep") as (client, _, data_dir):
        await _post(client, [event(i, comment=_comment(i)) for i in range(25)])
        assert EMAIL in _scan(data_dir, [EMAIL])


async def test_with_redact_dead_letters_keep_no_e_mail(tmp_path: Path) -> None:
    async with _service(tmp_path, "redact") as (client, _, data_dir):
        await _post(client, [event(100, comment=_comment(100))])  # moves the watermark on
        body = await _post(client, [
            event(1, comment=_comment(1), value=9),  # invalid: a dead letter
            event(-86_400 * 40, comment=_comment(2)),  # past the lateness horizon: late
        ])
        assert body["rejected"] == 1 and body["late"] == 1
        assert _scan(data_dir, SECRETS) == {}
