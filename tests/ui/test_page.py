"""The live page: served without a key from package files, self-contained, and working in
a real browser against a real ``touchstream serve`` process with a planted drop."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium_cdp import Page, chromium, find_chromium
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from deploy.kafka.broker import free_port
from service.app import create_app
from service.settings import Settings
from streams.detection import DetectionConfig, DropRule
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig, Target

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "ui"
READ = "ui-reader-key-0123456789"
ADMIN = "ui-admin-key-0123456789"
ASSETS = ("app.js", "style.css", "icon.svg")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML namespace name, never fetched


# ---------------------------------------------------------------------- fast: the app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(data_dir=tmp_path, api_keys=SecretStr(f"viewer:read:{READ}"))
    async with EmbeddedRunner(tmp_path, EngineConfig()) as runner:
        yield create_app(settings, runner, EngineConfig(), CollectorRegistry())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://touchstream.test") as c:
        yield c


class References(HTMLParser):
    """Every src and href of a document, and the ids of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "id" and value:
                self.ids.add(value)


def references(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


async def test_the_page_is_served_without_a_key_at_root_and_ui(
        client: httpx.AsyncClient) -> None:
    root = await client.get("/")
    ui = await client.get("/ui")
    for response in (root, ui):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "connect-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    assert root.content == ui.content
    assert root.content == resources.files("service").joinpath("static",
                                                                "index.html").read_bytes()
    html = root.text
    assert '<html lang="en">' in html and 'name="viewport"' in html
    found = references(html)
    # What the script fills in and what the browser test reads.
    assert {"key-form", "key", "status", "overview-body", "alerts-body", "detection-body",
            "breakdown-body", "periodic-body", "pulses-body", "journeys-body"} <= found.ids
    assert 'aria-live="polite"' in html
    assert '<label for="key">' in html


async def test_static_assets_load_with_their_types(client: httpx.AsyncClient) -> None:
    types = {"app.js": "text/javascript", "style.css": "text/css", "icon.svg": "image/svg+xml"}
    for name in ASSETS:
        response = await client.get(f"/ui/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(types[name])
        assert response.content == resources.files("service").joinpath("static",
                                                                    name).read_bytes()
        again = await client.get(f"/ui/{name}",
                                 headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    html = (await client.get("/")).text
    for url in references(html).urls:
        if not url.startswith("#"):
            assert (await client.get(url)).status_code == 200, url


async def test_only_the_page_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/ui/index.html", "/ui/nope.js", "/ui/..%2Froutes%2Fui.py", "/ui/%2E%2E",
                 "/ui/static", "/favicon.ico"):
        assert (await client.get(path)).status_code == 404, path
    spec = (await client.get("/openapi.json")).json()
    assert not {"/", "/ui", "/ui/{name}"} & set(spec["paths"])


async def test_the_page_references_nothing_outside_its_origin(
        client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    urls = references(html).urls
    assert urls, "the page links its script and style sheet"
    for url in urls:  # paths on this server, or a place in the page itself
        assert url.startswith(("/", "#")) and not url.startswith("//"), url
    assert not re.search(r"https?://", html)
    for name in ASSETS:
        text = (await client.get(f"/ui/{name}")).text.replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
        assert "@import" not in text and "url(" not in text, name
    script = (await client.get("/ui/app.js")).text
    assert "innerHTML" not in script and "eval(" not in script  # values go in as text
    assert re.findall(r"fetch\(([^,)]*)", script) == ["path"]  # one fetch: api(path)
    assert set(re.findall(r"api\(`?'?(/[a-z0-9/]+)", script)) <= {"/v1/scores",
                                                                   "/v1/scores/journeys",
                                                                   "/v1/scores/series",
                                                                   "/v1/alerts",
                                                                   "/v1/detection",
                                                                   "/v1/pulses"}


async def test_the_data_still_needs_a_read_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/scores?window=15m")).status_code == 401
    ok = await client.get("/v1/scores?window=15m", headers={"Authorization": f"Bearer {READ}"})
    assert ok.status_code == 200


def test_the_page_files_are_package_data() -> None:
    static = resources.files("service").joinpath("static")
    assert sorted(p.name for p in static.iterdir()) == sorted(("index.html", *ASSETS))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "static/*" in project["tool"]["setuptools"]["package-data"]["service"]


# ---------------------------------------------------------------------- the real browser


def bad_hour_start() -> datetime:
    """The start of the bad hour, taken when the test runs (not when the module is
    collected, which can be many minutes earlier in a full run): the hour ends a minute
    before the wall clock, so the page's trends (the last hour by the browser's clock)
    always hold it, whatever the minute of the hour."""
    return datetime.now(UTC).replace(microsecond=0, second=0) - timedelta(minutes=61)

ARABIC, CYRILLIC = "مؤسسات", "Частные клиенты"
PULSE_NAME = "تجربة الدردشة · chat pilot"


def traffic(start: datetime) -> list[dict[str, Any]]:
    """Three days of good CSAT in chat and phone (85% satisfied), then an hour with chat
    at 40%; NPS in the app and resolution in chat alongside; a few email answers (a
    small, uncertain sample); journeys of one and two channels. Ascending in time."""
    out: list[dict[str, Any]] = []

    def add(at: datetime, channel: str, kind: str, value: Any, segment: str,
            **extra: Any) -> None:
        i = len(out)
        out.append({"event_id": f"ui-{i}", "occurred_at": at.isoformat(),
                    "customer_id": f"c-{i % 211}", "touchpoint": f"{channel}_support",
                    "channel": channel, "segment": segment, "kind": kind, "value": value,
                    **extra})

    minutes = [(start - timedelta(hours=h) + timedelta(minutes=3 * k), False)
               for h in range(72, 0, -1) for k in range(20)]
    minutes += [(start + timedelta(seconds=30 * k), True) for k in range(120)]
    for step, (at, bad) in enumerate(minutes):
        good = step % 20 < 17
        journey = {"journey_id": f"j-{step}", "journey_type": "technical_problem"}
        add(at, "chat", "csat", (4 if step % 5 < 2 else 1) if bad else (5 if good else 2),
            ARABIC, stage="respond", **journey)
        add(at, "phone", "csat", 5 if good else 2, CYRILLIC, stage="respond",
            journey_end=step % 3 != 0, **journey)
        if step % 3 == 0:
            add(at, "app", "nps", (10, 9, 8, 7, 3)[step % 5], CYRILLIC)
            add(at, "chat", "outcome", "resolved" if step % 4 else "unresolved", ARABIC)
        if bad and step % 12 == 0:
            add(at, "email", "csat", 5 if step % 24 else 3, CYRILLIC)
    return out


def later(start: datetime, count: int) -> list[dict[str, Any]]:
    """``count`` more phone CSAT answers in the last minute of the bad hour."""
    at = start + timedelta(seconds=3570)
    return [{"event_id": f"ui-later-{i}", "occurred_at": at.isoformat(),
             "customer_id": f"c-later-{i}", "touchpoint": "phone_support", "channel": "phone",
             "segment": CYRILLIC, "kind": "csat", "value": 5} for i in range(count)]


class Service:
    """``touchstream serve`` as a process with a read key, an admin key, a CSAT target,
    a window drop rule that fires at once and a sequential CSAT drop rule by channel and
    segment; ``default``: the built-in engine and detection configuration instead."""

    def __init__(self, root: Path, default: bool = False,
                 detection: DetectionConfig | None = None) -> None:
        self.root, self.port, self.default = root, free_port(), default
        self.detection = detection
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        engine = EngineConfig(targets=(Target(metric="csat", value=0.8),
                                       Target(metric="nps", value=30)))
        detection = DetectionConfig(drops=(DropRule(
            name="csat-drop", metric="csat", scopes=(("channel",),), hold_seconds=0,
            min_n_window=50, min_n_baseline=100, severity="critical", owner="support"),
            DropRule(name=SEQUENTIAL, metric="csat", test="sequential",
                     scopes=(("channel",), ("segment",)), horizon="1d",
                     baseline=("prior", "2d"), severity="warning", owner="support")))
        detection = self.detection or detection
        (self.root / "engine.json").write_text(engine.model_dump_json(), encoding="utf-8")
        (self.root / "detection.json").write_text(detection.model_dump_json(),
                                                  encoding="utf-8")
        env = {key: value for key, value in os.environ.items()
               if key not in ("TOUCHSTREAM_ENGINE_CONFIG", "TOUCHSTREAM_DETECTION_CONFIG")}
        env |= {"TOUCHSTREAM_DATA_DIR": str(self.root / "data"),
                "TOUCHSTREAM_PORT": str(self.port),
                "TOUCHSTREAM_API_KEYS": f"viewer:read:{READ},feeder:read+write+admin:{ADMIN}"}
        if not self.default:
            env |= {"TOUCHSTREAM_ENGINE_CONFIG": str(self.root / "engine.json"),
                    "TOUCHSTREAM_DETECTION_CONFIG": str(self.root / "detection.json")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
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

    def post(self, events: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=self.url, timeout=30,
                          headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            for start in range(0, len(events), 1000):
                body = client.post("/v1/events", json={"events": events[start:start + 1000]})
                assert body.status_code == 200, body.text
                assert body.json()["accepted"] == len(events[start:start + 1000]), \
                    [r for r in body.json()["results"] if r["status"] != "accepted"][:3]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        message = ("chromium is not installed (Debian: apt-get install -y chromium; "
                   "scripts/test.sh installs it as root)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


OVERALL_CSAT_N = ("document.querySelector('#overview-body [data-metric=\"csat\"] "
                  "[data-window=\"15m\"] .n')?.dataset.n")
FIRING = "#alerts-firing [data-rule=\"csat-drop\"][data-state=\"firing\"]"
SEQUENTIAL = "csat-seq"
DETECTION_ROW = "#detection-body tr[data-rank=\"{}\"]"


def scope_key(scope: dict[str, str]) -> str:
    """The page's ``data-scope``: dimension=value pairs joined by &."""
    return "&".join(f"{k}={v}" for k, v in scope.items())


async def sign_in(page: Page, url: str) -> None:
    await page.send("Page.navigate", url=f"{url}/?every=1")
    await page.wait_for("document.readyState === 'complete' && "
                        "!!document.getElementById('key')", "the page to load")
    await page.evaluate(f"document.getElementById('key').value = {READ!r};"
                        " document.getElementById('key-form').requestSubmit()")


async def text_of(page: Page, selector: str) -> str:
    value = await page.evaluate(f"document.querySelector({selector!r})?.textContent ?? ''")
    return str(value)


@pytest.mark.integration
async def test_the_page_in_chromium_shows_scores_and_the_planted_alert_live(
        service: Service, chromium_path: str, tmp_path: Path) -> None:
    started = time.monotonic()
    service.start()
    bad = bad_hour_start()
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        # A study counts the events that arrive while it runs: start it first.
        c.post("/v1/pulses", json={
            "pulse_id": "chat-pilot", "name": PULSE_NAME, "filter": {"channel": ["chat"]},
            "start": bad.isoformat(), "end": (bad + timedelta(hours=3)).isoformat(),
            "baseline_start": (bad - timedelta(hours=72)).isoformat(),
            "baseline_end": bad.isoformat()}).raise_for_status()
        service.post(traffic(bad))
        firing = c.get("/v1/alerts", params={"state": "firing"}).json()["items"]
        assert [(a["rule"], a["scope"]) for a in firing if a["rule"] == "csat-drop"] \
            == [("csat-drop", {"channel": "chat"})]
        assert {"channel": "phone"} not in [a["scope"] for a in firing]
        # The sequential rule's state: chat's drop (and the segment that is only chat)
        # closest to paging, phone far from it; email has no baseline yet.
        detection = c.get("/v1/detection").json()
        assert detection["sequential_rules"] == [SEQUENTIAL]
        ranked = detection["items"]
        dropping = [{"channel": "chat"}, {"segment": ARABIC}]
        assert ranked[0]["scope"] in dropping and ranked[0]["holds"], ranked[:3]
        evidence = {scope_key(i["scope"]): i["evidence"] for i in ranked if i["tested"]}
        assert evidence["channel=chat"] >= 1.0 > evidence["channel=phone"]
        # Dated near where the bad answers begin, within minutes (an hour's baseline is
        # shrunk as much as the hours differ, not by a fixed prior: with the fixed one a
        # flat history pulled this estimate 8 hours early).
        (chat,) = [i for i in ranked if i["scope"] == {"channel": "chat"}]
        start = datetime.fromisoformat(chat["change_start"])
        assert bad - timedelta(minutes=15) <= start <= bad + timedelta(minutes=30), chat
        expected_n = c.get("/v1/scores", params={"window": "15m", "metric": "csat"}
                           ).json()["items"][0]["n"]

    async with chromium(chromium_path, tmp_path / "profile", tmp_path / "chromium.log") as page:
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                        deviceScaleFactor=1, mobile=False)
        await page.send("Page.navigate", url=f"{service.url}/?every=1")
        await page.wait_for("document.readyState === 'complete' && "
                            "!!document.getElementById('key')", "the page to load")
        await page.wait_for("document.getElementById('status').textContent.includes('key')",
                            "the key prompt")

        # The keyboard alone: Tab reaches the skip link, Tab again the key field; Enter.
        await page.press("Tab", "Tab", 9)
        assert await page.evaluate("document.activeElement.className") == "skip"
        await page.press("Tab", "Tab", 9)
        assert await page.evaluate("document.activeElement.id") == "key"
        await page.type_text("not-a-key")
        await page.press("Enter", "Enter", 13, text="\r")
        await page.wait_for("document.getElementById('key-error').textContent.includes('401')",
                            "a refused key to be reported")
        assert await page.evaluate("document.activeElement.id") == "key"  # ready to retry
        await page.type_text(READ)
        await page.press("Enter", "Enter", 13, text="\r")

        n_before = int(await page.wait_for(OVERALL_CSAT_N, "the overall CSAT score"))
        assert n_before == expected_n
        await page.wait_for(f"!!document.querySelector({FIRING!r})", "the planted alert")
        # The page leads with what is firing: the alert is the first thing in <main>,
        # above the score cards, and in view without scrolling.
        assert await page.evaluate("document.querySelector('main').firstElementChild.id") \
            == "alerts"
        alert_box = await page.evaluate(
            f"(() => {{ const r = document.querySelector({FIRING!r}).getBoundingClientRect();"
            " return [r.top, r.bottom]; })()")
        scores_top = await page.evaluate(
            "document.getElementById('overview').getBoundingClientRect().top")
        assert alert_box[1] < scores_top, (alert_box, scores_top)
        assert 0 <= alert_box[0] < await page.evaluate("window.innerHeight")
        alert = await text_of(page, FIRING)
        assert "critical" in alert.lower() and "chat" in alert and "support" in alert
        assert "CSAT" in alert and "q < 0.001" in alert
        assert await page.evaluate("sessionStorage.getItem('touchstream.readKey')") == READ
        status = await text_of(page, "#status")
        assert f"{len(firing)} alerts firing" in status

        # Detection: the dropping series first, each with the evidence the API gives, as
        # text and as a bar toward the threshold; scopes in any script kept as written.
        await page.wait_for(f"document.querySelector({DETECTION_ROW.format(0)!r})"
                            "?.dataset.rule === 'csat-seq'", "the detection panel")
        shown = await page.evaluate(
            "[...document.querySelectorAll('#detection-body tbody tr')].map((r) => ({"
            " scope: r.dataset.scope, evidence: r.dataset.evidence ?? null,"
            " text: r.querySelector('.evidence')?.textContent ?? null,"
            " name: r.querySelector('th').textContent, bar: r.querySelector('svg')"
            "?.getAttribute('aria-label') ?? null, decision: r.querySelector('.decision')"
            "?.textContent ?? r.textContent }))")
        assert [r["scope"] for r in shown] == [scope_key(i["scope"]) for i in ranked[:10]]
        assert shown[0]["scope"] in {scope_key(s) for s in dropping}
        for row in shown:
            if row["scope"] in evidence:
                assert float(row["evidence"]) == evidence[row["scope"]], row
                assert row["text"] == f"{evidence[row['scope']]:.2f}", row
                assert row["bar"].startswith(f"evidence {row['text']} of 1.00"), row
        assert "pages now" in shown[0]["decision"]
        # chat's baseline has answers 5 and 2 only: the top-only test, said as such
        destination = await text_of(page, DETECTION_ROW.format(0) + " .destination")
        assert destination.strip() == "from the top", destination
        (arabic,) = [r for r in shown if r["scope"] == f"segment={ARABIC}"]
        assert ARABIC in arabic["name"]
        email = [r for r in shown if r["scope"] == "channel=email"]
        assert not email or "not tested" in email[0]["decision"]
        assert "csat-seq" in await text_of(page, DETECTION_ROW.format(0))
        badge = await text_of(page, "#overview-body [data-metric=\"csat\"] "
                                    "[data-window=\"15m\"] .badge")
        assert "below target" in badge  # chat's drop takes the overall 15 min under 80%

        # More answers arrive: the displayed n follows without a reload.
        service.post(later(bad, 40))
        await page.wait_for(f"Number({OVERALL_CSAT_N}) === {n_before + 40}",
                            "the overall n to include the new answers")
        await page.wait_for("!!document.querySelector('#overview-body [data-metric=\"csat\"] "
                            "[data-window=\"15m\"] svg.spark polyline')", "the trend line")
        # The trend is the server's series (per minute over the last hour), not the polls
        # since the page opened: as many points as minutes with answers.
        spark = "#overview-body [data-metric=\"csat\"] [data-window=\"15m\"] svg.spark"
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {READ}"}) as c:
            (series,) = c.get("/v1/scores/series", params={
                "step": "1m", "metric": "csat",
                "since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}).json()["items"]
        minutes = sum(1 for p in series["points"] if p["n"])
        assert minutes >= 2
        drawn = await page.evaluate(f"document.querySelector({spark!r}).dataset.points")
        assert int(drawn) == minutes
        assert "per minute" in await page.evaluate(
            f"document.querySelector({spark!r}).getAttribute('aria-label')")
        assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1

        # A scope this server does not score, then segments in Arabic and Russian, each
        # isolated and directed by its own text.
        choose = ("(() => {{ const s = document.getElementById('scope'); s.value = {!r};"
                  " s.dispatchEvent(new Event('change')); }})()")
        await page.evaluate(choose.format("offering"))
        await page.wait_for("document.querySelector('#breakdown-body .section-error')"
                            "?.textContent.includes('Not available')", "the unscored scope")
        await page.evaluate(choose.format("segment"))
        names = await page.wait_for(
            "document.getElementById('breakdown-h').textContent === 'Scores by segment' && "
            "[...document.querySelectorAll('#breakdown-body bdi[dir=\"auto\"]')]"
            ".map((e) => e.textContent).join('|')", "the segments")
        assert set(names.split("|")) == {ARABIC, CYRILLIC}
        assert await page.evaluate(
            f"getComputedStyle([...document.querySelectorAll('#breakdown-body bdi')]"
            f".find((e) => e.textContent === {ARABIC!r})).direction") == "rtl"
        pulse = await page.wait_for(
            "document.querySelector('[data-pulse-id=\"chat-pilot\"]')?.textContent",
            "the pulse study")
        assert PULSE_NAME in pulse and "running" in pulse
        journeys = await page.wait_for(
            "document.querySelector('#journeys-body [data-band=\"2\"] .n')?.dataset.n",
            "journeys by channel count")
        assert int(journeys) > 0
        periodic = await page.wait_for(
            "document.querySelector('#periodic-body [data-metric=\"csat\"]')?.textContent",
            "the periodic view")
        assert "%" in periodic

        # Every control has a label, every chart a text alternative.
        assert await page.evaluate(
            "[...document.querySelectorAll('input, select, button')]"
            ".filter((e) => !(e.labels?.length || e.textContent.trim())).map((e) => e.id)"
        ) == []
        assert await page.evaluate(
            "[...document.querySelectorAll('main svg')]"
            ".filter((e) => e.getAttribute('role') !== 'img' || !e.getAttribute('aria-label'))"
            ".length") == 0

        await page.screenshot(ARTIFACTS / "touchstream-page.png", width=1280)
        await page.screenshot(ARTIFACTS / "touchstream-page-narrow.png", width=390,
                              mobile=True)
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"), \
            "the narrow layout scrolls sideways"

        requests = [e["params"]["request"]["url"] for e in page.events
                    if e["method"] == "Network.requestWillBeSent"]
        assert requests and all(u.startswith(service.url) for u in requests), \
            [u for u in requests if not u.startswith(service.url)]
        provoked = ("status of 401", "status of 404")  # the wrong key, the unscored scope
        errors = [e["params"] for e in page.events
                  if e["method"] == "Runtime.exceptionThrown"
                  or (e["method"] == "Log.entryAdded"
                      and e["params"]["entry"]["level"] == "error"
                      and not (e["params"]["entry"]["source"] == "network"
                               and any(p in e["params"]["entry"]["text"] for p in provoked)))]
        assert errors == []  # no script error, no CSP violation, nothing else failed to load
    assert time.monotonic() - started < 60


@contextlib.asynccontextmanager
async def detection_panel(service: Service, chromium_path: str, tmp_path: Path
                          ) -> AsyncIterator[tuple[dict[str, Any], Page, str]]:
    """Start ``service`` with no answers; yield ``GET /v1/detection``'s body, the signed-in
    page and the detection panel's message; stop the service."""
    try:
        service.start()
        with httpx.Client(base_url=service.url,
                          headers={"Authorization": f"Bearer {READ}"}) as c:
            body = c.get("/v1/detection").json()
        async with chromium(chromium_path, tmp_path / "profile",
                            tmp_path / "chromium.log") as page:
            await page.send("Page.enable")
            await sign_in(page, service.url)
            message = await page.wait_for(
                "document.getElementById('detection-none')?.textContent",
                "the detection panel's message")
            yield body, page, message
    finally:
        service.stop()


@pytest.mark.integration
async def test_the_page_says_when_no_series_is_watched_by_a_sequential_rule(
        chromium_path: str, tmp_path: Path) -> None:
    """Drop rules that all use the window test: the detection panel says so and how to
    change it, rather than showing an empty box."""
    window_only = DetectionConfig(drops=(DropRule(name="csat-drop-1h", metric="csat"),))
    async with detection_panel(Service(tmp_path, detection=window_only), chromium_path,
                               tmp_path) as (body, page, message):
        assert body["items"] == [] and body["sequential_rules"] == []
        assert "No series is watched by a sequential rule" in message
        assert "window test" in message
        panel = await text_of(page, "#detection-body")
        assert '"test": "sequential"' in panel and "TOUCHSTREAM_DETECTION_CONFIG" in panel
        assert await page.evaluate(
            "document.querySelectorAll('#detection-body table').length") == 0


@pytest.mark.integration
async def test_the_default_rules_are_sequential_and_say_when_nothing_is_watched_yet(
        chromium_path: str, tmp_path: Path) -> None:
    """The built-in configuration: every drop rule is sequential; before any answer the
    panel names them and says they watch nothing yet."""
    async with detection_panel(Service(tmp_path, default=True), chromium_path,
                               tmp_path) as (body, _, message):
        assert body["items"] == []
        assert body["sequential_rules"] == ["csat-drop", "nps-drop", "ces-drop", "outcome-drop"]
        assert message.startswith("No series to show yet")
        assert "csat-drop" in message and "outcome-drop" in message
