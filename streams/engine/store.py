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
from streams.engine.metrics import NCOLS, FloatArray

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


class BucketTable:
    """The rows of every series active in one time bucket."""

    __slots__ = ("_rows", "data", "series")

    def __init__(self) -> None:
        self._rows: dict[int, int] = {}
        self.series: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.data: FloatArray = np.zeros((0, NCOLS), dtype=np.float64)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, series: IntArray, vectors: FloatArray) -> None:
        """Add one vector per (distinct) series id."""
        rows = np.empty(len(series), dtype=np.int64)
        new: list[int] = []
        for i, sid in enumerate(series.tolist()):
            row = self._rows.get(sid)
            if row is None:
                row = self._rows[sid] = len(self._rows)
                new.append(sid)
            rows[i] = row
        if new:
            used = len(self._rows)
            if used > len(self.series):
                capacity = max(8, used, 2 * len(self.series))
                grown = np.zeros((capacity, NCOLS), dtype=np.float64)
                grown[: self.data.shape[0]] = self.data
                self.data = grown
                series_grown = np.full(capacity, -1, dtype=np.int64)
                series_grown[: len(self.series)] = self.series
                self.series = series_grown
            self.series[used - len(new) : used] = new
        self.data[rows] += vectors

    def vector(self, sid: int) -> FloatArray | None:
        """The row of one series, if it had events in this bucket."""
        row = self._rows.get(sid)
        return None if row is None else self.data[row]

    def add_into(self, dense: FloatArray) -> None:
        """Add this bucket's rows into a dense (series, NCOLS) matrix."""
        used = len(self._rows)
        dense[self.series[:used]] += self.data[:used]

    def state(self) -> dict[str, bytes]:
        """Snapshot of the used rows."""
        used = len(self._rows)
        return {"series": self.series[:used].tobytes(), "data": self.data[:used].tobytes()}

    @classmethod
    def from_state(cls, state: dict[str, bytes]) -> BucketTable:
        """Restore a snapshot taken by ``state``."""
        table = cls()
        series = np.frombuffer(state["series"], dtype=np.int64).copy()
        data = np.frombuffer(state["data"], dtype=np.float64).reshape(-1, NCOLS).copy()
        table._rows = {int(s): i for i, s in enumerate(series.tolist())}
        table.series, table.data = series, data
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
        order = np.argsort(buckets, kind="stable")
        buckets, series, vectors = buckets[order], series[order], vectors[order]
        cuts = np.flatnonzero(np.diff(buckets)) + 1
        for lo, hi in zip(
            np.concatenate(([0], cuts)).tolist(),
            np.concatenate((cuts, [len(buckets)])).tolist(),
            strict=True,
        ):
            bucket = int(buckets[lo])
            table = self.tables.get(bucket)
            if table is None:
                table = self.tables[bucket] = BucketTable()
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
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    sums: FloatArray = np.add.reduceat(vectors[order], starts, axis=0)
    distinct: IntArray = ordered[starts]
    return distinct, sums
