"""The merge: partial aggregates of every input partition summed into one engine view.

Each partials record is the absolute state of one (source partition, granularity,
bucket) as of an input offset. The view keeps, per key, the record with the highest
offset (a stale writer — a worker that lost its partition but has not noticed yet —
cannot roll a bucket back) and sums buckets over partitions. The result is a real
``Engine`` whose windows, scores and vectors answer exactly as one engine that had
seen every partition's events would (single journeys and customers excepted: those stay
with the partition that owns the customer). Pulse studies and journeys by channel count
travel in each partition's meta record and are summed over partitions.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import cast

import msgspec
import numpy as np
import numpy.typing as npt

from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.pulses import merge_studies
from streams.engine.store import BucketTable, SeriesKey, SeriesRegistry
from streams.worker import records as rec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Cell:
    offset: int
    rows: rec.BucketRows
    sids: npt.NDArray[np.int64] | None = None
    """The rows' series ids in the merged registry (set on first use)."""


_BROKEN = (ValueError, KeyError, TypeError, msgspec.DecodeError)
"""What decoding a partials record raises when it is not one this version can read."""


class MergedView:
    """Latest partials per source partition, and their sum as an ``Engine``.

    The engine is built once and then kept up to date in place: a changed bucket is
    re-summed from its partitions' rows, a changed meta record updates watermark,
    counters, latest event times and pulse studies. So the cost of a read after a flush
    follows what the flush changed, not the size of the state.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._template = Engine(config)
        self._cells: dict[tuple[str, int], dict[int, _Cell]] = {}
        self._meta: dict[int, rec.PartitionMeta] = {}
        self._engine: Engine | None = None
        self._registry = SeriesRegistry()
        self._dirty: set[tuple[str, int]] = set()
        self._meta_dirty = False
        self._buckets = rec.BucketDecoder()
        self.records_applied = 0
        self.records_ignored = 0
        self.rebuilds = 0
        """Buckets re-summed so far (a measure of the work reads have caused)."""

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one partials record (a ``None`` value removes the bucket)."""
        try:
            pk = rec.parse_key(key)
        except ValueError:
            log.warning("ignoring a record with a foreign key %r", key[:80])
            self.records_ignored += 1
            return
        if pk.granularity == rec.META:
            if value is None:
                self._meta.pop(pk.partition, None)
            else:
                try:
                    meta = rec.decode_meta(value)
                except _BROKEN as exc:
                    self._ignore(key, exc)
                    return
                old = self._meta.get(pk.partition)
                if old is not None and old.offset > meta.offset:
                    self.records_ignored += 1
                    return
                self._meta[pk.partition] = meta
            self._meta_dirty = True
            self.records_applied += 1
            return
        if pk.granularity not in self._template.granularities:
            log.warning("ignoring partials of granularity %r: not in this engine "
                        "configuration", pk.granularity)
            self.records_ignored += 1
            return
        cell_key = (pk.granularity, pk.bucket)
        if value is None:
            parts = self._cells.get(cell_key)
            if parts is not None:
                parts.pop(pk.partition, None)
                if not parts:
                    del self._cells[cell_key]
            self._changed(cell_key)
            return
        try:
            rows = self._buckets.decode(value)
        except _BROKEN as exc:
            self._ignore(key, exc)
            return
        parts = self._cells.setdefault(cell_key, {})
        old_cell = parts.get(pk.partition)
        if old_cell is not None and old_cell.offset > rows.offset:
            self.records_ignored += 1
            return
        parts[pk.partition] = _Cell(rows.offset, rows)
        self._changed(cell_key)

    def _ignore(self, key: bytes, exc: Exception) -> None:
        """A record that cannot be read (another format version, or broken) is counted
        and logged; the view goes on without it."""
        log.warning("ignoring partials record %r: %s", key[:80], exc)
        self.records_ignored += 1

    def _changed(self, cell_key: tuple[str, int]) -> None:
        self.records_applied += 1
        self._dirty.add(cell_key)

    def source_offsets(self) -> dict[int, int]:
        """Per input partition, the next input offset the view reflects."""
        return {p: m.offset for p, m in self._meta.items()}

    def counters(self) -> dict[str, int]:
        """Pipeline counters summed over partitions (accepted, duplicate, late, rejected)."""
        total: dict[str, int] = {}
        for meta in self._meta.values():
            for k, v in meta.counters.items():
                total[k] = total.get(k, 0) + v
        return total

    def engine(self) -> Engine:
        """The merged state as an ``Engine``, brought up to date with what was applied.

        The same object is updated in place by later calls: read it synchronously
        (between two awaits), and treat it as read-only.
        """
        engine = self._engine
        if engine is None:
            engine = self._engine = Engine.read_model(self.config, self._registry)
            self._dirty = set(self._cells)
            self._meta_dirty = True
        resummed = bool(self._dirty)
        if resummed:
            dirty, self._dirty = self._dirty, set()
            for cell_key in dirty:
                self._resum(engine, cell_key)
        meta_changed = self._meta_dirty
        latest_grown = len(engine.latest) < len(self._registry)
        if meta_changed:
            self._meta_dirty = False
            self._merge_meta(engine)
        elif latest_grown:
            self._merge_latest(engine)
        if (resummed or meta_changed) and engine.watermark is not None:
            self._expire(engine, engine.watermark)
        if resummed or meta_changed or latest_grown:
            engine.changed()  # scores asked before are asked again
        return engine

    def _resum(self, engine: Engine, cell_key: tuple[str, int]) -> None:
        gran_name, bucket = cell_key
        parts = self._cells.get(cell_key)
        table = BucketTable()
        for partition in sorted(parts or ()):
            cell = parts[partition]  # type: ignore[index]  # parts is not None here
            if not cell.rows.keys:
                continue
            if cell.sids is None:
                registry = self._registry
                cell.sids = np.fromiter((registry.id(k) for k in cell.rows.keys),
                                        dtype=np.int64, count=len(cell.rows.keys))
            table.add(cell.sids, cell.rows.data)
            late, revised = cell.rows.late, cell.rows.revised
            if late is not None and revised is not None:  # late answers: summed, newest
                table.revise(cell.sids[: len(late)], late, revised)
        engine.set_bucket(gran_name, bucket, table)
        self.rebuilds += 1

    def _merge_meta(self, engine: Engine) -> None:
        metas = [self._meta[p] for p in sorted(self._meta)]
        marks = [m.watermark for m in metas if m.watermark is not None]
        folded: Counter[str] = Counter()
        for meta in metas:
            folded.update(meta.folded)
        self._merge_latest(engine)
        engine.set_merged(watermark=max(marks) if marks else None, folded=folded,
                          counters=self.counters(),
                          pulses=merge_studies([m.pulses for m in metas]),
                          journeys=[m.journeys for m in metas if m.journeys is not None])

    def _merge_latest(self, engine: Engine) -> None:
        registry = self._registry
        engine.set_latest(
            (sid, at)
            for meta in self._meta.values()
            for key, at in zip(meta.latest_keys, meta.latest, strict=True)
            if (sid := registry.get(cast(SeriesKey, key))) is not None)  # metas hold tuples

    def _expire(self, engine: Engine, watermark: int) -> None:
        """Drop buckets a single engine at this watermark would no longer keep."""
        oldest = engine.expire(watermark)
        for cell_key in [k for k in self._cells if k[1] < oldest[k[0]]]:
            del self._cells[cell_key]
