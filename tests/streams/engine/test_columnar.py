"""The engine's whole-batch paths equal their one-event-at-a-time definitions, bit for bit."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
from engine_reference import make_event
from hypothesis import example, given
from hypothesis import strategies as st
from signal_strategies import SIGNALS

from streams.engine.dimensions import NONE, DimensionCodes
from streams.engine.metrics import observe, observe_many, rows
from streams.engine.store import group_compact, group_sum, regroup

_signals = st.one_of(
    SIGNALS,
    st.builds(lambda v: {"kind": "rating", "value": v, "scale_min": 1, "scale_max": 2},
              st.integers(1, 2)),
    st.builds(lambda v: {"kind": "sentiment", "value": v},
              st.floats(-1.0, 1.0, allow_nan=False) | st.sampled_from([-1.0, -0.0, 0.0, 1.0])),
)


@given(st.lists(_signals, min_size=1, max_size=40))
def test_observe_many_is_observe_on_each_event(signals: list[dict[str, Any]]) -> None:
    events = [make_event(event_id=f"e-{i}", **s) for i, s in enumerate(signals)]
    one_by_one = [observe(e) for e in events]
    batch = observe_many(events)
    assert [batch.metrics[m] for m in batch.metric.tolist()] == [o.metric for o in one_by_one]
    assert batch.metrics == list(dict.fromkeys(o.metric for o in one_by_one))
    for name in ("scored", "value", "top", "bottom", "hist"):
        assert getattr(batch, name).tolist() == [getattr(o, name) for o in one_by_one], name
    for got, want in zip(batch.satisfaction.tolist(), one_by_one, strict=True):
        assert got == want.satisfaction or (math.isnan(got) and math.isnan(want.satisfaction))
    assert batch.rows().tobytes() == rows(one_by_one).tobytes()


@given(st.lists(_signals, min_size=1, max_size=40),
       st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.integers(1, 3))
def test_group_compact_is_group_sum_bit_for_bit(signals: list[dict[str, Any]],
                                                 buckets: list[int], copies: int) -> None:
    events = [make_event(event_id=f"e-{i}", **s) for i, s in enumerate(signals)]
    batch = observe_many(events)
    compact = batch.compact().tile(copies)
    metric = np.tile(batch.metric, copies)
    bucket = np.resize(np.array(buckets, dtype=np.int64), len(metric))
    keys = bucket * 64 + metric  # a key never mixes metrics, as (bucket, series) keys do
    want_keys, want = group_sum(keys, compact.expand())
    got_keys, got = group_compact(keys, compact)
    assert got_keys.tolist() == want_keys.tolist()
    assert got.tobytes() == want.tobytes()


@given(st.lists(_signals, min_size=1, max_size=150),
       st.lists(st.integers(0, 7), min_size=1, max_size=150), st.integers(1, 3),
       st.integers(1, 4))
@example([{"kind": "sentiment", "value": v} for v in (0.1, 0.7, 0.2, 0.3)], [0, 1, 0, 1], 1, 2)
def test_regroup_is_group_compact_bit_for_bit(signals: list[dict[str, Any]],
                                              fine: list[int], copies: int, ratio: int) -> None:
    """Groups by fine bucket added up into coarse buckets equal grouping the rows by coarse
    bucket: whole answers in any order, the sums of ordered metrics (sentiment) in row
    order."""
    events = [make_event(event_id=f"e-{i}", **s) for i, s in enumerate(signals)]
    batch = observe_many(events)
    compact = batch.compact().tile(copies)
    n_series = 64 * copies
    series = np.tile(batch.metric, copies) + np.repeat(np.arange(copies) * 64, len(batch))
    fine_of_row = np.resize(np.array(fine, dtype=np.int64), len(series))
    coarse_of_row = fine_of_row // ratio
    keys, sums = group_compact(fine_of_row * n_series + series, compact)
    picked = np.flatnonzero(compact.ordered)
    got = regroup((keys // n_series) // ratio, keys % n_series, sums, n_series,
                  (coarse_of_row[picked], series[picked], compact.sums[picked]))
    want_keys, want = group_compact(coarse_of_row * n_series + series, compact)
    assert got[0].tolist() == (want_keys // n_series).tolist()
    assert got[1].tolist() == (want_keys % n_series).tolist()
    assert got[2].tobytes() == want.tobytes()


@given(st.lists(st.sampled_from(["web", "chat", "none", None, "other", "Þjónusta", "app"]),
                max_size=30), st.integers(1, 4))
def test_encode_is_code_on_each_value(values: list[str | None], cap: int) -> None:
    one_by_one = DimensionCodes("channel", cap)
    want = [one_by_one.code(NONE if v is None else v) for v in values]
    batch = DimensionCodes("channel", cap)
    assert batch.encode(values).tolist() == want
    assert (batch.values, batch.folded) == (one_by_one.values, one_by_one.folded)
    assert batch.encode(values).tolist() == [one_by_one.code(NONE if v is None else v)
                                             for v in values]
    assert (batch.values, batch.folded) == (one_by_one.values, one_by_one.folded)


@given(st.lists(st.tuples(_signals, st.integers(0, 7_200), st.sampled_from(["a", "b", "c"])),
                min_size=1, max_size=60),
       st.integers(1, 25), st.sampled_from([0, 2_000_000, 40_000_000]))
@example([({"kind": "sentiment", "value": v}, at, "a")  # sums that depend on the order
          for v, at in ((0.1, 50), (0.7, 70), (0.2, 55), (0.3, 75))], 4, 0)
def test_grouping_by_time_class_equals_grouping_each_granularity(
        items: list[tuple[dict[str, Any], int, str]], batch: int, spread: int,
) -> None:
    """Batches within seconds (one class), across minute and hour edges (classes sharing
    coarse buckets) and across months or years (too wide to pack) all count the same,
    bit for bit, as grouping every granularity on its own."""
    from engine_reference import BASE

    from streams.engine.config import EngineConfig
    from streams.engine.engine import Engine

    events = [make_event(event_id=f"e-{i}", customer_id=customer, channel=customer,
                         occurred_at=BASE + timedelta(seconds=at + (spread if i % 7 == 3 else 0)),
                         **signal)
              for i, (signal, at, customer) in enumerate(items)]
    config = EngineConfig(allowed_lateness=86_400)
    by_class, each = Engine(config), Engine(config)
    each._add_by_class = lambda grans, *_: list(range(len(grans)))  # type: ignore[method-assign]
    for i in range(0, len(events), batch):
        by_class.ingest(events[i : i + batch])
        each.ingest(events[i : i + batch])
        assert by_class.take_changed() == each.take_changed()
    for name, gran in by_class.granularities.items():
        other = each.granularities[name].tables
        assert sorted(gran.tables) == sorted(other), name
        for bucket, table in gran.tables.items():
            assert table.state() == other[bucket].state(), (name, bucket)
