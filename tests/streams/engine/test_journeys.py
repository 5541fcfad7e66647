"""Journeys through ``Engine.ingest``: stitching, scores, timeouts, bands by channel count."""

from __future__ import annotations

import gc
import itertools
import math
from datetime import timedelta
from typing import Any

import pytest
from engine_reference import BASE, make_event
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.journeys import JourneyRow, JourneyTracker, channel_band

T0 = 1_774_648_800  # BASE as epoch seconds
CONFIG = EngineConfig(scopes=((), ("channel",)))
SHORT = EngineConfig(scopes=((),), journey_timeout=3600)


def ev(event_id: str, at: int, **fields: Any) -> TouchpointEvent:
    """An event ``at`` seconds after BASE."""
    return make_event(event_id=event_id, occurred_at=BASE + timedelta(seconds=at), **fields)


def three_channel_journey() -> list[TouchpointEvent]:
    jid = {"journey_id": "j-1", "journey_type": "onboarding", "customer_id": "c-7"}
    return [
        ev("a", 0, channel="web", touchpoint="signup", stage="recognize", kind="csat",
           value=4, **jid),
        ev("b", 600, channel="chat", touchpoint="agent", stage="request", kind="nps",
           value=10, **jid),
        ev("c", 1200, channel="chat", touchpoint="agent", stage="request", kind="rating",
           value=0, na_code=0, **jid),  # not applicable: an event, but no score
        ev("d", 1800, channel="phone", touchpoint="call", stage="respond", kind="ces",
           value=4, journey_end=True, **jid),
    ]


def test_a_journey_across_three_channels_and_all_stages() -> None:
    engine = Engine(CONFIG)
    engine.ingest(three_channel_journey())
    view = engine.journeys.get("j-1").view()  # type: ignore[union-attr]
    # csat 4 -> 3/4, nps 10 -> 10/10, ces 4 -> 3/6: mean 0.75 -> 75.
    assert view == {
        "journey_id": "j-1",
        "customer_id": "c-7",
        "journey_type": "onboarding",
        "started_at": T0,
        "last_event_at": T0 + 1800,
        "ended_at": T0 + 1800,
        "end_reason": "end_marker",
        "open": False,
        "events": 4,
        "channels": ["web", "chat", "phone"],
        "channel_count": 3,
        "channel_band": "3",
        "touchpoints": ["signup", "agent", "call"],
        "stages": ["recognize", "request", "respond"],
        "stage_reached": "respond",
        "duration_seconds": 1800,
        "score": 75.0,
        "n": 3,
    }
    assert engine.journeys.by_channel_count()["3"]["n"] == 1


def test_events_out_of_order_still_give_the_right_span_and_stage() -> None:
    engine = Engine(CONFIG)
    events = three_channel_journey()
    engine.ingest([events[1], events[0], events[2]])  # no end marker yet
    view = engine.journeys.get("j-1").view()  # type: ignore[union-attr]
    assert (view["open"], view["started_at"], view["last_event_at"]) == (True, T0, T0 + 1200)
    assert (view["stages"], view["stage_reached"]) == (["recognize", "request"], "request")
    assert view["channels"] == ["chat", "web"]  # order of arrival
    assert view["score"] == pytest.approx(87.5)
    assert engine.journeys.by_channel_count()["2"]["n"] == 0  # open journeys do not count


@pytest.mark.parametrize(
    ("signal", "score"),
    [
        ({"kind": "csat", "value": 1}, 0.0),
        ({"kind": "csat", "value": 4}, 75.0),
        ({"kind": "csat", "value": 5}, 100.0),
        ({"kind": "nps", "value": 0}, 0.0),
        ({"kind": "nps", "value": 7}, 70.0),
        ({"kind": "nps", "value": 10}, 100.0),
        ({"kind": "ces", "value": 1}, 0.0),
        ({"kind": "ces", "value": 4}, 50.0),
        ({"kind": "ces", "value": 7}, 100.0),
        ({"kind": "rating", "value": 3, "scale_min": 1, "scale_max": 5}, 50.0),
        ({"kind": "rating", "value": 15, "scale_min": 0, "scale_max": 20}, 75.0),
        ({"kind": "outcome", "value": "resolved"}, 100.0),
        ({"kind": "outcome", "value": "unresolved"}, 0.0),
        ({"kind": "outcome", "value": "abandoned"}, 0.0),
        ({"kind": "sentiment", "value": -1.0}, 0.0),
        ({"kind": "sentiment", "value": 0.0}, 50.0),
        ({"kind": "sentiment", "value": 0.5}, 75.0),
        ({"kind": "rating", "value": 0, "na_code": 0}, None),
    ],
)
def test_score_of_a_one_signal_journey(signal: dict[str, Any], score: float | None) -> None:
    engine = Engine(CONFIG)
    engine.ingest([ev("x", 0, journey_id="j", journey_end=True, **signal)])
    view = engine.journeys.get("j").view()  # type: ignore[union-attr]
    assert view["score"] == (None if score is None else pytest.approx(score))
    assert view["n"] == (0 if score is None else 1)
    bands = engine.journeys.by_channel_count()
    assert bands["1"]["n"] == (0 if score is None else 1)  # unscored journeys stay out


# -- inactivity timeout ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batches", "open_after", "ended_at"),
    [
        # The watermark must move *past* last + timeout.
        ([[("j", 0)], [("k", 3600)]], [True, True], None),
        ([[("j", 0)], [("k", 3601)]], [True, False], T0 + 3600),
        ([[("j", 0), ("k", 3601)]], [False], T0 + 3600),
        # An event of the journey itself extends it.
        ([[("j", 0)], [("j", 3000)], [("k", 6600)]], [True, True, True], None),
        ([[("j", 0)], [("j", 3000)], [("k", 3601)], [("k", 6601)]],
         [True, True, True, False], T0 + 6600),
        # Regression: a sweep shortly before the deadline used to suppress the next one
        # for a quarter of the timeout, so the journey stayed open well past it.
        ([[("j", 0)], [("k", 3000)], [("k", 3601)]], [True, True, False], T0 + 3600),
        ([[("j", 0)], [("k", 3500)], [("k", 3599)], [("k", 3601)]],
         [True, True, True, False], T0 + 3600),
    ],
)
def test_inactivity_timeout(batches: list[list[tuple[str, int]]], open_after: list[bool],
                            ended_at: int | None) -> None:
    engine = Engine(SHORT)
    seen = []
    for n, batch in enumerate(batches):
        engine.ingest([ev(f"e-{n}-{i}", at, journey_id=jid) for i, (jid, at) in enumerate(batch)])
        seen.append(engine.journeys.get("j").view()["open"])  # type: ignore[union-attr]
    assert seen == open_after
    view = engine.journeys.get("j").view()  # type: ignore[union-attr]
    assert view["ended_at"] == ended_at
    assert view["end_reason"] == (None if ended_at is None else "timeout")


def test_an_event_after_the_timeout_is_a_straggler_not_a_longer_journey() -> None:
    engine = Engine(SHORT)
    engine.ingest([ev("a", 0, journey_id="j", value=5)])
    engine.ingest([ev("b", 3000, journey_id="k")])
    engine.ingest([ev("c", 3601, journey_id="k")])  # j times out here, at T0 + 3600
    engine.ingest([ev("d", 3700, journey_id="j", value=1)])
    view = engine.journeys.get("j").view()  # type: ignore[union-attr]
    assert (view["open"], view["ended_at"], view["events"]) == (False, T0 + 3600, 2)
    assert engine.journeys.by_channel_count()["1"] == pytest.approx(
        {"n": 1, "score": 100.0, "low": None, "high": None, "mean_duration_seconds": 0.0}
    )


# -- satisfaction by number of channels ----------------------------------------------------


def band_journeys() -> list[TouchpointEvent]:
    def journey(jid: str, jtype: str, steps: list[tuple[int, str, dict[str, Any]]]) -> list[
            TouchpointEvent]:
        out = []
        for i, (at, channel, signal) in enumerate(steps):
            out.append(ev(f"{jid}-{i}", at, journey_id=jid, journey_type=jtype, channel=channel,
                          journey_end=i == len(steps) - 1, **signal))
        return out

    csat = [{"kind": "csat", "value": v} for v in range(6)]
    ces = [{"kind": "ces", "value": v} for v in range(8)]
    return [
        # 1 channel: (100 + 50) / 2 = 75 over 100 s; 100 over 0 s.
        *journey("A", "onboarding", [(0, "web", csat[5]), (100, "web", csat[3])]),
        *journey("B", "repair", [(0, "phone", {"kind": "outcome", "value": "resolved"})]),
        # 2 channels: (0 + 50) / 2 = 25 over 200 s.
        *journey("C", "onboarding", [(0, "chat", {"kind": "nps", "value": 0}),
                                     (200, "web", {"kind": "sentiment", "value": 0.0})]),
        # 3 channels: (75 + 100 + 50) / 3 = 75 over 1800 s.
        *journey("D", "onboarding", [(0, "web", csat[4]),
                                     (600, "chat", {"kind": "nps", "value": 10}),
                                     (1800, "phone", ces[4])]),
        # 4 channels: (100 + 0 + 100 + 0) / 4 = 50 over 300 s.
        *journey("E", "repair", [(0, "web", ces[7]), (100, "chat", ces[1]),
                                 (200, "phone", ces[7]), (300, "app", ces[1])]),
        # 5 channels (band 4+): 0 over 400 s.
        *journey("F", "repair", [(100 * i, c, csat[1])
                                 for i, c in enumerate(["web", "chat", "phone", "app", "store"])]),
        # Only a not-applicable answer: ends, but has no score, so no band.
        *journey("G", "onboarding", [(0, "web", {"kind": "rating", "value": 0, "na_code": 0})]),
    ]


def t_interval(scores: list[float]) -> tuple[float, float]:
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * (var / n) ** 0.5
    return mean - half, mean + half


def band(n: int, scores: list[float], duration: float | None) -> dict[str, Any]:
    low, high = t_interval(scores) if n >= 2 else (None, None)
    return {"n": n, "score": sum(scores) / n if n else None, "low": low, "high": high,
            "mean_duration_seconds": duration}


EMPTY = band(0, [], None)
BANDS = {
    "all": {"1": band(2, [75.0, 100.0], 50.0), "2": band(1, [25.0], 200.0),
            "3": band(1, [75.0], 1800.0), "4+": band(2, [50.0, 0.0], 350.0)},
    "onboarding": {"1": band(1, [75.0], 100.0), "2": band(1, [25.0], 200.0),
                   "3": band(1, [75.0], 1800.0), "4+": EMPTY},
    "repair": {"1": band(1, [100.0], 0.0), "2": EMPTY, "3": EMPTY,
               "4+": band(2, [50.0, 0.0], 350.0)},
}


@pytest.mark.parametrize("journey_type", ["all", "onboarding", "repair"])
def test_bands_by_channel_count(journey_type: str) -> None:
    engine = Engine(CONFIG)
    engine.ingest(band_journeys())
    got = engine.journeys.by_channel_count(journey_type)
    assert list(got) == ["1", "2", "3", "4+"]
    for name, want in BANDS[journey_type].items():
        assert got[name] == pytest.approx(want), name
    assert engine.journeys.journey_types() == ["onboarding", "repair"]


def test_bands_do_not_depend_on_batching() -> None:
    one = Engine(CONFIG)
    one.ingest(band_journeys())
    each = Engine(CONFIG)
    for event in band_journeys():
        each.ingest([event])
    assert each.journeys.state() == one.journeys.state()


@pytest.mark.parametrize(("channels", "name"), [(0, "1"), (1, "1"), (2, "2"), (3, "3"),
                                                 (4, "4+"), (9, "4+")])
def test_channel_band(channels: int, name: str) -> None:
    assert channel_band(channels) == name


def test_a_straggler_after_the_end_does_not_count_twice() -> None:
    engine = Engine(CONFIG)
    engine.ingest(band_journeys())
    before = engine.journeys.by_channel_count()
    # After D ended: a fourth channel, a bad answer, and even a second end marker.
    engine.ingest([ev("D-late", 2000, journey_id="D", journey_type="onboarding", channel="app",
                      kind="csat", value=1, journey_end=True)])
    assert engine.journeys.by_channel_count() == before
    view = engine.journeys.get("D").view()  # type: ignore[union-attr]
    # The record stays true to what happened, but keeps its end.
    assert (view["events"], view["channel_count"], view["score"]) == (4, 4, pytest.approx(56.25))
    assert (view["open"], view["ended_at"], view["end_reason"]) == (False, T0 + 1800,
                                                                     "end_marker")


# -- snapshots -----------------------------------------------------------------------------


def test_tracker_state_round_trip_and_continue() -> None:
    events = band_journeys()
    engine = Engine(SHORT)
    engine.ingest(events)
    engine.ingest([ev("open-1", 100, journey_id="O", channel="web", value=5),
                   ev("open-2", 200, journey_id="P", channel="chat", value=2)])
    tracker = engine.journeys
    copy = JourneyTracker(SHORT.journey_timeout, SHORT.journeys_kept)
    copy.restore(tracker.state())
    assert copy.state() == tracker.state()
    assert sorted(copy.open) == ["O", "P"]
    for jid in ("A", "D", "O"):
        assert copy.get(jid).view() == tracker.get(jid).view()  # type: ignore[union-attr]
    # Both carry on the same way: P moves on, then the watermark passes O's deadline only.
    for t in (tracker, copy):
        t.add("P", "c-0", "none", T0 + 3000, "chat", "agent", "respond", 1.0, False)
        t.sweep(T0 + 100 + 3601)
    assert copy.state() == tracker.state()
    assert (copy.get("O").ended, sorted(copy.open)) == (T0 + 3700, ["P"])  # type: ignore[union-attr]
    assert copy.by_channel_count()["1"]["n"] == BANDS["all"]["1"]["n"] + 1


def test_tracker_state_does_not_depend_on_batching() -> None:
    """Regression: the state held the watermark of the last (throttled) sweep.

    Events 60 s apart in one batch swept at T0 + 60; in two batches the second sweep
    was skipped (less than 15 min later), so the states differed and
    test_engine_properties' snapshot test could fail for such a stream.
    """
    events = [ev("a", 0, journey_id="j"), ev("b", 60, journey_id="k")]
    one = Engine(SHORT)
    one.ingest(events)
    two = Engine(SHORT)
    two.ingest(events[:1])
    two = Engine.restore(SHORT, two.snapshot())
    two.ingest(events[1:])
    assert two.journeys.state() == one.journeys.state()


def test_engine_snapshot_keeps_journeys() -> None:
    events = three_channel_journey()
    straight = Engine(SHORT)
    straight.ingest(events)
    first = Engine(SHORT)
    first.ingest(events[:2])
    resumed = Engine.restore(SHORT, first.snapshot())
    resumed.ingest(events[2:])
    assert resumed.journeys.state() == straight.journeys.state()
    assert resumed.journeys.get("j-1").view()["score"] == 75.0  # type: ignore[union-attr]


def test_journeys_are_invisible_to_the_cycle_collector() -> None:
    """Hundreds of thousands of open journeys must not be walked by every collection:
    a journey and its fields are untracked (strings, numbers, tuples of strings)."""
    engine = Engine(CONFIG)
    engine.ingest(three_channel_journey()[:3])
    journey = engine.journeys.get("j-1")
    assert journey is not None and journey.channels == ("web", "chat")
    gc.collect()  # tuples of strings are untracked by the first collection that sees them
    assert not gc.is_tracked(journey)
    assert not any(gc.is_tracked(f) for f in (journey.channels, journey.touchpoints,
                                                 journey.stages))


_ROWS = st.lists(st.tuples(
    st.sampled_from(["j1", "j2", "j3"]),
    # seconds after the previous event: mostly forward, sometimes back, now and then
    # past the 3600 s timeout
    st.one_of(st.integers(-600, 700), st.just(4000)),
    st.sampled_from(["web", "chat", "phone", "email", "store"]),
    st.integers(0, 39),  # touchpoint: enough to reach MAX_TOUCHPOINTS in a journey
    st.sampled_from([None, "recognize", "request", "respond"]),
    st.sampled_from([math.nan, 0.0, 0.25, 0.5, 1.0]),
    st.integers(0, 120).map(lambda i: i == 0),  # an end marker, now and then
), max_size=200)


@settings(max_examples=150, deadline=None)
@given(rows=_ROWS, cuts=st.lists(st.integers(0, 200), max_size=6))
@example(rows=[("j1", 10, "web", i, None, 0.5, False) for i in range(40)], cuts=[20])
@example(rows=[("j1", 0, "web", 0, None, 0.5, False), ("j1", 3601, "web", 1, None, 1.0, False),
               ("j2", -3601, "web", 2, None, 0.0, False), ("j2", 0, "chat", 3, None, 0.0, False)],
         cuts=[])
def test_add_many_is_add_one_by_one(rows: list[tuple[Any, ...]], cuts: list[int]) -> None:
    """The inlined batch path equals ``sweep`` then ``add`` for every event, whatever
    the batches: journeys, stragglers, timeouts, touchpoint cap and bands.

    Found by it: a journey whose first event arrived more than the timeout behind the
    watermark stayed open for the rest of its batch (later events joined it) but was
    closed at the batch's end, so its story depended on the batching."""
    one = JourneyTracker(3600, 3)  # few kept: closed journeys are evicted too
    many = JourneyTracker(3600, 3)
    full: list[JourneyRow] = []
    watermark: int | None = None
    at = T0
    for jid, step, channel, number, stage, value, end in rows:
        at, touchpoint = max(T0, at + step), f"tp{number}"
        watermark = at if watermark is None else max(watermark, at)
        one.sweep(watermark)
        one.add(jid, "c", "type-" + jid, at, channel, touchpoint, stage, value, end)
        full.append((watermark, jid, "c", "type-" + jid, at, channel, touchpoint, stage,
                     value, end))
    swept: int | None = None
    for lo, hi in itertools.pairwise([0, *sorted(min(c, len(full)) for c in cuts), len(full)]):
        many.add_many(full[lo:hi], swept)
        if hi > lo:  # as the engine does after each batch
            swept = full[hi - 1][0]
            many.sweep(swept)
    if watermark is not None:
        one.sweep(watermark)
    assert many.state() == one.state()
    assert many.by_channel_count() == one.by_channel_count()
