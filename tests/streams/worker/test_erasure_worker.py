"""Erasure on the Kafka worker without a broker (issue 21, item 1): the ``erase`` control
record applies where it sits in the partition, crashes and replays included; the
checkpoint holds no byte of the customer afterwards and the partials (every score) are
those of a run without the erasure; the batch's follow-ups go out scrubbed; a RocksDB
store compacted after the checkpoint keeps no byte of the replaced one."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.detection import FollowUpRule, is_scrubbed
from streams.runner import ERASE, ErasureRequest, encode_erase
from streams.worker import records as rec
from streams.worker.agents import erasures
from streams.worker.merge import MergedView
from streams.worker.partition import PartitionState
from streams.worker.tables import CheckpointStore, manifest_offset
from tests.integration.worker_support import TEST_CONFIG, engine_differences
from tests.streams.worker.record_support import Record

CUSTOMER = "kúnni-Þórunn-客户-0042"
COMMENT = "Hringið í mig, Þórunn Jónsdóttir, +354 555 1234 — 电话很差"




def _events(n: int, seed: int, until: int = 250) -> list[bytes]:
    """``n`` events, the erased customer's among the first ``until``."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    out = []
    for i in range(n):
        other = f"cus-{rng.randrange(30)}"
        customer = CUSTOMER if i % 5 == 0 and i < until else other
        event: dict[str, Any] = {
            "event_id": f"evt-{seed}-{i}", "customer_id": customer, "kind": "nps",
            "value": rng.randint(0, 10), "occurred_at": (start + timedelta(seconds=10 * i))
            .isoformat(), "touchpoint": "survey", "channel": rng.choice(("web", "chat")),
            "segment": "smb", "journey_id": f"j-{customer}-{i // 40}",
            "journey_type": "support"}
        if customer == CUSTOMER:
            event["comment"] = COMMENT
        out.append(json.dumps(event, ensure_ascii=False).encode())
    return out


def _erase_record(offset: int) -> Record:
    request = ErasureRequest.new(CUSTOMER, "dpo", b"key")
    return Record(offset, None, encode_erase(request), None,
                  ((rec.H_CONTROL, ERASE.encode()),))


def _laid_out(values: list[bytes], erase_at: int | None) -> list[Record]:
    records: list[Any] = [Record(0, None, v) for v in values]
    if erase_at is not None:
        records.insert(erase_at, None)
    out = []
    for offset, record in enumerate(records):
        out.append(_erase_record(offset) if record is None
                   else Record(offset, record.value.decode().split('"customer_id": "')[1]
                               .split('"')[0].encode(), record.value))
    return out


def _run(records: list[Record], seed: int, sink: list[tuple[bytes, bytes | None]],
         ) -> PartitionState:
    """Random batches, random checkpoints and crashes (restores and re-reads)."""
    rng = random.Random(seed)
    state = PartitionState.fresh(0, TEST_CONFIG)
    checkpoint: bytes | None = None
    position, crashes = 0, 0
    while position < len(records):
        batch = records[position: position + rng.randint(1, 50)]
        state.process(batch)
        position = batch[-1].offset + 1
        if rng.random() < 0.3:
            sink.extend(state.partial_records())
            checkpoint = state.checkpoint()
        if rng.random() < 0.1 and crashes < 4:
            crashes += 1
            state = (PartitionState.fresh(0, TEST_CONFIG) if checkpoint is None
                     else PartitionState.restore(0, TEST_CONFIG, checkpoint))
            position = rng.randint(0, state.next_offset)
    sink.extend(state.partial_records())
    return state


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_erasure_applies_in_order_and_leaves_the_scores(seed: int) -> None:
    values = _events(400, seed)
    erase_at = 250
    plain_sink: list[tuple[bytes, bytes | None]] = []
    plain = _run(_laid_out(values, None), seed, plain_sink)
    sink: list[tuple[bytes, bytes | None]] = []
    erased = _run(_laid_out(values, erase_at), seed, sink)
    assert CUSTOMER.encode() in plain.checkpoint()

    checkpoint = erased.checkpoint()
    for needle in (CUSTOMER, COMMENT, "Þórunn", "555 1234"):
        assert needle.encode() not in checkpoint, needle
    for _, value in sink:  # partials never carried them
        assert value is None or CUSTOMER.encode() not in value
    assert erased.engine.customers.get(CUSTOMER) is None
    # The same aggregates as without the erasure: every score, every counter.
    views = []
    for records in (plain_sink, sink):
        view = MergedView(TEST_CONFIG)
        for key, value in records:
            view.apply(key, value)
        views.append(view)
    theirs = sum(1 for j in plain.engine.journeys.open.values() if j.customer_id == CUSTOMER)
    assert theirs  # their open journeys are gone: they will never end and count
    got, want = views[1].engine(), views[0].engine()
    assert got.journeys.open_count == want.journeys.open_count - theirs
    assert [d for d in engine_differences(got, want, TEST_CONFIG)
            if not d.startswith("open journeys")] == []
    assert {k: v for k, v in views[1].counters().items()} == \
        {k: v for k, v in views[0].counters().items()}
    # Deterministic: one pass without crashes gives the same customers and journeys.
    straight = PartitionState.fresh(0, TEST_CONFIG)
    straight.process(_laid_out(values, erase_at))
    for book in (straight.engine.customers, erased.engine.customers):
        assert CUSTOMER not in book
    assert {c: straight.engine.customers.get(c) for c in straight.engine.customers.customers} \
        == {c: erased.engine.customers.get(c) for c in erased.engine.customers.customers}
    assert straight.engine.journeys.state() == erased.engine.journeys.state()


def test_the_batch_finds_its_erasures_and_scrubs_its_followups() -> None:
    records = _laid_out(_events(60, 7), 30)
    state = PartitionState.fresh(0, TEST_CONFIG)
    state.followup_rules = (FollowUpRule(name="detractors", kinds=("nps",),
                                         condition="detractor"),)
    report = state.process(records)
    assert report.commands == 1
    found = erasures(records, 0, state.next_offset)
    assert [e.customer_id for e in found] == [CUSTOMER]
    assert found[0].digest.startswith("hmac-sha256:")
    assert erasures(records, 0, 30) == []  # not applied yet: not an erasure of this batch
    assert erasures(records, 31, 61) == []  # applied by an earlier batch
    bad = Record(99, None, b"{}", None, ((rec.H_CONTROL, ERASE.encode()),))
    assert erasures([bad], 0, 100) == []  # a bad command is a dead letter, not an erasure
    theirs = [f for f in report.followups if f.customer_id == CUSTOMER]
    assert theirs  # the worker scrubs these before it publishes them (agents.handle)
    from streams.detection import scrubbed
    assert all(is_scrubbed(scrubbed(f)) for f in theirs)


def test_manifests_are_read_from_the_changelog() -> None:
    from streams.worker.tables import Manifest, _encode_manifest

    value = _encode_manifest(Manifest(42, "g", 0, 3, "x", b"abc"))
    assert manifest_offset(b"3", value) == (3, 42)
    assert manifest_offset(b"3/g/0", b"chunk") is None
    assert manifest_offset(b"3", None) is None
    assert manifest_offset(b"3", b"garbage") is None


class _Table:
    def __init__(self, data: Any) -> None:
        self.data = data


class _Data:
    def __init__(self, dbs: dict[int, Any]) -> None:
        self._dbs = dbs


def _holds(directory: Path, needle: bytes) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_rocksdb_store_keeps_no_byte_of_a_replaced_checkpoint(tmp_path: Path) -> None:
    rocksdict = pytest.importorskip("rocksdict")
    db = rocksdict.Rdict(str(tmp_path / "db"), options=rocksdict.Options(raw_mode=True))
    try:
        secret = CUSTOMER.encode() + COMMENT.encode()
        db[b"0"] = b"old checkpoint " + secret * 10
        db.flush(True)  # in a table file, and the next value too
        db[b"0"] = b"new checkpoint, erased"
        db.flush(True)
        db[b"1"] = b"another partition"
        assert _holds(tmp_path, CUSTOMER.encode())  # the old value is still on disk
        store = CheckpointStore(_Table(_Data({0: db})), None, 1 << 20)  # type: ignore[arg-type]
        assert store.compact_local(0) is True
        assert store.compact_local(5) is False
        assert _holds(tmp_path, CUSTOMER.encode()) == []
        assert _holds(tmp_path, "Þórunn".encode()) == []
        assert db[b"0"] == b"new checkpoint, erased"
        assert db[b"1"] == b"another partition"
    finally:
        db.close()
    memory = CheckpointStore(_Table(object()), None, 1 << 20)  # type: ignore[arg-type]
    assert memory.compact_local(0) is False
