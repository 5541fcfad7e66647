"""The bytes the worker writes: partial aggregates, checkpoints and dead-letter headers.

Partial aggregates are published per (source partition, granularity, bucket) as the
*absolute* state of that bucket in that partition, with the input offset the state
reflects. Publishing the same state twice changes nothing, a newer state replaces an
older one, and the total of a bucket is the sum over partitions of their latest
records, so redelivery after a crash can never count an event twice.

Keys (UTF-8): ``<partition>/<granularity>/<bucket>`` for a bucket, ``<partition>/meta``
for the partition's watermark, counters and latest event times. A ``None`` value (a
tombstone) removes a bucket that expired. Values are msgpack maps with ``v`` = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np

from schemas.modes import BACKFILL, MODE_HEADER
from schemas.redact import CommentPolicy
from streams.deadletters import keep, scrubbed
from streams.engine.buckets import IntArray
from streams.engine.metrics import NCOLS, FloatArray
from streams.engine.store import SeriesKey

FORMAT_VERSION: Final = 1
META: Final = "meta"

# Dead-letter headers: the reason travels beside the untouched original bytes (the
# dead-letter contract, ``streams.deadletters``).
H_KIND: Final = "touchstream.kind"  # invalid, late, bad_body or bad_command
H_STATUS: Final = "touchstream.status"  # before the contract: "rejected" or "late" (read)
H_INDEX: Final = "touchstream.source.index"  # an HTTP batch position (API-side letters)
H_FIELD: Final = "touchstream.field"
H_REASON: Final = "touchstream.reason"
H_TOPIC: Final = "touchstream.source.topic"
H_PARTITION: Final = "touchstream.source.partition"
H_OFFSET: Final = "touchstream.source.offset"
H_SIZE: Final = "touchstream.size"  # of the original bytes, when the value is scrubbed
H_SHA256: Final = "touchstream.sha256"  # of the original bytes, when the value is scrubbed


def scrub_dead_letter(value: bytes | None, headers: list[tuple[str, bytes]],
                      comments: CommentPolicy) -> tuple[bytes | None,
                                                        list[tuple[str, bytes]]]:
    """A dead letter's value and headers under the comment policy: with ``drop`` or
    ``redact``, the value :func:`~streams.deadletters.scrubbed` and, when that changed
    it, the original's size and SHA-256 in ``touchstream.size`` and
    ``touchstream.sha256`` headers (``GET /v1/dead-letters`` shows those)."""
    if comments == "keep" or not value:
        return value, headers
    clean = scrubbed(value, comments)
    if clean == value:
        return value, headers
    original = keep(value, 0)
    return clean, [*headers, (H_SIZE, str(original.size).encode()),
                   (H_SHA256, original.sha256.encode())]

# Control records: a header naming the command (``pulse_start``, ``pulse_end``; see
# ``streams.runner``) on a record in the input topic, one in every partition, so each
# partition's state applies it at the same point of its input on every replay.
H_CONTROL: Final = "touchstream.control"
H_MODE: Final = MODE_HEADER
"""On an input record: ``backfill`` for history loaded on purpose (``Pipeline.run``'s
``backfill``: bounded by what the state keeps, never paging); absent for live events."""


def is_backfill(headers: Any) -> bool:
    """Whether an input record is history loaded with ``backfill``."""
    return any(key == H_MODE and value == BACKFILL for key, value in headers or ())


def control_kind(headers: Any) -> str | None:
    """The command a record carries, or ``None`` for an event."""
    for key, value in headers or ():
        if key == H_CONTROL:
            return bytes(value).decode("utf-8", "replace")
    return None

_encoder = msgspec.msgpack.Encoder()


def bucket_key(partition: int, granularity: str, bucket: int) -> bytes:
    """Key of one partition's bucket of one granularity."""
    return f"{partition}/{granularity}/{bucket}".encode()


def meta_key(partition: int) -> bytes:
    """Key of one partition's meta record."""
    return f"{partition}/{META}".encode()


@dataclass(frozen=True, slots=True)
class PartialKey:
    """A parsed partials key: ``granularity`` is ``meta`` for the meta record."""

    partition: int
    granularity: str
    bucket: int


def parse_key(key: bytes) -> PartialKey:
    """Parse a partials key; raises ``ValueError`` on anything else."""
    parts = key.decode().split("/")
    if len(parts) == 2 and parts[1] == META:
        return PartialKey(int(parts[0]), META, 0)
    if len(parts) == 3:
        return PartialKey(int(parts[0]), parts[1], int(parts[2]))
    raise ValueError(f"not a partials key: {key!r}")


def _keys_in(raw: list[Any]) -> list[SeriesKey]:
    return [(tuple(d), tuple(v), m) for d, v, m in raw]


def encode_key(key: SeriesKey) -> msgspec.Raw:
    """One series key, encoded once (``SeriesKeys`` caches them per series id)."""
    dims, values, metric = key
    return msgspec.Raw(_encoder.encode([list(dims), list(values), metric]))


class SeriesKeys:
    """Encoded series keys by engine series id, so each key is encoded only once."""

    def __init__(self) -> None:
        self._raw: list[msgspec.Raw] = []

    def raw(self, keys: list[SeriesKey], sids: list[int]) -> list[msgspec.Raw]:
        """The encoded keys of ``sids`` (``keys`` is the engine's registry, by id)."""
        cache = self._raw
        if len(cache) < len(keys):
            cache.extend(encode_key(k) for k in keys[len(cache):])
        return [cache[s] for s in sids]


def encode_bucket(offset: int, keys: list[SeriesKey] | list[msgspec.Raw],
                  data: FloatArray, late: IntArray | None = None,
                  revised: IntArray | None = None) -> bytes:
    """A bucket's rows (one per series) as of input ``offset``; ``late`` and ``revised``
    (the first rows' ``BucketTable`` counters, once a late answer changed the bucket)
    travel beside them, and readers that predate them ignore them."""
    out: list[Any] = [k if isinstance(k, msgspec.Raw) else encode_key(k) for k in keys]
    record: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "offset": offset,
        "keys": out,
        "data": np.ascontiguousarray(data, dtype=np.float64).tobytes(),
    }
    if late is not None and revised is not None:
        record["late"] = np.ascontiguousarray(late, dtype="<i8").tobytes()
        record["revised"] = np.ascontiguousarray(revised, dtype="<i8").tobytes()
    return _encoder.encode(record)


@dataclass(frozen=True, slots=True)
class BucketRows:
    """A decoded bucket record."""

    offset: int
    keys: list[SeriesKey]
    data: FloatArray
    late: IntArray | None = None
    """Per row (of the first rows), answers that arrived after the bucket closed."""
    revised: IntArray | None = None
    """Per row, the watermark when the last of them was counted."""


class _Version(msgspec.Struct):
    v: int | None = None


class _Bucket(msgspec.Struct):
    v: int | None
    offset: int
    keys: list[msgspec.Raw]
    data: bytes
    late: bytes = b""
    revised: bytes = b""


_version_of = msgspec.msgpack.Decoder(_Version)
_bucket_of = msgspec.msgpack.Decoder(_Bucket)


class BucketDecoder:
    """Decodes bucket records, each series key once: a partition re-publishes the same
    keys in every flush, so a key's bytes map to the key decoded the first time (the
    keys a reader meets are the series of the engine configuration, a bounded set)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, SeriesKey] = {}

    def decode(self, value: bytes) -> BucketRows:
        """Decode a bucket record; raises ``ValueError`` on a foreign or broken one."""
        try:
            raw = _bucket_of.decode(value)  # one parse on the usual path
        except msgspec.DecodeError as exc:
            try:  # another version's layout, or broken: say which
                version = _version_of.decode(value).v
            except msgspec.DecodeError:
                raise ValueError(f"unsupported partials record ({exc})") from None
            if version != FORMAT_VERSION:
                raise ValueError(f"unsupported partials record (v={version})") from None
            raise ValueError(f"bucket record: {exc}") from None
        if raw.v != FORMAT_VERSION:
            raise ValueError(f"unsupported partials record (v={raw.v})")
        data = np.frombuffer(raw.data, dtype=np.float64).reshape(-1, NCOLS).copy()
        known = self._keys
        keys: list[SeriesKey] = []
        for item in raw.keys:
            blob = bytes(item)
            key = known.get(blob)
            if key is None:
                key = known[blob] = _keys_in([msgspec.msgpack.decode(blob)])[0]
            keys.append(key)
        if len(keys) != len(data):
            raise ValueError("bucket record: keys and rows differ in length")
        if not raw.late:
            return BucketRows(raw.offset, keys, data)
        late = np.frombuffer(raw.late, dtype="<i8").astype(np.int64)
        revised = np.frombuffer(raw.revised, dtype="<i8").astype(np.int64)
        if len(late) != len(revised) or len(late) > len(keys):
            raise ValueError("bucket record: late counters do not fit the rows")
        return BucketRows(raw.offset, keys, data, late, revised)


def decode_bucket(value: bytes) -> BucketRows:
    """Decode a bucket record (``BucketDecoder`` remembers keys across records)."""
    return BucketDecoder().decode(value)


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    """What a partition's state knows besides its buckets."""

    offset: int
    watermark: int | None
    counters: dict[str, int]
    folded: dict[str, int]
    latest_keys: list[SeriesKey] | list[msgspec.Raw]
    latest: list[int]
    pulses: list[dict[str, Any]] = field(default_factory=list)
    """The partition's pulse studies (``PulseStudy.state()``), summed on merge."""
    journeys: dict[str, Any] | None = None
    """The partition's journeys by channel count (``JourneyTracker.summary()``), summed
    on merge; absent in records of older workers."""


def encode_meta(meta: PartitionMeta) -> bytes:
    """Encode a meta record."""
    return _encoder.encode({
        "v": FORMAT_VERSION,
        "offset": meta.offset,
        "watermark": meta.watermark,
        "counters": meta.counters,
        "folded": meta.folded,
        "latest_keys": [k if isinstance(k, msgspec.Raw) else encode_key(k)
                        for k in meta.latest_keys],
        "latest": np.asarray(meta.latest, dtype=np.int64).tobytes(),
        "pulses": meta.pulses,
        "journeys": meta.journeys,
    })


def decode_meta(value: bytes) -> PartitionMeta:
    """Decode a meta record."""
    raw = msgspec.msgpack.decode(value)
    _check_version(raw)
    return PartitionMeta(
        int(raw["offset"]), raw["watermark"], dict(raw["counters"]), dict(raw["folded"]),
        _keys_in(raw["latest_keys"]), np.frombuffer(raw["latest"], dtype=np.int64).tolist(),
        list(raw.get("pulses", ())), raw.get("journeys"),
    )


def _check_version(raw: Any) -> None:
    if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
        version = raw.get("v") if isinstance(raw, dict) else None
        raise ValueError(f"unsupported partials record (v={version})")


def encode_checkpoint(partition: int, offset: int, snapshot: bytes) -> bytes:
    """A partition's checkpoint: the engine snapshot and the next input offset it reflects."""
    return _encoder.encode({"v": FORMAT_VERSION, "partition": partition, "offset": offset,
                            "engine": snapshot})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A decoded checkpoint."""

    partition: int
    offset: int
    snapshot: bytes


def decode_checkpoint(value: bytes) -> Checkpoint:
    """Decode a checkpoint."""
    raw = msgspec.msgpack.decode(value)
    if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
        raise ValueError("unsupported checkpoint format")
    return Checkpoint(int(raw["partition"]), int(raw["offset"]), bytes(raw["engine"]))
