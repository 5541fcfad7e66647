"""``make run``'s promise, with the built-in (sequential) drop rules: a day of simulated
history pages no drop, and chat's 15-point drop pages within about ten minutes.

The demo's feed without HTTP or SQLite: the same simulator, rates and drop as
``touchstream serve`` (a day at 2 events/s, then 20/s live, chat -15 points after 10
minutes), into the engine and detector the embedded runner drives, evaluated every
minute of event time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.decode import EventDecoder
from service.demo import demo_detection, demo_engine_config
from streams.detection import Detector
from streams.engine.engine import Engine
from streams.sources.simulator import Drop, Simulator

pytestmark = pytest.mark.slow

START = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


def feed(engine: Engine, detector: Detector, events: Iterable[dict[str, Any]]
         ) -> list[tuple[datetime, str, dict[str, str]]]:
    """Ingest in batches of 200, evaluate when a minute of event time began; the drop
    alerts that fired (time, rule, scope)."""
    decoder = EventDecoder(clock=lambda: START.timestamp() + 86_400)
    fired: list[tuple[datetime, str, dict[str, str]]] = []
    batch = []
    for item in events:
        batch.append(decoder.convert(item))
        if len(batch) < 200:
            continue
        engine.ingest(batch)
        batch = []
        now = engine.watermark
        if now is not None and detector.due(now, 60):
            fired += [(datetime.fromtimestamp(c.at, UTC), c.alert.rule, c.alert.scope)
                      for c in detector.evaluate(engine, now)
                      if c.state == "firing" and c.alert.kind == "drop"]
    return fired


def test_the_demo_chat_drop_pages_within_minutes_and_the_history_pages_no_drop() -> None:
    config = demo_engine_config()
    detection = demo_detection(config)
    assert {r.test for r in detection.drops} == {"sequential"}
    engine, detector = Engine(config), Detector(detection)
    history = Simulator(seed=7, rate=2.0, start=START - timedelta(days=1))
    assert feed(engine, detector, history.events(duration=timedelta(hours=24))) == []
    live = Simulator(seed=8, rate=20.0, start=START, drops=[
        Drop(after=timedelta(minutes=10), where={"channel": "chat"}, points=15)])
    fired = feed(engine, detector, live.events(duration=timedelta(minutes=25)))
    chat = [t for t, rule, scope in fired if rule == "csat-drop" and scope == {"channel": "chat"}]
    assert chat, fired
    # Minutes, within the demo's deployment-wide budget (about 200 distinct series at
    # one false page a week between them: each series' threshold is set for years).
    assert START + timedelta(minutes=10) < chat[0] <= START + timedelta(minutes=25)
    # Every drop page is about chat (its channel, touchpoint, owner or a chat segment).
    assert all(t > START + timedelta(minutes=10) for t, _, _ in fired), fired
