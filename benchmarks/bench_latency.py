"""Issue 7: latency from produce to the score visible in the API, at fixed produce rates.

The Kafka deployment, for real, on this machine: one broker (started here unless
``--bootstrap``), one ``touchstream worker`` process and one ``touchstream api`` process
(``python -m service api``, its API key from its environment), on fresh topics
(``benchmarks/kafka_stack.py``). Simulated events (``streams.sources.simulator``,
orjson, keyed by customer, in the producers' murmur2 partition) are produced with
aiokafka at a fixed rate, paced in ticks of 10 ms (one batch per partition and tick), and
the broker's acknowledgement time of every event is recorded. Meanwhile this process
polls ``GET /v1/scores?window=24h`` (overall scope, every metric) every ``--poll-ms`` and
records (time the answer arrived, visible count), the visible count being the sum over
metrics of ``n + not_applicable``: each accepted event adds exactly one. The events are
all valid, unique, in time order and inside the window (checked: invalid ones are
dropped before the run; priming checks the count matches what was produced).

Latency, as measured here: with P(t) the number of events acknowledged by time t and
V(t) the visible count, the latency of the k-th event is the first poll time at which
V >= k minus the time at which P reached k, i.e. the horizontal distance between the
cumulative produced and visible curves. It includes up to one poll interval (the
resolution) and the API's answer time. The same distance to a third curve, the events
the worker has *published* (sum over partitions of the input offset its partials records
carry, at the CreateTime of each flush's first record), splits each event's latency into
``worker`` (ack -> published: fetch, processing, waiting for the flush) and ``api``
(published -> visible: the API's partials reader, the merged-view rebuild on the first
read after a change, the answer, the poll).

Each rate runs ``--warmup`` seconds (not measured), then ``--seconds`` measured, then
waits until every event is visible before the next rate. Worker settings are the
product's: set ``TOUCHSTREAM_FLUSH_INTERVAL`` etc. in the environment to try others
(they are printed). One run stays well under 3 minutes with the defaults.

    python benchmarks/bench_latency.py                          # starts its own broker
    python benchmarks/bench_latency.py --bootstrap 127.0.0.1:9092 --rates 1000,10000
    TOUCHSTREAM_FLUSH_INTERVAL=0.25 python benchmarks/bench_latency.py
    python benchmarks/bench_latency.py --quick --json           # smoke run, JSON last line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from bench_pipeline import make_records  # noqa: E402
from kafka_stack import KafkaStack  # noqa: E402

TICK = 0.010
"""Seconds between the producer's sends (one batch per partition each)."""
WINDOW = "24h"
PRIME = 200
DEFINITION = ("latency of the k-th event = first poll time at which the visible count "
              "(sum of n + not_applicable over metrics, overall scope, GET /v1/scores) "
              "is >= k, minus the time the k-th event was acknowledged by the broker "
              "(the horizontal distance between the cumulative produced and visible curves)")


# -- events ------------------------------------------------------------------------------

def prepare(n: int, partitions: int) -> tuple[list[tuple[bytes, bytes]], np.ndarray, float]:
    """``n`` simulated events that the decoder accepts, and each one's partition."""
    from kafka.partitioner.default import murmur2

    from schemas.decode import EventDecoder, EventError

    records, mean = make_records(int(n * 1.01) + 10)
    decoder = EventDecoder()
    valid = []
    for key, value in records:
        with contextlib.suppress(EventError):
            decoder.decode(value)
            valid.append((key, value))
    if len(valid) < n:
        raise RuntimeError(f"the simulator gave {len(valid)} valid events, {n} needed")
    valid = valid[:n]
    parts = np.fromiter(((murmur2(k) & 0x7FFFFFFF) % partitions for k, _ in valid),
                        dtype=np.int64, count=n)
    return valid, parts, mean


# -- the three curves --------------------------------------------------------------------

class Producer:
    """Sends prepared events at a fixed rate; records each one's send and ack times."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                 partitions: np.ndarray) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                         linger_ms=0, max_batch_size=1024 * 1024)
        self.topic = topic
        self.records = records
        self.partitions = partitions
        n = len(records)
        self.sent = np.full(n, np.nan)
        self.ack = np.full(n, np.nan)
        self.offset = np.full(n, -1, dtype=np.int64)
        self.next = 0
        self.errors = 0
        self.behind = 0.0
        self._inflight: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    def _acked(self, indices: np.ndarray, future: asyncio.Future[Any]) -> None:
        now = time.time()
        self._inflight.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.errors += len(indices)
            return
        self.ack[indices] = now
        self.offset[indices] = future.result().offset + np.arange(len(indices))

    async def send_until(self, end: int) -> None:
        """Send events [next, end) now: one batch per partition."""
        start, self.next = self.next, end
        if end <= start:
            return
        self.sent[start:end] = time.time()
        index = np.arange(start, end)
        parts = self.partitions[start:end]
        for p in np.unique(parts):
            chosen = index[parts == p]
            batch, first = self.producer.create_batch(), 0
            for j, i in enumerate(chosen):
                key, value = self.records[i]
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    await self._send(batch, int(p), chosen[first:j])
                    batch, first = self.producer.create_batch(), j
                    batch.append(key=key, value=value, timestamp=None)
            await self._send(batch, int(p), chosen[first:])

    async def _send(self, batch: Any, partition: int, indices: np.ndarray) -> None:
        future = await self.producer.send_batch(batch, self.topic, partition=partition)
        self._inflight.add(future)
        future.add_done_callback(partial(self._acked, indices))

    async def run(self, rate: float, seconds: float) -> tuple[int, int, float]:
        """Produce ``rate * seconds`` events, paced; returns (first, end, seconds taken)."""
        first = self.next
        total = min(round(rate * seconds), len(self.records) - first)
        began = time.perf_counter()
        tick = 0
        while self.next - first < total:
            elapsed = time.perf_counter() - began
            due = min(total, int(rate * elapsed) + 1)
            self.behind = max(self.behind, (due - (self.next - first)) / rate - TICK)
            await self.send_until(first + due)
            tick += 1
            await asyncio.sleep(max(0.0, began + tick * TICK - time.perf_counter()))
        took = time.perf_counter() - began
        await self.flush()
        return first, self.next, took

    async def flush(self) -> None:
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=30)


@dataclass
class Visible:
    """Polls GET /v1/scores and records (answer time, visible count, answer latency)."""

    url: str
    key: str
    interval: float
    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    errors: int = 0
    decreases: int = 0

    @property
    def count(self) -> int:
        return self.counts[-1] if self.counts else 0

    async def run(self, stop: asyncio.Event) -> None:
        import httpx
        import orjson

        params = {"window": WINDOW, "limit": "1000"}
        async with httpx.AsyncClient(base_url=self.url, timeout=10,
                                     headers={"Authorization": f"Bearer {self.key}"}) as client:
            next_at = time.perf_counter()
            while not stop.is_set():
                sent = time.time()
                try:
                    response = await client.get("/v1/scores", params=params)
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(self.interval)
                    continue
                got = time.time()
                if response.status_code != 200:
                    self.errors += 1
                else:
                    items = orjson.loads(response.content)["items"]
                    count = sum(int(i["n"]) + int(i["not_applicable"]) for i in items)
                    if count < self.count:
                        self.decreases += 1
                    self.times.append(got)
                    self.counts.append(count)
                    self.rtts.append(got - sent)
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at = max(next_at, time.perf_counter() - self.interval)

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


@dataclass
class Published:
    """Reads the partials topic: when each partition's published input offset grew.

    A flush is a run of bucket records and a meta record, each carrying the input offset
    the partition's state had reached; the first record with a new offset marks the
    flush, at its CreateTime (the worker's clock, which is this machine's).
    """

    bootstrap: str
    topic: str
    records: list[tuple[float, int, int]] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        import msgspec
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.worker import records as rec
        from streams.worker.reader import topic_partitions

        class Offset(msgspec.Struct):  # bucket and meta records both carry "offset"
            offset: int

        decode = msgspec.msgpack.Decoder(Offset).decode
        latest: dict[int, int] = {}
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level="read_committed",
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        try:
            parts = await topic_partitions(consumer, self.topic, 30)
            consumer.assign([TopicPartition(self.topic, p) for p in parts])
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    for r in records:
                        if r.key is None or r.value is None:
                            continue
                        p = rec.parse_key(r.key).partition
                        offset = decode(r.value).offset
                        if offset > latest.get(p, 0):
                            latest[p] = offset
                            self.records.append((r.timestamp / 1000, p, offset))
        finally:
            await consumer.stop()

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, events published by then): offsets summed over partitions."""
        latest: dict[int, int] = {}
        times, counts, total = [], [], 0
        for at, p, offset in sorted(self.records):
            if offset > latest.get(p, 0):
                total += offset - latest.get(p, 0)
                latest[p] = offset
                times.append(at)
                counts.append(total)
        return np.array(times), np.array(counts, dtype=np.int64)

    def staleness(self, since: float, until: float, producer: Producer) -> np.ndarray:
        """At each publication within [since, until]: seconds since the newest event it
        includes was acknowledged (how far the worker's state is behind its input)."""
        out: list[float] = []
        n = producer.next
        for p in np.unique(producer.partitions[:n]):
            chosen = producer.partitions[:n] == p
            offsets, acks = producer.offset[:n][chosen], producer.ack[:n][chosen]
            order = np.argsort(offsets)
            offsets, acks = offsets[order], acks[order]
            for at, part, offset in self.records:
                if part != p or not since <= at <= until:
                    continue
                i = int(np.searchsorted(offsets, offset - 1))
                if i < len(offsets) and offsets[i] == offset - 1:
                    out.append(at - acks[i])
        return np.array(out)

    def periods(self, since: float, until: float) -> np.ndarray:
        """Seconds between a partition's successive publications within [since, until]."""
        gaps: list[float] = []
        by_part: dict[int, list[float]] = {}
        for at, p, _ in sorted(self.records):
            if since <= at <= until:
                by_part.setdefault(p, []).append(at)
        for times in by_part.values():
            gaps.extend(np.diff(times).tolist())
        return np.array(gaps)


def machine_cpu_seconds() -> float:
    """CPU seconds all processes on this machine have used (busy time in /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def first_reach(times: np.ndarray, counts: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """For each k, the first time at which the (made monotone) count is >= k; nan if never."""
    if len(times) == 0:
        return np.full(len(ks), np.nan)
    top = np.maximum.accumulate(counts)
    idx = np.searchsorted(top, ks, side="left")
    out = np.full(len(ks), np.nan)
    found = idx < len(top)
    out[found] = times[idx[found]]
    return out


def pct(values: np.ndarray, q: float) -> float:
    """Percentile in ms; events never reached count as infinitely late."""
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.where(np.isnan(values), np.inf, values), q) * 1000)


# -- the run -----------------------------------------------------------------------------

@dataclass
class Phase:
    rate: float
    first: int = 0
    end: int = 0
    seconds: float = 0.0
    began: float = 0.0
    ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = math.nan
    drained: bool = True


async def run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    try:
        return await measure(args, bootstrap, broker_pid, root)
    finally:
        if args.keep:
            print(f"logs and state kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


async def measure(args: argparse.Namespace, bootstrap: str, broker_pid: int | None,
                  root: Path) -> dict[str, Any]:
    from bench_worker import cpu_seconds

    overrides: dict[str, Any] = {}
    if args.partitions:
        overrides["topic_partitions"] = args.partitions
    stack = KafkaStack(bootstrap, root, **overrides)
    s = stack.settings
    phases = [Phase(rate) for rate in args.rates]
    need = PRIME + sum(math.ceil(p.rate * (args.warmup + args.seconds)) + 1 for p in phases)
    started = time.perf_counter()
    records, parts, mean = prepare(need, s.topic_partitions)
    print(f"{need:,} simulated events prepared in {time.perf_counter() - started:.1f} s "
          f"(mean {mean:.0f} bytes, orjson, keyed by customer); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    settings = {
        "topic_partitions": s.topic_partitions, "store": s.store,
        "processing_guarantee": s.processing_guarantee, "flush_interval": s.flush_interval,
        "checkpoint_interval": s.checkpoint_interval, "checkpoint_events": s.checkpoint_events,
        "scores_interval": s.scores_interval, "batch_max": s.batch_max,
    }
    print("worker x1: " + ", ".join(f"{k} {v}" for k, v in settings.items()), flush=True)
    print(f"api x1 (touchstream api): GET /v1/scores?window={WINDOW} polled every "
          f"{args.poll_ms:g} ms; broker {bootstrap}", flush=True)

    stop = asyncio.Event()
    producer = Producer(bootstrap, s.topic_touchpoints, records, parts)
    async with stack:
        visible = Visible(stack.api_url, stack.api_key, args.poll_ms / 1000)
        published = Published(bootstrap, s.partials_topic)
        await producer.start()
        tasks = [asyncio.create_task(visible.run(stop)), asyncio.create_task(published.run(stop))]
        pids = {label: p.pid for label, p in stack.processes().items()}
        if broker_pid is not None:
            pids["broker"] = broker_pid
        try:
            async def watch(coro: Any) -> Any:  # a child dying fails the run at once
                job = asyncio.ensure_future(coro)
                while not job.done():
                    stack.check()
                    for t in tasks:
                        if t.done():
                            t.result()
                    await asyncio.wait([job], timeout=0.2)
                return job.result()

            await producer.send_until(PRIME)
            await producer.flush()
            if not await watch(visible.wait_for(PRIME, args.ready_timeout)):
                raise RuntimeError(f"only {visible.count} of {PRIME} priming events visible "
                                   f"after {args.ready_timeout:.0f} s; logs in {root}")
            await asyncio.sleep(3 * s.flush_interval + 0.5)
            if visible.count != PRIME:
                raise RuntimeError(f"visible count {visible.count} after {PRIME} events: it "
                                   "does not count each event once")
            print(f"ready: stack up and {PRIME} priming events visible after "
                  f"{time.perf_counter() - started:.1f} s", flush=True)

            for phase in phases:
                await watch(producer.run(phase.rate, args.warmup))
                cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
                bench0, machine0 = time.process_time(), machine_cpu_seconds()
                phase.began = time.time()
                phase.first, phase.end, phase.seconds = await watch(
                    producer.run(phase.rate, args.seconds))
                phase.drained = await watch(visible.wait_for(
                    phase.end, 10 + 5 * s.flush_interval))
                phase.ended = time.time()
                took = phase.ended - phase.began
                phase.cpu = {k: (cpu_seconds(v) - cpu0[k]) / took for k, v in pids.items()}
                phase.cpu["bench"] = (time.process_time() - bench0) / took
                phase.cpu["machine"] = (machine_cpu_seconds() - machine0) / took
                phase.load = os.getloadavg()[0]
                if not phase.drained:
                    print(f"  rate {phase.rate:,.0f}/s: only {visible.count:,} of "
                          f"{phase.end:,} events visible after draining", flush=True)
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 5)
            await producer.stop()

    if args.dump:
        np.savez(args.dump, sent=producer.sent, ack=producer.ack, offset=producer.offset,
                 partition=producer.partitions, poll_times=np.array(visible.times),
                 poll_counts=np.array(visible.counts), poll_rtts=np.array(visible.rtts),
                 meta=np.array(published.records),
                 phases=np.array([(p.rate, p.first, p.end, p.began, p.ended) for p in phases]))
    return report(args, settings, phases, producer, visible, published)


def report(args: argparse.Namespace, settings: dict[str, Any], phases: list[Phase],
           producer: Producer, visible: Visible, published: Published) -> dict[str, Any]:
    produced = producer.next
    acks = np.sort(producer.ack[:produced])  # P(t) reaches k at acks[k-1]
    ks = np.arange(1, produced + 1)
    seen = first_reach(np.array(visible.times), np.array(visible.counts), ks)
    pub_t, pub_c = published.curve()
    pub = first_reach(pub_t, pub_c, ks)
    poll_t, rtts = np.array(visible.times), np.array(visible.rtts)
    print(f"\n{DEFINITION}.\n'worker' = ack -> published by the worker (CreateTime of the "
          "first partials record of the flush that includes it), 'api' = published -> "
          "visible; the two add up per event.\n")
    header = (f"  {'rate/s':>8} {'achieved':>9} {'events':>8} {'p50 ms':>8} {'p90 ms':>8} "
              f"{'p99 ms':>8} {'max ms':>8}   {'worker p50/p99':>15}   {'api p50/p99':>13}")
    print(header)
    rows: list[dict[str, Any]] = []
    for phase in phases:
        sl = slice(phase.first, phase.end)
        lat = seen[sl] - acks[sl]
        worker, api = pub[sl] - acks[sl], seen[sl] - pub[sl]
        sent_ack = producer.ack[sl] - producer.sent[sl]
        in_phase = (poll_t >= phase.began) & (poll_t <= phase.ended)
        gaps = np.diff(poll_t[in_phase]) if in_phase.sum() > 1 else np.array([])
        periods = published.periods(phase.began, phase.ended)
        stale = published.staleness(phase.began, phase.ended, producer)
        n = phase.end - phase.first
        row: dict[str, Any] = {
            "rate": phase.rate, "achieved": n / phase.seconds if phase.seconds else 0.0,
            "events": n, "never_visible": int(np.isnan(lat).sum()),
            "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
            "max_ms": pct(lat, 100), "mean_ms": float(np.nanmean(lat) * 1000) if n else math.nan,
            "worker_p50_ms": pct(worker, 50), "worker_p99_ms": pct(worker, 99),
            "api_p50_ms": pct(api, 50), "api_p99_ms": pct(api, 99),
            "ack_p50_ms": pct(sent_ack, 50), "ack_p99_ms": pct(sent_ack, 99),
            "poll_gap_p50_ms": pct(gaps, 50), "poll_gap_max_ms": pct(gaps, 100),
            "get_p50_ms": pct(rtts[in_phase], 50), "get_p99_ms": pct(rtts[in_phase], 99),
            "publish_period_p50_ms": pct(periods, 50), "publish_period_max_ms": pct(periods, 100),
            "worker_behind_p50_ms": pct(stale, 50), "worker_behind_p90_ms": pct(stale, 90),
            "load": phase.load,
            "cpu": {k: round(v, 3) for k, v in phase.cpu.items()},
            "drained": phase.drained,
        }
        rows.append(row)
        print(f"  {row['rate']:>8,.0f} {row['achieved']:>9,.0f} {n:>8,} {row['p50_ms']:>8.0f} "
              f"{row['p90_ms']:>8.0f} {row['p99_ms']:>8.0f} {row['max_ms']:>8.0f}   "
              f"{row['worker_p50_ms']:>7.0f}/{row['worker_p99_ms']:<7.0f}   "
              f"{row['api_p50_ms']:>6.0f}/{row['api_p99_ms']:<6.0f}", flush=True)
    print()
    for row in rows:
        cpu = dict(row["cpu"])
        machine = cpu.pop("machine", math.nan)
        ours = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        print(f"  {row['rate']:>8,.0f}/s: produce->ack p50/p99 {row['ack_p50_ms']:.1f}/"
              f"{row['ack_p99_ms']:.1f} ms; a partition published every "
              f"{row['publish_period_p50_ms']:.0f} ms (p50; max "
              f"{row['publish_period_max_ms']:.0f}), its newest event then "
              f"{row['worker_behind_p50_ms']:.0f} ms old (p50; p90 "
              f"{row['worker_behind_p90_ms']:.0f})\n"
              f"            GET p50/p99 {row['get_p50_ms']:.1f}/{row['get_p99_ms']:.1f} ms, poll "
              f"gap p50/max {row['poll_gap_p50_ms']:.0f}/{row['poll_gap_max_ms']:.0f} ms; "
              f"CPU cores: {ours}; whole machine {machine:.2f} of {os.cpu_count()} "
              f"(load {row['load']:.1f})", flush=True)
        print(f"            where p99 goes: worker {row['worker_p99_ms']:.0f} ms (a flush every "
              f"{settings['flush_interval'] * 1000:.0f} ms by flush_interval; state behind its "
              f"input up to {row['worker_behind_p90_ms']:.0f} ms, p90), api "
              f"{row['api_p99_ms']:.0f} ms (partials reader, merged-view rebuild, GET, poll)",
              flush=True)
        if row["never_visible"]:
            print(f"            {row['never_visible']:,} events never became visible",
                  flush=True)
    problems = []
    if producer.errors:
        problems.append(f"{producer.errors} events not acknowledged")
    if visible.errors:
        problems.append(f"{visible.errors} failed polls")
    if visible.decreases:
        problems.append(f"the visible count went down {visible.decreases} times")
    if visible.count != produced:
        problems.append(f"visible count {visible.count:,} at the end, {produced:,} produced")
    if producer.behind > 0.05:
        problems.append(f"the producer fell up to {producer.behind * 1000:.0f} ms behind "
                        "its schedule")
    for problem in problems:
        print(f"  NOTE: {problem}", flush=True)
    for row in rows:
        if row["rate"] >= 10_000:
            verdict = "met" if row["p99_ms"] < 1000 else "NOT met"
            print(f"  target p99 < 1 s at {row['rate']:,.0f} events/s: {verdict} "
                  f"(p99 {row['p99_ms']:.0f} ms)", flush=True)
    return {"definition": DEFINITION, "settings": settings, "poll_ms": args.poll_ms,
            "window": WINDOW, "warmup_s": args.warmup, "seconds": args.seconds,
            "rates": rows, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None, help="use this broker (default: start one)")
    parser.add_argument("--rates", default="1000,10000",
                        help="produce rates, events/s, comma separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per rate")
    parser.add_argument("--poll-ms", type=float, default=15.0,
                        help="GET /v1/scores every this many ms")
    parser.add_argument("--partitions", type=int, default=None,
                        help="input partitions (default: TOUCHSTREAM_TOPIC_PARTITIONS or 6)")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 300 events/s, 1 s warm-up, 4 s measured")
    parser.add_argument("--json", action="store_true",
                        help="also print the results as one JSON line, last")
    parser.add_argument("--keep", action="store_true", help="keep logs and state")
    parser.add_argument("--dump", type=Path, default=None,
                        help="save the raw curves (numpy .npz) here, for analysis")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up children on SIGTERM
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick:
        args.rates, args.warmup, args.seconds = [300.0], 1.0, 4.0
    if args.bootstrap:
        result = asyncio.run(run(args, args.bootstrap, None))
    else:
        from deploy.kafka.broker import KafkaBroker

        with KafkaBroker() as kafka:
            result = asyncio.run(run(args, kafka.bootstrap, kafka.pid))
    if args.json:
        print(json.dumps(finite(result), allow_nan=False, default=str))


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


if __name__ == "__main__":
    main()
