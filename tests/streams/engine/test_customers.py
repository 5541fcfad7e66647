"""Customers against their own history: baseline, recent mean, trend, at-risk flag."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from engine_reference import BASE, make_event

from streams.engine.config import CustomerConfig, EngineConfig
from streams.engine.customers import CustomerBook
from streams.engine.engine import Engine

T0 = 1_774_648_800  # BASE as epoch seconds
CSAT = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}  # csat v -> (v - 1) / 4


def book_with(values: list[float], cfg: CustomerConfig | None = None) -> CustomerBook:
    book = CustomerBook(cfg or CustomerConfig())
    for i, value in enumerate(values):
        book.add("c-1", "smb", value, T0 + i)
    return book


# Defaults: recent = 5, min_recent = 3, min_history = 5, min_drop = 0.15, z = 1.645.
CASES = [
    pytest.param(
        # History 1.0 x10 (variance 0, floored to 0.01), recent 0.0 x5:
        # trend -1 <= -0.15 and 1 > 1.645 * sqrt(0.01/10 + 0.01/5) = 0.0901.
        [1.0] * 10 + [0.0] * 5, 100.0, 10, 0.0, 5, -100.0, True, id="10-good-then-5-bad"),
    pytest.param(
        # History 1, .75 alternating: mean .875, m2 = 10 * .125^2 = .15625, var .017361;
        # recent .25: trend -.625 > 1.645 * sqrt(.017361 * (1/10 + 1/5)) = .1187.
        [1.0, 0.75] * 5 + [0.25] * 5, 87.5, 10, 25.0, 5, -62.5, True, id="good-then-poor"),
    pytest.param([0.5] * 15, 50.0, 10, 50.0, 5, 0.0, False, id="always-mediocre"),
    pytest.param(
        # Mediocre with two bad answers lately: recent .4, trend -.1 < 0.15.
        [0.5] * 10 + [0.25, 0.5, 0.5, 0.25, 0.5], 50.0, 10, 40.0, 5, -10.0, False,
        id="mediocre-with-a-bad-day"),
    pytest.param(
        # Noisy history (0/1): var = 10 * .25 / 9 = .2778, se = sqrt(.2778 * .3) = .2887;
        # a drop of .25 is large enough but within 1.645 * se = .4749 of chance.
        [0.0, 1.0] * 5 + [0.25] * 5, 50.0, 10, 25.0, 5, -25.0, False, id="noisy-history"),
    pytest.param(
        # Only 4 answers of history (< min_history = 5).
        [1.0] * 4 + [0.0] * 5, 100.0, 4, 0.0, 5, -100.0, False, id="too-little-history"),
    pytest.param([1.0] * 5 + [0.0] * 5, 100.0, 5, 0.0, 5, -100.0, True,
                 id="just-enough-history"),
    pytest.param([0.0] * 5, None, 0, 0.0, 5, None, False, id="no-history"),
    pytest.param([1.0, 0.0], None, 0, 50.0, 2, None, False, id="two-answers"),
    pytest.param([], None, 0, None, 0, None, False, id="never-answered"),
    pytest.param(
        # Rising customers are never at risk.
        [0.0] * 10 + [1.0] * 5, 0.0, 10, 100.0, 5, 100.0, False, id="improving"),
]


@pytest.mark.parametrize(
    ("values", "baseline", "baseline_n", "recent", "recent_n", "trend", "at_risk"), CASES)
def test_assessment(values: list[float], baseline: float | None, baseline_n: int,
                    recent: float | None, recent_n: int, trend: float | None,
                    at_risk: bool) -> None:
    book = book_with(values)
    if not values:
        book.add("c-1", "smb", math.nan, T0)
    got = book.get("c-1")
    assert got == {
        "customer_id": "c-1",
        "segment": "smb",
        "signals": len(values),
        "last_seen": T0 + max(len(values) - 1, 0),
        "baseline": None if baseline is None else pytest.approx(baseline),
        "baseline_n": baseline_n,
        "recent": None if recent is None else pytest.approx(recent),
        "recent_n": recent_n,
        "trend": None if trend is None else pytest.approx(trend),
        "at_risk": at_risk,
    }
    assert book.at_risk() == (["c-1"] if at_risk else [])


@pytest.mark.parametrize(
    ("cfg", "at_risk"),
    [
        # History 1.0 x5, recent .75 x5: a drop of exactly .25 (exact in binary).
        (CustomerConfig(min_drop=0.25), True),
        (CustomerConfig(min_drop=0.2500001), False),
        # se = sqrt(.01/5 + .01/5) = .06325; .25 > z * se until z = 3.95.
        (CustomerConfig(min_drop=0.25, z=3.9), True),
        (CustomerConfig(min_drop=0.25, z=4.0), False),
        (CustomerConfig(min_history=6), False),
        (CustomerConfig(recent=5, min_recent=6), False),  # can never have 6 recent answers
    ],
)
def test_thresholds(cfg: CustomerConfig, at_risk: bool) -> None:
    book = book_with([1.0] * 5 + [0.75] * 5, cfg)
    assert book.get("c-1")["at_risk"] is at_risk  # type: ignore[index]


def test_recent_window_size_is_configurable() -> None:
    book = book_with([1.0] * 6 + [0.0, 0.5], CustomerConfig(recent=3, min_recent=3))
    got = book.get("c-1")
    assert got is not None
    assert (got["baseline"], got["baseline_n"]) == (100.0, 5)
    assert (got["recent"], got["recent_n"]) == (pytest.approx(50.0), 3)
    assert got["at_risk"] is True  # .5 drop > 1.645 * sqrt(.01/5 + .01/3) = .12


def test_not_applicable_values_do_not_count() -> None:
    values = [1.0] * 10 + [0.0] * 5
    book = CustomerBook(CustomerConfig())
    for i, value in enumerate(values):
        book.add("c-1", "smb", value, T0 + 2 * i)
        book.add("c-1", "smb", math.nan, T0 + 2 * i + 1)  # interleaved "not applicable"
    book.add("c-1", "enterprise", math.nan, T0 + 100)
    got = book.get("c-1")
    assert got is not None
    assert (got["signals"], got["baseline_n"], got["recent_n"]) == (15, 10, 5)
    assert (got["baseline"], got["recent"], got["trend"]) == (100.0, 0.0, -100.0)
    assert got["at_risk"] is True
    assert got["last_seen"] == T0 + 100  # a not-applicable answer still shows activity
    assert got["segment"] == "enterprise"  # the latest segment


# -- through the engine ------------------------------------------------------------------


def ev(i: int, **fields: Any) -> Any:
    return make_event(event_id=f"e-{i}", occurred_at=BASE + timedelta(minutes=i), **fields)


def test_through_the_engine_with_mixed_kinds_and_not_applicable() -> None:
    engine = Engine(EngineConfig(scopes=((),)))
    good = [{"kind": "csat", "value": 5}, {"kind": "nps", "value": 10},
            {"kind": "ces", "value": 7}, {"kind": "outcome", "value": "resolved"},
            {"kind": "sentiment", "value": 1.0}]
    bad = [{"kind": "csat", "value": 1}, {"kind": "nps", "value": 0},
           {"kind": "ces", "value": 1}, {"kind": "outcome", "value": "abandoned"},
           {"kind": "sentiment", "value": -1.0}]
    na = {"kind": "rating", "value": 0, "na_code": 0}
    stream = [*good, *good, na, *bad, na]
    engine.ingest([ev(i, customer_id="c-9", **f) for i, f in enumerate(stream)])
    engine.ingest([ev(100 + i, customer_id="c-8", kind="csat", value=3) for i in range(15)])
    got = engine.customers.get("c-9")
    assert got is not None
    assert (got["signals"], got["baseline"], got["baseline_n"]) == (15, 100.0, 10)
    assert (got["recent"], got["recent_n"], got["trend"]) == (0.0, 5, -100.0)
    assert got["last_seen"] == int((BASE + timedelta(minutes=len(stream) - 1)).timestamp())
    mediocre = engine.customers.get("c-8")
    assert mediocre is not None
    assert (mediocre["baseline"], mediocre["recent"], mediocre["at_risk"]) == (50.0, 50.0, False)
    assert engine.customers.at_risk() == ["c-9"]
    assert engine.customers.get("c-404") is None
    # Snapshot round trip keeps every customer.
    resumed = Engine.restore(engine.config, engine.snapshot())
    assert resumed.customers.state() == engine.customers.state()
    assert resumed.customers.at_risk() == ["c-9"]


def test_state_round_trip() -> None:
    book = book_with([CSAT[v] for v in (5, 4, 5, 3, 5, 4, 2, 1, 2, 1, 1)])
    copy = CustomerBook(CustomerConfig())
    copy.restore(book.state())
    assert copy.state() == book.state()
    assert copy.get("c-1") == book.get("c-1")
    for b in (book, copy):
        b.add("c-1", "smb", 0.0, T0 + 99)
    assert copy.get("c-1") == book.get("c-1")
