"""The simulator: valid, deterministic, well-formed journeys, and effects the engine sees."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas import STAGES, EventDecoder
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.sources.simulator import (
    CHANNELS,
    DEFAULT_START,
    JOURNEY_TYPES,
    SEGMENTS,
    Drop,
    Simulator,
    paced,
)
from streams.sources.sinks import EngineSink, pump

# Event times lie in 2026; judge them from a clock a little later, not the wall clock.
DECODER = EventDecoder(clock=(DEFAULT_START + timedelta(days=30)).timestamp)


def _events(seed: int, n: int, **options: Any) -> list[dict[str, Any]]:
    return list(Simulator(seed=seed, **options).events(n))


@pytest.mark.parametrize("seed", [0, 1, 7, 2026])
def test_every_event_meets_the_contract(seed: int) -> None:
    events = _events(seed, 5000)
    assert len(events) == 5000
    for event in events:
        DECODER.convert(event)  # raises EventError naming the field if not
    assert len({e["event_id"] for e in events}) == 5000


def test_events_cover_the_whole_vocabulary() -> None:
    events = _events(3, 20_000)
    assert {e["channel"] for e in events} == set(CHANNELS)
    assert {e.get("journey_type") for e in events} - {None} == set(JOURNEY_TYPES)
    assert {e["segment"] for e in events} == {s.name for s in SEGMENTS}
    assert {"Þjónusta", "مشتریان ویژه"} <= {e["segment"] for e in events}
    assert {e["kind"] for e in events} == {"csat", "nps", "ces", "rating", "outcome",
                                           "sentiment"}
    assert {e["value"] for e in events if e["kind"] == "outcome"} == {
        "resolved", "unresolved", "abandoned"}
    assert {e["owner"] for e in events} >= {"support", "digital", "retail", "billing", "sales"}
    assert {e["program"] for e in events} == {"continuous", "periodic"}
    ratings = [e for e in events if e["kind"] == "rating"]
    assert {(e["scale_min"], e["scale_max"]) for e in ratings} == {(1, 5), (0, 10)}
    na = [e for e in ratings if e["value"] == e["na_code"]]
    assert 0 < len(na) < 0.1 * len(ratings)
    reviews = [e for e in events if e["channel"] == "social"]
    assert reviews and all(e["contact"] == "indirect" and e["touchpoint"] == "review"
                           for e in reviews)
    assert all(e["contact"] == "direct" for e in events if e["channel"] != "social")
    commented = sum("comment" in e for e in events)
    assert 0.1 * len(events) < commented < 0.3 * len(events)


def test_comments_come_in_many_scripts() -> None:
    comments = {e["comment"] for e in _events(4, 20_000) if "comment" in e}

    def has(lo: int, hi: int) -> bool:
        return any(lo <= ord(ch) <= hi for c in comments for ch in c)

    assert has(0x0600, 0x06FF)  # Persian (Arabic script)
    assert has(0x0370, 0x03FF)  # Greek
    assert has(0x3040, 0x30FF)  # Japanese kana
    assert has(0x1F300, 0x1FAFF)  # emoji
    assert any("þ" in c or "ð" in c for c in comments)  # Icelandic
    assert any("ä" in c for c in comments)  # Finnish
    assert any("\u200d" in c for c in comments)  # an emoji joined sequence
    assert any("\u0301" in c for c in comments)  # a combining accent, not normalised


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = Simulator(seed=11, rate=5).events(3000)
    again = Simulator(seed=11, rate=5).events(3000)
    one = [json.dumps(e, ensure_ascii=False) for e in first]
    assert one == [json.dumps(e, ensure_ascii=False) for e in again]
    sim = Simulator(seed=11, rate=5)
    assert list(sim.events(100)) == list(sim.events(100))  # each call replays the run
    other = _events(12, 3000, rate=5)
    assert {e["event_id"] for e in other}.isdisjoint(json.loads(s)["event_id"] for s in one)
    assert [e["value"] for e in other] != [json.loads(s)["value"] for s in one]


@pytest.mark.parametrize("rate", [2.0, 50.0])
def test_event_times_are_ordered_at_the_rate(rate: float) -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tehran"))
    events = _events(5, 5000, rate=rate, start=start)
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert all(t.utcoffset() == timedelta(hours=3, minutes=30) for t in times)
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= start
    span = (times[-1] - start).total_seconds()
    assert span == pytest.approx(5000 / rate, rel=0.05)  # Poisson: sd ~1.4%


def test_duration_bounds_the_stream() -> None:
    events = list(Simulator(seed=1, rate=20).events(duration=timedelta(minutes=5)))
    last = datetime.fromisoformat(events[-1]["occurred_at"])
    assert last < DEFAULT_START + timedelta(minutes=5)
    assert len(events) == pytest.approx(20 * 300, rel=0.1)
    assert len(list(Simulator(seed=1, rate=20).events(50, duration=timedelta(hours=1)))) == 50


def test_journeys_are_well_formed() -> None:
    events = _events(8, 20_000, open_journeys=150)
    journeys: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if "journey_id" in event:
            journeys[event["journey_id"]].append(event)
        else:
            assert event["channel"] == "social" or event["program"] == "periodic"
    ended = 0
    lengths: Counter[int] = Counter()
    for steps in journeys.values():
        ranks = [STAGES.index(e["stage"]) for e in steps]
        assert ranks == sorted(ranks)
        ends = [i for i, e in enumerate(steps) if e.get("journey_end")]
        assert len(ends) <= 1
        assert len({(e["customer_id"], e["segment"], e["journey_type"]) for e in steps}) == 1
        if ends:
            assert ends == [len(steps) - 1]  # the end marker is on the last event
            ended += 1
            lengths[len(steps)] += 1
            last = steps[-1]
            assert last["stage"] == "respond" or (
                last["kind"] == "outcome" and last["value"] == "abandoned")
    still_open = len(journeys) - ended
    assert still_open <= 150  # only journeys cut off by the end of the stream lack an end
    assert ended > 4000
    assert set(lengths) == {1, 2, 3, 4, 5, 6}


def test_start_must_be_aware_and_drops_are_checked() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Simulator(start=datetime(2026, 1, 5))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="unknown field"):
        Drop(timedelta(0), {"colour": "red"}, 10)
    with pytest.raises(ValueError, match="points"):
        Drop(timedelta(0), {"channel": "chat"}, 150)


async def test_multi_channel_journeys_score_worse() -> None:
    engine = Engine(EngineConfig(scopes=((), ("channel",))))
    report = await pump(Simulator(seed=21, rate=20).events(20_000), EngineSink(engine, DECODER),
                        batch_size=5000)
    assert report.accepted == 20_000 and report.rejected == 0
    bands = engine.journeys.by_channel_count()
    assert all(bands[b]["n"] > 50 for b in ("1", "2", "3", "4+")), bands
    one, many = bands["1"], bands["4+"]
    assert one["score"] > many["score"] + 3, bands
    assert many["high"] < one["low"], bands  # and not by chance
    assert bands["1"]["score"] > bands["2"]["score"] > bands["3"]["score"], bands


async def test_injected_drop_shows_in_engine_scores() -> None:
    """Chat CSAT (top-2-box share) falls by the injected 15 points after 10 minutes."""
    at = int(DEFAULT_START.timestamp())
    drop_at, end = at + 600, at + 1200
    engine = Engine(EngineConfig(scopes=((), ("channel",))))
    engine.start_pulse("chat-drop", "chat after the drop", {"channel": ["chat"]},
                       drop_at, end, at, drop_at)
    engine.start_pulse("web", "web, untouched", {"channel": ["web"]},
                       drop_at, end, at, drop_at)
    sim = Simulator(seed=9, rate=50,
                    drops=[Drop(timedelta(minutes=10), {"channel": "chat"}, 15.0)])
    await pump(sim.events(duration=timedelta(minutes=20)), EngineSink(engine, DECODER),
               batch_size=5000)
    results = {m: (study, base) for m, study, base in engine.pulses["chat-drop"].results()}
    after, before = results["csat"]
    assert before.n > 1000 and after.n > 1000
    # Expected fall 0.15; sampling sd of the difference is about 0.018.
    assert before.value - after.value == pytest.approx(0.15, abs=0.06)
    for metric, (study, base) in results.items():  # every chat signal got worse
        assert study.value < base.value, metric
    web_after, web_before = next((s, b) for m, s, b in engine.pulses["web"].results()
                                 if m == "csat")
    assert abs(web_after.value - web_before.value) < 0.06


def test_a_drop_with_a_duration_ends() -> None:
    drop = Drop(timedelta(minutes=5), {"channel": "phone", "kind": "csat"}, 30.0,
                duration=timedelta(minutes=5))
    events = list(Simulator(seed=2, rate=60, drops=[drop]).events(
        duration=timedelta(minutes=15)))
    share: dict[int, list[bool]] = defaultdict(list)
    for e in events:
        if e["channel"] == "phone" and e["kind"] == "csat":
            minute = int((datetime.fromisoformat(e["occurred_at"]) - DEFAULT_START)
                         .total_seconds() // 300)
            share[minute].append(e["value"] >= 4)
    before, during, after = (statistics.fmean(share[k]) for k in (0, 1, 2))
    assert before - during == pytest.approx(0.30, abs=0.1)
    assert after - during == pytest.approx(0.30, abs=0.1)
    # The drop matched csat only: phone resolutions did not move.
    resolved: dict[bool, list[bool]] = defaultdict(list)
    for e in events:
        if e["channel"] == "phone" and e["kind"] == "outcome":
            offset = (datetime.fromisoformat(e["occurred_at"]) - DEFAULT_START).total_seconds()
            resolved[300 <= offset < 600].append(e["value"] == "resolved")
    assert statistics.fmean(resolved[False]) - statistics.fmean(resolved[True]) == (
        pytest.approx(0.0, abs=0.1))


async def test_paced_emits_at_the_rate_with_event_time_now() -> None:
    now = [datetime(2026, 11, 24, 9, 0, tzinfo=UTC)]
    slept: list[float] = []

    def clock() -> datetime:
        return now[0]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    source = Simulator(seed=1).events(21)
    out = [e async for e in paced(source, 4.0, clock=clock, sleep=sleep)]
    assert len(out) == 21
    times = [datetime.fromisoformat(e["occurred_at"]) for e in out]
    assert times[0] == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    assert times[-1] - times[0] == timedelta(seconds=5)
    assert sum(slept) == pytest.approx(5.0)
    assert [e["event_id"] for e in out] == [e["event_id"] for e in Simulator(seed=1).events(21)]
    live = EventDecoder(clock=lambda: now[0].timestamp())
    for event in out:
        live.convert(event)  # valid, and not in the future by the emitting clock


async def test_paced_does_not_burst_after_a_stall() -> None:
    now = [datetime(2026, 11, 24, 9, 0, tzinfo=UTC)]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    stream = paced(Simulator(seed=1).events(10), 10.0, clock=lambda: now[0], sleep=sleep)
    await anext(stream)
    now[0] += timedelta(seconds=30)  # the consumer stalled
    rest = [e async for e in stream]
    assert len(rest) == 9
    assert sum(slept) == pytest.approx(0.8)  # back on a 0.1 s beat, no catch-up burst
