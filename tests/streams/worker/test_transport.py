"""The batch fetch loop's positioning rules, without a broker: a fetched batch that is
not delivered is fetched again, a batch that predates a seek never skips past it, and
every partition of a batch topic goes where its state says after a recovery.

The consumer is the real ``BatchConsumer``; only the fetch (``_wait_next_records``) and
the aiokafka thread beneath it (seek, assignment) are scripted. The kill test on a real
broker (tests/integration/test_worker_random_kills.py) covers the same paths end to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

from streams.worker.transport import BatchConsumer


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    offset: int


def batch(first: int, n: int = 3) -> list[Record]:
    return [Record(first + i) for i in range(n)]


@dataclass
class Thread:
    """The aiokafka consumer thread: where each partition was sought."""

    assigned: set[TP]
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    in_thread: bool = False

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        self.in_thread = True
        try:
            return await fun(*args)
        finally:
            self.in_thread = False

    def seek(self, tp: TP, offset: int) -> None:
        # aiokafka's seek drops fetched records: only the consumer thread may call it.
        assert self.in_thread, "seek called outside the consumer thread"
        self.seeks.append((tp, offset))

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int:
        return 100

    async def seek_to_committed(self) -> dict[TP, int]:
        return {}


class ScriptedConsumer(BatchConsumer):
    """``BatchConsumer`` whose fetches return scripted rounds, then stop the loop."""

    def __init__(self, rounds: list[tuple[dict[TP, list[Record]], set[TP]]],
                 assigned: set[TP], between: Any = None) -> None:
        # Not Faust's __init__: only what the fetch loop reads.
        self.batch_handlers = {}
        self.positioners = {}
        self.fetch_seconds = self.idle_seconds = 0.0
        self.rewinds = 0
        self._seeks = 0
        self._last_seek = {}
        self._thread = Thread(assigned)  # type: ignore[assignment]
        self._read_offset = {}  # type: ignore[assignment]
        self._buffered_partitions = set()
        self._stopped = asyncio.Event()  # type: ignore[assignment]
        self._crashed = asyncio.Event()  # type: ignore[assignment]
        self.flow_active = True
        self.log = SimpleNamespace(dev=lambda *a, **k: None)  # type: ignore[assignment]
        self.app = SimpleNamespace(  # type: ignore[assignment]
            consumer_generation_id=1, should_stop=False,
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, hw: None))
        self.transport = SimpleNamespace(app=self.app)  # type: ignore[assignment]
        self.delivered: list[tuple[TP, int]] = []
        self._rounds = rounds
        self._between = between

    async def callback(self, message: Any) -> None:  # type: ignore[override]
        raise AssertionError("only batch topics in these tests")

    async def _wait_next_records(self, timeout: float) -> Any:
        if not self._rounds:
            self._stopped.set()
            return {}, set()
        records, active = self._rounds.pop(0)
        if self._between is not None:  # something that happens while the fetch waits
            await self._between(self)
            self._between = None
        return records, active

    async def drain(self) -> None:
        await self._drain_messages(SimpleNamespace(_stopped=asyncio.Event()))


def handler_into(consumer: ScriptedConsumer, *, take: bool = True) -> Any:
    async def handle(tp: TP, records: Sequence[Record], generation: int) -> bool:
        consumer.delivered.append((tp, records[0].offset))
        return take
    return handle


A0, A1 = TP("in", 0), TP("in", 1)


async def test_a_delivered_batch_is_not_sought() -> None:
    consumer = ScriptedConsumer([({A0: batch(0)}, {A0})], {A0})
    consumer.batch_handlers["in"] = handler_into(consumer)
    await consumer.drain()
    assert consumer.delivered == [(A0, 0)]
    assert consumer._thread.seeks == []


async def test_a_batch_of_a_paused_partition_is_fetched_again() -> None:
    # Recovery paused partition 0 (not active) while its records were fetched: the
    # fetch position has moved past them, so the partition goes back to them.
    consumer = ScriptedConsumer([({A0: batch(40), A1: batch(7)}, {A1})], {A0, A1})
    consumer.batch_handlers["in"] = handler_into(consumer)
    await consumer.drain()
    assert consumer.delivered == [(A1, 7)]
    assert consumer._thread.seeks == [(A0, 40)]
    assert consumer.rewinds == 1


async def test_batches_left_when_a_rebalance_starts_are_fetched_again() -> None:
    consumer = ScriptedConsumer([({A0: batch(5), A1: batch(9)}, {A0, A1})], {A0, A1})

    async def handle_then_rebalance(tp: TP, records: Sequence[Record], generation: int) -> bool:
        consumer.delivered.append((tp, records[0].offset))
        consumer.app.consumer_generation_id = 2  # type: ignore[attr-defined]
        return True

    consumer.batch_handlers["in"] = handle_then_rebalance
    await consumer.drain()
    assert consumer.delivered == [(A0, 5)]
    assert consumer._thread.seeks == [(A1, 9)]


async def test_a_batch_the_handler_refuses_is_fetched_again() -> None:
    consumer = ScriptedConsumer([({A0: batch(12)}, {A0})], {A0})
    consumer.batch_handlers["in"] = handler_into(consumer, take=False)
    await consumer.drain()
    assert consumer.delivered == [(A0, 12)]
    assert consumer._thread.seeks == [(A0, 12)]


async def test_a_revoked_partition_is_not_sought() -> None:
    consumer = ScriptedConsumer([({A0: batch(3)}, set())], set())
    consumer.batch_handlers["in"] = handler_into(consumer)
    await consumer.drain()
    assert consumer.delivered == [] and consumer._thread.seeks == []


async def test_a_batch_that_predates_a_seek_goes_back_to_where_the_seek_went() -> None:
    # The partition was positioned at 20 while the fetch was under way; the batch may
    # come from the old position (here 50: delivering it would skip 20..49).
    async def position(c: ScriptedConsumer) -> None:
        await c.seek(A0, 20)

    consumer = ScriptedConsumer([({A0: batch(50)}, {A0}), ({A0: batch(20)}, {A0})], {A0},
                                between=position)
    consumer.batch_handlers["in"] = handler_into(consumer)
    await consumer.drain()
    assert consumer._thread.seeks == [(A0, 20), (A0, 20)]
    assert consumer.delivered == [(A0, 20)]


async def test_after_recovery_each_partition_goes_where_its_state_says() -> None:
    consumer = ScriptedConsumer([], {A0, A1, TP("in-changelog", 0)})
    asked: list[set[int]] = []

    async def positions(partitions: set[int]) -> dict[int, int]:
        asked.append(partitions)
        return {0: 0, 1: 812}  # 0: no state yet, from the beginning

    consumer.positioners["in"] = positions
    consumer._read_offset = {}  # type: ignore[assignment]
    consumer._committed_offset = {}  # type: ignore[assignment]
    await consumer.perform_seek()
    assert asked == [{0, 1}]
    assert sorted(consumer._thread.seeks) == [(A0, 0), (A1, 812)]


async def test_the_fetch_is_given_a_copy_of_the_active_set() -> None:
    # Faust's live set may be emptied during the fetch, and aiokafka reads an empty
    # set as "every partition".
    seen: list[Any] = []

    class Thread2(Thread):
        async def getmany(self, active: set[TP] | None, timeout: float) -> dict[TP, Any]:
            seen.append(active)
            live.clear()  # recovery pauses everything meanwhile
            return {}

    consumer = ScriptedConsumer([], {A0})
    consumer._thread = Thread2({A0})  # type: ignore[assignment]
    live = {A0}
    await consumer._getmany(live, 1.0)
    assert seen == [{A0}] and seen[0] is not live
    assert await consumer._getmany(set(), 1.0) == {}
    assert len(seen) == 1
