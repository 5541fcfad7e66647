"""One worker's throughput against a real broker, beside the raw consumer's ceiling.

Produces the real airline survey (keyed by customer) to a fresh topic, then measures,
in the same run: a bare aiokafka consumer reading the topic (``getmany``, no decoding:
the ceiling) and one ``touchstream worker`` process catching up with it (decode,
validate, dedupe, engine with the default 8 scopes x 8 windows, partials, checkpoints).
The worker's rate is taken between the first and the last progress the merged view
shows, so start-up is excluded; its CPU time comes from /proc.

    python benchmarks/bench_worker.py                       # starts its own broker
    python benchmarks/bench_worker.py --bootstrap 127.0.0.1:9092 --partitions 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deploy.kafka.broker import KafkaBroker  # noqa: E402
from streams.engine.config import EngineConfig  # noqa: E402
from streams.sources import airline  # noqa: E402
from streams.worker.settings import WorkerSettings  # noqa: E402
from streams.worker.topics import ensure_topics  # noqa: E402


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with KafkaBroker() as b:
        yield b.bootstrap


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume(bootstrap: str, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            cluster = await consumer._client.fetch_all_metadata()
            parts = cluster.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        seen = 0
        started = time.perf_counter()
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(r) for r in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def engine_in_process(records: list[tuple[bytes, bytes]], batch: int) -> float:
    """Decode + engine ingest in this process, no Kafka: what the worker wraps."""
    from streams.worker.partition import PartitionState

    class Record:
        __slots__ = ("headers", "key", "offset", "timestamp", "value")

        def __init__(self, offset: int, key: bytes, value: bytes) -> None:
            self.offset, self.key, self.value = offset, key, value
            self.timestamp, self.headers = None, ()

    recs = [Record(i, k, v) for i, (k, v) in enumerate(records)]
    state = PartitionState.fresh(0, EngineConfig())
    started = time.perf_counter()
    for i in range(0, len(recs), batch):
        state.process(recs[i:i + batch])
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Progress:
    """Per-partition offsets from the partials topic's meta records only (cheap)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest",
                                         enable_auto_commit=False)
        self.topic = topic
        self.offsets: dict[int, int] = {}

    async def start(self) -> None:
        await self.consumer.start()
        cluster = await self.consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(self.topic) or set()
        self.consumer.assign([TopicPartition(self.topic, p) for p in parts])

    async def poll(self) -> int:
        await asyncio.sleep(0.05)  # leave the CPU to the worker
        batches = await self.consumer.getmany(timeout_ms=0)
        for records in batches.values():
            for r in records:
                if r.key and r.key.endswith(b"/meta") and r.value:
                    meta = msgspec.msgpack.decode(r.value)
                    self.offsets[int(r.key.split(b"/")[0])] = int(meta["offset"])
        return sum(self.offsets.values())


async def measure_worker(settings: WorkerSettings, total: int, log_path: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update({f"TOUCHSTREAM_{k.upper()}": str(v)
                for k, v in settings.model_dump().items() if v is not None})
    progress = Progress(settings.bootstrap_servers[0], settings.partials_topic)
    await progress.start()
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streams.worker"], cwd=REPO_ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            n0 = 0
            while not n0:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited; see {log_path}")
                n0 = await progress.poll()
            t0, c0 = time.perf_counter(), cpu_seconds(process.pid)
            while await progress.poll() < total:
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited; see {log_path}")
            t1, c1 = time.perf_counter(), cpu_seconds(process.pid)
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
            await progress.consumer.stop()
    n = total - n0
    if n <= 0 or t1 <= t0:
        raise SystemExit(f"every one of the {total:,} events was published in the worker's "
                         "first flush: nothing left to time; use more --passengers")
    return {"events": n, "seconds": t1 - t0, "rate": n / (t1 - t0),
            "cpu_us": (c1 - c0) / n * 1e6, "stats": shutdown_stats(log_path)}


def shutdown_stats(log_path: Path) -> str:
    """The worker's own account of its time (its shutdown log line), or ''."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if "shut down cleanly" in line:
            return line.partition("; ")[2]
    return ""


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    state = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap, app_id=name, topic_touchpoints=f"{name}-touchpoints",
        topic_dlq=f"{name}.dlq", topic_scores=f"{name}.scores", topic_alerts=f"{name}.alerts",
        topic_partitions=args.partitions, store=args.store, state_dir=state,
        processing_guarantee=args.guarantee, log_level="info")
    ensure_topics(settings)
    encode = msgspec.json.encode
    records = [(e["customer_id"].encode(), encode(e))
               for e in airline.events(limit=args.passengers)]
    total = len(records)
    print(f"{total:,} airline events, {args.partitions} partition(s), store {args.store}, "
          f"{args.guarantee}, broker {bootstrap}")
    took = await produce(bootstrap, settings.topic_touchpoints, records)
    print(f"  produce (aiokafka)            {total / took:>10,.0f} events/s")
    took = await raw_consume(bootstrap, settings.topic_touchpoints, total)
    ceiling = total / took
    print(f"  raw consume (getmany, ceiling) {ceiling:>10,.0f} events/s")
    took = engine_in_process(records, 2500)
    engine_rate = total / took
    print(f"  decode + engine in process     {engine_rate:>10,.0f} events/s   (batches of 2,500,"
          " no Kafka)")
    bench_cpu = time.process_time()
    result = await measure_worker(settings, total, state / "worker.log")
    bench_cpu = time.process_time() - bench_cpu
    print(f"  one worker (end to end)       {result['rate']:>10,.0f} events/s   "
          f"{result['cpu_us']:.1f} us CPU/event")
    print(f"    ratio to decode + engine {result['rate'] / engine_rate:.2f}, to raw consume "
          f"{result['rate'] / ceiling:.2f}   ({result['events']:,.0f} events in "
          f"{result['seconds']:.1f} s; this script used {bench_cpu:.1f} s CPU meanwhile)")
    if result["stats"]:
        print(f"    the worker's own account (whole run): {result['stats']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None, help="use this broker (default: start one)")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--passengers", type=int, default=13_000,
                        help="survey rows to replay (15 events each; default ~195k events)")
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--guarantee", default="at_least_once",
                        choices=["at_least_once", "exactly_once"])
    args = parser.parse_args()
    with broker(args.bootstrap) as bootstrap:
        asyncio.run(run(args, bootstrap))


if __name__ == "__main__":
    main()
