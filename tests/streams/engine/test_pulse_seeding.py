"""Pulse studies seeded from the state (issue 18, item 3): a study whose baseline lies
in the past counts the answers already in the buckets when its filter is a configured
scope, and every answer that arrives later exactly once; where the state cannot answer,
the study says so."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest
from engine_reference import contribution, make_event, metric_name

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.metrics import NCOLS
from streams.engine.pulses import LEGACY_NOTE, PulseStudy, Seed, merge_studies

HOUR = 3600
DAY = 86_400
DAY0 = 20_530 * DAY  # 2026-03-18 00:00 UTC: the first day of traffic
NOW = DAY0 + 13 * DAY + 10 * HOUR + 17 * 60 + 23  # about two weeks of traffic later
CONFIG = EngineConfig(scopes=((), ("channel",), ("segment",), ("channel", "segment")))
CHANNELS = ("chat", "phone", "web", "email")
SEGMENTS = ("enterprise", "smb")


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def traffic(seed: int = 1, since: int = DAY0, until: int = NOW, every: int = 900,
            prefix: str = "e") -> list[TouchpointEvent]:
    """An answer about every ``every`` seconds over [since, until], in time order."""
    rng = random.Random(seed)
    events = []
    t = since
    i = 0
    while t <= until:
        kind = rng.choice(("csat", "csat", "nps", "ces"))
        value = {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10),
                 "ces": rng.randint(1, 7)}[kind]
        events.append(make_event(
            event_id=f"{prefix}-{i}", occurred_at=at(t), customer_id=f"c-{rng.randrange(50)}",
            channel=rng.choice(CHANNELS), segment=rng.choice(SEGMENTS), kind=kind,
            value=value))
        t += rng.randint(every // 2, every + every // 2)
        i += 1
    return events


def by_hand(events: list[TouchpointEvent], lo: int, hi: int,
            match: dict[str, tuple[str, ...]]) -> dict[str, list[float]]:
    """Each metric's vector over the events in [lo, hi) that match, event by event."""
    out: dict[str, np.ndarray] = {}
    for e in events:
        t = int(e.occurred_at.timestamp())
        if not lo <= t < hi or any(getattr(e, d) not in v for d, v in match.items()):
            continue
        m = metric_name(e)
        out[m] = out.get(m, np.zeros(NCOLS)) + np.array(contribution(e))
    return {m: v.tolist() for m, v in out.items()}


def book(study: PulseStudy, side: str) -> dict[str, list[float]]:
    return {m: v.tolist() for m, v in (study.baseline if side == "baseline"
                                       else study.study).items() if v.any()}


LAST_WEEK = {"baseline_start": DAY0, "baseline_end": DAY0 + 7 * DAY,
             "start": NOW, "end": NOW + 7 * DAY}
CHAT_WEB = {"channel": ("chat", "web")}


@pytest.fixture(scope="module")
def week() -> list[TouchpointEvent]:
    return traffic()


def fed(events: list[TouchpointEvent]) -> Engine:
    engine = Engine(CONFIG)
    for i in range(0, len(events), 500):
        engine.ingest(events[i: i + 500])
    return engine


def test_a_baseline_last_week_counts_the_answers_in_the_state(week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    study = engine.start_pulse("p", "chat and web", {k: list(v) for k, v in CHAT_WEB.items()},
                               **LAST_WEEK)
    want = by_hand(week, DAY0, DAY0 + 7 * DAY, CHAT_WEB)
    assert book(study, "baseline") == want
    seed = study.seeds["baseline"]
    assert (seed.source, seed.granularity, seed.exact, seed.note) == ("state", "3600s", True,
                                                                      None)
    assert (seed.start, seed.end) == (DAY0, DAY0 + 7 * DAY)
    # n and value as a person counts them: csat top-2-box share of the chat and web answers.
    csat = [e for e in week if e.kind == "csat" and e.channel in CHAT_WEB["channel"]
            and DAY0 <= e.occurred_at.timestamp() < DAY0 + 7 * DAY]
    scores = {m: b for m, _, b in study.results()}
    assert scores["csat"].n == len(csat) > 100
    assert scores["csat"].value == pytest.approx(
        sum(1 for e in csat if (e.value or 0) >= 4) / len(csat))
    # The study starts now, off the minute: nothing of it is in the state yet, but it
    # counts from the start of that minute (to the start of its end's), as every engine
    # that keeps the minute would.
    seed = study.seeds["study"]
    assert (seed.source, seed.granularity, seed.exact) == ("state", "60s", False)
    assert (seed.start, seed.end) == (NOW - NOW % 60, NOW + 7 * DAY - NOW % 60)
    assert seed.note is not None and "approximated to whole minute buckets" in seed.note
    assert book(study, "study") == {}


def test_the_overall_scope_and_a_two_dimension_scope(week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    overall = engine.start_pulse("all", "everyone", {}, **LAST_WEEK)
    assert book(overall, "baseline") == by_hand(week, DAY0, DAY0 + 7 * DAY, {})
    pair = engine.start_pulse("two", "enterprise chat or phone",
                              {"segment": ["enterprise"], "channel": ["chat", "phone"]},
                              **LAST_WEEK)
    assert book(pair, "baseline") == by_hand(
        week, DAY0, DAY0 + 7 * DAY, {"segment": ("enterprise",), "channel": ("chat", "phone")})
    assert pair.seeds["baseline"].source == "state"


def test_answers_after_the_start_count_once_late_ones_in_the_baseline_too(
        week: list[TouchpointEvent]) -> None:
    """Seed + stream equals an engine that had every answer before the study started."""
    engine = fed(week)
    engine.start_pulse("p", "chat and web", {k: list(v) for k, v in CHAT_WEB.items()},
                       **LAST_WEEK)
    later = [
        # A late answer (10 days late) whose time lies in the baseline: counts once.
        make_event(event_id="late-1", occurred_at=at(DAY0 + 3 * DAY + 5), channel="chat",
                   kind="csat", value=1),
        # An answer already in the state, sent again: a duplicate, not counted again.
        next(e for e in week if e.channel == "chat"
             and e.occurred_at.timestamp() < DAY0 + 7 * DAY),
        # Another channel, and an answer of the study's span.
        make_event(event_id="late-2", occurred_at=at(DAY0 + 4 * DAY), channel="phone"),
        make_event(event_id="now-1", occurred_at=at(NOW + 60), channel="web", kind="csat",
                   value=5),
    ]
    result = engine.ingest(later)
    assert (result.accepted, len(result.duplicates)) == (3, 1)
    study = engine.pulses["p"]
    everything = [*week, later[0], later[2], later[3]]
    assert book(study, "baseline") == by_hand(everything, DAY0, DAY0 + 7 * DAY, CHAT_WEB)
    assert book(study, "study") == by_hand(everything, NOW, NOW + 7 * DAY, CHAT_WEB)
    # The same as an engine fed every answer first, the study started last.
    oracle = fed(everything)
    again = oracle.start_pulse("p", "chat and web", {k: list(v) for k, v in CHAT_WEB.items()},
                               **LAST_WEEK)
    assert book(again, "baseline") == book(study, "baseline")
    # Batching after the start does not matter either.
    one_by_one = fed(week)
    one_by_one.start_pulse("p", "x", {k: list(v) for k, v in CHAT_WEB.items()}, **LAST_WEEK)
    for event in later:
        one_by_one.ingest([event])
    assert book(one_by_one.pulses["p"], "baseline") == book(study, "baseline")


def test_a_study_that_starts_in_the_past_takes_its_past_part(
        week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    spans = {"start": DAY0 + 13 * DAY, "end": DAY0 + 15 * DAY,
             "baseline_start": DAY0 + 6 * DAY, "baseline_end": DAY0 + 8 * DAY}
    study = engine.start_pulse("p", "since yesterday", {"channel": ["chat"]}, **spans)
    assert study.seeds["study"] == Seed("state", DAY0 + 13 * DAY, DAY0 + 15 * DAY, "3600s")
    more = traffic(seed=2, since=NOW + 1, until=NOW + 4 * HOUR, prefix="m")
    engine.ingest(more)
    want = by_hand([*week, *more], DAY0 + 13 * DAY, DAY0 + 15 * DAY, {"channel": ("chat",)})
    assert book(study, "study") == want


def test_a_baseline_off_the_hours_is_approximated_to_whole_hours_and_says_so(
        week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    lo, hi = DAY0 + 2 * DAY + 1234, DAY0 + 5 * DAY + 30 * 60
    study = engine.start_pulse("p", "odd", {"channel": ["chat"]}, baseline_start=lo,
                               baseline_end=hi, start=NOW, end=NOW + DAY)
    seed = study.seeds["baseline"]
    used = (DAY0 + 2 * DAY, DAY0 + 5 * DAY)  # each bound to the start of its hour
    assert (seed.source, seed.granularity, seed.exact, (seed.start, seed.end)) == (
        "state", "3600s", False, used)
    assert seed.note is not None and "approximated to whole hourly buckets" in seed.note
    assert "2026-03-20T00:00:00Z to 2026-03-23T00:00:00Z" in seed.note
    # Later answers count over the same span: the baseline is every answer in it.
    late = make_event(event_id="late-edge", occurred_at=at(used[0] + 5), channel="chat")
    engine.ingest([late])
    assert book(study, "baseline") == by_hand([*week, late], *used, {"channel": ("chat",)})


def test_older_than_the_hours_kept_takes_the_days(week: list[TouchpointEvent]) -> None:
    """Hourly buckets keep 14 days: a baseline 20 days back is summed from the days."""
    engine = fed([*traffic(seed=3, since=NOW - 30 * DAY, until=DAY0 - 1, every=3600,
                           prefix="o"), *week])
    lo, hi = NOW - 25 * DAY, NOW - 18 * DAY
    lo, hi = lo - lo % DAY, hi - hi % DAY
    study = engine.start_pulse("p", "x", {"channel": ["web"]}, baseline_start=lo,
                               baseline_end=hi, start=NOW, end=NOW + DAY)
    assert (study.seeds["baseline"].granularity, study.seeds["baseline"].exact) == ("day", True)
    old = traffic(seed=3, since=NOW - 30 * DAY, until=DAY0 - 1, every=3600, prefix="o")
    assert book(study, "baseline") == by_hand(old, lo, hi, {"channel": ("web",)})


def test_a_filter_that_is_not_a_scope_says_so(week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    study = engine.start_pulse("p", "one customer's touchpoint",
                               {"touchpoint": ["call"]}, **LAST_WEEK)
    seed = study.seeds["baseline"]
    assert seed.source == "live only"
    assert seed.note is not None
    assert "the filter groups by touchpoint, which is not a configured scope" in seed.note
    assert "counts only answers that arrive after it started" in seed.note
    assert study.seeds["study"].source == "live only"
    assert book(study, "baseline") == {}
    # It still counts what arrives.
    engine.ingest([make_event(event_id="x", occurred_at=at(DAY0 + DAY), touchpoint="call")])
    assert study.results()[0][2].n == 1


def test_a_span_older_than_anything_kept_says_so(week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    study = engine.start_pulse("p", "x", {}, baseline_start=DAY0 - 1000 * DAY,
                               baseline_end=DAY0 - 990 * DAY, start=NOW, end=NOW + DAY)
    seed = study.seeds["baseline"]
    assert seed.source == "live only"
    assert seed.note is not None and "before anything the state keeps" in seed.note
    assert "quarterly buckets" in seed.note


def test_a_value_folded_into_other_cannot_be_told_apart() -> None:
    config = EngineConfig(scopes=((), ("channel",)), dimensions={"channel": {"cap": 2}})
    engine = Engine(config)
    engine.ingest([make_event(event_id=f"e{i}", occurred_at=at(DAY0 + i * 60), channel=c)
                   for i, c in enumerate(("chat", "phone", "web", "chat"))])
    folded = engine.start_pulse("p", "x", {"channel": ["web"]}, baseline_start=DAY0,
                                baseline_end=DAY0 + HOUR, start=DAY0 + HOUR,
                                end=DAY0 + 2 * HOUR)
    assert folded.seeds["baseline"].source == "live only"
    assert "folded values past its cap of 2" in (folded.seeds["baseline"].note or "")
    known = engine.start_pulse("q", "x", {"channel": ["chat"]}, baseline_start=DAY0,
                               baseline_end=DAY0 + HOUR, start=DAY0 + HOUR,
                               end=DAY0 + 2 * HOUR)
    assert known.seeds["baseline"].source == "state"
    assert known.results()[0][2].n == 2


def test_seeds_survive_a_snapshot_and_old_snapshots_restore(
        week: list[TouchpointEvent]) -> None:
    engine = fed(week)
    engine.start_pulse("p", "x", {"channel": ["chat"]}, **LAST_WEEK)
    engine.start_pulse("q", "x", {"touchpoint": ["call"]}, **LAST_WEEK)
    resumed = Engine.restore(CONFIG, engine.snapshot())
    assert [s.state() for s in resumed.pulses.values()] == \
           [s.state() for s in engine.pulses.values()]
    assert resumed.pulses["p"].seeds == engine.pulses["p"].seeds
    # A snapshot taken before seeding existed: its studies are live only, and say so.
    state: dict[str, Any] = msgspec.msgpack.decode(engine.snapshot())
    for p in state["pulses"]:
        del p["seeds"]
    old = Engine.restore(CONFIG, msgspec.msgpack.encode(state))
    seed = old.pulses["p"].seed_of("baseline")
    assert (seed.source, seed.note, seed.start) == ("live only", LEGACY_NOTE, DAY0)
    late = make_event(event_id="late-x", occurred_at=at(DAY0 + 5), channel="chat")
    old.ingest([late])
    assert old.pulses["p"].baseline["csat"][0] == engine.pulses["p"].baseline["csat"][0] + 1


def test_engines_on_either_side_of_the_start_seed_what_one_engine_seeds(
        week: list[TouchpointEvent]) -> None:
    """Two partitions of the input, one whose newest answer is past the study's start
    (off the minute) and one whose is not, plan alike: their seeds add up to one
    engine's, the answers of the start's minute before it included."""
    start = NOW - 20
    split: dict[int, list[TouchpointEvent]] = {0: [], 1: []}
    for e in week:
        if e.occurred_at.timestamp() < start - 120:
            split[len(e.event_id) % 2].append(e)
    assert start % 60 == 3  # the start's minute began 3 s before it
    edge = [make_event(event_id=f"edge-{i}", occurred_at=at(start + d), channel="chat")
            for i, d in enumerate((-30, -2, -1, 10))]  # the minute before, this one
    split[0] += edge
    one = fed([*split[0], *split[1]])
    parts = [fed(split[0]), fed(split[1])]
    assert parts[1].watermark is not None and parts[1].watermark < start <= (
        parts[0].watermark or 0)
    spans = {"start": start, "end": NOW + DAY, "baseline_start": DAY0,
             "baseline_end": DAY0 + 7 * DAY}
    for engine in (one, *parts):
        engine.start_pulse("p", "x", {"channel": ["chat"]}, **spans)
    merged = merge_studies([[p.pulses["p"].state()] for p in parts])["p"]
    assert merged.seeds == one.pulses["p"].seeds
    for side in ("baseline", "study"):
        assert book(merged, side) == book(one.pulses["p"], side)
    assert book(one.pulses["p"], "study")["csat"][0] == 3  # the start's minute, whole


def test_a_baseline_that_ends_where_the_study_starts_still_does() -> None:
    """Off the minute, on an empty engine: each bound moves to the start of its bucket,
    the baseline's end by the minute buckets that keep its last hour, so the baseline
    ends where the study starts and neither side takes the other's answers."""
    engine = Engine(CONFIG)
    study = engine.start_pulse("p", "x", {"channel": ["chat"]}, start=NOW, end=NOW + DAY,
                               baseline_start=NOW - 7 * DAY, baseline_end=NOW)
    assert study.seeds["baseline"].end == study.seeds["study"].start == NOW - NOW % 60
    assert (study.seeds["baseline"].granularity, study.seeds["baseline"].tail) == (
        "3600s", "60s")
    assert "(its last hourly bucket by minute ones)" in (study.seeds["baseline"].note or "")
    engine.ingest([make_event(event_id=f"s{i}", occurred_at=at(NOW + i), channel="chat")
                   for i in range(5)]
                  + [make_event(event_id="b", occurred_at=at(NOW - 1800), channel="chat")])
    [(_, current, baseline)] = study.results()
    assert (current.n, baseline.n) == (5, 1)


def test_an_empty_partition_plans_as_the_busy_ones(week: list[TouchpointEvent]) -> None:
    """A partition that has seen no answer plans as if at the study's start, as a
    partition whose newest answer is about then: the merged seeds are one engine's."""
    busy, empty = fed(week), Engine(CONFIG)
    one = fed(week)
    for engine in (one, busy, empty):
        engine.start_pulse("p", "x", {"channel": ["chat"]}, **LAST_WEEK)
    merged = merge_studies([[busy.pulses["p"].state()], [empty.pulses["p"].state()]])["p"]
    assert merged.seeds == one.pulses["p"].seeds
    assert merged.seeds["baseline"].granularity == "3600s"
    assert book(merged, "baseline") == book(one.pulses["p"], "baseline")


FILTERS: list[dict[str, tuple[str, ...]]] = [
    {}, {"channel": ("chat",)}, {"channel": ("chat", "email", "web")},
    {"segment": ("smb",)}, {"channel": ("phone",), "segment": ("enterprise", "smb")},
    {"touchpoint": ("call",)},  # not a scope: live only
]


@pytest.mark.parametrize("seed", range(8))
def test_every_answer_counts_once_whenever_it_arrives(seed: int) -> None:
    """Answers arriving out of order (up to 3 days late), a study started at a random
    point with random spans, on or off the bucket edges: a side seeded from the state
    holds exactly the answers of its counted span, whenever they arrived; a live-only
    side exactly those of its span that arrived after the start."""
    rng = random.Random(seed)
    events = traffic(seed=100 + seed, since=DAY0, until=DAY0 + 12 * DAY, every=1800)
    arrival = sorted(events, key=lambda e: e.occurred_at.timestamp()
                     + rng.choice((0, 0, 0, rng.randint(0, 3 * DAY))))
    cut = rng.randrange(len(arrival) // 3, len(arrival))
    engine = Engine(CONFIG)

    def feed(part: list[TouchpointEvent]) -> None:
        i = 0
        while i < len(part):
            n = rng.randint(1, 300)
            engine.ingest(part[i: i + n])
            i += n

    feed(arrival[:cut])
    wm = engine.watermark or DAY0
    studies = {}
    for k, filter_ in enumerate(FILTERS):
        lo = DAY0 + rng.randrange(0, 11 * DAY, rng.choice((1, 60, HOUR, DAY)))
        hi = lo + rng.choice((HOUR, DAY, 3 * DAY)) + rng.choice((0, 0, rng.randrange(DAY)))
        start = wm - rng.randrange(0, 2 * DAY, rng.choice((1, 60, HOUR)))
        studies[f"p{k}"] = (filter_, (lo, hi), (start, start + DAY))
        engine.start_pulse(f"p{k}", "x", {d: list(v) for d, v in filter_.items()},
                           start=start, end=start + DAY, baseline_start=lo, baseline_end=hi)
    before = {p: {side: sum(v[0] for v in book(engine.pulses[p], side).values())
                  for side in ("baseline", "study")} for p in studies}
    assert sum(n for sides in before.values() for n in sides.values()) > 0  # seeded
    feed(arrival[cut:])
    for pulse_id, (filter_, asked_baseline, asked_study) in studies.items():
        study = engine.pulses[pulse_id]
        for side, asked in (("baseline", asked_baseline), ("study", asked_study)):
            seed_ = study.seeds[side]
            if seed_.source == "state":
                want = by_hand(events, seed_.start, seed_.end, filter_)
            else:
                assert seed_.source == "live only" and (seed_.start, seed_.end) == asked
                want = by_hand(arrival[cut:], *asked, filter_)
            assert book(study, side) == {m: v for m, v in want.items() if any(v)}, (
                pulse_id, side, seed_)


@pytest.mark.parametrize("fill", [False, True])
def test_spans_at_the_ends_of_the_calendar_are_live_only(fill: bool) -> None:
    """Found by the API fuzzer: a study from year 1 (or to year 9999) cannot be planned
    on buckets whose edges are not dates; it is live only and says so, no error."""
    engine = fed(traffic(until=DAY0 + DAY)) if fill else Engine(CONFIG)
    year1, y2k = -62_135_596_800, 946_684_800
    old = engine.start_pulse("a", "x", {}, start=year1, end=y2k, baseline_start=y2k - 365 * DAY,
                             baseline_end=y2k)
    assert old.seeds["study"].source == "live only"
    assert old.seeds["baseline"].source in ("state", "live only")
    far = engine.start_pulse("b", "x", {}, start=DAY0, end=253_402_300_799,
                             baseline_start=DAY0 - DAY, baseline_end=DAY0)
    assert far.seeds["study"].source in ("state", "live only")
    assert all(s.note or s.source == "state" for s in (*old.seeds.values(),
                                                      *far.seeds.values()))
