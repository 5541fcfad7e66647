"""The worker's transport-free core, without a broker: per-partition states with crashes,
replays and restores, merged from their partials, equal one engine over every event.
They need no broker, so they run in the fast suite.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import shutil
import subprocess
import zlib
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas import EventDecoder
from streams.engine.metrics import observe
from streams.runner import PULSE_END, PULSE_START, PulseRequest, encode_pulse_start
from streams.worker import records as rec
from streams.worker.merge import MergedView
from streams.worker.metrics import WorkerMetrics, gc_clock
from streams.worker.partition import PartitionState
from streams.worker.tables import CheckpointError, CheckpointStore
from tests.integration.worker_support import (
    TEST_CONFIG,
    Produced,
    engine_differences,
    make_stream,
    oracle,
)
from tests.streams.worker.record_support import Record


def partitioned(n: int, seed: int, partitions: int, span: timedelta = timedelta(hours=2),
                ) -> tuple[dict[int, list[Record]], list[Produced]]:
    items = make_stream(n, seed=seed, span=span)
    by_partition: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    produced = []
    for item in items:
        p = zlib.crc32(item.key or b"") % partitions
        offset = len(by_partition[p])
        by_partition[p].append(Record(offset, item.key, item.value))
        produced.append(Produced(item, p, offset))
    return by_partition, produced


def run_with_crashes(partition: int, records: list[Record], rng: random.Random,
                     sink: list[tuple[bytes, bytes | None]]) -> PartitionState:
    """Process in random batches; publish and checkpoint at random; crash at random.

    A crash throws the state away and restores the last checkpoint; the input is read
    again from the checkpoint's offset or from further back (a stale committed offset).
    Everything published stays published, as on a real topic.
    """
    state = PartitionState.fresh(partition, TEST_CONFIG)
    checkpoint: bytes | None = None
    position = 0
    crashes = 0
    while position < len(records):
        batch = records[position: position + rng.randint(1, 60)]
        state.process(batch)
        position = batch[-1].offset + 1
        if rng.random() < 0.5:
            sink.extend(state.partial_records())
        if rng.random() < 0.25:
            sink.extend(state.partial_records())  # partials are out before the checkpoint
            checkpoint = state.checkpoint()
        if rng.random() < 0.1 and crashes < 5:
            crashes += 1
            state = (PartitionState.fresh(partition, TEST_CONFIG) if checkpoint is None
                     else PartitionState.restore(partition, TEST_CONFIG, checkpoint))
            position = rng.randint(0, state.next_offset)
    sink.extend(state.partial_records())
    return state


@pytest.mark.parametrize(("seed", "hours"), [(1, 2), (2, 2), (3, 9), (4, 30)])
def test_states_with_crashes_merge_to_one_engine(seed: int, hours: int) -> None:
    """Over 9 and 30 hours, minute and hour buckets expire (tombstones) on the way."""
    rng = random.Random(seed)
    by_partition, produced = partitioned(1500, seed, 4, timedelta(hours=hours))
    published: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for p, records in by_partition.items():
        published[p] = []
        run_with_crashes(p, records, rng, published[p])
    # Partitions' records interleave arbitrarily; each partition's stay in order.
    tombstones = sum(1 for records in published.values() for _, v in records if v is None)
    assert tombstones > 0 or hours < 4
    view = MergedView(TEST_CONFIG)
    cursors = dict.fromkeys(published, 0)
    while any(cursors[p] < len(published[p]) for p in published):
        p = rng.choice([p for p in published if cursors[p] < len(published[p])])
        key, value = published[p][cursors[p]]
        view.apply(key, value)
        cursors[p] += 1
        if rng.random() < 0.02:
            view.engine()  # read on the way: the view is then updated in place
    want = oracle(TEST_CONFIG, produced)
    assert engine_differences(view.engine(), want, TEST_CONFIG) == []
    kinds: dict[str, int] = {}
    for item in produced:
        kinds[item.item.kind] = kinds.get(item.item.kind, 0) + 1
    got = view.counters()
    assert got["accepted"] == want.counters["accepted"] == kinds["valid"]
    assert got["duplicate"] == kinds["duplicate"]
    assert got["rejected"] == kinds["invalid"]
    assert view.source_offsets() == {p: len(r) for p, r in by_partition.items()}


def test_bucket_records_decode_each_key_once_and_round_trip() -> None:
    by_partition, _ = partitioned(300, 5, 1)
    state = PartitionState.fresh(0, TEST_CONFIG)
    state.process(by_partition[0])
    buckets = [(k, v) for k, v in state.partial_records()
               if v is not None and rec.parse_key(k).granularity != rec.META]
    assert buckets
    decoder = rec.BucketDecoder()
    engine = state.engine
    for key, value in buckets:
        pk = rec.parse_key(key)
        table = engine.granularities[pk.granularity].tables[pk.bucket]
        rows = decoder.decode(value)
        assert rows.keys == [engine.series.keys[s] for s in table.series[: len(table)]]
        assert rows.data.tobytes() == table.data[: len(table)].tobytes()
        assert rows.offset == state.next_offset
        again = decoder.decode(value)
        assert all(a is b for a, b in zip(again.keys, rows.keys, strict=True))  # remembered
        assert rec.decode_bucket(value).keys == rows.keys


def test_unreadable_partials_records_are_counted_not_fatal() -> None:
    by_partition, produced = partitioned(200, 3, 1)
    state = PartitionState.fresh(0, TEST_CONFIG)
    state.process(by_partition[0])
    view = MergedView(TEST_CONFIG)
    foreign = rec._encoder.encode({"v": rec.FORMAT_VERSION + 1, "offset": 1})
    for key, value in [(b"0/60s/1", b"\xc1 not msgpack"), (b"0/60s/2", foreign),
                       (b"0/meta", foreign), (b"0/meta", b"[]"), (b"0/3600s/3", b"\x01")]:
        view.apply(key, value)
    assert view.records_ignored == 5
    for key, value in state.partial_records():
        view.apply(key, value)
    assert engine_differences(view.engine(), oracle(TEST_CONFIG, produced), TEST_CONFIG) == []


def test_a_stale_writer_cannot_roll_a_bucket_back() -> None:
    by_partition, produced = partitioned(300, 7, 1)
    records = by_partition[0]
    state = PartitionState.fresh(0, TEST_CONFIG)
    state.process(records[:100])
    old = state.partial_records()
    state.process(records[100:])
    new = state.partial_records()
    view = MergedView(TEST_CONFIG)
    for key, value in new + old:  # the old state arrives last, as from a zombie
        view.apply(key, value)
    assert engine_differences(view.engine(), oracle(TEST_CONFIG, produced), TEST_CONFIG) == []
    assert view.records_ignored > 0


def test_dead_letters_keep_bytes_and_say_why() -> None:
    state = PartitionState.fresh(3, TEST_CONFIG)
    report = state.process([Record(0, b"k", b'{"kind": "csat"', 1234, (("h", b"v"),)),
                            Record(1, b"k", None)])
    assert [d.kind for d in report.dead_letters] == ["invalid", "invalid"]
    first = report.dead_letters[0]
    headers = dict(first.dlq_headers("touchpoints", 3))
    assert first.value == b'{"kind": "csat"' and first.timestamp_ms == 1234
    assert headers["h"] == b"v"
    assert headers[rec.H_FIELD] == b"$" and headers[rec.H_KIND] == b"invalid"
    assert headers[rec.H_PARTITION] == b"3" and headers[rec.H_OFFSET] == b"0"
    assert headers[rec.H_REASON].startswith(b"not valid JSON")
    assert state.next_offset == 2
    assert state.process([Record(1, b"k", None)]).skipped == 1


# -- checkpoints over a changelog ---------------------------------------------------------


class FakeStore:
    """What CheckpointStore uses of a Faust store: get and apply_changelog_batch."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        for event in batch:
            if event.message.value is None:
                self.data.pop(to_key(event.key), None)
            else:
                self.data[to_key(event.key)] = to_value(event.value)


class FakeTopic:
    def get_topic_name(self) -> str:
        return "app-checkpoints-changelog"


class FakeTable:
    def __init__(self) -> None:
        self.data = FakeStore()
        self.changelog_topic = FakeTopic()

    def _to_key(self, k: Any) -> Any:
        return k

    def _to_value(self, v: Any) -> Any:
        return v


class Changelog:
    """A compaction-free log; ``fail_after`` makes the n-th send raise (a crash)."""

    def __init__(self) -> None:
        self.log: list[tuple[int, bytes, bytes | None]] = []
        self.fail_after: int | None = None

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int) -> int:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise ConnectionError("broker gone")
            self.fail_after -= 1
        self.log.append((partition, key, value))
        return len(self.log) - 1

    def recover(self) -> FakeTable:
        """A new table filled from the log, as Faust's recovery does."""
        table = FakeTable()
        for _, key, value in self.log:
            if value is None:
                table.data.data.pop(key, None)
            else:
                table.data.data[key] = value
        return table


def test_large_checkpoints_are_chunked_and_replaced_atomically() -> None:
    changelog = Changelog()
    store = CheckpointStore(FakeTable(), changelog.send, chunk_bytes=1024)
    first = bytes(random.Random(1).randbytes(5000))
    second = bytes(random.Random(2).randbytes(3000))
    asyncio.run(store.write(2, 100, first))
    assert store.read(2) == first and store.stored_offset(2) == 100
    assert store.read(1) is None
    asyncio.run(store.write(2, 200, second))
    assert store.read(2) == second and store.stored_offset(2) == 200
    # The first generation's five chunks were tombstoned after the new manifest.
    assert sum(1 for _, _, v in changelog.log if v is None) == 5
    assert CheckpointStore(changelog.recover(), changelog.send, 1024).read(2) == second
    # A crash after some chunks of a third checkpoint leaves the second one readable,
    # locally and after recovery from the changelog.
    changelog.fail_after = 2
    with pytest.raises(ConnectionError):
        asyncio.run(store.write(2, 300, bytes(4000)))
    assert store.read(2) == second
    assert CheckpointStore(changelog.recover(), changelog.send, 1024).read(2) == second
    # Small checkpoints travel inline in the manifest.
    changelog.fail_after = None
    asyncio.run(store.write(2, 400, b"small"))
    assert store.read(2) == b"small" and store.stored_offset(2) == 400


def test_a_checkpoint_with_a_lost_chunk_is_an_error_not_a_silent_reset() -> None:
    changelog = Changelog()
    table = FakeTable()
    store = CheckpointStore(table, changelog.send, chunk_bytes=1024)
    asyncio.run(store.write(0, 10, bytes(3000)))
    chunk = next(k for k in table.data.data if k.count(b"/") == 2)
    del table.data.data[chunk]
    with pytest.raises(CheckpointError, match="lacks chunk"):
        store.read(0)


def _control(offset: int, command: str, payload: bytes) -> Record:
    return Record(offset, None, payload, None, ((rec.H_CONTROL, command.encode()),))


@pytest.mark.parametrize("seed", [5, 6])
def test_pulse_studies_count_between_their_control_records_despite_crashes(seed: int) -> None:
    """A study starts and ends at a control record in every partition; whatever the
    batching, crashes and interleaving, the merged study counts exactly the valid,
    first-seen matching events that sit between the two records in each partition."""
    rng = random.Random(seed)
    by_partition, produced = partitioned(1200, seed, 3)
    request = PulseRequest("chat-study", "Chat, þriðjudagur", {"channel": ["chat"]},
                           0, 2_000_000_000, 0, 1)
    start_payload = encode_pulse_start(request)
    decoder = EventDecoder()
    want: dict[str, list[float]] = {}
    published: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for p, records in by_partition.items():
        kinds = {x.offset: x.item.kind for x in produced if x.partition == p}
        first, last = len(records) // 3, 2 * len(records) // 3
        for position, record in enumerate(records[first:last], start=first):
            if kinds[position] != "valid" or record.value is None:
                continue
            event = decoder.decode(record.value)
            if event.channel == "chat":
                o = observe(event)
                n_sum = want.setdefault(o.metric, [0.0, 0.0])
                if o.scored:  # "not applicable" answers are counted apart
                    n_sum[0] += 1
                    n_sum[1] += o.value
        laid = (records[:first] + [_control(0, PULSE_START, start_payload)]
                + records[first:last] + [_control(0, PULSE_END, b"chat-study")]
                + records[last:]
                + [_control(0, PULSE_START, start_payload)])  # the id exists: refused
        laid = [Record(i, r.key, r.value, r.timestamp, r.headers) for i, r in enumerate(laid)]
        published[p] = []
        state = run_with_crashes(p, laid, rng, published[p])
        assert state.engine.pulses["chat-study"].ended_at is not None
    view = MergedView(TEST_CONFIG)
    for p in rng.sample(sorted(published), len(published)):
        for key, value in published[p]:
            view.apply(key, value)
    study = view.engine().pulses["chat-study"]
    assert study.name == "Chat, þriðjudagur" and not study.active
    got = {m: [float(v[0]), float(v[1])] for m, v in study.study.items()}
    assert sorted(got) == sorted(want)
    for metric, (n, total) in want.items():
        assert got[metric][0] == n, metric
        assert got[metric][1] == pytest.approx(total), metric
    assert study.baseline == {}


def test_a_control_record_that_cannot_apply_is_a_dead_letter_with_its_reason() -> None:
    state = PartitionState.fresh(0, TEST_CONFIG)
    report = state.process([
        _control(0, PULSE_END, b"nobody"),
        _control(1, "pulse_pause", b"x"),
        _control(2, PULSE_START, b"{not json"),
    ])
    assert report.commands == 0 and state.next_offset == 3
    assert [(d.offset, d.kind, d.field) for d in report.dead_letters] == [
        (0, "bad_command", "control.pulse_id"), (1, "bad_command", "control.command"),
        (2, "bad_command", "control.pulse")]
    assert "nobody" in report.dead_letters[0].reason


def test_worker_metrics_are_bounded_and_pass_promtool() -> None:
    """One series per outcome and per owned partition; Prometheus's linter is content."""
    class Processor:
        totals = {"accepted": 7, "late": 2, "rejected": 1, "commands": 3}
        states = {p: PartitionState.fresh(p, TEST_CONFIG) for p in range(3)}

    metrics = WorkerMetrics()
    metrics.watch(Processor())
    metrics.batch_seconds.observe(0.004)
    before = gc_clock().collections[2]
    gc.collect()  # timed by the process's one clock, whoever started it
    assert gc_clock().collections[2] == before + 1 and gc_clock().seconds[2] > 0
    text = generate_latest(metrics.registry).decode()
    samples = {(s.name, tuple(s.labels.values())): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("touchstream_worker_records_total", ("command",))] == 3
    assert samples[("touchstream_worker_dead_letters_total", ())] == 3
    assert samples[("touchstream_worker_partitions", ())] == 3
    assert samples[("touchstream_worker_gc_seconds_total", ("2",))] > 0
    assert {k[1] for k in samples if k[0] == "touchstream_worker_input_offset"} == {
        ("0",), ("1",), ("2",)}
    tool = shutil.which("promtool")
    if tool is None:
        assert os.environ.get("CI") != "true", "promtool missing (apt-get install prometheus)"
        pytest.skip("promtool not installed (apt-get install prometheus)")
    checked = subprocess.run([tool, "check", "metrics"], input=text.encode(),
                             capture_output=True, timeout=60, check=False)
    assert (checked.returncode, checked.stdout) == (0, b""), checked.stderr


def test_the_merged_view_updated_in_place_equals_one_built_from_scratch() -> None:
    """Read after every few records: the view kept up to date in place answers exactly
    as a view that applies the same records from nothing (buckets, latest event times,
    watermark, counters, folded values)."""
    rng = random.Random(11)
    by_partition, _ = partitioned(900, 11, 3, timedelta(hours=30))
    published: list[tuple[bytes, bytes | None]] = []
    for p, records in by_partition.items():
        sink: list[tuple[bytes, bytes | None]] = []
        run_with_crashes(p, records, rng, sink)
        published += sink
    rng.shuffle(published)  # partitions' records interleave; order within one is lost
    # (out-of-order records of one partition are refused by offset, in both views)
    view = MergedView(TEST_CONFIG)
    for i, (key, value) in enumerate(published):
        view.apply(key, value)
        if i % 97 == 0 or i == len(published) - 1:
            fresh = MergedView(TEST_CONFIG)
            for k, v in published[: i + 1]:
                fresh.apply(k, v)
            got, want = view.engine(), fresh.engine()
            assert engine_differences(got, want, TEST_CONFIG) == [], i
            latest = {k: int(got.latest[s]) for s, k in enumerate(got.series.keys)}
            assert latest == {k: int(want.latest[s]) for s, k in enumerate(want.series.keys)}
            assert (got.counters, got.folded()) == (want.counters, want.folded())
            for family, window, scope in (("continuous", "1h", ("channel",)),
                                          ("periodic", "day", None)):
                # the same questions at every read: never a memo of an earlier view
                assert (got.scores(family, window, scope=scope)
                        == want.scores(family, window, scope=scope)), (i, window)
    assert view.rebuilds < len(published)  # reads re-summed only what changed
