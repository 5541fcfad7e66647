"""Faust tables: the per-partition checkpoints, changelog-backed.

One table, ``checkpoints``, holds for every input partition the engine snapshot and
the next input offset it reflects — the journey, customer, dedupe and aggregate state
of that partition, in one consistent value. Faust keeps it where Faust users expect:
a compacted changelog topic (``<app_id>-checkpoints-changelog``, one partition per
input partition), a local store (``rocksdb://`` in production, ``memory://`` in
tests), standby replicas on other workers, and recovery before a reassigned
partition's records are delivered.

Why not ``table[key] = value``: Faust finds a table key's changelog partition from the
event being processed (``current_event()``), and raises when there is none — which is
the case inside ``stream.take()`` (faust-streaming issue 497) and in our batch consumer,
which has no per-event ``Event`` objects at all. ``CheckpointStore`` therefore names
the partition itself: it produces to the changelog partition of the input partition,
waits for the broker's acknowledgement, and then applies the same records to the local
store through ``Store.apply_changelog_batch`` (the path Faust's own recovery uses),
which also records the changelog offset so a ``rocksdb://`` store recovers from there.

A snapshot larger than ``chunk_bytes`` is split into chunks keyed by a fresh generation
id, written before the manifest that names them; the previous generation's chunks are
deleted (tombstoned) only after the new manifest is acknowledged. So a crash at any
point leaves one complete, consistent checkpoint readable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

log = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1

Send = Callable[[str, bytes, bytes | None, int], Awaitable[int]]
"""Produce (topic, key, value, partition) and return the offset the broker gave it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back (missing or corrupt chunks)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """Where a partition's checkpoint is: inline, or in ``chunks`` chunks of ``generation``."""

    offset: int
    generation: str
    chunks: int
    size: int
    sha256: str
    inline: bytes | None


def _manifest_key(partition: int) -> bytes:
    return str(partition).encode()


def _chunk_key(partition: int, generation: str, index: int) -> bytes:
    return f"{partition}/{generation}/{index}".encode()


def _encode_manifest(m: Manifest) -> bytes:
    return msgspec.msgpack.encode({
        "v": FORMAT_VERSION, "offset": m.offset, "generation": m.generation,
        "chunks": m.chunks, "size": m.size, "sha256": m.sha256, "inline": m.inline,
    })


def _decode_manifest(value: bytes) -> Manifest:
    raw = msgspec.msgpack.decode(value)
    if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
        raise CheckpointError("unsupported checkpoint manifest")
    inline = raw["inline"]
    return Manifest(int(raw["offset"]), str(raw["generation"]), int(raw["chunks"]),
                    int(raw["size"]), str(raw["sha256"]),
                    None if inline is None else bytes(inline))


def manifest_offset(key: bytes | None, value: bytes | None) -> tuple[int, int] | None:
    """(input partition, input offset) of a changelog record that is a checkpoint's
    manifest; ``None`` for chunks, tombstones and anything unreadable."""
    if key is None or value is None or not key.isdigit():
        return None
    try:
        return int(key), _decode_manifest(value).offset
    except (CheckpointError, msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None


class _ChangelogMessage:
    __slots__ = ("key", "offset", "partition", "topic", "tp", "value")

    def __init__(self, tp: Any, key: bytes, value: bytes | None, offset: int) -> None:
        self.topic = tp.topic
        self.partition = tp.partition
        self.tp = tp
        self.key = key
        self.value = value
        self.offset = offset


class _ChangelogEvent:
    """The part of ``faust.Event`` that ``Store.apply_changelog_batch`` reads."""

    __slots__ = ("key", "message", "value")

    def __init__(self, message: _ChangelogMessage) -> None:
        self.message = message
        self.key = message.key
        self.value = message.value


class CheckpointStore:
    """Read and write per-partition checkpoints in a Faust table with raw bytes."""

    def __init__(self, table: Any, send: Send, chunk_bytes: int) -> None:
        self.table = table
        self.send = send
        self.chunk_bytes = chunk_bytes

    @property
    def topic(self) -> str:
        """The changelog topic."""
        return str(self.table.changelog_topic.get_topic_name())

    def _get(self, key: bytes) -> bytes | None:
        value = self.table.data.get(key)
        return None if value is None else bytes(value)

    def manifest(self, partition: int) -> Manifest | None:
        """The partition's current manifest in the local store, if any."""
        value = self._get(_manifest_key(partition))
        return None if value is None else _decode_manifest(value)

    def stored_offset(self, partition: int) -> int | None:
        """The input offset of the partition's checkpoint, without reading the snapshot."""
        manifest = self.manifest(partition)
        return None if manifest is None else manifest.offset

    def read(self, partition: int) -> bytes | None:
        """The partition's checkpoint value, or ``None`` when it has none."""
        manifest = self.manifest(partition)
        if manifest is None:
            return None
        if manifest.inline is not None:
            data = manifest.inline
        else:
            parts: list[bytes] = []
            for i in range(manifest.chunks):
                chunk = self._get(_chunk_key(partition, manifest.generation, i))
                if chunk is None:
                    raise CheckpointError(
                        f"checkpoint of partition {partition} (generation "
                        f"{manifest.generation}) lacks chunk {i} of {manifest.chunks}")
                parts.append(chunk)
            data = b"".join(parts)
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise CheckpointError(f"checkpoint of partition {partition} is corrupt "
                                  "(size or digest differ from its manifest)")
        return data

    async def write(self, partition: int, offset: int, data: bytes,
                    send: Send | None = None) -> list[Any]:
        """Store ``data`` as the partition's checkpoint at input ``offset``, durably.

        Returns once the broker acknowledged every record and the local store has them.
        With ``send`` (a transactional producer's), the records are only produced: the
        caller commits the transaction and then calls ``apply`` with the returned list.
        """
        previous = self.manifest(partition)
        digest = hashlib.sha256(data).hexdigest()
        generation = uuid.uuid4().hex[:16]
        records: list[tuple[bytes, bytes | None]] = []
        if len(data) <= self.chunk_bytes:
            manifest = Manifest(offset, generation, 0, len(data), digest, data)
        else:
            pieces = [data[i:i + self.chunk_bytes] for i in range(0, len(data),
                                                                     self.chunk_bytes)]
            records += [(_chunk_key(partition, generation, i), piece)
                        for i, piece in enumerate(pieces)]
            manifest = Manifest(offset, generation, len(pieces), len(data), digest, None)
        send = send or self.send
        applied = await self._produce(send, partition, records)
        applied += await self._produce(send, partition, [(_manifest_key(partition),
                                                          _encode_manifest(manifest))])
        if previous is not None and previous.chunks:
            applied += await self._produce(send, partition, [
                (_chunk_key(partition, previous.generation, i), None)
                for i in range(previous.chunks)
            ])
        if send is self.send:
            self.apply(applied)
        return applied

    async def _produce(self, send: Send, partition: int,
                       records: list[tuple[bytes, bytes | None]]) -> list[_ChangelogEvent]:
        if not records:
            return []
        topic = self.topic
        # All in flight at once (one round trip, not one per chunk); the caller awaits
        # the chunks before it sends the manifest that names them.
        offsets = await asyncio.gather(*(send(topic, key, value, partition)
                                         for key, value in records))
        tp = _tp(topic, partition)
        return [_ChangelogEvent(_ChangelogMessage(tp, key, value, off))
                for (key, value), off in zip(records, offsets, strict=True)]

    def apply(self, events: list[Any]) -> None:
        """Apply produced (and, in a transaction, committed) records to the local store."""
        if events:
            self.table.data.apply_changelog_batch(
                events, to_key=self.table._to_key, to_value=self.table._to_value)

    async def load(self, partition: int) -> None:
        """Make the partition's checkpoint readable (Faust's recovery already did)."""

    def compact_local(self, partition: int) -> bool:
        """Drop the bytes of replaced checkpoints of ``partition`` from the local store's
        files (after an erasure): a RocksDB store keeps an overwritten value in its
        write-ahead log and older table files until a compaction, so the partition's
        database is flushed and compacted down to its last level. Whether there was a
        database to compact (``memory://`` keeps nothing on disk)."""
        dbs = getattr(self.table.data, "_dbs", None)
        db = None if not isinstance(dbs, dict) else dbs.get(partition)
        if db is None or not hasattr(db, "compact_range"):
            return False
        try:
            from rocksdict import BottommostLevelCompaction, CompactOptions
        except ImportError:  # python-rocksdb: its own spelling
            db.compact_range(bottommost_level_compaction=2)  # kForce
            return True
        db.flush(True)
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        db.compact_range(None, None, options)
        db.flush_wal(True)
        return True


class _DictData:
    """A local store of one worker's partitions, filled from the changelog topic."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        for event in batch:
            if event.message.value is None:
                self.data.pop(event.message.key, None)
            else:
                self.data[event.message.key] = event.message.value


class _Topic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class _TopicTable:
    """Stands in for a Faust table: the same changelog topic, read by ``load``."""

    def __init__(self, topic: str) -> None:
        self.data = _DictData()
        self.changelog_topic = _Topic(topic)

    @staticmethod
    def _to_key(k: Any) -> Any:
        return k

    @staticmethod
    def _to_value(v: Any) -> Any:
        return v


class TopicCheckpointStore(CheckpointStore):
    """Checkpoints in the same compacted topic, read directly (``read_committed``).

    Used with ``exactly_once``: checkpoints are written inside transactions, and Faust's
    table recovery in at-least-once mode waits for offsets that transaction markers
    occupy, so the worker reads a partition's checkpoint itself when it takes the
    partition over (the topic is compacted: that read is short).
    """

    def __init__(self, bootstrap_servers: list[str], topic: str, send: Send,
                 chunk_bytes: int) -> None:
        super().__init__(_TopicTable(topic), send, chunk_bytes)
        self.bootstrap_servers = bootstrap_servers

    async def load(self, partition: int) -> None:
        """Read the partition's records of the changelog topic into the local store."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        data: dict[bytes, bytes] = self.table.data.data
        prefix = str(partition).encode()
        for key in [k for k in data if k.split(b"/")[0] == prefix]:
            del data[key]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=None,
            enable_auto_commit=False, isolation_level="read_committed",
            max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    for r in records:
                        if r.value is None:
                            data.pop(r.key, None)
                        else:
                            data[r.key] = r.value
        finally:
            await consumer.stop()


def _tp(topic: str, partition: int) -> Any:
    from faust.types import TP

    return TP(topic=topic, partition=partition)
