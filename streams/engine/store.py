"""Mergeable aggregates per (series, time bucket), kept as small dense tables.

A *series* is one metric in one scope value, e.g. CSAT for channel=chat. Each time
bucket holds one row per series seen in it; rows are plain sums, so adding deltas
from any number of batches, partitions or restarts, in any order, gives the same table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.engine.buckets import Bucketing, IntArray
from streams.engine.metrics import (
    BOTTOM,
    BOTTOM_END,
    HIST,
    NA,
    NA_SLOT,
    NCOLS,
    NO_BIN_SLOT,
    SLOTS,
    SUM,
    SUMSQ,
    TOP,
    TOP_END,
    CompactRows,
    FloatArray,
    N,
    distinct_inverse,
)

SeriesKey = tuple[tuple[str, ...], tuple[str, ...], str]
"""(scope dimensions, their values, metric), e.g. (("channel",), ("chat",), "csat")."""


class SeriesRegistry:
    """Dense ids for series keys, assigned on first sight and never reused."""

    def __init__(self) -> None:
        self.keys: list[SeriesKey] = []
        self._ids: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def id(self, key: SeriesKey) -> int:
        """The id of ``key``, registering it when new."""
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return found

    def get(self, key: SeriesKey) -> int | None:
        """The id of ``key`` if it was ever seen."""
        return self._ids.get(key)

    def state(self) -> list[Any]:
        """Snapshot as plain lists."""
        return [[list(d), list(v), m] for d, v, m in self.keys]

    @classmethod
    def from_state(cls, state: list[Any]) -> SeriesRegistry:
        """Restore a snapshot taken by ``state``."""
        reg = cls()
        for dims, values, metric in state:
            reg.id((tuple(dims), tuple(values), metric))
        return reg


_NO_SERIES: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
_NO_DATA: FloatArray = np.zeros((0, NCOLS), dtype=np.float64)
_NO_SERIES.flags.writeable = False
_NO_DATA.flags.writeable = False


NEVER = -(2**62)
"""``revised`` of a row no late answer changed."""


class BucketTable:
    """The rows of every series active in one time bucket, in order of first arrival.

    ``late`` and ``revised``, once a late answer changed the bucket (``revise``), hold
    per row how many answers arrived after the bucket closed and the watermark when the
    last of them was counted (``NEVER``: none); ``None`` until then, so on-time buckets
    cost nothing.
    """

    __slots__ = ("_index", "_used", "data", "late", "revised", "series")

    def __init__(self) -> None:
        self._used = 0
        # series id -> row; built on first lookup (a bucket often gets one add only).
        self._index: dict[int, int] | None = None
        self.series: npt.NDArray[np.int64] = _NO_SERIES
        self.data: FloatArray = _NO_DATA
        self.late: npt.NDArray[np.int64] | None = None
        self.revised: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return self._used

    def _row_index(self) -> dict[int, int]:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.series[: self._used].tolist())}
        return self._index

    def add(self, series: IntArray, vectors: FloatArray) -> None:
        """Add one vector per (distinct) series id."""
        if self._used == 0:
            # A fresh bucket: its rows are the vectors as given.
            self.series = series.astype(np.int64)  # a copy
            self.data = vectors + 0.0  # a copy, where -0.0 becomes 0.0 as in a sum
            self._used = len(series)
            self._index = None
            return
        index = self._row_index()
        found = list(map(index.get, series.tolist()))
        if None in found:
            used = self._used
            for i, sid in enumerate(series.tolist()):
                if found[i] is None:
                    found[i] = index[sid] = used
                    used += 1
            if used > len(self.series):
                capacity = max(8, used, 2 * len(self.series))
                grown = np.zeros((capacity, NCOLS), dtype=np.float64)
                grown[: self._used] = self.data[: self._used]
                self.data = grown
                series_grown = np.full(capacity, -1, dtype=np.int64)
                series_grown[: self._used] = self.series[: self._used]
                self.series = series_grown
            rows = np.array(found, dtype=np.int64)
            new = rows >= self._used
            self.series[rows[new]] = series[new]
            self._used = used
        else:
            rows = np.array(found, dtype=np.int64)
        self.data[rows] += vectors

    def revise(self, series: IntArray, late: IntArray, revised: IntArray) -> None:
        """Count ``late`` answers that arrived after the bucket closed, for series
        already in the table (added before), and raise their ``revised`` watermark."""
        index = self._row_index()
        rows = np.fromiter(map(index.__getitem__, series.tolist()), dtype=np.int64,
                           count=len(series))
        used = self._used
        if self.late is None or self.revised is None:
            self.late = np.zeros(used, dtype=np.int64)
            self.revised = np.full(used, NEVER, dtype=np.int64)
        elif len(self.late) < used:
            grown = used - len(self.late)
            self.late = np.concatenate((self.late, np.zeros(grown, dtype=np.int64)))
            self.revised = np.concatenate((self.revised,
                                           np.full(grown, NEVER, dtype=np.int64)))
        np.add.at(self.late, rows, late)
        np.maximum.at(self.revised, rows, revised)

    def revisions(self) -> tuple[IntArray, IntArray, IntArray] | None:
        """(series, late, revised) of the rows late answers changed, or None."""
        if self.late is None or self.revised is None:
            return None
        n = len(self.late)
        changed = np.flatnonzero(self.late)
        return self.series[:n][changed], self.late[changed], self.revised[changed]

    def vector(self, sid: int) -> FloatArray | None:
        """The row of one series, if it had events in this bucket."""
        row = self._row_index().get(sid)
        return None if row is None else self.data[row]

    def add_into(self, dense: FloatArray) -> None:
        """Add this bucket's rows into a dense (series, NCOLS) matrix."""
        used = self._used
        dense[self.series[:used]] += self.data[:used]

    def state(self) -> dict[str, bytes]:
        """Snapshot of the used rows (with ``late`` and ``revised`` once revised)."""
        used = self._used
        out = {"series": self.series[:used].tobytes(), "data": self.data[:used].tobytes()}
        if self.late is not None and self.revised is not None:
            out["late"] = self.late.tobytes()
            out["revised"] = self.revised.tobytes()
        return out

    @classmethod
    def from_state(cls, state: dict[str, bytes]) -> BucketTable:
        """Restore a snapshot taken by ``state``."""
        table = cls()
        series = np.frombuffer(state["series"], dtype=np.int64).copy()
        data = np.frombuffer(state["data"], dtype=np.float64).reshape(-1, NCOLS).copy()
        table.series, table.data, table._used = series, data, len(series)
        if "late" in state:  # absent in snapshots before late answers counted
            table.late = np.frombuffer(state["late"], dtype=np.int64).copy()
            table.revised = np.frombuffer(state["revised"], dtype=np.int64).copy()
        return table


class Granularity:
    """All series in buckets of one bucketing, keeping the newest ``keep`` buckets."""

    def __init__(self, bucketing: Bucketing, keep: int) -> None:
        self.bucketing = bucketing
        self.keep = keep
        self.tables: dict[int, BucketTable] = {}

    def add(self, buckets: IntArray, series: IntArray, vectors: FloatArray) -> None:
        """Add rows already grouped by distinct (bucket, series) pairs."""
        if len(buckets) == 0:
            return  # an empty delta changes nothing (and has no first bucket to read)
        steps = np.diff(buckets)
        if (steps < 0).any():
            order = np.argsort(buckets, kind="stable")
            buckets, series, vectors = buckets[order], series[order], vectors[order]
            steps = np.diff(buckets)
        cuts = (np.flatnonzero(steps) + 1).tolist()
        tables = self.tables
        for lo, hi, bucket in zip([0, *cuts], [*cuts, len(buckets)],
                                  buckets[[0, *cuts]].tolist(), strict=True):
            table = tables.get(bucket)
            if table is None:
                table = tables[bucket] = BucketTable()
            table.add(series[lo:hi], vectors[lo:hi])

    def expire(self, newest: int) -> None:
        """Drop buckets that fell out of the kept range ending at bucket ``newest``."""
        oldest = newest - self.keep + 1
        for bucket in [b for b in self.tables if b < oldest]:
            del self.tables[bucket]

    def dense(self, first: int, last: int, n_series: int) -> FloatArray:
        """Sum of buckets ``first..last`` (inclusive) for every series."""
        out = np.zeros((n_series, NCOLS), dtype=np.float64)
        for bucket, table in self.tables.items():
            if first <= bucket <= last:
                table.add_into(out)
        return out

    def revisions(self, first: int, last: int, n_series: int,
                  ) -> tuple[IntArray, IntArray] | None:
        """Per series, over buckets ``first..last``: late answers (summed) and the
        newest ``revised`` watermark (``NEVER``: none); None when no late answer
        changed those buckets."""
        late: IntArray | None = None
        revised: IntArray | None = None
        for bucket, table in self.tables.items():
            if table.late is None or not first <= bucket <= last:
                continue
            found = table.revisions()
            if found is None or not len(found[0]):
                continue
            if late is None or revised is None:
                late = np.zeros(n_series, dtype=np.int64)
                revised = np.full(n_series, NEVER, dtype=np.int64)
            series, counts, marks = found
            np.add.at(late, series, counts)
            np.maximum.at(revised, series, marks)
        return None if late is None or revised is None else (late, revised)

    def series_vector(self, sid: int, first: int, last: int) -> FloatArray:
        """Sum of buckets ``first..last`` (inclusive) for one series."""
        out = np.zeros(NCOLS, dtype=np.float64)
        for bucket, table in self.tables.items():
            if first <= bucket <= last:
                row = table.vector(sid)
                if row is not None:
                    out += row
        return out

    def items(self) -> Iterator[tuple[int, BucketTable]]:
        """(bucket, table) pairs in time order."""
        return iter(sorted(self.tables.items()))

    def state(self) -> dict[str, dict[str, bytes]]:
        """Snapshot of every kept bucket."""
        return {str(b): t.state() for b, t in self.tables.items()}

    def restore(self, state: dict[str, dict[str, bytes]]) -> None:
        """Replace the buckets with a snapshot taken by ``state``."""
        self.tables = {int(b): BucketTable.from_state(t) for b, t in state.items()}


def group_sum(
    keys: IntArray, vectors: FloatArray
) -> tuple[IntArray, FloatArray]:
    """Distinct keys and the sum of the vectors of each, in key order.

    Sorting once and summing contiguous runs (``reduceat``) is several times faster
    than scattering with ``np.add.at``.
    """
    if len(keys) == 0:
        return keys, np.zeros((0, vectors.shape[1]), dtype=np.float64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = _run_starts(ordered)
    sums: FloatArray = np.add.reduceat(vectors[order], starts, axis=0)
    distinct: IntArray = ordered[starts]
    return distinct, sums


def group_compact(keys: IntArray, rows: CompactRows) -> tuple[IntArray, FloatArray]:
    """``group_sum(keys, rows.expand())`` without expanding the rows: the same result.

    Every column but the two sums counts whole numbers, added exactly in any order, so
    they come from counting; so do the sums of rows that are not ``ordered``. The sums
    of ``ordered`` rows are added by ``reduceat`` over the keys' stable order, exactly
    as ``group_sum`` adds them.
    """
    if len(keys) == 0:
        return keys, np.zeros((0, NCOLS), dtype=np.float64)
    distinct, group = distinct_inverse(keys)
    k = len(distinct)
    slots = np.bincount(group * SLOTS + rows.slot, minlength=k * SLOTS).reshape(k, SLOTS)
    ends = np.bincount(group * 4 + rows.ends, minlength=k * 4).reshape(k, 4)
    out = np.empty((k, NCOLS), dtype=np.float64)
    out[:, NA] = slots[:, NA_SLOT]
    out[:, N] = np.bincount(group, minlength=k) - slots[:, NA_SLOT]
    out[:, HIST:] = slots[:, NO_BIN_SLOT + 1 :]
    out[:, TOP] = ends[:, TOP_END] + ends[:, TOP_END | BOTTOM_END]
    out[:, BOTTOM] = ends[:, BOTTOM_END] + ends[:, TOP_END | BOTTOM_END]
    out[:, SUM] = np.bincount(group, weights=rows.sums[:, 0], minlength=k)
    out[:, SUMSQ] = np.bincount(group, weights=rows.sums[:, 1], minlength=k)
    if rows.ordered.any():
        # A group's rows are all ordered or all not: a group is one metric's series.
        picked = np.flatnonzero(rows.ordered)
        picked = picked[np.argsort(keys[picked], kind="stable")]
        starts = _run_starts(keys[picked])
        out[group[picked[starts]], SUM : SUMSQ + 1] = np.add.reduceat(
            rows.sums[picked], starts, axis=0
        )
    return distinct, out


def regroup(buckets: IntArray, series: IntArray, sums: FloatArray, n_series: int,
            ordered: tuple[IntArray, IntArray, FloatArray] | None,
            ) -> tuple[IntArray, IntArray, FloatArray]:
    """Groups already summed (one per row of ``sums``) added up by (bucket, series).

    Gives exactly what ``group_compact`` gives for the rows behind the groups, grouped
    by (bucket, series): the counts and the sums of whole answers add up exactly in any
    order; the ``SUM`` and ``SUMSQ`` of ``ordered`` metrics (``CompactRows.ordered``) do
    not, so they are added again from those rows, in their order, as ``group_compact``
    does. ``ordered`` holds the bucket, series and sums of each such row, in row order.
    Returns the buckets, series and sums of the distinct (bucket, series) pairs, in key
    order.
    """
    low = int(buckets.min())
    keys = (buckets - low) * n_series + series
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = _run_starts(sorted_keys)
    distinct = sorted_keys[starts]
    out: FloatArray = np.add.reduceat(sums[order], starts, axis=0)
    if ordered is not None and len(ordered[0]):
        row_buckets, row_series, row_sums = ordered
        row_keys = (row_buckets - low) * n_series + row_series
        order = np.argsort(row_keys, kind="stable")
        sorted_keys = row_keys[order]
        starts = _run_starts(sorted_keys)
        at = np.searchsorted(distinct, sorted_keys[starts])
        out[at, SUM : SUMSQ + 1] = np.add.reduceat(row_sums[order], starts, axis=0)
    return distinct // n_series + low, distinct % n_series, out


def _run_starts(sorted_keys: IntArray) -> IntArray:
    """Where each run of equal keys starts in sorted keys (at least one key)."""
    first = np.empty(len(sorted_keys), dtype=np.bool_)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    starts: IntArray = np.flatnonzero(first)
    return starts
