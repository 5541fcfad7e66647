"""The dedupe memory: which event ids the engine has seen within the dedupe horizon.

``SeenIds`` keeps a 64-bit digest of each event id (xxh3-64 of its UTF-8 bytes), never the
id itself, filed by the time bucket of its event time (an hour by default), in two tiers:

- **hot**: the recent buckets. A ``set[int]`` answers membership, and the same digests
  in ``array('Q')`` per bucket say which ones may be frozen or forgotten. About 8 bytes
  in the bucket arrays, a 32-byte int and 16-32 bytes of set slot per id (~70 bytes).
- **frozen**: older buckets, each a sorted numpy ``uint64`` array (8 bytes per id),
  asked with ``np.searchsorted`` for a whole batch at once. An id is checked in the tier
  of the bucket of its own event time (a duplicate carries its event time): the hot
  path, events near the watermark, never touches the frozen tier; only events older
  than the hot range (late answers) are looked up there. A digest filed late into a
  frozen bucket waits in the hot tier until the next prune freezes it.

Pruning is lazy: once the set has doubled since the last prune, every hot bucket that
lies entirely before ``freeze`` is frozen, and every bucket (either tier) that lies
entirely before the horizon (``watermark - dedupe horizon``) is forgotten, so an id
younger than the horizon is never forgotten and an older one is forgotten at most one
bucket late. At 10^6 ids a day over a 35-day horizon: 316 MiB (9.5 bytes an id), against
2,872 MiB (86 bytes an id) for the set alone (``benchmarks/bench_memory.py``, part e). A
snapshot stores 8 bytes per id.

A resend whose ``occurred_at`` moved into another bucket is looked up in that bucket's
tier: the set of the hot tier holds every hot id whatever its bucket, so a resend with a
changed time is found while its first copy is hot, and (once frozen) only when both
times fall in the same bucket.

A digest collision makes two distinct ids look the same, so the later event would be
dropped as a duplicate. With ``n`` ids remembered, each new event collides with
probability about ``n / 2**64``, and any two of the ``n`` collide with probability about
``n**2 / 2**65``: ~1e-7 for the 1.8 million ids of 10^6 customers over a 7-day horizon;
over a stream's life, ~``events * n / 2**64`` events lost (~1e-3 after 10^10 events
against 2 million remembered ids).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import xxhash

from streams.engine.buckets import IntArray

BUCKET: Final = 3600
"""Seconds of event time per bucket of digests, at most (never more than the horizon)."""
_PRUNE_FLOOR: Final = 1024
_NO_TIME: Final = -(2**62)
U64Array = npt.NDArray[np.uint64]
_NO_IDS: Final[U64Array] = np.zeros(0, dtype=np.uint64)
_digest = xxhash.xxh3_64_intdigest


def digest(event_id: str) -> int:
    """The 64-bit digest an event id is remembered by."""
    return _digest(event_id.encode())


def bucket_width(horizon: int) -> int:
    """Bucket seconds for a dedupe horizon: an hour, or the horizon when it is shorter."""
    return min(BUCKET, max(1, horizon))


def _packed(values: array[int]) -> bytes:
    """Little-endian bytes of a uint64 array."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("Q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _unpacked(data: bytes) -> array[int]:
    values = array("Q")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


class SeenIds:
    """Digests of the event ids seen, by bucket of event time: recent buckets in a set,
    older ones frozen into sorted arrays, forgotten bucket by bucket."""

    __slots__ = ("width", "_digests", "_buckets", "_frozen", "_frozen_n", "_cold_end",
                 "_mark", "_pinned")

    def __init__(self, width: int = BUCKET) -> None:
        if width <= 0:
            raise ValueError("bucket width must be positive")
        self.width = width
        self._digests: set[int] = set()
        self._buckets: dict[int, array[int]] = {}
        self._frozen: dict[int, U64Array] = {}
        self._frozen_n = 0
        self._cold_end = _NO_TIME
        """Where the newest frozen bucket ends (seconds): events before it may be frozen."""
        self._mark = _PRUNE_FLOOR
        self._pinned: set[int] = set()
        """Buckets a backfill filed ids into: kept past the horizon, as long as the
        state keeps their time (``prune``'s ``pinned_horizon``), so a backfill sent
        again is found duplicate."""

    def __len__(self) -> int:
        return len(self._digests) + self._frozen_n

    @property
    def hot(self) -> int:
        """Digests in the hot tier (the set)."""
        return len(self._digests)

    @property
    def frozen(self) -> int:
        """Digests in the frozen tier (sorted arrays)."""
        return self._frozen_n

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False
        d = digest(event_id)
        if d in self._digests:
            return True
        value = np.uint64(d)
        return any(_holds(values, value) for values in self._frozen.values())

    def add(self, event_ids: Sequence[str], times: IntArray,
            pin: bool = False) -> list[bool] | None:
        """Remember a batch of ids with their event times (seconds), in arrival order.

        Returns None when every id is new and distinct (the usual case, done for the whole
        batch at once); otherwise, for each id, whether it is new: not remembered before
        and not earlier in the batch. Only the new ones are added. ``pin`` (a backfill):
        their buckets are kept past the horizon (``prune``).
        """
        if pin and len(times):
            self._pinned.update(np.unique(times // self.width).tolist())
        digests = list(map(_digest, map(str.encode, event_ids)))
        cold = (self._frozen_hits(digests, times)
                if self._frozen and len(times) and int(times.min()) < self._cold_end
                else None)
        fresh = set(digests)
        if (cold is None and len(fresh) == len(digests)
                and self._digests.isdisjoint(fresh)):
            self._digests |= fresh
            self._file(digests, times)
            return None
        known = self._digests
        new: list[bool] = []
        kept: list[int] = []
        for i, d in enumerate(digests):
            if d in known or (cold is not None and cold[i]):
                new.append(False)
            else:
                known.add(d)
                new.append(True)
                kept.append(d)
        if len(kept) == len(digests):  # all new: only a frozen bucket was asked
            self._file(kept, times)
            return None
        self._file(kept, times[np.array(new, dtype=np.bool_)])
        return new

    def forget(self, event_ids: Sequence[str], times: IntArray) -> None:
        """Forget ids just added with these event times (answers handed back as late:
        never counted, so a later resend or backfill of them is not a duplicate)."""
        for event_id, at in zip(event_ids, times.tolist(), strict=True):
            d = _digest(event_id.encode())
            if d not in self._digests:
                continue
            bucket = self._buckets.get(at // self.width)
            if bucket is None or d not in bucket:
                continue  # filed elsewhere: it is not one this batch added
            bucket.remove(d)
            self._digests.discard(d)

    def _frozen_hits(self, digests: list[int], times: IntArray) -> list[bool] | None:
        """Which digests their event time's frozen bucket holds (None: none of them)."""
        buckets = times // self.width
        picked = np.flatnonzero(buckets < self._cold_end // self.width)
        if not len(picked):
            return None
        values = np.array(digests, dtype=np.uint64)
        hits = np.zeros(len(digests), dtype=np.bool_)
        of = buckets[picked]
        for b in np.unique(of).tolist():
            frozen = self._frozen.get(b)
            if frozen is None or not len(frozen):
                continue
            idx = picked[of == b]
            want = values[idx]
            at = np.searchsorted(frozen, want)
            np.minimum(at, len(frozen) - 1, out=at)
            hits[idx] = frozen[at] == want
        return hits.tolist() if hits.any() else None

    def _file(self, digests: list[int], times: IntArray) -> None:
        """Put new digests into the buckets of their times."""
        if not digests:
            return
        buckets = times // self.width
        first, last = int(buckets.min()), int(buckets.max())
        if first == last:
            self._bucket(first).extend(digests)
            return
        values = np.array(digests, dtype=np.uint64)
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        for part, b in zip(np.split(order, starts), ordered[np.r_[0, starts]].tolist(),
                           strict=True):
            self._bucket(b).frombytes(values[part].tobytes())

    def _bucket(self, b: int) -> array[int]:
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = array("Q")
        return bucket

    def prune(self, horizon: int, freeze: int | None = None,
              pinned_horizon: Callable[[], int] | None = None) -> None:
        """Forget the buckets entirely before ``horizon`` and freeze the hot buckets
        entirely before ``freeze`` (seconds), once the set has doubled. Pinned buckets
        (a backfill's) are forgotten only before ``pinned_horizon()`` (what the state
        keeps), and frozen past ``horizon`` whatever ``freeze`` says.

        Lazy, so that pruning costs nothing per event: between prunes the set holds at
        most twice what it held after the last one.
        """
        if len(self._digests) < 2 * self._mark:
            return
        # Bucket b covers [b * width, (b + 1) * width): entirely old when its end <= horizon.
        width = self.width
        pinned = self._pinned
        if pinned:
            floor = pinned_horizon() if pinned_horizon is not None else horizon
            pinned.difference_update([b for b in pinned if (b + 1) * width <= floor])
        for b in [b for b in self._buckets if (b + 1) * width <= horizon]:
            if b in pinned:
                self._freeze(b)
                continue
            self._digests.difference_update(self._buckets.pop(b))
        for b in [b for b in self._frozen if (b + 1) * width <= horizon and b not in pinned]:
            self._frozen_n -= len(self._frozen.pop(b))
        if freeze is not None:
            for b in sorted(b for b in self._buckets if (b + 1) * width <= freeze):
                self._freeze(b)
        self._mark = max(_PRUNE_FLOOR, len(self._digests))

    def _freeze(self, b: int) -> None:
        """Move hot bucket ``b`` into the frozen tier (merged with what it held)."""
        digests = self._buckets.pop(b)
        self._digests.difference_update(digests)
        values = np.frombuffer(digests, dtype=np.uint64) if len(digests) else _NO_IDS
        frozen = self._frozen.get(b)
        if frozen is not None:
            self._frozen_n -= len(frozen)
            values = np.concatenate((frozen, values))
        values = np.sort(values)
        self._frozen[b] = values
        self._frozen_n += len(values)
        self._cold_end = max(self._cold_end, (b + 1) * self.width)

    # -- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Snapshot state: each bucket's digests as little-endian uint64 bytes, the hot
        buckets in ``buckets``, the frozen ones (sorted) in ``frozen``."""
        return {
            "width": self.width,
            "mark": self._mark,
            "buckets": [[b, _packed(v)] for b, v in sorted(self._buckets.items())],
            "frozen": [[b, v.astype("<u8").tobytes()] for b, v in sorted(self._frozen.items())],
            "pinned": sorted(self._pinned),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SeenIds:
        seen = cls(state["width"])
        for b, data in state["buckets"]:
            values = _unpacked(data)
            seen._buckets[b] = values
            seen._digests.update(values)
        for b, data in state.get("frozen", ()):  # absent before the frozen tier
            frozen = np.frombuffer(data, dtype="<u8").astype(np.uint64)
            seen._frozen[b] = frozen
            seen._frozen_n += len(frozen)
            seen._cold_end = max(seen._cold_end, (b + 1) * seen.width)
        seen._mark = state["mark"]
        seen._pinned = set(state.get("pinned", ()))  # absent before backfills
        return seen

    @classmethod
    def from_times(cls, times: dict[str, int], width: int = BUCKET) -> SeenIds:
        """Digests of an id -> event time mapping (a version-1 snapshot's dedupe memory)."""
        seen = cls(width)
        if times:
            ids = list(times)
            at = np.fromiter(times.values(), dtype=np.int64, count=len(times))
            seen.add(ids, at)
        seen._mark = max(_PRUNE_FLOOR, len(seen))
        return seen

    def buckets(self) -> dict[int, list[int]]:
        """Each bucket's digests (both tiers), sorted: for comparing engines in tests."""
        out: dict[int, list[int]] = {b: v.tolist() for b, v in self._frozen.items()}
        for b, v in self._buckets.items():
            out[b] = out.get(b, []) + list(v)
        return {b: sorted(v) for b, v in sorted(out.items())}

    def nbytes(self) -> dict[str, int]:
        """Bytes held, roughly: the hot set (its table and ints) with its bucket arrays,
        and the frozen arrays."""
        hot = sys.getsizeof(self._digests) + 32 * len(self._digests)
        hot += sum(v.buffer_info()[1] * v.itemsize + 64 for v in self._buckets.values())
        frozen = sum(v.nbytes + 112 for v in self._frozen.values())
        return {"hot": hot, "frozen": frozen}


def _holds(values: U64Array, value: np.uint64) -> bool:
    at = int(np.searchsorted(values, value))
    return at < len(values) and values[at] == value
