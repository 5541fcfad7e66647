"""Real data: the airline survey replayed through the engine equals pandas over the file."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from schemas import EventDecoder
from streams.engine.config import ContinuousWindow, EngineConfig
from streams.engine.engine import Engine
from streams.sources.airline import DEFAULT_PATH, DEFAULT_START, TOUCHPOINTS, events

CONFIG = EngineConfig(
    scopes=((), ("touchpoint",), ("segment",), ("touchpoint", "segment")),
    continuous=(ContinuousWindow(name="30d", span=30 * 86_400, step=3600),),
    allowed_lateness=0,
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.read_csv(DEFAULT_PATH)


@pytest.fixture(scope="module")
def engine() -> Engine:
    decoder = EventDecoder(clock=(DEFAULT_START + timedelta(days=60)).timestamp)
    engine = Engine(CONFIG)
    batch = []
    for raw in events():
        batch.append(decoder.convert(raw))
        if len(batch) == 20_000:
            engine.ingest(batch)
            batch = []
    engine.ingest(batch)
    return engine


def test_every_row_becomes_fifteen_events(frame: pd.DataFrame, engine: Engine) -> None:
    assert engine.counters["accepted"] == 15 * len(frame) == 15 * 25_976
    assert engine.counters["late"] == engine.counters["duplicate"] == 0
    zeros = int((frame[[tp.column for tp in TOUCHPOINTS]] == 0).to_numpy().sum())
    assert engine.counters["not_applicable"] == zeros


def test_per_touchpoint_scores_equal_pandas(frame: pd.DataFrame, engine: Engine) -> None:
    got = {s.scope["touchpoint"]: s.score
           for s in engine.scores("continuous", "30d", scope=("touchpoint",),
                                  metric="rating:1-5")}
    assert len(got) == 14
    for tp in TOUCHPOINTS:
        answers = frame[tp.column]
        rated = answers[answers != 0]  # 0 is "not applicable", not a score
        score = got[tp.touchpoint]
        assert score.n == len(rated), tp.column
        assert score.not_applicable == int((answers == 0).sum())
        assert score.value == pytest.approx(rated.mean(), rel=1e-12)
        assert score.share == pytest.approx((rated == 5).mean(), rel=1e-12)
        sem = rated.std(ddof=1) / np.sqrt(len(rated))
        assert score.high - score.value == pytest.approx(1.96 * sem, rel=1e-3)


def test_per_class_scores_equal_pandas(frame: pd.DataFrame, engine: Engine) -> None:
    ratings = frame.melt(id_vars=["Class"], value_vars=[tp.column for tp in TOUCHPOINTS])
    ratings = ratings[ratings["value"] != 0]
    got = {s.scope["segment"]: s.score
           for s in engine.scores("continuous", "30d", scope=("segment",),
                                  metric="rating:1-5")}
    classes = {"Business": "business", "Eco": "eco", "Eco Plus": "eco_plus"}
    for cls, segment in classes.items():
        mine = ratings[ratings["Class"] == cls]["value"]
        assert got[segment].n == len(mine)
        assert got[segment].value == pytest.approx(mine.mean(), rel=1e-12)
    verdict = {s.scope["segment"]: s.score
               for s in engine.scores("continuous", "30d", scope=("segment",),
                                      metric="rating:1-2")}
    for cls, segment in classes.items():
        rows = frame[frame["Class"] == cls]
        satisfied = (rows["satisfaction"] == "satisfied").mean()
        assert verdict[segment].share == pytest.approx(satisfied, rel=1e-12)
        assert verdict[segment].n == len(rows)


def test_per_touchpoint_and_class(frame: pd.DataFrame, engine: Engine) -> None:
    (seat,) = engine.scores("continuous", "30d", where={"touchpoint": "seat",
                                                         "segment": "eco_plus"},
                            metric="rating:1-5")
    rows = frame[(frame["Class"] == "Eco Plus") & (frame["Seat comfort"] != 0)]
    assert seat.score.n == len(rows)
    assert seat.score.value == pytest.approx(rows["Seat comfort"].mean(), rel=1e-12)


def test_each_passenger_is_one_ended_flight_journey(frame: pd.DataFrame,
                                                    engine: Engine) -> None:
    bands = engine.journeys.by_channel_count("flight")
    assert bands["4+"]["n"] == len(frame)  # web, app, airport, onboard, survey
    first = frame.iloc[0]
    journey = engine.journeys.get(f"flight-{first['id']}")
    assert journey is not None
    view = journey.view()
    assert view["stage_reached"] == "respond" and view["end_reason"] == "end_marker"
    assert view["channels"] == ["web", "app", "airport", "onboard", "survey"]
