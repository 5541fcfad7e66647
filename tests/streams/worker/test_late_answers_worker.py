"""A night's export on the Kafka runner's transport-free core: yesterday's answers, sent
after today's live traffic, counted in every partition's state, published again as
absolute partials, merged, and equal to a fresh engine fed every answer in time order.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import EventDecoder
from streams.engine.engine import Engine, event_seconds
from streams.worker import records as rec
from streams.worker.merge import MergedView
from streams.worker.partition import PartitionState
from tests.integration.worker_support import TEST_CONFIG, engine_differences
from tests.streams.worker.record_support import Record

PARTITIONS = 3




def answer(i: int, at: datetime, prefix: str) -> dict[str, Any]:
    return {"event_id": f"{prefix}-{i}", "occurred_at": at.isoformat(),
            "customer_id": f"cus-{i % 97}", "channel": ("chat", "email", "sms")[i % 3],
            "segment": ("smb", "enterprise")[i % 2], "touchpoint": "support",
            "kind": "csat", "value": 1 + i % 5}


def test_a_nights_export_counts_on_every_partition_and_in_the_merge() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    midnight = now.replace(hour=0, minute=0, second=0)
    # "today" starts at least 4 hours before now: the export's last minutes are then
    # older than the 181 minutes of 60-s buckets the engine keeps (so they go out again
    # as hours and the day only)
    today = midnight if now - midnight > timedelta(hours=4) else midnight - timedelta(days=1)
    # Live traffic from the start of "today" up to now (at least 4 hours; when now is
    # in the first 4 hours after midnight, "today" is the day before, up to its end),
    # then the export of the day before, hours late.
    live_end = min(now - timedelta(minutes=5), today + timedelta(days=1, seconds=-1))
    live_span = (live_end - today).total_seconds()
    live = [answer(i, today + timedelta(seconds=live_span * i / 600), "live")
            for i in range(600)]
    export = [answer(i, today - timedelta(days=1) + timedelta(seconds=86_399 * i / 900),
                     "night") for i in range(900)]
    by_partition: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for event in live + export:
        key = event["customer_id"].encode()
        p = zlib.crc32(key) % PARTITIONS
        by_partition[p].append(Record(len(by_partition[p]), key, json.dumps(event).encode()))

    view = MergedView(TEST_CONFIG)
    states = {}
    republished: set[str] = set()
    for p, records in by_partition.items():
        state = states[p] = PartitionState.fresh(p, TEST_CONFIG)
        cut = sum(1 for r in records if json.loads(r.value or b"")["event_id"]
                  .startswith("live"))
        for lo in range(0, cut, 50):  # live traffic, published as it goes
            state.process(records[lo:min(lo + 50, cut)])
            for key, value in state.partial_records():
                view.apply(key, value)
        view.engine()  # read before the export arrives
        for lo in range(cut, len(records), 70):  # the night's export, after
            report = state.process(records[lo:lo + 70])
            assert (report.late, report.duplicates, report.dead_letters) == (0, 0, [])
            for key, value in state.partial_records():
                parsed = rec.parse_key(key)
                if parsed.granularity != rec.META and value is not None:
                    republished.add(f"{parsed.granularity}/{parsed.bucket}")
                view.apply(key, value)

    # Yesterday's buckets went out again: hours and the day (not the minutes: too old).
    yesterday = int((today - timedelta(days=1)).timestamp())
    assert f"3600s/{yesterday // 3600 + 5}" in republished
    assert f"day/{yesterday // 86_400}" in republished
    assert not any(b.startswith("60s/") and int(b[4:]) < yesterday // 60 + 1440
                   for b in republished)

    decoder = EventDecoder()
    events = sorted((decoder.decode(json.dumps(e).encode()) for e in live + export),
                    key=event_seconds)
    oracle = Engine(TEST_CONFIG)
    oracle.ingest(events)
    merged = view.engine()
    assert engine_differences(merged, oracle, TEST_CONFIG, journeys=False) == []
    assert sum(s.engine.counters["accepted"] for s in states.values()) == 1500
    assert view.counters()["late"] == 0

    # The merged view says the day was revised, as the partitions' engines do.
    label = (today - timedelta(days=1)).date().isoformat()
    [day] = merged.scores("periodic", "day", period=label, metric="csat")
    assert (day.score.n, day.late_answers) == (900, 900)
    newest = max(datetime.fromtimestamp(s.engine.watermark or 0, UTC) for s in
                 states.values())
    assert day.revised_at is not None and day.revised_at <= newest
    parts = [s.engine.scores("periodic", "day", period=label, metric="csat")
             for s in states.values()]
    assert sum(p[0].late_answers for p in parts if p) == 900
    assert day.revised_at == max(p[0].revised_at for p in parts if p and p[0].revised_at)
    by_channel = merged.scores("periodic", "day", period=label, scope=("channel",),
                               metric="csat")
    assert sorted((s.scope["channel"], s.late_answers) for s in by_channel) == [
        ("chat", 300), ("email", 300), ("sms", 300)]
    [live_day] = merged.scores("periodic", "day", period=today.date().isoformat(),
                               metric="csat")
    assert (live_day.score.n, live_day.late_answers) == (600, 0)


def test_late_counters_survive_a_checkpoint_and_old_readers_ignore_them() -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    records = [Record(i, b"k", json.dumps(answer(i, now - timedelta(seconds=i), "a")).encode())
               for i in range(20)]
    records += [Record(20 + i, b"k", json.dumps(answer(i, now - timedelta(days=3), "b"))
                       .encode()) for i in range(5)]
    state = PartitionState.fresh(0, TEST_CONFIG)
    state.process(records)
    restored = PartitionState.restore(0, TEST_CONFIG, state.checkpoint())
    [a] = state.engine.scores("continuous", "7d", metric="csat")
    [b] = restored.engine.scores("continuous", "7d", metric="csat")
    assert (a.late_answers, a.revised_at) == (b.late_answers, b.revised_at)
    assert a.late_answers == 5
    # A bucket record with counters decodes; one without (an older worker) too.
    bucket = int((now - timedelta(days=3)).timestamp()) // 3600
    table = state.engine.granularities["3600s"].tables[bucket]
    keys = [state.engine.series.keys[s] for s in table.series[: len(table)]]
    with_counters = rec.encode_bucket(25, keys, table.data[: len(table)], table.late,
                                      table.revised)
    rows = rec.decode_bucket(with_counters)
    assert rows.late is not None and int(rows.late.sum()) == 5 * len(TEST_CONFIG.scopes)
    assert rec.decode_bucket(rec.encode_bucket(25, keys, table.data[: len(table)])).late is None
