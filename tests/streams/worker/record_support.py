"""A consumed input record without a broker: what ``PartitionState.process`` reads of
aiokafka's ConsumerRecord (``streams.worker.partition.InputRecord``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
