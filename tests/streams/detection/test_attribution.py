"""Attribution of drops: known truths recovered, exact sums, drill-down, grouping, journeys.

Synthetic vectors where the answer is known (a drop planted in one value, a pure mix
shift, two causes at once), a property test that the midpoint Kitagawa decomposition adds
up exactly for every metric, and end-to-end runs through the engine and the detector:
alerts that fire together are grouped under the one that explains them, a journey whose
touchpoints are all stable is named as such, and the airline survey replayed with a drop
planted in one touchpoint for one class names that touchpoint and class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import EventDecoder
from schemas.event import Csat, Nps, TouchpointEvent
from streams.detection import (
    DOMINANT,
    Alert,
    Attribution,
    DetectionConfig,
    Detector,
    DropRule,
    Evidence,
    attribute,
    compare,
    explaining_parents,
    group_alerts,
)
from streams.engine.config import ContinuousWindow, EngineConfig
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, NCOLS, SUM, SUMSQ, TOP, N, score
from streams.sources.airline import DEFAULT_START, events

T0 = 1_772_409_600  # Monday 2026-03-02 00:00 UTC
HOUR, WEEK = 3600, 604_800
LIVE = T0 + WEEK


# ------------------------------------------------------------------------- helpers


def share(n: float, top: float) -> np.ndarray:
    vec = np.zeros(NCOLS)
    vec[N], vec[TOP] = n, top
    return vec


def nps(n: float, promoters: float, detractors: float) -> np.ndarray:
    vec = share(n, promoters)
    vec[BOTTOM] = detractors
    return vec


def mean(n: float, total: float, spread: float = 1.0) -> np.ndarray:
    vec = np.zeros(NCOLS)
    vec[N], vec[SUM] = n, total
    vec[SUMSQ] = (total * total / n if n else 0.0) + spread * n
    return vec


def rows_by_label(att: Attribution) -> dict[str, Any]:
    return {c.label: c for c in att.contributions}


def assert_adds_up(att: Attribution, tol: float = 1e-9) -> None:
    assert math.fsum(c.rate + c.mix for c in att.contributions) == pytest.approx(
        att.total, abs=tol)
    assert att.rate + att.mix == pytest.approx(att.total, abs=tol)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def stream(kind: str, block: Sequence[int], start: int, end: int, per_hour: int, seed: int,
           **fields: Any) -> list[TouchpointEvent]:
    """Answers evenly spaced in [start, end); each run of 20 is ``block`` shuffled."""
    rng = np.random.default_rng(seed)
    count = (end - start) * per_hour // HOUR
    values: list[int] = []
    while len(values) < count:
        values += rng.permutation(list(block)).tolist()
    gap = HOUR / per_hour
    cls = Csat if kind == "csat" else Nps
    base = {"touchpoint": "contact", "channel": "phone", **fields}
    return [cls(event_id=f"{kind}-{seed}-{i}", occurred_at=at(start + i * gap),
                customer_id=f"c{i % 50}", value=values[i], **base) for i in range(count)]


def csat_block(top_share: float) -> list[int]:
    top = round(top_share * 20)
    return [5] * top + [2] * (20 - top)


def evaluate_once(engine: Engine, detector: Detector, batch: list[TouchpointEvent]) -> None:
    engine.ingest(sorted(batch, key=lambda e: e.occurred_at))
    assert engine.watermark is not None
    detector.evaluate(engine, engine.watermark)


# ------------------------------------------------------------ the decomposition


def test_midpoint_kitagawa_matches_a_hand_computation() -> None:
    att = attribute("csat", {"chat": (share(300, 180), share(200, 160)),
                             "phone": (share(700, 630), share(800, 720))})
    # S0 = 0.88, S1 = 0.81; chat 0.8 -> 0.6 at shares 0.2 -> 0.3; phone 0.9 at 0.8 -> 0.7.
    assert att.total == pytest.approx(-0.07)
    rows = rows_by_label(att)
    assert rows["chat"].rate == pytest.approx(0.25 * -0.2)
    assert rows["chat"].mix == pytest.approx(0.1 * (0.7 - 0.845))
    assert rows["phone"].rate == pytest.approx(0.0)
    assert rows["phone"].mix == pytest.approx(-0.1 * (0.9 - 0.845))
    assert (rows["chat"].window_n, rows["chat"].baseline_n) == (300, 200)
    assert (rows["chat"].window_share, rows["chat"].baseline_share) == (0.3, 0.2)
    assert_adds_up(att)
    # Symmetric in time: swapping the windows flips every sign and nothing else.
    back = rows_by_label(attribute("csat", {"chat": (share(200, 160), share(300, 180)),
                                            "phone": (share(800, 720), share(700, 630))}))
    for label, row in rows.items():
        assert back[label].rate == pytest.approx(-row.rate)
        assert back[label].mix == pytest.approx(-row.mix)


@pytest.mark.parametrize("metric,before,after", [
    ("csat", share(1000, 850), share(1000, 600)),
    ("nps", nps(1000, 500, 200), nps(1000, 300, 350)),
    ("ces", mean(1000, 5500.0), mean(1000, 4800.0)),
])
def test_a_drop_planted_in_one_value_is_all_its_rate_effect(
        metric: str, before: np.ndarray, after: np.ndarray) -> None:
    steady = {name: (before.copy(), before.copy()) for name in ("phone", "web", "app", "store")}
    att = attribute(metric, {**steady, "chat": (after, before)}, dimensions=("channel",))
    lead = att.lead
    assert lead is not None and lead.label == "chat"
    assert lead.fraction == pytest.approx(1.0)
    assert lead.rate == pytest.approx(att.total) and lead.mix == pytest.approx(0.0, abs=1e-12)
    assert att.mix == pytest.approx(0.0, abs=1e-12)
    expected = (score(metric, after).value - score(metric, before).value) / 5
    assert att.total == pytest.approx(expected)
    assert lead.effect == "rate" and lead.q is not None and lead.q < 1e-6
    assert att.summary == "chat explains 100% of the drop; rate effect"
    assert_adds_up(att)


def test_a_pure_mix_shift_with_unchanged_rates_is_all_mix() -> None:
    # chat scores 0.6 and phone 0.9 in both windows; chat goes from 20% to 60% of answers.
    att = attribute("csat", {"chat": (share(600, 360), share(200, 120)),
                             "phone": (share(400, 360), share(800, 720))})
    assert att.total == pytest.approx(0.36 + 0.36 - 0.12 - 0.72)
    assert att.rate == pytest.approx(0.0, abs=1e-12)
    assert att.mix == pytest.approx(att.total)
    rows = rows_by_label(att)
    assert rows["chat"].effect == rows["phone"].effect == "mix"
    assert rows["chat"].p is not None and rows["chat"].p > 0.4  # no rate moved
    assert rows["chat"].mix_p is not None and rows["chat"].mix_p < 1e-12  # the share did
    assert att.summary.startswith("mix shift: chat went from 20% to 60% of answers")
    assert_adds_up(att)


def test_two_simultaneous_causes_are_both_named_in_proportion() -> None:
    # Shares stay 50/30/20: chat drops 0.11 (-0.055 overall), web 0.15 (-0.045).
    att = attribute("csat", {"chat": (share(1000, 790), share(1000, 900)),
                             "web": (share(600, 450), share(600, 540)),
                             "phone": (share(400, 300), share(400, 300))})
    rows = rows_by_label(att)
    assert [c.label for c in att.contributions][:2] == ["chat", "web"]
    assert rows["chat"].fraction == pytest.approx(0.55)
    assert rows["web"].fraction == pytest.approx(0.45)
    assert rows["phone"].fraction == pytest.approx(0.0, abs=1e-12)
    assert att.summary == "no single value explains the drop: chat 55%, web 45%"
    # 75/25 with one dominant: named, and the second cause still ranked next.
    att = attribute("csat", {"chat": (share(300, 210), share(300, 270)),
                             "web": (share(200, 160), share(200, 180)),
                             "phone": (share(500, 400), share(500, 400))})
    assert [(c.label, round(c.fraction or 0, 12)) for c in att.contributions][:2] == [
        ("chat", 0.75), ("web", 0.25)]
    assert att.summary == "chat explains 75% of the drop; rate effect"


def test_long_tail_folds_and_parent_rest_keeps_the_total() -> None:
    children = {f"v{i}": (share(100, 80 - i), share(100, 80)) for i in range(10)}
    parent = (share(1500, 1200), share(1400, 1150))  # 500 / 400 answers in no value
    att = attribute("csat", children, parent, top=3, rest_label="elsewhere")
    labels = [c.label for c in att.contributions]
    assert "other (7 values)" in labels and "elsewhere" in labels
    assert labels.count("other (7 values)") == 1 and len(labels) == 5
    other = rows_by_label(att)["other (7 values)"]
    assert (other.kind, other.values, other.window_n) == ("other", 7, 700)
    assert att.total == pytest.approx(score("csat", parent[0]).value
                                      - score("csat", parent[1]).value)
    assert_adds_up(att)
    with pytest.raises(ValueError, match="more answers"):
        attribute("csat", children, (share(10, 5), share(10, 5)))


def test_rows_use_the_metric_score_and_the_detection_test() -> None:
    cases = {"csat": (share(400, 300), share(900, 800)),
             "outcome": (share(400, 300), share(900, 800)),
             "nps": (nps(400, 150, 120), nps(900, 450, 150)),
             "rating:1-5": (mean(400, 1400.0), mean(900, 3600.0)),
             "sentiment": (mean(400, 40.0, 0.2), mean(900, 180.0, 0.2))}
    for metric, (w, b) in cases.items():
        att = attribute(metric, {"a": (w, b), "b": (b.copy(), b.copy())})
        row = rows_by_label(att)["a"]
        c = compare(metric, w, b)
        assert row.window_score == pytest.approx(score(metric, w).value), metric
        assert row.baseline_score == pytest.approx(score(metric, b).value), metric
        assert row.p == pytest.approx(c.p) and att.test == c.test, metric
        assert att.window_score == pytest.approx(score(metric, w + b).value), metric


def test_no_drop_and_no_answers_are_said_plainly() -> None:
    up = attribute("csat", {"a": (share(100, 90), share(100, 80))})
    assert up.summary.startswith("no drop to attribute")
    empty = attribute("csat", {"a": (share(0, 0), share(100, 80))})
    assert math.isnan(empty.total) and empty.contributions == ()
    assert empty.summary.startswith("not enough answers")


METRICS = ("csat", "outcome", "nps", "ces", "rating:1-5", "sentiment")


@st.composite
def child_vectors(draw: st.DrawFn, metric: str) -> np.ndarray:
    n = draw(st.integers(0, 500))
    vec = np.zeros(NCOLS)
    vec[N] = n
    if metric in ("csat", "outcome"):
        vec[TOP] = draw(st.integers(0, n))
    elif metric == "nps":
        p = draw(st.integers(0, n))
        vec[TOP], vec[BOTTOM] = p, draw(st.integers(0, n - p))
    else:
        lo, hi = (-100, 100) if metric == "sentiment" else (100, 700)
        m = draw(st.integers(lo, hi)) / 100
        vec[SUM] = m * n
        vec[SUMSQ] = m * m * n + draw(st.integers(0, 400)) / 100 * n
    return vec


@st.composite
def decompositions(draw: st.DrawFn) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]],
                                              tuple[np.ndarray, np.ndarray] | None, int]:
    metric = draw(st.sampled_from(METRICS))
    k = draw(st.integers(1, 9))
    children = {f"v{i}": (draw(child_vectors(metric)), draw(child_vectors(metric)))
                for i in range(k)}
    parent = None
    if draw(st.booleans()):
        extra = (draw(child_vectors(metric)), draw(child_vectors(metric)))
        parent = (np.sum([w for w, _ in children.values()], axis=0) + extra[0],
                  np.sum([b for _, b in children.values()], axis=0) + extra[1])
    return metric, children, parent, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(decompositions())
def test_contributions_always_add_up_to_the_total(
        case: tuple[str, dict[str, tuple[np.ndarray, np.ndarray]],
                    tuple[np.ndarray, np.ndarray] | None, int]) -> None:
    metric, children, parent, top = case
    att = attribute(metric, children, parent, top=top)
    window = parent[0] if parent else np.sum([w for w, _ in children.values()], axis=0)
    base = parent[1] if parent else np.sum([b for _, b in children.values()], axis=0)
    if window[N] == 0 or base[N] == 0:
        assert math.isnan(att.total) and att.contributions == ()
        return
    assert att.total == pytest.approx(score(metric, window).value - score(metric, base).value,
                                      abs=1e-9)
    assert abs(math.fsum(c.rate + c.mix for c in att.contributions) - att.total) <= 1e-9
    assert abs(att.rate + att.mix - att.total) <= 1e-9
    assert math.fsum(c.window_share for c in att.contributions) == pytest.approx(1.0)
    assert math.fsum(c.baseline_share for c in att.contributions) == pytest.approx(1.0)
    assert sum(c.window_n for c in att.contributions) == window[N]
    assert len([c for c in att.contributions if c.kind == "value"]) <= top + 1
    magnitudes = [abs(c.contribution) for c in att.contributions]
    assert magnitudes == sorted(magnitudes, reverse=True)
    json.dumps(att.to_dict(), allow_nan=False)  # what the API's JSON encoder demands


def test_explaining_parents_picks_the_nearest_scope_that_names_the_child() -> None:
    items = {
        "all": ({}, [{"channel": "chat"}, {"channel": "chat", "segment": "ent"}]),
        "chat": ({"channel": "chat"}, [{"channel": "chat", "segment": "ent"}]),
        "cell": ({"channel": "chat", "segment": "ent"}, []),
        "phone": ({"channel": "phone"}, []),
    }
    assert explaining_parents(items) == {"chat": "all", "cell": "chat"}
    del items["chat"]
    assert explaining_parents(items) == {"cell": "all"}


# ------------------------------------------------------- through the detector


GROUPING = EngineConfig(scopes=((), ("channel",), ("segment",), ("channel", "segment")))


def _rule(**fields: Any) -> DropRule:
    base: dict[str, Any] = {"name": "csat-drop", "metric": "csat", "window": ("continuous", "1h"),
                            "baseline": ("prior", "7d"), "min_n_window": 100,
                            "min_n_baseline": 200, "hold_seconds": 0}
    return DropRule(**{**base, **fields})


def test_alerts_that_fire_together_page_once_under_the_one_that_explains_them() -> None:
    batch: list[TouchpointEvent] = []
    seed = 0
    for channel in ("chat", "phone"):
        for segment in ("enterprise", "smb"):
            seed += 1
            cell = {"channel": channel, "segment": segment, "touchpoint": channel}
            batch += stream("csat", csat_block(0.85), T0, LIVE, 6, seed, **cell)
            live = 0.45 if (channel, segment) == ("chat", "enterprise") else 0.85
            batch += stream("csat", csat_block(live), LIVE, LIVE + HOUR, 300, 10 + seed, **cell)
    engine, detector = Engine(GROUPING), Detector(DetectionConfig(drops=(_rule(),)))
    evaluate_once(engine, detector, batch)
    firing = {",".join(f"{k}={v}" for k, v in a.scope.items()) or "overall": a
              for a in detector.alerts.list(state="firing")}
    assert set(firing) == {"overall", "channel=chat", "segment=enterprise",
                           "channel=chat,segment=enterprise"}
    overall = firing["overall"]
    ev = overall.evidence
    assert ev is not None and ev.attribution is not None
    assert ev.attribution_summary is not None
    assert ev.attribution_summary.startswith("channel=chat, segment=enterprise explains")
    assert ev.attribution_summary.endswith("of the drop; rate effect")
    assert ev.attribution["lead"] == {"channel": "chat", "segment": "enterprise"}
    assert ev.attribution["lead_fraction"] == pytest.approx(1.0, abs=0.05)
    by = {a["dimensions"][0]: a for a in ev.attribution["by"]}
    assert set(by) == {"channel", "segment"}  # both explain it all: either may lead
    chat = by["channel"]["contributions"][0]
    assert (chat["label"], chat["effect"]) == ("channel=chat", "rate")
    assert chat["window_n"] == 600 and chat["q"] < 1e-6
    assert set(ev.attribution["drill"][0]["dimensions"]) == {"channel", "segment"}
    # Grouping: every other alert hangs under the overall one; one page.
    assert firing["channel=chat"].to_dict()["explained_by"] == overall.id
    assert firing["segment=enterprise"].to_dict()["explained_by"] == overall.id
    cell = firing["channel=chat,segment=enterprise"].to_dict()
    assert cell["explained_by"] in {firing["channel=chat"].id, firing["segment=enterprise"].id}
    assert overall.to_dict()["explained_by"] is None
    groups = group_alerts(list(firing.values()))
    assert len(groups) == 1 and groups[0].root.id == overall.id
    assert {a.id for a in groups[0].members} == {a.id for a in firing.values()} - {overall.id}
    assert groups[0].summary.endswith("(explains 3 more alerts)")
    # Served as is: GET /v1/alerts/{id} is to_dict(); the topic takes orjson; snapshots msgpack.
    served = overall.to_dict()
    assert served["attribution_summary"] == ev.attribution_summary
    assert served["evidence"]["attribution"]["summary"] == ev.attribution_summary
    json.dumps(served, allow_nan=False)
    assert orjson.loads(orjson.dumps(served)) == served
    restored = Detector(detector.config)
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(detector.state())))
    assert restored.state() == detector.state()
    assert restored.alerts.get(overall.id) is not None


def test_group_alerts_marks_children_from_evidence_alone() -> None:
    def alert(aid: str, scope: dict[str, str], dominant: list[dict[str, str]]) -> Alert:
        ev = Evidence("two_proportion_arcsine_z", 300, 0.6, 0, 3600,
                      attribution={"dominant": dominant})
        return Alert(aid, "r", "drop", "csat", scope, "o", "warning", "firing", 0, 0,
                     evidence=ev)

    alerts = [alert("c", {"channel": "chat"}, []), alert("a", {}, [{"channel": "chat"}]),
              alert("p", {"channel": "phone"}, [])]
    groups = group_alerts(alerts)
    assert [(g.root.id, [m.id for m in g.members]) for g in groups] == [("a", ["c"]),
                                                                         ("p", [])]
    assert alerts[0].evidence is not None and alerts[0].evidence.explained_by == "a"
    assert groups[0].to_dict()["members"] == [
        {"id": "c", "scope": {"channel": "chat"}, "explained_by": "a"}]


JOURNEYS = EngineConfig(scopes=(("journey_type",), ("touchpoint", "journey_type")))


def _journey_events(escalation_live: float = 0.5, survey_drops: bool = False
                    ) -> list[TouchpointEvent]:
    batch: list[TouchpointEvent] = []
    # Baseline: 70% of answers at chat (0.9), 25% at phone (0.8), 5% at escalation (0.5);
    # live: more hand-offs, 40 / 27 / 33%, each touchpoint rated as before (or not).
    steps = (("chat", 0.9, 14, 120, 0.9), ("phone", 0.8, 5, 80, 0.8),
             ("escalation", 0.5, 1, 100, escalation_live))
    for i, (tp, before, base_rate, live_rate, after) in enumerate(steps):
        fields = {"touchpoint": tp, "channel": tp, "journey_type": "fix_problem"}
        batch += stream("csat", csat_block(before), T0, LIVE, base_rate, 100 + i, **fields)
        batch += stream("csat", csat_block(after), LIVE, LIVE + HOUR, live_rate, 200 + i,
                        **fields)
    # The journey-end survey: NPS, carried by this one touchpoint.
    survey = {"touchpoint": "survey", "channel": "email", "journey_type": "fix_problem"}
    before_nps = [10] * 12 + [8] * 5 + [3] * 3
    after_nps = [10] * 6 + [8] * 6 + [3] * 8 if survey_drops else before_nps
    batch += stream("nps", before_nps, T0, LIVE, 4, 300, **survey)
    batch += stream("nps", after_nps, LIVE, LIVE + HOUR, 200, 301, **survey)
    return batch


def test_a_journey_drop_with_every_touchpoint_stable_is_named_as_hand_offs() -> None:
    rules = (_rule(name="journey-csat"), _rule(name="journey-nps", metric="nps"))
    engine, detector = Engine(JOURNEYS), Detector(DetectionConfig(drops=rules))
    evaluate_once(engine, detector, _journey_events())
    [alert] = detector.alerts.list(state="firing")
    ev = alert.evidence
    assert alert.rule == "journey-csat"
    assert ev is not None and ev.attribution is not None and ev.attribution_summary is not None
    journey = ev.attribution["journey"]
    assert journey["stable"] is True and journey["checked"] == 4  # 3 steps and the survey
    assert journey["mix_fraction"] == pytest.approx(1.0, abs=0.1)
    assert ev.attribution_summary.startswith(
        "journey fix_problem dropped while every touchpoint in it looks stable (4 checked): "
        "hand-offs / channel switching, not one touchpoint")
    assert ev.attribution["effect"] == "journey"
    assert set(journey["channel_bands"]) == {"1", "2", "3", "4+"}  # context, cumulative


def test_a_journey_verdict_drop_with_stable_steps_is_named_as_hand_offs() -> None:
    rule = _rule(name="journey-nps", metric="nps", scopes=(("journey_type",),))
    engine, detector = Engine(JOURNEYS), Detector(DetectionConfig(drops=(rule,)))
    evaluate_once(engine, detector, _journey_events(survey_drops=True))
    [alert] = detector.alerts.list(state="firing")
    assert alert.evidence is not None and alert.evidence.attribution is not None
    journey = alert.evidence.attribution["journey"]
    # The survey alone carries NPS: it is the journey's own verdict, checked against the
    # three step series, which are stable.
    assert (journey["verdict"], journey["stable"], journey["checked"]) == ("survey", True, 3)
    assert (alert.evidence.attribution_summary or "").startswith("journey fix_problem dropped")


def test_a_journey_drop_carried_by_one_touchpoint_is_not_called_hand_offs() -> None:
    engine, detector = Engine(JOURNEYS), Detector(DetectionConfig(drops=(_rule(),)))
    evaluate_once(engine, detector, _journey_events(escalation_live=0.2))
    [alert] = detector.alerts.list(state="firing")
    assert alert.evidence is not None and alert.evidence.attribution is not None
    journey = alert.evidence.attribution["journey"]
    assert journey["stable"] is False and journey["dropped"] == ["escalation (csat)"]
    # Escalation both grew (mix) and got worse (rate): the page says so, not "hand-offs".
    assert (alert.evidence.attribution_summary or "").startswith(
        "mix shift: touchpoint=escalation went from 5% to 33% of answers")
    lead = alert.evidence.attribution["by"][0]["contributions"][0]
    assert lead["label"] == "touchpoint=escalation"


# ------------------------------------------------------------------ real data


AIRLINE = EngineConfig(
    scopes=((), ("touchpoint",), ("segment",), ("touchpoint", "segment")),
    continuous=(ContinuousWindow(name="2d", span=2 * 86_400, step=3600),),
    allowed_lateness=0,
)


def test_airline_replay_with_a_planted_drop_names_the_touchpoint_and_class() -> None:
    gap = timedelta(seconds=30)
    raw = list(events(passenger_gap=gap, limit=4000))
    last = datetime.fromisoformat(raw[-1]["occurred_at"]).timestamp()
    window_start = (int(last) // HOUR - 7) * HOUR  # the rule's 8 h window, in whole hours
    planted = 0
    for e in raw:
        if (e["touchpoint"] == "seat" and e["segment"] == "eco" and e["value"] > 1
                and datetime.fromisoformat(e["occurred_at"]).timestamp() >= window_start):
            e["value"] -= 2 if e["value"] > 2 else 1  # seats got worse in economy only
            planted += 1
    assert planted > 300
    decoder = EventDecoder(clock=(DEFAULT_START + timedelta(days=60)).timestamp)
    rule = DropRule(name="service", metric="rating:1-5", window=("continuous", "8h"),
                    baseline=("prior", "24h"), min_n_window=100, min_n_baseline=200,
                    min_effect=0.02, hold_seconds=0)
    engine, detector = Engine(AIRLINE), Detector(DetectionConfig(drops=(rule,)))
    evaluate_once(engine, detector, [decoder.convert(e) for e in raw])
    firing = {",".join(f"{k}={v}" for k, v in a.scope.items()) or "overall": a
              for a in detector.alerts.list(state="firing")}
    assert {"overall", "touchpoint=seat", "touchpoint=seat,segment=eco"} <= set(firing)
    for name, named in (("overall", "touchpoint=seat, segment=eco"),
                        ("touchpoint=seat", "segment=eco")):  # named within the alert's scope
        ev = firing[name].evidence
        assert ev is not None and ev.attribution is not None, name
        assert ev.attribution["lead"] == {"touchpoint": "seat", "segment": "eco"}, name
        assert ev.attribution_summary is not None
        assert ev.attribution_summary.startswith(f"{named} explains"), name
        assert ev.attribution["effect"] == "rate", name
        assert ev.attribution["lead_fraction"] >= DOMINANT, name
    overall = firing["overall"].evidence
    assert overall is not None and overall.attribution is not None
    assert overall.attribution["by"][0]["contributions"][0]["label"] == "touchpoint=seat"
    seat = firing["touchpoint=seat"]
    assert seat.to_dict()["explained_by"] == firing["overall"].id
    roots = [g.root.id for g in group_alerts(list(firing.values()))]
    assert firing["overall"].id in roots and seat.id not in roots
