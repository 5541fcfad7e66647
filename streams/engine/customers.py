"""Customers measured against themselves: a personal baseline, a trend, an at-risk flag.

Each customer keeps the last ``recent`` satisfaction values (0..1) and running
moments of everything older (their history). A customer is at risk when the recent
mean sits below the history mean by at least ``min_drop`` *and* by more than ``z``
standard errors, with enough answers on both sides: one bad day of an always-grumpy
customer is normal for them; a sudden fall of a happy one is not.

The state is columnar, so a million customers cost megabytes, not a million Python
objects: ``customers`` maps each id to a row, and fixed-width typed arrays (stdlib
``array``: amortised appends grown in place, fast scalar access, and numpy views for
whole-column work) hold one value per row. A customer's ``signals`` (satisfaction
values ever added) fixes everything else about its recent window: value number ``m``
(from 0) sits in ring slot ``m % recent``; ``min(signals, recent)`` values are recent
and the other ``signals - recent`` are history.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any, Final, cast

import numpy as np

from streams.engine.config import CustomerConfig

_COLUMNWISE: Final = 256
"""Batches of at least this many signals are added column-wise (``add_many``)."""
_COLUMNWISE_ROUND: Final = 64
"""A round of fewer signals than this hands the rest of the batch to the scalar loop."""
_VARIANCE_FLOOR = 0.01  # (0.1 on a 0..1 scale)^2: no certainty from a handful of equal answers
_LAYOUT: Final = "columns-1"
_SLACK: Final = 1e-9  # the vectorised at-risk pass only preselects; each pick is confirmed

for _code, _size in (("q", 8), ("d", 8), ("I", 4)):
    if array(_code).itemsize != _size:  # pragma: no cover - exotic platforms only
        raise ImportError(f"array type {_code!r} is not {_size} bytes here")


class CustomerBook:
    """Every customer seen, keyed by the pseudonymous ``customer_id``."""

    def __init__(self, cfg: CustomerConfig) -> None:
        self.cfg = cfg
        self.keep = cfg.recent
        self.customers: dict[str, int] = {}
        """Customer id -> row, in order of first sight (rows are never reused)."""
        self.segments: list[str] = []
        self._segment_codes: dict[str, int] = {}
        self._segment = array("I")  # code into ``segments``: the latest segment seen
        self._signals = array("q")  # satisfaction values ever added
        self._last_seen = array("q")
        self._mean = array("d")  # history mean
        self._m2 = array("d")  # history sum of squared deviations (Welford)
        self._recent = array("d")  # ``keep`` ring slots per row
        self._blank = array("d", bytes(8 * self.keep))

    def __len__(self) -> int:
        return len(self.customers)

    def __contains__(self, customer_id: object) -> bool:
        return customer_id in self.customers

    def add(self, customer_id: str, segment: str, value: float, at: int) -> None:
        """Record one signal; values that are not a satisfaction (NaN) only touch last-seen."""
        self.add_many([customer_id], [segment], [value], [at])

    def add_many(self, customer_ids: Sequence[str], segments: Sequence[str],
                 values: Sequence[float], ats: Sequence[int]) -> None:
        """``add`` each signal in order, with exactly the same result.

        A large batch is added column-wise: rows looked up (new customers registered in
        order of first sight), then latest segment and last-seen per row, then the
        signals in rounds — round ``r`` takes each customer's ``r``-th signal of the
        batch, one per row, so every row sees its signals in order and the float
        operations are those of the scalar path, in the same order. Once a round is
        small, the rest goes through the scalar loop (a customer with hundreds of
        signals in one batch would otherwise cost hundreds of rounds).
        """
        if len(customer_ids) < _COLUMNWISE:
            self._add_each(self._rows(customer_ids), segments, values, ats)
            return
        rows = np.array(self._rows(customer_ids), dtype=np.int64)
        # Latest segment of each row: the last of its events in the batch.
        codes = np.array(self._segment_codes_of(segments), dtype=np.uint32)
        last = len(rows) - 1 - np.unique(rows[::-1], return_index=True)[1]
        segment_of = np.frombuffer(self._segment, dtype=np.uint32)
        segment_of[rows[last]] = codes[last]
        last_seen = np.frombuffer(self._last_seen, dtype=np.int64)
        np.maximum.at(last_seen, rows, np.asarray(ats, dtype=np.int64))
        scored = np.asarray(values, dtype=np.float64)
        picked = np.flatnonzero(~np.isnan(scored))
        rows, scored = rows[picked], scored[picked]
        # Each signal's rank among its row's signals in this batch (0 for the first).
        order = np.argsort(rows, kind="stable")
        grouped = rows[order]
        starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows)) - np.repeat(starts, np.diff(
            np.append(starts, len(rows))))
        signals = np.frombuffer(self._signals, dtype=np.int64)
        mean_of = np.frombuffer(self._mean, dtype=np.float64)
        m2_of = np.frombuffer(self._m2, dtype=np.float64)
        recent = np.frombuffer(self._recent, dtype=np.float64)
        keep = self.keep
        r = 0
        while True:
            in_round = np.flatnonzero(rank == r)
            if len(in_round) < _COLUMNWISE_ROUND:
                break
            row, value = rows[in_round], scored[in_round]
            m = signals[row]
            signals[row] = m + 1
            slot = row * keep + m % keep
            moves = np.flatnonzero(m >= keep)  # the oldest recent value moves into history
            if len(moves):
                at_row, old = row[moves], recent[slot[moves]]
                mean = mean_of[at_row]
                delta = old - mean
                mean = mean + delta / (m[moves] - keep + 1)
                mean_of[at_row] = mean
                m2_of[at_row] = m2_of[at_row] + delta * (old - mean)
            recent[slot] = value
            r += 1
        del signals, mean_of, m2_of, recent, segment_of, last_seen  # release the buffers
        rest = np.flatnonzero(rank >= r)  # in batch order: each row's signals in order
        if len(rest):
            self._signal_each(rows[rest].tolist(), scored[rest].tolist())

    def _rows(self, customer_ids: Sequence[str]) -> list[int]:
        """The row of each customer, registering new ones in order of first sight."""
        rows = self.customers
        found = list(map(rows.get, customer_ids))
        if None in found:
            signals = self._signals
            for i, customer_id in enumerate(customer_ids):
                if found[i] is None:
                    row = rows.get(customer_id)
                    if row is None:
                        row = rows[customer_id] = len(signals)
                        signals.append(0)
                        self._last_seen.append(0)
                        self._mean.append(0.0)
                        self._m2.append(0.0)
                        self._segment.append(0)
                        self._recent.extend(self._blank)
                    found[i] = row
        return cast("list[int]", found)

    def _segment_codes_of(self, segments: Sequence[str]) -> list[int]:
        """The code of each segment, registering new ones in order of first sight."""
        get = self._segment_codes.get
        codes = [get(s) for s in segments]
        if None in codes:  # new segments: registered in order of first sight
            for i, segment in enumerate(segments):
                if codes[i] is None:
                    codes[i] = get(segment)
                    if codes[i] is None:
                        codes[i] = self._segment_code(segment)
        return cast("list[int]", codes)

    def _add_each(self, rows: list[int], segments: Sequence[str], values: Sequence[float],
                  ats: Sequence[int]) -> None:
        """The scalar path: segment, last-seen and signal, event by event."""
        segment_of, last_seen = self._segment, self._last_seen
        for row, code, at in zip(rows, self._segment_codes_of(segments), ats, strict=True):
            segment_of[row] = code
            if at > last_seen[row]:
                last_seen[row] = at
        self._signal_each(rows, values)

    def _signal_each(self, rows: Sequence[int], values: Sequence[float]) -> None:
        """Add satisfaction values to their rows, one by one, in order (NaN: none)."""
        signals, mean_of, m2_of = self._signals, self._mean, self._m2
        recent, keep = self._recent, self.keep
        for row, value in zip(rows, values, strict=True):
            if value != value:  # NaN: not a satisfaction
                continue
            m = signals[row]
            signals[row] = m + 1
            slot = row * keep + m % keep
            if m >= keep:  # the oldest recent value moves into history
                old = recent[slot]
                n = m - keep + 1
                mean = mean_of[row]
                delta = old - mean
                mean += delta / n
                mean_of[row] = mean
                m2_of[row] += delta * (old - mean)
            recent[slot] = value

    def _segment_code(self, segment: str) -> int:
        code = self._segment_codes[segment] = len(self.segments)
        self.segments.append(segment)
        return code

    def get(self, customer_id: str) -> dict[str, Any] | None:
        """A customer's assessment, or None when never seen."""
        row = self.customers.get(customer_id)
        return None if row is None else self._assess(customer_id, row)

    def _recent_values(self, row: int) -> list[float]:
        """The recent values of a row, oldest first."""
        keep, m = self.keep, self._signals[row]
        base = row * keep
        if m <= keep:
            return self._recent[base : base + m].tolist()
        start = base + m % keep
        return self._recent[start : base + keep].tolist() + self._recent[base:start].tolist()

    def _assess(self, customer_id: str, row: int) -> dict[str, Any]:
        """Baseline, trend and at-risk flag, with the numbers behind them."""
        cfg = self.cfg
        recent = self._recent_values(row)
        recent_n = len(recent)
        history_n = self._signals[row] - recent_n
        history_mean = self._mean[row]
        recent_mean = sum(recent) / recent_n if recent_n else None
        baseline = history_mean if history_n else None
        trend = None
        at_risk = False
        if recent_mean is not None and baseline is not None:
            trend = recent_mean - baseline
            if recent_n >= cfg.min_recent and history_n >= cfg.min_history:
                var = max(self._m2[row] / (history_n - 1), _VARIANCE_FLOOR)
                se = math.sqrt(var / history_n + var / recent_n)
                at_risk = -trend >= cfg.min_drop and -trend > cfg.z * se
        return {
            "customer_id": customer_id,
            "segment": self.segments[self._segment[row]],
            "signals": self._signals[row],
            "last_seen": self._last_seen[row],
            "baseline": None if baseline is None else 100 * baseline,
            "baseline_n": history_n,
            "recent": None if recent_mean is None else 100 * recent_mean,
            "recent_n": recent_n,
            "trend": None if trend is None else 100 * trend,
            "at_risk": at_risk,
        }

    def at_risk(self) -> list[str]:
        """Ids of customers flagged at risk now, in order of first sight.

        One numpy pass over the columns picks the candidates (with a little slack for
        rounding); each is then confirmed by the same scalar test ``get`` applies.
        """
        rows = self._at_risk_candidates()
        if not rows:
            return []
        ids = list(self.customers)
        return [ids[r] for r in rows if self._assess(ids[r], r)["at_risk"]]

    def _at_risk_candidates(self) -> list[int]:
        cfg, keep, n = self.cfg, self.keep, len(self._signals)
        if n == 0:
            return []
        signals = np.frombuffer(self._signals, dtype=np.int64)
        recent_n = np.minimum(signals, keep)
        history_n = signals - recent_n
        eligible = (recent_n >= cfg.min_recent) & (history_n >= cfg.min_history)
        rows = np.flatnonzero(eligible)
        if len(rows) == 0:
            return []
        ring = np.frombuffer(self._recent, dtype=np.float64).reshape(n, keep)[rows]
        m, r_n, h_n = signals[rows], recent_n[rows], history_n[rows]
        total = np.zeros(len(rows), dtype=np.float64)
        for j in range(keep):  # oldest first, as the scalar path sums
            slot = np.where(m >= keep, (m + j) % keep, j)
            total += np.where(j < r_n, ring[np.arange(len(rows)), slot], 0.0)
        trend = total / r_n - np.frombuffer(self._mean, dtype=np.float64)[rows]
        var = np.maximum(np.frombuffer(self._m2, dtype=np.float64)[rows] / (h_n - 1),
                         _VARIANCE_FLOOR)
        se = np.sqrt(var / h_n + var / r_n)
        picked = (-trend >= cfg.min_drop - _SLACK) & (-trend > cfg.z * se - _SLACK)
        out: list[int] = rows[picked].tolist()
        return out

    def erase(self, customer_id: str) -> bool:
        """Forget a customer entirely (erasure on request): their row leaves every
        column and the id leaves the book; later rows move up one, in order, so the book
        is exactly one that never saw them. Aggregates elsewhere are untouched. Whether
        the customer was known (erasing twice changes nothing)."""
        row = self.customers.pop(customer_id, None)
        if row is None:
            return False
        keep = self.keep
        for column in (self._segment, self._signals, self._last_seen, self._mean, self._m2):
            del column[row]
        del self._recent[row * keep:(row + 1) * keep]
        self.customers = {cid: (r - 1 if r > row else r) for cid, r in self.customers.items()}
        return True

    def state(self) -> dict[str, Any]:
        """Snapshot: the columns as bytes (native byte order), ids in row order.

        The columns are views, not copies (encoded as the same msgpack bytes): encode
        the snapshot before the book changes again.
        """
        return {
            "layout": _LAYOUT,
            "keep": self.keep,
            "ids": list(self.customers),
            "segments": list(self.segments),
            "segment": memoryview(self._segment).cast("B"),
            "signals": memoryview(self._signals).cast("B"),
            "last_seen": memoryview(self._last_seen).cast("B"),
            "history_mean": memoryview(self._mean).cast("B"),
            "history_m2": memoryview(self._m2).cast("B"),
            "recent": memoryview(self._recent).cast("B"),
        }

    def restore(self, state: dict[str, Any] | list[list[Any]]) -> None:
        """Restore a snapshot taken by ``state``, or the one-row-per-customer lists of
        the object layout before it (``[id, segment, recent, history_n, history_mean,
        history_m2, signals, last_seen]``)."""
        fresh = CustomerBook(self.cfg)
        if isinstance(state, dict):
            fresh._load_columns(state)
        else:
            fresh._load_rows(state)
        self.__dict__.update(fresh.__dict__)

    def _load_columns(self, state: dict[str, Any]) -> None:
        if state.get("layout") != _LAYOUT:
            raise ValueError(f"unknown customer snapshot layout {state.get('layout')!r}")
        if state["keep"] != self.keep:
            raise ValueError(f"customer snapshot keeps {state['keep']} recent values, "
                             f"the configuration {self.keep}")
        ids: list[str] = list(state["ids"])
        self.segments = list(state["segments"])
        self._segment_codes = {s: i for i, s in enumerate(self.segments)}
        for column, name in ((self._segment, "segment"), (self._signals, "signals"),
                             (self._last_seen, "last_seen"), (self._mean, "history_mean"),
                             (self._m2, "history_m2"), (self._recent, "recent")):
            column.frombytes(state[name])
            width = self.keep if name == "recent" else 1
            if len(column) != width * len(ids):
                raise ValueError(f"customer snapshot column {name} does not match the ids")
        self.customers = {cid: row for row, cid in enumerate(ids)}
        if len(self.customers) != len(ids):
            raise ValueError("customer snapshot repeats an id")

    def _load_rows(self, rows: list[list[Any]]) -> None:
        keep = self.keep
        for cid, segment, recent, history_n, mean, m2, signals, last_seen in rows:
            if len(recent) != min(signals, keep) or history_n != signals - len(recent):
                raise ValueError(f"customer {cid!r}: {len(recent)} recent and {history_n} "
                                 f"history values do not add up to {signals} signals "
                                 f"with {keep} kept recent")
            if cid in self.customers:
                raise ValueError(f"customer snapshot repeats the id {cid!r}")
            self.add(cid, segment, math.nan, last_seen)
            row = self.customers[cid]
            self._signals[row], self._last_seen[row] = signals, last_seen
            self._mean[row], self._m2[row] = mean, m2
            first = signals - len(recent)  # value number of the oldest recent value
            for m, value in enumerate(recent, start=first):
                self._recent[row * keep + m % keep] = value
