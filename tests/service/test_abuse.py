"""Abuse: per-key rate limits (429 with Retry-After, counted) and API keys rotated from
their file while the service runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from service_support import CONFIG, auth, event

from service.app import create_app
from service.ratelimit import TokenBuckets, retry_after
from service.settings import Settings
from streams.embedded import EmbeddedRunner

A, B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"


Served = tuple[httpx.AsyncClient, CollectorRegistry]
Start = Callable[[Settings], Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts apps with given settings over one embedded runner; stops them after."""
    async with EmbeddedRunner(tmp_path / "data", CONFIG) as runner, \
            contextlib.AsyncExitStack() as stack:

        async def start(settings: Settings) -> Served:
            registry = CollectorRegistry()
            app = create_app(settings, runner, CONFIG, registry)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://touchstream.test"))
            return client, registry

        yield start


def test_token_buckets_refill_at_the_rate_up_to_the_burst() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes every 0.5 s
    assert buckets.take("b") == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] = 100.0  # a long pause refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(4)][-1] > 0
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


async def test_a_burst_gets_429_for_that_key_while_other_keys_are_served(
        serve: Start, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit=1.0, rate_burst=5,
                        api_keys=SecretStr(f"a:read+write:{A},b:read:{B}"))
    client, registry = await serve(settings)
    answers = [await client.get("/v1/scores", headers=auth(A)) for _ in range(8)]
    codes = [r.status_code for r in answers]
    assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
    limited = next(r for r in answers if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert "rate limit" in limited.json()["detail"]
    # Writes by the limited key are refused too, and nothing of them is ingested.
    posted = await client.post("/v1/events", json={"events": [event(1)]}, headers=auth(A))
    assert posted.status_code == 429
    # The other key is served meanwhile.
    assert (await client.get("/v1/scores", headers=auth(B))).status_code == 200
    refused = registry.get_sample_value("touchstream_api_rate_limited_total", {"key": "a"})
    assert refused is not None and refused >= 4
    assert registry.get_sample_value("touchstream_api_rate_limited_total", {"key": "b"}) is None
    # Unauthenticated endpoints are not limited by anyone's key.
    assert (await client.get("/healthz")).status_code == 200


async def test_no_limit_when_the_rate_is_zero(serve: Start, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit=0, rate_burst=1,
                        api_keys=SecretStr(f"a:read:{A}"))
    client, _ = await serve(settings)
    codes = {(await client.get("/v1/scores", headers=auth(A))).status_code for _ in range(20)}
    assert codes == {200}


async def test_keys_rotate_from_their_file_while_the_service_runs(
        serve: Start, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"a:read:{A}\n", encoding="utf-8")
    settings = Settings(data_dir=tmp_path, environment="production", api_keys_file=keys)
    client, registry = await serve(settings)
    assert (await client.get("/v1/scores", headers=auth(A))).status_code == 200
    assert (await client.get("/v1/scores", headers=auth(B))).status_code == 401

    # Rotate: B in, A out (a new file renamed over the old, as a Secret volume does).
    fresh = tmp_path / "api-keys.new"
    fresh.write_text(f"b:read:{B}\n", encoding="utf-8")
    os.replace(fresh, keys)

    async def status(key: str) -> int:
        return (await client.get("/v1/scores", headers=auth(key))).status_code

    for _ in range(40):  # the file is checked at most once a second
        if await status(B) == 200:
            break
        await asyncio.sleep(0.1)
    assert await status(B) == 200 and await status(A) == 401
    assert registry.get_sample_value("touchstream_api_key_reloads_total",
                                     {"outcome": "ok"}) == 1

    # A broken edit keeps the keys in force, and is counted.
    broken = tmp_path / "api-keys.broken"
    broken.write_text("b:read", encoding="utf-8")
    os.replace(broken, keys)
    for _ in range(40):
        if registry.get_sample_value("touchstream_api_key_reloads_total",
                                     {"outcome": "failed"}) == 1:
            break
        await status(B)
        await asyncio.sleep(0.1)
    assert registry.get_sample_value("touchstream_api_key_reloads_total",
                                     {"outcome": "failed"}) == 1
    assert await status(B) == 200


def test_a_keys_file_in_production_must_hold_real_keys(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text("ops:read:changeme\n", encoding="utf-8")
    with pytest.raises(ValueError, match="real keys"):
        Settings(environment="production", api_keys_file=keys)
    with pytest.raises(ValueError, match="cannot read"):
        Settings(environment="production", api_keys_file=tmp_path / "missing")


def test_the_owasp_table_covers_every_risk_with_tests_that_exist() -> None:
    """docs/security.md names, for each OWASP API Top 10 (2023) risk, tests that exist."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "docs" / "security.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (API\d+) [^|]+\|[^|]+\|(.+)\|$",
                                                        text, re.MULTILINE)}
    assert sorted(rows, key=lambda r: int(r[3:])) == [f"API{i}" for i in range(1, 11)]
    for risk, cell in rows.items():
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", cell)
        assert named, f"{risk}: no test named"
        for path, test in named:
            source = (repo / path).read_text(encoding="utf-8")
            assert not test or f"def {test}(" in source, f"{risk}: {path}::{test} not found"
