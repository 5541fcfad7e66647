"""/docs and /redoc: served from installed files, nothing from another origin, and
rendering the API in a real browser with the network to the outside cut off."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from chromium_cdp import chromium, find_chromium
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from deploy.kafka.broker import free_port
from service.app import create_app
from service.routes.docs import POLICY
from service.settings import Settings
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with EmbeddedRunner(tmp_path, EngineConfig()) as runner:
        app: FastAPI = create_app(Settings(data_dir=tmp_path), runner, EngineConfig(),
                                  CollectorRegistry())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://touchstream.test") as c:
            yield c


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_docs_pages_load_everything_from_this_server(
        client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == POLICY
    assert "script-src 'self';" in POLICY and "http" not in POLICY
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        answer = await client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.content) > 100, url
        if url.endswith(".js"):  # no address of another origin left in the scripts
            assert b"https://cdn." not in answer.content, url
        again = await client.get(url, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304, url


async def test_only_the_docs_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/docs/assets/favicon.png", "/docs/assets/core.py",
                 "/docs/assets/swagger.html", "/docs/assets/..%2F__init__.py",
                 "/docs/oauth2-redirect"):
        assert (await client.get(path)).status_code == 404, path
    spec = (await client.get("/openapi.json")).json()
    assert not {p for p in spec["paths"] if p.startswith(("/docs", "/redoc"))}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve exited"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        message = "chromium is not installed (scripts/test.sh installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.integration
async def test_the_docs_render_offline_in_chromium(serve: str, chromium_path: str,
                                                  tmp_path: Path) -> None:
    async with chromium(chromium_path, tmp_path / "profile", tmp_path / "chromium.log") as page:
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        # Requests to the internet fail, as they would offline (and any is reported).
        await page.send("Network.setBlockedURLs", urls=[
            f"*://*.{tld}/*" for tld in ("com", "net", "org", "io", "dev")])
        await page.send("Page.navigate", url=f"{serve}/docs")
        title = await page.wait_for(
            "document.querySelector('.swagger-ui .info .title')?.textContent",
            "Swagger UI to render the API", timeout=30)
        assert title.startswith("touchstream")
        assert await page.wait_for(
            "document.querySelectorAll('.opblock-summary-path').length", "the operations")
        await page.send("Page.navigate", url=f"{serve}/redoc")
        heading = await page.wait_for(
            "document.querySelector('#redoc h1')?.textContent", "ReDoc to render",
            timeout=30)
        assert heading.startswith("touchstream")
        requests = [e["params"]["request"]["url"] for e in page.events
                    if e["method"] == "Network.requestWillBeSent"]
        outside = [u for u in requests
                   if not u.startswith((serve, "data:", "blob:", "about:"))]
        assert outside == []
        errors = [e["params"] for e in page.events
                  if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Log.entryAdded"
                      and e["params"]["entry"]["level"] == "error")]
        assert errors == []  # no CSP violation, nothing failed to load
