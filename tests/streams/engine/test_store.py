"""Bucket tables: plain sums, so any order and any grouping of deltas gives the same table."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.buckets import FixedBucketing
from streams.engine.metrics import NCOLS
from streams.engine.store import BucketTable, Granularity, SeriesRegistry, group_sum

Row = tuple[int, int, tuple[int, ...]]  # (bucket, series, integer-valued vector)

_vectors = st.lists(st.integers(-1000, 1000), min_size=NCOLS, max_size=NCOLS).map(tuple)
_rows = st.lists(st.tuples(st.integers(-3, 12), st.integers(0, 15), _vectors), max_size=60)


def brute_sums(rows: list[Row], n_series: int, first: int, last: int) -> np.ndarray:
    out = np.zeros((n_series, NCOLS))
    for bucket, sid, vec in rows:
        if first <= bucket <= last:
            out[sid] += vec
    return out


def add_grouped(gran: Granularity, rows: list[Row]) -> None:
    """Add one delta the way the engine does: summed per distinct (bucket, series) first."""
    if not rows:
        gran.add(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, NCOLS)))
        return
    buckets = np.array([r[0] for r in rows], dtype=np.int64)
    series = np.array([r[1] for r in rows], dtype=np.int64)
    vectors = np.array([r[2] for r in rows], dtype=np.float64)
    low, width = int(buckets.min()), 16
    keys, sums = group_sum((buckets - low) * width + series, vectors)
    gran.add(keys // width + low, keys % width, sums)


def chunks(rows: list[Row], cuts: list[int]) -> list[list[Row]]:
    points = sorted({c % (len(rows) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(rows)]:
        out.append(rows[last:p])
        last = p
    return out


@settings(max_examples=60, deadline=None)
@given(_rows, st.randoms(use_true_random=False), st.lists(st.integers(0, 100), max_size=6))
def test_any_order_and_grouping_gives_the_same_dense_sums(
    rows: list[Row], rnd: random.Random, cuts: list[int]
) -> None:
    straight = Granularity(FixedBucketing(60), keep=100)
    add_grouped(straight, rows)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    pieces = Granularity(FixedBucketing(60), keep=100)
    for piece in chunks(shuffled, cuts):  # empty pieces included
        add_grouped(pieces, piece)
    for first, last in ((-3, 12), (0, 0), (2, 7), (13, 20)):
        want = brute_sums(rows, 16, first, last)
        assert np.array_equal(straight.dense(first, last, 16), want)
        assert np.array_equal(pieces.dense(first, last, 16), want)
        for sid in (0, 7, 15):
            assert np.array_equal(pieces.series_vector(sid, first, last), want[sid])
    assert sorted(straight.tables) == sorted(pieces.tables) == sorted({r[0] for r in rows})
    assert [b for b, _ in pieces.items()] == sorted(pieces.tables)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.integers(0, 40), _vectors, max_size=10), max_size=6),
       st.randoms(use_true_random=False))
def test_bucket_table_sums_deltas_of_distinct_series(
    deltas: list[dict[int, tuple[int, ...]]], rnd: random.Random
) -> None:
    """Each call holds one vector per distinct series (the documented contract)."""
    rnd.shuffle(deltas)
    table = BucketTable()
    want: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(NCOLS))
    for delta in deltas:
        sids = list(delta)
        table.add(np.array(sids, dtype=np.int64),
                  np.array([delta[s] for s in sids], dtype=np.float64).reshape(-1, NCOLS))
        for s in sids:
            want[s] += delta[s]
    assert len(table) == len(want)
    dense = np.zeros((41, NCOLS))
    table.add_into(dense)
    for sid in range(41):
        expected = want.get(sid, np.zeros(NCOLS))
        assert np.array_equal(dense[sid], expected)
        got = table.vector(sid)
        assert (got is None) == (sid not in want)
        if got is not None:
            assert np.array_equal(got, expected)
    # Round trip, then keep adding to the restored table (it grows from an exact fit).
    restored = BucketTable.from_state(table.state())
    assert len(restored) == len(table)
    extra = {41 + i: tuple(range(i, i + NCOLS)) for i in range(3)} | {0: (1,) * NCOLS}
    for t in (table, restored):
        t.add(np.array(list(extra), dtype=np.int64),
              np.array(list(extra.values()), dtype=np.float64))
    a, b = np.zeros((44, NCOLS)), np.zeros((44, NCOLS))
    table.add_into(a)
    restored.add_into(b)
    assert np.array_equal(a, b)
    assert np.array_equal(a[0], want.get(0, np.zeros(NCOLS)) + 1)


def test_bucket_table_grows_past_its_first_capacity() -> None:
    table = BucketTable()
    for sid in range(20):  # capacity 8 -> 16 -> 32
        table.add(np.array([sid], dtype=np.int64), np.full((1, NCOLS), float(sid)))
    table.add(np.arange(20, dtype=np.int64)[::-1], np.ones((20, NCOLS)))
    assert len(table) == 20
    assert [float(table.vector(s)[0]) for s in (0, 5, 19)] == [1.0, 6.0, 20.0]  # type: ignore[index]
    assert table.vector(20) is None


@pytest.mark.parametrize(
    ("present", "keep", "newest", "left"),
    [
        (range(10), 3, 9, [7, 8, 9]),
        (range(10), 1, 9, [9]),
        (range(10), 10, 9, list(range(10))),
        (range(10), 3, 5, [3, 4, 5, 6, 7, 8, 9]),  # newer than ``newest``: kept
        (range(10), 3, 20, []),
        ([0, 4, 8], 5, 8, [4, 8]),  # the kept range is by bucket id, not by count
        ([-5, -1, 0], 2, 0, [-1, 0]),
    ],
)
def test_expire_keeps_exactly_the_newest_keep_buckets(
    present: range | list[int], keep: int, newest: int, left: list[int]
) -> None:
    gran = Granularity(FixedBucketing(60), keep)
    buckets = np.array(list(present), dtype=np.int64)
    gran.add(buckets, np.zeros(len(buckets), dtype=np.int64), np.ones((len(buckets), NCOLS)))
    gran.expire(newest)
    assert sorted(gran.tables) == left
    assert gran.dense(-100, 100, 1)[0, 0] == len(left)


@settings(max_examples=50, deadline=None)
@given(_rows)
def test_granularity_state_round_trip(rows: list[Row]) -> None:
    gran = Granularity(FixedBucketing(60), keep=100)
    add_grouped(gran, rows)
    copy = Granularity(FixedBucketing(60), keep=100)
    copy.restore(gran.state())
    assert sorted(copy.tables) == sorted(gran.tables)
    assert np.array_equal(copy.dense(-3, 12, 16), gran.dense(-3, 12, 16))
    assert copy.state() == gran.state()
    # Both continue identically.
    add_grouped(gran, rows)
    add_grouped(copy, rows)
    assert np.array_equal(copy.dense(-3, 12, 16), 2 * brute_sums(rows, 16, -3, 12))
    assert np.array_equal(copy.dense(-3, 12, 16), gran.dense(-3, 12, 16))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), _vectors), max_size=80))
def test_group_sum_equals_a_plain_groupby(pairs: list[tuple[int, tuple[int, ...]]]) -> None:
    keys = np.array([k for k, _ in pairs], dtype=np.int64)
    vectors = np.array([v for _, v in pairs], dtype=np.float64).reshape(-1, NCOLS)
    want: dict[int, list[int]] = {}
    for k, v in pairs:
        acc = want.setdefault(k, [0] * NCOLS)
        for i, x in enumerate(v):
            acc[i] += x
    distinct, sums = group_sum(keys, vectors)
    assert distinct.tolist() == sorted(want)
    assert sums.tolist() == [[float(x) for x in want[k]] for k in sorted(want)]


@pytest.mark.parametrize(
    ("keys", "vectors", "distinct", "sums"),
    [
        ([], [], [], []),
        ([5], [[1.0, 2.0]], [5], [[1.0, 2.0]]),
        ([3, 1, 3, 2, 1], [[1, 0], [0, 1], [10, 0], [7, 7], [0, 100]],
         [1, 2, 3], [[0, 101], [7, 7], [11, 0]]),
        ([-2, 4, -2], [[1, 1], [2, 2], [3, 3]], [-2, 4], [[4, 4], [2, 2]]),
    ],
)
def test_group_sum_table(keys: list[int], vectors: list[list[float]], distinct: list[int],
                         sums: list[list[float]]) -> None:
    got_keys, got_sums = group_sum(np.array(keys, dtype=np.int64),
                                   np.array(vectors, dtype=np.float64).reshape(len(keys), 2))
    assert got_keys.tolist() == distinct
    assert got_sums.tolist() == sums
    assert got_sums.shape == (len(distinct), 2)


def test_series_registry_ids_are_dense_and_round_trip() -> None:
    reg = SeriesRegistry()
    keys = [((), (), "csat"), (("channel",), ("chat",), "csat"),
            (("channel", "segment"), ("chat", "Þjónusta"), "nps")]
    assert [reg.id(k) for k in keys] == [0, 1, 2]
    assert reg.id(keys[1]) == 1
    assert reg.get((("channel",), ("web",), "csat")) is None
    assert len(reg) == 3
    again = SeriesRegistry.from_state(reg.state())
    assert again.keys == reg.keys
    assert [again.get(k) for k in keys] == [0, 1, 2]
