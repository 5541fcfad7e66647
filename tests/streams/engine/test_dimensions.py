"""Dimension caps: the first ``cap`` distinct values keep codes, later ones fold to ``other``."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from engine_reference import BASE, make_event

from schemas import TouchpointEvent
from streams.engine.config import DimensionConfig, EngineConfig
from streams.engine.dimensions import NONE, OTHER, DimensionCodes
from streams.engine.engine import Engine


@pytest.mark.parametrize(
    ("cap", "values", "codes", "kept", "folded"),
    [
        (3, ["a", "b", "a", "c", "d", "e", "d", "b"], [1, 2, 1, 3, 0, 0, 0, 2],
         ["a", "b", "c"], 3),
        (1, ["x", "y", "x", "y"], [1, 0, 1, 0], ["x"], 2),
        (5, ["a", "b"], [1, 2], ["a", "b"], 0),
        # "other" is code 0 from the start: never registered, never counted as folded.
        (2, ["other", "a", "other", "b", "c"], [0, 1, 0, 2, 0], ["a", "b"], 1),
        # "none" (a missing value) is an ordinary value and takes a slot.
        (2, [NONE, "a", "b", NONE], [1, 2, 0, 1], [NONE, "a"], 1),
        (2, [], [], [], 0),
    ],
)
def test_codes_keep_the_first_cap_values(cap: int, values: list[str], codes: list[int],
                                         kept: list[str], folded: int) -> None:
    one_by_one = DimensionCodes("channel", cap)
    assert [one_by_one.code(v) for v in values] == codes
    assert one_by_one.values == [OTHER, *kept]
    assert one_by_one.folded == folded
    assert one_by_one.radix == cap + 1
    batch = DimensionCodes("channel", cap)
    assert batch.codes(values) == codes
    assert (batch.values, batch.folded) == (one_by_one.values, one_by_one.folded)


def test_known_does_not_register() -> None:
    dim = DimensionCodes("segment", 1)
    assert dim.known("smb") is None
    assert dim.code("smb") == 1
    assert dim.known("smb") == 1
    assert dim.known("enterprise") is None
    assert dim.known(OTHER) == 0
    assert (dim.values, dim.folded) == ([OTHER, "smb"], 0)


def test_state_round_trip_keeps_codes_and_folded() -> None:
    dim = DimensionCodes("channel", 3)
    dim.codes(["web", "chat", "Þjónusta", "app", "store", "web"])
    state = dim.state()
    assert state == {"values": ["web", "chat", "Þjónusta"], "folded": 2}
    again = DimensionCodes("channel", 3)
    again.restore(state)
    assert (again.values, again.folded) == (dim.values, dim.folded)
    # Both carry on identically: known values keep codes, new ones fold and count.
    assert [again.code(v) for v in ("chat", "app", "Þjónusta")] == [2, 0, 3]
    assert again.folded == 3


CAPPED = EngineConfig(
    dimensions={"channel": DimensionConfig(cap=50)},
    scopes=((), ("channel",), ("segment",), ("channel", "segment")),
)


def flood(n: int) -> list[TouchpointEvent]:
    return [
        make_event(event_id=f"e-{i}", occurred_at=BASE + timedelta(seconds=i % 600),
                   channel=f"ch-{i}", segment=("smb", "enterprise")[i % 2],
                   kind=("csat", "nps")[i % 2], value=(4, 9)[i % 2])
        for i in range(n)
    ]


def test_a_flood_of_channel_values_stays_within_the_cap() -> None:
    engine = Engine(CAPPED)
    events = flood(10_000)
    for start in range(0, len(events), 2500):
        engine.ingest(events[start:start + 2500])
    per_metric = Counter(m for dims, _, m in engine.series.keys if dims == ("channel",))
    assert per_metric == {"csat": 26, "nps": 26}  # 25 kept values each (odd/even) + other
    assert max(per_metric.values()) <= 51
    channels = {v[0] for dims, v, _ in engine.series.keys if dims == ("channel",)}
    assert channels == {f"ch-{i}" for i in range(50)} | {OTHER}
    assert engine.folded() == {"channel": 9950, "segment": 0}
    other = {s.metric: s.score.n for s in engine.scores("continuous", "24h",
                                                       where={"channel": OTHER})}
    assert other == {"csat": 4975, "nps": 4975}
    total = {s.metric: s.score.n for s in engine.scores("continuous", "24h")}
    assert total == {"csat": 5000, "nps": 5000}
    pairs = [v for dims, v, _ in engine.series.keys if dims == ("channel", "segment")]
    assert len(pairs) == 50 + 2  # each kept channel has one segment; other has both


def test_folded_counts_events_not_distinct_values_and_survives_a_snapshot() -> None:
    cfg = EngineConfig(dimensions={"channel": DimensionConfig(cap=2)},
                       scopes=((), ("channel",)))
    engine = Engine(cfg)
    names = ["web", "chat", "app", "app", "store", "web", "app"]
    engine.ingest([make_event(event_id=f"e-{i}", channel=c) for i, c in enumerate(names)])
    assert engine.folded() == {"channel": 4}  # app, app, store, app
    got = {s.scope["channel"]: s.score.n for s in engine.scores("continuous", "1h",
                                                               scope=("channel",))}
    assert got == {"web": 2, "chat": 1, OTHER: 4}
    resumed = Engine.restore(cfg, engine.snapshot())
    assert resumed.folded() == {"channel": 4}
    resumed.ingest([make_event(event_id="e-99", channel="phone"),
                    make_event(event_id="e-100", channel="chat")])
    assert resumed.folded() == {"channel": 5}
    got = {s.scope["channel"]: s.score.n for s in resumed.scores("continuous", "1h",
                                                                scope=("channel",))}
    assert got == {"web": 2, "chat": 2, OTHER: 5}
