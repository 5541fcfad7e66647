"""``SeenIds``: the engine's dedupe memory of event-id digests, bucketed by event time."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import msgspec
import numpy as np
import pytest
from engine_reference import BASE, make_event

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig
from streams.engine.dedupe import BUCKET, SeenIds, bucket_width, digest
from streams.engine.engine import SNAPSHOT_VERSION, Engine

T0 = 1_774_648_800  # BASE as epoch seconds, a whole hour
HOUR = 3600


def times(*at: int) -> np.ndarray:
    return np.array(at, dtype=np.int64)


def ev(event_id: str, at: int) -> TouchpointEvent:
    return make_event(event_id=event_id, occurred_at=BASE + timedelta(seconds=at))


def test_membership_and_length() -> None:
    seen = SeenIds()
    assert seen.add(["a", "b", "c"], times(T0, T0 + 5000, T0 - 10)) is None
    assert len(seen) == 3
    assert "a" in seen and "b" in seen and "c" in seen
    assert "d" not in seen
    assert 1 not in seen  # only strings are event ids
    assert seen.add([], times()) is None
    assert len(seen) == 3


def test_duplicates_in_and_across_batches() -> None:
    seen = SeenIds()
    assert seen.add(["a", "b"], times(T0, T0)) is None
    assert seen.add(["c", "a", "c", "d"], times(T0, T0, T0 + 1, T0 + HOUR)) == [
        True, False, False, True]
    assert len(seen) == 4
    # only the new ones were filed, each in the bucket of its own time
    assert seen.buckets() == {
        T0 // HOUR: sorted(digest(i) for i in "abc"), T0 // HOUR + 1: [digest("d")]}


def test_digests_are_filed_by_bucket_of_event_time() -> None:
    seen = SeenIds()
    ids = [f"e-{i}" for i in range(50)]
    at = [T0 + 977 * i - 20_000 for i in range(50)]
    random.Random(3).shuffle(at)
    seen.add(ids, np.array(at, dtype=np.int64))
    expected: dict[int, list[int]] = {}
    for event_id, t in zip(ids, at, strict=True):
        expected.setdefault(t // HOUR, []).append(digest(event_id))
    assert seen.buckets() == {b: sorted(v) for b, v in sorted(expected.items())}


def test_bucket_width_is_an_hour_or_the_horizon() -> None:
    assert bucket_width(7 * 86_400) == BUCKET == HOUR
    assert bucket_width(60) == 60
    assert bucket_width(0) == 1
    assert Engine(EngineConfig(scopes=((),))).seen.width == HOUR
    with pytest.raises(ValueError, match="positive"):
        SeenIds(0)


@pytest.mark.parametrize("seed", range(5))
def test_pruning_never_forgets_an_id_younger_than_the_horizon(seed: int) -> None:
    rng = random.Random(seed)
    seen = SeenIds()
    span = 10 * HOUR
    ats: dict[str, int] = {}
    for b in range(6):
        batch = {f"s{seed}-{b}-{i}": T0 + rng.randrange(span) for i in range(800)}
        seen.add(list(batch), np.fromiter(batch.values(), dtype=np.int64))
        ats.update(batch)
    horizon = T0 + rng.randrange(span)
    seen.prune(horizon)  # 4,800 ids >= 2 x 1024: the prune runs
    for event_id, at in ats.items():
        if at >= horizon:
            assert event_id in seen
        # forgotten exactly when its whole bucket lies before the horizon
        assert (event_id in seen) == ((at // HOUR + 1) * HOUR > horizon)
    assert len(seen) == sum(len(v) for v in seen.buckets().values())


def test_pruning_is_lazy() -> None:
    seen = SeenIds()
    seen.add([f"a-{i}" for i in range(2000)], np.full(2000, T0, dtype=np.int64))
    seen.prune(T0 + 10 * HOUR)  # fewer than 2 x 1024 ids: nothing forgotten yet
    assert len(seen) == 2000
    seen.add([f"b-{i}" for i in range(100)], np.full(100, T0 + 20 * HOUR, dtype=np.int64))
    seen.prune(T0 + 10 * HOUR)
    assert len(seen) == 100
    assert "a-0" not in seen and "b-0" in seen


@pytest.mark.parametrize(("horizon", "kept"), [
    (T0 + 2999, 3000),  # all but the last are older than the horizon, but the hour is not
    (T0 + HOUR, 0),  # the hour has ended: forgotten
])
def test_a_bucket_straddling_the_horizon_is_kept_whole(horizon: int, kept: int) -> None:
    seen = SeenIds()
    seen.add([f"x-{i}" for i in range(3000)], T0 + np.arange(3000, dtype=np.int64))
    seen.prune(horizon)
    assert len(seen) == kept == sum(len(v) for v in seen.buckets().values())


def test_state_round_trip() -> None:
    seen = SeenIds(600)
    seen.add([f"r-{i}" for i in range(3000)], T0 + 7 * np.arange(3000, dtype=np.int64))
    seen.prune(T0 + 6000)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(seen.state()))
    # each bucket's digests are raw little-endian uint64 bytes
    assert all(len(data) == 8 * len(seen.buckets()[b]) for b, data in state["buckets"])
    back = SeenIds.from_state(state)
    assert back.width == 600
    assert back.buckets() == seen.buckets()
    assert back.state() == seen.state()
    assert all((f"r-{i}" in back) == (f"r-{i}" in seen) for i in range(3000))
    assert len(back) == len(seen)


def test_engine_snapshot_round_trip_keeps_the_dedupe_memory() -> None:
    config = EngineConfig(scopes=((),))
    engine = Engine(config)
    engine.ingest([ev(f"e-{i}", 60 * i) for i in range(100)])
    data = engine.snapshot()
    assert msgspec.msgpack.decode(data)["version"] == SNAPSHOT_VERSION == 3
    resumed = Engine.restore(config, data)
    assert resumed.seen.buckets() == engine.seen.buckets()
    result = resumed.ingest([ev("e-5", 300), ev("new", 6000)])
    assert ([e.event_id for e in result.duplicates], result.accepted) == (["e-5"], 1)


def _as_version_1(engine: Engine, ats: dict[str, int]) -> bytes:
    """The engine's snapshot as version 1 wrote it: the dedupe memory as id -> time."""
    state = msgspec.msgpack.decode(engine.snapshot())
    state["version"] = 1
    state["seen"] = ats
    return msgspec.msgpack.encode(state)


def test_a_version_1_snapshot_restores() -> None:
    config = EngineConfig(scopes=((),))
    engine = Engine(config)
    ats = {f"v-{i}": T0 + 97 * i for i in range(300)}
    engine.ingest([ev(event_id, at - T0) for event_id, at in ats.items()])
    resumed = Engine.restore(config, _as_version_1(engine, ats))
    assert resumed.seen.buckets() == engine.seen.buckets()
    assert len(resumed.seen) == 300 and "v-7" in resumed.seen
    result = resumed.ingest([ev("v-7", 97 * 7), ev("v-new", 97 * 300)])
    assert ([e.event_id for e in result.duplicates], result.accepted) == (["v-7"], 1)
    assert resumed.counters == engine.counters + Counter(accepted=1, duplicate=1)
    # and it is written back as the current version
    again = Engine.restore(config, resumed.snapshot())
    assert again.seen.buckets() == resumed.seen.buckets()


def test_an_unknown_snapshot_version_is_refused() -> None:
    config = EngineConfig(scopes=((),))
    state = msgspec.msgpack.decode(Engine(config).snapshot())
    state["version"] = 99
    with pytest.raises(ValueError, match="snapshot version 99"):
        Engine.restore(config, msgspec.msgpack.encode(state))
