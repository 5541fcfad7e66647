"""Pulse studies: a filter, a study span and a baseline span, scored per metric."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from engine_reference import BASE, make_event

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.metrics import NCOLS
from streams.engine.pulses import PulseError, PulseStudy

T0 = 1_774_648_800  # BASE as epoch seconds
MIN = 60
CONFIG = EngineConfig(scopes=((), ("channel",)), allowed_lateness=3600)
FILTER = {"channel": ["chat"], "segment": ["enterprise"]}
# Baseline [T0, T0 + 60 min), study [T0 + 60 min, T0 + 120 min).
SPANS = {"start": T0 + 60 * MIN, "end": T0 + 120 * MIN,
         "baseline_start": T0, "baseline_end": T0 + 60 * MIN}


def ev(event_id: str, minutes: float, channel: str = "chat", segment: str = "enterprise",
       **signal: Any) -> TouchpointEvent:
    return make_event(event_id=event_id, occurred_at=BASE + timedelta(minutes=minutes),
                      channel=channel, segment=segment, **signal)


def csat(v: int) -> dict[str, Any]:
    return {"kind": "csat", "value": v}


def nps(v: int) -> dict[str, Any]:
    return {"kind": "nps", "value": v}


STREAM = [
    ev("b1", 10, **csat(5)),                     # baseline csat (top box)
    ev("b2", 20, **csat(2)),                     # baseline csat
    ev("b3", 30, segment="smb", **csat(1)),      # wrong segment
    ev("b4", 40, channel="phone", **csat(1)),    # wrong channel
    ev("b5", 50, **nps(9)),                      # baseline nps (promoter)
    ev("b6", 59.99, **nps(3)),                   # baseline nps (detractor), last second
    ev("s1", 60, **csat(4)),                     # study, first second
    ev("s2", 70, **csat(5)),                     # study
    ev("s3", 80, **csat(1)),                     # study
    ev("s4", 90, channel="web", **csat(1)),      # wrong channel
    ev("s5", 100, **nps(3)),                     # study nps (detractor)
    ev("s6", 119.99, **nps(10)),                 # study nps (promoter), last second
    ev("s7", 110, kind="rating", value=0, na_code=0),  # study, not applicable
    ev("x1", 120, **csat(1)),                    # end is exclusive
    ev("x2", 200, **csat(1)),                    # after the study
]


def results(engine: Engine, pulse_id: str = "p") -> dict[str, tuple[Any, ...]]:
    return {
        m: (s.n, s.value, s.not_applicable, b.n, b.value)
        for m, s, b in engine.pulses[pulse_id].results()
    }


def nan_safe(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in row)


EXPECTED = {
    # csat: study 2 of 3 top-2-box; baseline 1 of 2.
    "csat": (3, pytest.approx(2 / 3), 0, 2, 0.5),
    # nps: study 1 promoter, 1 detractor of 2 -> 0; baseline the same -> 0.
    "nps": (2, 0.0, 0, 2, 0.0),
    # A not-applicable rating is counted as such, with no score on either side.
    "rating:1-5": (0, "nan", 1, 0, "nan"),
}


def test_only_matching_events_inside_each_span_count() -> None:
    engine = Engine(CONFIG)
    study = engine.start_pulse("p", "enterprise chat", FILTER, **SPANS)
    assert (study.active, study.created_at) == (True, T0 + 60 * MIN)  # no watermark yet
    engine.ingest(STREAM)
    got = {m: nan_safe(row) for m, row in results(engine).items()}
    assert got == EXPECTED
    assert [m for m, _, _ in engine.pulses["p"].results()] == ["csat", "nps", "rating:1-5"]


def test_results_do_not_depend_on_batching() -> None:
    engine = Engine(CONFIG)
    engine.start_pulse("p", "enterprise chat", FILTER, **SPANS)
    for event in STREAM:
        engine.ingest([event])
    assert {m: nan_safe(row) for m, row in results(engine).items()} == EXPECTED


def test_study_vs_baseline_scores_with_n() -> None:
    engine = Engine(CONFIG)
    engine.start_pulse("p", "after the price change", {"segment": ["enterprise"]}, **SPANS)
    engine.ingest([
        *(ev(f"b{i}", i, **csat(5)) for i in range(8)),        # baseline: 8 of 10 top box
        *(ev(f"c{i}", 10 + i, **csat(3)) for i in range(2)),
        *(ev(f"s{i}", 60 + i, **csat(4)) for i in range(3)),   # study: 3 of 12 top box
        *(ev(f"t{i}", 70 + i, channel="phone", **csat(2)) for i in range(9)),
    ])
    [(metric, study, baseline)] = engine.pulses["p"].results()
    assert (metric, study.n, study.value, baseline.n, baseline.value) == (
        "csat", 12, 0.25, 10, 0.8)
    assert study.low < study.value < study.high  # Wilson interval comes along
    assert study.unit == baseline.unit == "ratio"


def test_events_ingested_before_the_start_are_not_counted() -> None:
    """A study counts from the moment it starts, even events inside its baseline span."""
    engine = Engine(CONFIG)
    engine.ingest(STREAM[:3])
    engine.start_pulse("p", "late start", FILTER, **SPANS)
    assert engine.pulses["p"].created_at == T0 + 30 * MIN  # the watermark then
    engine.ingest(STREAM[3:])
    got = results(engine)
    assert (got["csat"][0], got["csat"][3]) == (3, 0)  # b1, b2 were before the start
    assert (got["nps"][0], got["nps"][3]) == (2, 2)


def test_end_pulse_stops_counting_and_keeps_results() -> None:
    engine = Engine(CONFIG)
    engine.start_pulse("p", "enterprise chat", FILTER, **SPANS)
    engine.start_pulse("q", "all chat", {"channel": ["chat", "web"]}, **SPANS)
    engine.ingest(STREAM[:8])  # up to s2
    ended = engine.end_pulse("p")
    assert (ended.active, ended.ended_at) == (False, T0 + 70 * MIN)
    assert engine.end_pulse("p").ended_at == T0 + 70 * MIN  # ending twice changes nothing
    engine.ingest(STREAM[8:])
    got = results(engine)
    assert (got["csat"][0], got["csat"][3], got["nps"][0], got["nps"][3]) == (2, 2, 0, 2)
    # The other study kept counting: chat or web, any segment, csat study: s1 s2 s3 s4.
    other = results(engine, "q")
    assert (other["csat"][0], other["csat"][3]) == (4, 3)


@pytest.mark.parametrize(
    ("filter_", "spans", "field"),
    [
        ({"colour": ["red"]}, {}, "filter.colour"),
        ({"channel": ["chat"], "planet": ["mars"]}, {}, "filter.planet"),
        ({"channel": []}, {}, "filter.channel"),
        ({}, {"end": T0 + 60 * MIN}, "end"),              # end == start
        ({}, {"end": T0}, "end"),                         # end before start
        ({}, {"baseline_end": T0}, "baseline_end"),       # baseline_end == baseline_start
        ({}, {"baseline_end": T0 - 1}, "baseline_end"),
    ],
)
def test_pulse_error_names_the_field(filter_: dict[str, list[str]], spans: dict[str, int],
                                     field: str) -> None:
    engine = Engine(CONFIG)
    with pytest.raises(PulseError) as caught:
        engine.start_pulse("p", "bad", filter_, **(SPANS | spans))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)
    assert engine.pulses == {}


def test_duplicate_pulse_id_is_refused_and_keeps_the_first() -> None:
    engine = Engine(CONFIG)
    first = engine.start_pulse("p", "first", FILTER, **SPANS)
    with pytest.raises(PulseError) as caught:
        engine.start_pulse("p", "second", {"segment": ["smb"]}, **SPANS)
    assert caught.value.field == "pulse_id"
    assert caught.value.reason == "a study with id 'p' exists"
    assert engine.pulses == {"p": first}


def test_an_empty_filter_matches_every_event() -> None:
    engine = Engine(CONFIG)
    engine.start_pulse("all", "everyone", {}, **SPANS)
    engine.ingest(STREAM)
    got = results(engine, "all")
    # csat study: s1 s2 s3 s4 (x1 at the end is out); baseline: b1 b2 b3 b4.
    assert (got["csat"][0], got["csat"][3]) == (4, 4)


def test_snapshot_restore_keeps_pulses() -> None:
    straight = Engine(CONFIG)
    straight.start_pulse("p", "enterprise chat", FILTER, **SPANS)
    straight.start_pulse("q", "ended early", {"channel": ["chat"]}, **SPANS)
    straight.ingest(STREAM[:7])
    straight.end_pulse("q")
    resumed = Engine.restore(CONFIG, straight.snapshot())
    assert [p.state() for p in resumed.pulses.values()] == \
           [p.state() for p in straight.pulses.values()]
    for engine in (straight, resumed):
        engine.ingest(STREAM[7:])
    assert {m: nan_safe(r) for m, r in results(resumed).items()} == EXPECTED
    assert results(resumed, "q") == results(straight, "q")
    assert resumed.pulses["q"].active is False


def test_study_from_state_round_trip() -> None:
    study = PulseStudy("p", "n", {"channel": ("chat",)}, T0, T0 + 10, T0 - 10, T0, T0)
    study.add("study", ["csat", "nps", "csat"], np.ones((3, NCOLS)))
    study.add("baseline", ["csat"], np.full((1, NCOLS), 2.0))
    again = PulseStudy.from_state(study.state())
    assert again.state() == study.state()
    assert again.study["csat"].tolist() == [2.0] * NCOLS
    assert again.baseline["csat"].tolist() == [2.0] * NCOLS
