"""Event files and sinks: JSONL byte for byte, format detection, and every sink's report.

HttpSink is tested against a real HTTP server: uvicorn on 127.0.0.1 in a background
thread, serving a small FastAPI app that follows the ``POST /v1/events`` contract
(bearer key, per-event results, a 429 with Retry-After, 503s, 401 and 403).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from schemas import EventDecoder, EventError
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.sources.airline import DEFAULT_PATH
from streams.sources.files import detect, jsonl_events, write_jsonl
from streams.sources.simulator import DEFAULT_START, Simulator
from streams.sources.sinks import (
    EngineSink,
    FileSink,
    HttpSink,
    SendReport,
    Sink,
    SinkAuthError,
    SinkError,
    pump,
)

CLOCK = (DEFAULT_START + timedelta(days=30)).timestamp
WRITE_KEY = "test-write-key"
READ_KEY = "test-read-key"


def _events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return list(Simulator(seed=seed, rate=20).events(n))


def _commented(n: int) -> list[dict[str, Any]]:
    """Simulated events whose comment is not plain ASCII."""
    return [e for e in _events(n, seed=4) if "comment" in e and not e["comment"].isascii()]


# -- files -----------------------------------------------------------------------------


def test_non_latin_comments_round_trip_byte_for_byte(tmp_path: Path) -> None:
    events = _commented(6000)
    assert len(events) > 200
    scripts = "".join(e["comment"] for e in events)
    assert all(ch in scripts for ch in ("þ", "ی", "λ", "ä", "す", "\u200c", "\u200d", "\u0301"))
    path = tmp_path / "events.jsonl"
    assert write_jsonl(events, path) == len(events)
    decoder = EventDecoder(clock=CLOCK)
    lines = list(jsonl_events(path))
    assert [n for n, _ in lines] == list(range(1, len(events) + 1))
    for (_, raw), event in zip(lines, events, strict=True):
        assert raw == orjson.dumps(event)
        assert event["comment"].encode("utf-8") in raw  # UTF-8 as is, never \u-escaped
        assert orjson.loads(raw) == event
        assert decoder.decode(raw).comment == event["comment"]
    assert path.read_bytes() == b"".join(orjson.dumps(e) + b"\n" for e in events)


def test_jsonl_events_numbers_lines_and_skips_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n   \n{"b": "\xce\xbb"}\n\t\n{"c": 3}')
    assert list(jsonl_events(path)) == [
        (1, b'{"a": 1}'), (4, b'{"b": "\xce\xbb"}'), (6, b'{"c": 3}')]
    assert list(jsonl_events(tmp_path / "mixed.jsonl")) == list(jsonl_events(str(path)))


def test_write_jsonl_appends_on_request(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl([{"n": 1}], path)
    write_jsonl([{"n": 2}], path, append=True)
    assert [orjson.loads(raw) for _, raw in jsonl_events(path)] == [{"n": 1}, {"n": 2}]
    write_jsonl([{"n": 3}], path)
    assert path.read_bytes() == b'{"n":3}\n'


def test_detect_tells_jsonl_from_the_airline_csv(tmp_path: Path) -> None:
    assert detect(DEFAULT_PATH) == "airline"
    header = DEFAULT_PATH.open(encoding="utf-8").readline()
    no_index = tmp_path / "survey.txt"  # the name does not matter, the header does
    no_index.write_text(header.split(",", 1)[1] + "1,2,3\n", encoding="utf-8")
    assert detect(no_index) == "airline"
    events = tmp_path / "events.csv"
    events.write_bytes(b"\n\n" + orjson.dumps(_events(1)[0]) + b"\n")
    assert detect(events) == "jsonl"
    other = tmp_path / "other.csv"
    other.write_text("id,score\n1,5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON Lines"):
        detect(other)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        detect(empty)


# -- file and engine sinks ---------------------------------------------------------------


async def test_file_sink_appends_what_write_jsonl_writes(tmp_path: Path) -> None:
    events = _events(300)
    path = tmp_path / "sink.jsonl"
    async with FileSink(path) as sink:
        first = await sink.send(events[:120])
        second = await sink.send(events[120:])
    assert (first.sent, first.accepted, second.sent, second.accepted) == (120, 120, 180, 180)
    write_jsonl(events, tmp_path / "direct.jsonl")
    assert path.read_bytes() == (tmp_path / "direct.jsonl").read_bytes()


async def test_engine_sink_counts_rejects_by_reason_duplicates_and_late() -> None:
    engine = Engine(EngineConfig(scopes=((),), allowed_lateness=0, lateness_horizon=0))
    sink = EngineSink(engine, EventDecoder(clock=CLOCK))
    events = _events(500)
    bad = [{**events[0], "event_id": "bad-1", "value": 7, "kind": "csat"},
           {**events[1], "event_id": "bad-2", "value": 9, "kind": "csat"},
           {k: v for k, v in events[2].items() if k != "customer_id"}]
    old = {**events[3], "event_id": "late-1",
           "occurred_at": (DEFAULT_START - timedelta(hours=1)).isoformat()}
    report = await sink.send(events + bad + [old])
    assert report.sent == 504
    assert report.accepted == 500 and report.late == 1 and report.duplicates == 0
    assert report.rejected == 3
    assert report.reasons == Counter({"value: Expected `int` <= 5": 2,
                                      "customer_id: is required": 1})
    assert report.late_reasons == Counter({
        "occurred_at: older than the watermark minus the lateness horizon (0 s)": 1})
    again = await sink.send(events[:50])
    assert (again.accepted, again.duplicates) == (0, 50)
    assert engine.counters["accepted"] == 500


class _Recorder(Sink):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.closed = False

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        self.batches.append(len(batch))
        return SendReport(sent=len(batch), accepted=len(batch))

    async def close(self) -> None:
        self.closed = True


async def test_pump_batches_plain_and_async_streams() -> None:
    sink = _Recorder()
    seen: list[SendReport] = []
    total = await pump(iter(_events(1050)), sink, batch_size=500, on_report=seen.append)
    assert sink.batches == [500, 500, 50] and total.accepted == 1050 and len(seen) == 3

    now = [0.0]

    async def trickle() -> AsyncIterator[dict[str, Any]]:
        for event in _events(10):
            now[0] += 0.3  # one event every 0.3 s
            yield event

    sink = _Recorder()
    await pump(trickle(), sink, batch_size=500, linger=1.0, clock=lambda: now[0])
    # The first event of a batch came at 0.3 s; the one at 1.5 s finds it waited >= 1 s.
    assert sink.batches == [5, 5]  # sent after a second's wait, not when 500 pile up


# -- HttpSink against a real server ----------------------------------------------------


@dataclass
class _Contract:
    """What the test server does and saw."""

    throttle: int = 0
    unavailable: bool = False
    unavailable_after: int | None = None
    requests: int = 0
    received: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    late_before: datetime = DEFAULT_START - timedelta(days=1)


def _app(state: _Contract) -> FastAPI:
    app = FastAPI()
    decoder = EventDecoder(clock=CLOCK)

    @app.post("/v1/events")
    async def post_events(request: Request) -> JSONResponse:
        state.requests += 1
        auth = request.headers.get("authorization")
        if auth == f"Bearer {READ_KEY}":
            return JSONResponse({"detail": "this key lacks the 'write' scope"}, 403)
        if auth != f"Bearer {WRITE_KEY}":
            return JSONResponse({"detail": "a valid API key is required"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        if state.throttle:
            state.throttle -= 1
            return JSONResponse({"detail": "slow down"}, 429, headers={"Retry-After": "1"})
        if state.unavailable or (state.unavailable_after is not None
                                  and state.requests > state.unavailable_after):
            return JSONResponse({"detail": "not ready"}, 503)
        body = orjson.loads(await request.body())
        results = []
        for index, item in enumerate(body["events"]):
            state.received.append(str(item.get("event_id")))
            result = {"index": index, "status": "accepted", "event_id": item.get("event_id"),
                      "field": None, "reason": None}
            try:
                event = decoder.convert(item)
            except EventError as exc:
                result.update(status="rejected", field=exc.field, reason=exc.reason)
            else:
                if event.event_id in state.seen:
                    result["status"] = "duplicate"
                elif event.occurred_at < state.late_before:
                    result.update(status="late", reason="older than the allowed lateness")
                else:
                    state.seen.add(event.event_id)
            results.append(result)
        return JSONResponse({"results": results})

    return app


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, _Contract]]:
    state = _Contract()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server(served: tuple[str, _Contract]) -> tuple[str, _Contract]:
    url, state = served
    state.throttle, state.unavailable, state.requests = 0, False, 0
    state.unavailable_after = None
    state.received.clear()
    state.seen.clear()
    return url, state


async def test_http_sink_posts_batches_retries_429_and_counts_results(
        server: tuple[str, _Contract]) -> None:
    url, state = server
    events = _events(1200)
    bad = [{**events[0], "event_id": "bad-1", "kind": "csat", "value": 7},
           {k: v for k, v in events[1].items() if k != "customer_id"} | {"event_id": "bad-2"}]
    old = [{**events[2], "event_id": f"old-{i}",
            "occurred_at": (DEFAULT_START - timedelta(days=2)).isoformat()} for i in range(2)]
    batch = events + bad + old + events[:5]  # the last five are repeats
    state.throttle = 1
    began = time.monotonic()
    async with HttpSink(url + "/", WRITE_KEY, batch_size=500) as sink:
        report = await sink.send(batch)
    elapsed = time.monotonic() - began
    assert report.retries == 1 and elapsed >= 1.0  # honoured Retry-After: 1
    assert state.requests == 3 + 1  # 1209 events in chunks of 500, one of them retried
    assert state.received == [str(e.get("event_id")) for e in batch]  # in order, once each
    assert report.sent == 1209
    assert report.accepted == 1200
    assert report.duplicates == 5
    assert report.late == 2
    assert report.rejected == 2
    assert report.reasons == Counter({"value: Expected `int` <= 5": 1,
                                      "customer_id: is required": 1})


@pytest.mark.parametrize(("key", "status"), [("wrong-key", 401), (READ_KEY, 403)])
async def test_http_sink_refused_credentials_raise_at_once(
        server: tuple[str, _Contract], key: str, status: int) -> None:
    url, state = server
    state.throttle = 0
    async with HttpSink(url, key) as sink:
        with pytest.raises(SinkAuthError, match=f"{status}.*API key"):
            await sink.send(_events(3))
    assert state.requests == 1  # no retries on an auth failure


async def test_http_sink_gives_up_after_bounded_retries(server: tuple[str, _Contract]) -> None:
    url, state = server
    state.unavailable = True
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with HttpSink(url, WRITE_KEY, max_retries=3, sleep=sleep) as sink:
        with pytest.raises(SinkError, match="still 503 after 3 retries"):
            await sink.send(_events(3))
    assert state.requests == 4
    assert waits == [0.25, 0.5, 1.0]  # exponential backoff without a Retry-After
    state.unavailable, state.requests = False, 0
    state.unavailable_after = 2  # the third request on fails: report what got through
    async with HttpSink(url, WRITE_KEY, batch_size=4, max_retries=1, sleep=sleep) as sink:
        with pytest.raises(SinkError) as raised:
            await sink.send(_events(10))
    assert raised.value.report is not None
    assert (raised.value.report.sent, raised.value.report.accepted) == (8, 8)
    state.unavailable_after = None
    async with HttpSink(url, WRITE_KEY) as sink:
        report = await sink.send(_events(3))
    assert (report.sent, report.duplicates) == (3, 3)  # got through before: idempotent


async def test_http_sink_retries_a_refused_connection() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with HttpSink(f"http://127.0.0.1:{port}", WRITE_KEY, max_retries=2,
                        sleep=sleep) as sink:
        with pytest.raises(SinkError, match="gave up after 2 retries"):
            await sink.send(_events(1))
    assert len(waits) == 2
