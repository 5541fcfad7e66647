"""Property tests: the engine equals a brute-force recomputation, whatever the batching."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from engine_reference import BASE, Reference, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signal_strategies import SIGNALS

from schemas import TouchpointEvent
from streams.engine.config import DimensionConfig, EngineConfig
from streams.engine.engine import Engine

CONFIG = EngineConfig(
    dimensions={"channel": DimensionConfig(cap=3)},
    timezone="Europe/Oslo",
    allowed_lateness=2 * 3600,
    lateness_horizon=2 * 86_400,  # events span 4 days: some count late, some are too old
    scopes=((), ("channel",), ("segment",), ("channel", "segment"), ("stage",)),
)

_signals = st.one_of(
    SIGNALS,
    st.builds(lambda v: {"kind": "sentiment", "value": v},
              st.sampled_from([-1.0, -0.5, 0.0, 0.25, 1.0])),
)


@st.composite
def event_streams(draw: st.DrawFn) -> list[TouchpointEvent]:
    n = draw(st.integers(1, 60))
    events = []
    for _ in range(n):
        minutes = draw(st.integers(0, 4 * 24 * 60))
        fields: dict[str, Any] = draw(_signals)
        events.append(make_event(
            event_id=f"e-{draw(st.integers(0, 80))}",
            occurred_at=BASE + timedelta(minutes=minutes, seconds=draw(st.integers(0, 59))),
            customer_id=f"c-{draw(st.integers(0, 5))}",
            channel=draw(st.sampled_from(["phone", "chat", "web", "app", "store"])),
            segment=draw(st.sampled_from(["smb", "enterprise", "Þjónusta"])),
            stage=draw(st.sampled_from([None, "recognize", "request", "respond"])),
            **fields,
        ))
    return events


def splits(events: list[TouchpointEvent], cuts: list[int]) -> list[list[TouchpointEvent]]:
    points = sorted({c % (len(events) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(events)]:
        out.append(events[last:p])
        last = p
    return out


def assert_matches_reference(engine: Engine, ref: Reference) -> None:
    assert engine.watermark == ref.watermark
    assert engine.counters["duplicate"] == ref.duplicates
    assert engine.counters["late"] == ref.late
    assert engine.counters["accepted"] == len(ref.accepted)
    for family, names in (("continuous", ["15m", "1h", "24h", "7d"]),
                          ("periodic", ["day", "week", "month", "quarter"])):
        for name in names:
            expected = ref.vectors(family, name)
            keys = set(expected) | set(engine.series.keys)
            for key in keys:
                got = engine.vector(family, name, key)  # type: ignore[arg-type]
                want = np.array(expected.get(key, [0.0] * 17))
                np.testing.assert_allclose(got, want, atol=1e-9,
                                           err_msg=f"{family} {name} {key}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams(), st.lists(st.integers(0, 100), max_size=4))
def test_windows_equal_brute_force(events: list[TouchpointEvent], cuts: list[int]) -> None:
    engine, ref = Engine(CONFIG), Reference(CONFIG)
    for batch in splits(events, cuts):
        engine.ingest(batch)
    ref.ingest(events)
    assert_matches_reference(engine, ref)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_streams(), st.integers(0, 60))
def test_snapshot_restore_continue_equals_never_stopping(
    events: list[TouchpointEvent], cut: int
) -> None:
    straight = Engine(CONFIG)
    straight.ingest(events)
    first = Engine(CONFIG)
    first.ingest(events[:cut])
    resumed = Engine.restore(CONFIG, first.snapshot())
    resumed.ingest(events[cut:])
    ref = Reference(CONFIG)
    ref.ingest(events)
    assert_matches_reference(resumed, ref)
    for family, name in (("continuous", "24h"), ("periodic", "week")):
        a = straight.scores(family, name, scope=("channel",))  # type: ignore[arg-type]
        b = resumed.scores(family, name, scope=("channel",))  # type: ignore[arg-type]
        assert [(s.scope, s.metric, s.score.n) for s in a] == \
               [(s.scope, s.metric, s.score.n) for s in b]
    assert straight.customers.state() == resumed.customers.state()
    assert straight.journeys.state() == resumed.journeys.state()


@settings(max_examples=30, deadline=None)
@given(event_streams())
def test_replaying_the_same_events_changes_nothing(events: list[TouchpointEvent]) -> None:
    engine = Engine(CONFIG)
    first = engine.ingest(events)
    before = engine.scores("continuous", "7d", scope=("channel",))
    accepted = engine.counters["accepted"]
    result = engine.ingest(events)
    assert result.accepted == 0
    # Counted ones come back duplicate; late ones (never counted, so not remembered)
    # late again.
    assert len(result.duplicates) + len(result.late) == len(events)
    assert {id(e) for e in result.late} <= {id(e) for e in first.late}
    assert engine.scores("continuous", "7d", scope=("channel",)) == before
    assert engine.counters["accepted"] == accepted
