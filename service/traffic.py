"""Simulated and replayed traffic for the CLI: destinations, drops, and the demo feed."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.runner import Runner
from streams.sources import airline
from streams.sources.files import detect, jsonl_events
from streams.sources.simulator import Drop, Simulator, paced
from streams.sources.sinks import FileSink, HttpSink, KafkaSink, SendReport, Sink, pump

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``7d`` as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(span: timedelta) -> str:
    """The shortest of ``7d``, ``24h``, ``10m`` or ``90s`` that is exact (``parse_duration``
    reads it back)."""
    seconds = int(span.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_drop(text: str) -> Drop:
    """``channel=chat:15:10m[:30m]``: where, points, after, optional duration."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or "=" not in parts[0]:
        raise ValueError(f"{text!r}: expected field=value:points:after[:duration], "
                         "e.g. channel=chat:15:10m")
    where = dict(item.split("=", 1) for item in parts[0].split(","))
    duration = parse_duration(parts[3]) if len(parts) == 4 else None
    return Drop(after=parse_duration(parts[2]), where=where, points=float(parts[1]),
                duration=duration)


def open_sink(target: str, api_key: str | None, batch_size: int,
              backfill: bool = False) -> Sink:
    """``http://host:port``, ``kafka://host:port/topic`` or a ``.jsonl`` file path;
    ``backfill`` (HTTP and Kafka): the events are history loaded on purpose."""
    if target.startswith(("http://", "https://")):
        if not api_key:
            raise ValueError("sending to HTTP needs an API key with the write scope "
                             "(--api-key or TOUCHSTREAM_API_KEY)")
        return HttpSink(target, api_key, batch_size, backfill=backfill)
    if target.startswith("kafka://"):
        return KafkaSink(*kafka_target(target), backfill=backfill)
    if backfill:
        raise ValueError("--backfill loads history into touchstream: send to http:// or "
                         "kafka://, not to a file")
    return FileSink(Path(target))


def kafka_target(target: str) -> tuple[str, str]:
    """``kafka://host:port/topic`` as (bootstrap, topic); the topic defaults to
    ``touchpoints``."""
    bootstrap, _, topic = target.removeprefix("kafka://").partition("/")
    return bootstrap, topic or "touchpoints"


def file_events(path: Path, start: datetime | None) -> Iterator[dict[str, Any]]:
    """Events of a JSONL file, or of the airline survey CSV through its mapping."""
    if detect(path) == "airline":
        yield from airline.events(path, start=start or airline.DEFAULT_START)
        return
    for line_no, raw in jsonl_events(path):
        try:
            yield orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Sent as it is, so the receiver rejects it with its reason and keeps it.
            log.warning("line %d of %s is not JSON; sending it as a string", line_no, path)
            yield {"unparsed": raw.decode("utf-8", errors="replace")}


async def rate_limited(events: Iterator[dict[str, Any]],
                       rate: float | None) -> AsyncIterator[dict[str, Any]]:
    """Events no faster than ``rate`` per second (as fast as possible when None)."""
    if rate is None:
        for event in events:
            yield event
        return
    interval = 1.0 / rate
    loop = asyncio.get_running_loop()
    due = loop.time()
    for event in events:
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        due = max(due + interval, loop.time() - 1.0)
        yield event


class RunnerSink(Sink):
    """Feeds a runner in process (``touchstream serve --simulate``)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def send(self, batch: list[dict[str, Any]]) -> SendReport:
        report = SendReport(sent=len(batch))
        for outcome in await self.runner.submit(batch):
            if outcome.status == "accepted":
                report.accepted += 1
            elif outcome.status == "duplicate":
                report.duplicates += 1
            elif outcome.status == "late":
                report.late += 1
                report.late_reasons[f"{outcome.field}: {outcome.reason}"] += 1
            else:
                report.rejected += 1
                report.reasons[f"{outcome.field}: {outcome.reason}"] += 1
        return report

    async def close(self) -> None:
        return None


async def demo_feed(runner: Runner, rate: float, drops: list[Drop], history: timedelta,
                    seed: int = 7, on_history: Callable[[], None] | None = None) -> None:
    """Feed a running service: ``history`` of past traffic at once, then live traffic.

    The past gives the drop detector its 7-day-style baseline to compare with; the live
    part is stamped with the wall clock, so scores move while you watch. The history
    comes from ``seed``, so a restart re-sends the same event ids and they count once;
    the live part has a fresh seed per start, so its ids are new after a restart.
    ``on_history`` is called once the history is in (``/readyz`` waits for it).
    """
    sink = RunnerSink(runner)
    now = datetime.now(UTC)
    if history > timedelta(0):
        past_rate = min(rate, 2.0)
        past = Simulator(seed=seed, rate=past_rate, start=now - history)
        report = await pump(past.events(duration=history - timedelta(seconds=5)), sink,
                            batch_size=2000)
        log.info("simulated history: %d events over %s (%d accepted, %d already there)",
                 report.sent, format_duration(history), report.accepted, report.duplicates)
    if on_history is not None:
        on_history()
    live = Simulator(seed=fresh_seed(), rate=rate, start=datetime.now(UTC), drops=drops)
    log.info("simulating %.0f events/s live%s", rate,
             "; drops: " + ", ".join(f"{d.where} -{d.points} after {d.after}" for d in drops)
             if drops else "")
    await pump(paced(live.events(), rate), sink, batch_size=max(1, int(rate)), linger=1.0)


def fresh_seed() -> int:
    """A seed no earlier run used (in all likelihood): 63 random bits."""
    return secrets.randbits(63)
