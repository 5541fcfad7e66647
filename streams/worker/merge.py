"""The merge: partial aggregates of every input partition summed into one engine view.

Each partials record is the absolute state of one (source partition, granularity,
bucket) as of an input offset. The view keeps, per key, the record with the highest
offset (a stale writer — a worker that lost its partition but has not noticed yet —
cannot roll a bucket back) and sums buckets over partitions. The result is a real
``Engine`` whose windows, scores and vectors answer exactly as one engine that had
seen every partition's events would (journeys and customers excepted: those stay with
the partition that owns the customer). Pulse studies travel in each partition's meta
record and are summed over partitions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import numpy as np

from streams.engine import engine as engine_module
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.engine.pulses import merge_studies
from streams.engine.store import BucketTable, SeriesKey, SeriesRegistry
from streams.worker import records as rec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Cell:
    offset: int
    rows: rec.BucketRows


class MergedView:
    """Latest partials per source partition, and their sum as an ``Engine``."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._template = Engine(config)
        self._cells: dict[tuple[str, int], dict[int, _Cell]] = {}
        self._meta: dict[int, rec.PartitionMeta] = {}
        self._engine: Engine | None = None
        self.records_applied = 0
        self.records_ignored = 0

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
                meta = rec.decode_meta(value)
                old = self._meta.get(pk.partition)
                if old is not None and old.offset > meta.offset:
                    self.records_ignored += 1
                    return
                self._meta[pk.partition] = meta
            self._changed()
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
            self._changed()
            return
        rows = rec.decode_bucket(value)
        parts = self._cells.setdefault(cell_key, {})
        old_cell = parts.get(pk.partition)
        if old_cell is not None and old_cell.offset > rows.offset:
            self.records_ignored += 1
            return
        parts[pk.partition] = _Cell(rows.offset, rows)
        self._changed()

    def _changed(self) -> None:
        self.records_applied += 1
        self._engine = None

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
        """The merged state as an ``Engine`` (rebuilt only after something changed).

        Treat it as read-only: it is shared until the next change.
        """
        if self._engine is None:
            self._engine = self._build()
        return self._engine

    def _build(self) -> Engine:
        engine = Engine(self.config)
        registry = SeriesRegistry()
        engine.series = registry
        for (gran_name, bucket), parts in self._cells.items():
            table = BucketTable()
            for partition in sorted(parts):
                rows = parts[partition].rows
                if not rows.keys:
                    continue
                sids = np.fromiter((registry.id(k) for k in rows.keys), dtype=np.int64,
                                   count=len(rows.keys))
                table.add(sids, rows.data)
            if len(table):
                engine.granularities[gran_name].tables[bucket] = table
        latest = np.full(len(registry), engine_module._NEVER, dtype=np.int64)
        watermark: int | None = None
        for partition in sorted(self._meta):
            meta = self._meta[partition]
            if meta.watermark is not None:
                watermark = meta.watermark if watermark is None else max(watermark,
                                                                         meta.watermark)
            for key, at in zip(meta.latest_keys, meta.latest, strict=True):
                sid = registry.get(cast(SeriesKey, key))  # decoded metas hold tuples
                if sid is not None and at > latest[sid]:
                    latest[sid] = at
            for dim, n in meta.folded.items():
                if dim in engine.dims:
                    engine.dims[dim].folded += n
        engine.latest = latest
        engine.watermark = watermark
        engine.pulses = merge_studies([self._meta[p].pulses for p in sorted(self._meta)])
        if watermark is not None:
            self._expire(engine, watermark)
        engine.counters.update(self.counters())
        return engine

    def _expire(self, engine: Engine, watermark: int) -> None:
        """Drop buckets a single engine at this watermark would no longer keep."""
        now = np.array([watermark], dtype=np.int64)
        for name, gran in engine.granularities.items():
            newest = int(gran.bucketing.ids(now)[0])
            gran.expire(newest)
            oldest = newest - gran.keep + 1
            for cell_key in [k for k in self._cells if k[0] == name and k[1] < oldest]:
                del self._cells[cell_key]
