"""Each score against values computed by hand (and intervals against statsmodels/scipy)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from engine_reference import BASE, make_event
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from streams.engine.config import EngineConfig, Target
from streams.engine.engine import Engine
from streams.engine.metrics import observe, rows, score


def vector_of(signals: list[dict[str, Any]]) -> np.ndarray:
    return rows([observe(make_event(**s)) for s in signals]).sum(axis=0)


def test_csat_is_the_top_two_box_share_with_a_wilson_interval() -> None:
    answers = [5, 5, 4, 4, 4, 3, 2, 1, 5, 4]  # 7 of 10 are 4 or 5
    sc = score("csat", vector_of([{"kind": "csat", "value": v} for v in answers]))
    assert (sc.value, sc.n, sc.unit) == (0.7, 10, "ratio")
    low, high = proportion_confint(7, 10, alpha=0.05, method="wilson")
    assert sc.low == pytest.approx(low, abs=1e-9)
    assert sc.high == pytest.approx(high, abs=1e-9)


def test_nps_is_promoters_minus_detractors_with_the_multinomial_interval() -> None:
    answers = [10] * 50 + [8] * 30 + [3] * 20  # 50% promoters, 20% detractors
    sc = score("nps", vector_of([{"kind": "nps", "value": v} for v in answers]))
    assert sc.value == pytest.approx(30.0)
    assert sc.n == 100
    se = 100 * math.sqrt((0.5 + 0.2 - 0.3**2) / 100)
    assert se == pytest.approx(7.8102, abs=1e-4)
    assert sc.low == pytest.approx(30 - 1.959963984540054 * se)
    assert sc.high == pytest.approx(30 + 1.959963984540054 * se)


def test_ces_reports_mean_with_t_interval_and_share_easy() -> None:
    answers = [7, 6, 5, 5, 3, 2, 7, 4]
    sc = score("ces", vector_of([{"kind": "ces", "value": v} for v in answers]))
    assert sc.value == pytest.approx(np.mean(answers))
    sem = np.std(answers, ddof=1) / math.sqrt(len(answers))
    low, high = sps.t.interval(0.95, len(answers) - 1, loc=np.mean(answers), scale=sem)
    assert (sc.low, sc.high) == (pytest.approx(low), pytest.approx(high))
    assert sc.share == pytest.approx(5 / 8)  # 5, 6, 7 are easy


def test_rating_uses_its_own_scale_and_skips_not_applicable() -> None:
    signals = [{"kind": "rating", "value": v, "scale_min": 1, "scale_max": 7, "na_code": 0}
               for v in [7, 7, 6, 0, 0, 1]]
    sc = score("rating:1-7", vector_of(signals))
    assert sc.n == 4
    assert sc.not_applicable == 2
    assert sc.value == pytest.approx((7 + 7 + 6 + 1) / 4)
    assert sc.share == pytest.approx(0.5)  # top box is 7 on a 1-7 scale


def test_resolution_rate_and_sentiment_mean() -> None:
    outcomes = ["resolved"] * 6 + ["unresolved"] * 3 + ["abandoned"]
    sc = score("outcome", vector_of([{"kind": "outcome", "value": v} for v in outcomes]))
    assert (sc.value, sc.n) == (0.6, 10)
    sentiments = [0.5, -0.5, 1.0, 0.0]
    sc = score("sentiment", vector_of([{"kind": "sentiment", "value": v} for v in sentiments]))
    assert sc.value == pytest.approx(0.25)
    assert sc.n == 4


def test_empty_and_single_answer_scores_have_honest_intervals() -> None:
    sc = score("csat", np.zeros(17))
    assert sc.n == 0
    assert math.isnan(sc.value) and math.isnan(sc.low)
    one = score("ces", vector_of([{"kind": "ces", "value": 6}]))
    assert one.n == 1 and one.value == 6
    assert math.isnan(one.low)  # no spread from one answer: no interval pretended


def test_scores_are_reported_against_the_segment_target_with_the_gap() -> None:
    config = EngineConfig(
        scopes=((), ("segment",)),
        targets=(
            Target(metric="csat", value=0.80),
            Target(metric="csat", value=0.95, segment="first_class"),
            Target(metric="csat", value=0.60, segment="budget"),
        ),
    )
    engine = Engine(config)
    answers = {"first_class": [5, 5, 4, 3], "budget": [4, 3, 4, 2]}
    events = [
        make_event(event_id=f"{seg}-{i}", segment=seg, value=v, occurred_at=BASE)
        for seg, values in answers.items() for i, v in enumerate(values)
    ]
    engine.ingest(events)
    by_segment = {s.scope["segment"]: s for s in engine.scores("continuous", "1h",
                                                                scope=("segment",))}
    first, budget = by_segment["first_class"], by_segment["budget"]
    assert (first.score.value, first.target) == (0.75, 0.95)
    assert first.gap == pytest.approx(-0.20)
    assert (budget.score.value, budget.target) == (0.5, 0.60)
    assert budget.gap == pytest.approx(-0.10)
    overall = engine.scores("continuous", "1h")
    assert [(s.scope, s.target) for s in overall] == [({}, 0.80)]
    assert overall[0].gap == pytest.approx(5 / 8 - 0.80)


def test_periodic_scores_carry_the_previous_period() -> None:
    engine = Engine(EngineConfig(timezone="UTC"))
    day = 86_400
    events = [make_event(event_id=f"a{i}", value=5, occurred_at=BASE - timedelta(seconds=day))
              for i in range(4)]
    events += [make_event(event_id=f"b{i}", value=v, occurred_at=BASE + timedelta(hours=1))
               for i, v in enumerate([5, 1, 1, 1])]
    engine.ingest(events)
    (today,) = engine.scores("periodic", "day")
    assert today.window.label == "2026-03-27"
    assert today.score.value == 0.25
    assert today.previous is not None and today.previous.value == 1.0
    assert today.change == pytest.approx(-0.75)


def test_repeated_questions_are_answered_from_a_memo_until_the_state_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine(EngineConfig())
    engine.ingest([make_event(event_id=f"a-{i}", channel="chat", value=5 - i % 2)
                   for i in range(10)])
    computed = []
    original = engine._scores

    def counting(*args: Any) -> Any:
        computed.append(args)
        return original(*args)

    monkeypatch.setattr(engine, "_scores", counting)
    first = engine.scores("continuous", "1h", scope=("channel",))
    again = engine.scores("continuous", "1h", scope=("channel",))
    assert again == first and len(computed) == 1
    again.clear()  # a caller's list is its own
    assert engine.scores("continuous", "1h", scope=("channel",)) == first
    assert engine.scores("continuous", "1h", where={"channel": "chat"}) != []
    assert len(computed) == 2  # another question
    engine.ingest([make_event(event_id=f"b-{i}", channel="chat", value=1,
                              occurred_at=BASE + timedelta(seconds=i)) for i in range(10)])
    after = engine.scores("continuous", "1h", scope=("channel",))
    assert len(computed) == 3
    assert after[0].score.n == first[0].score.n + 10
    assert after[0].score.value < first[0].score.value
