"""Issue 7: touchstream against the ceiling and the typical alternative, in one run.

Produces N simulated touchpoint events (``streams.sources.simulator``, orjson-encoded,
keyed by customer) to a fresh topic on one broker, then measures, one after another,
each contender right after a run of the ceiling (each ratio is to the ceiling measured
just before: the machine's speed drifts from minute to minute):

1. ceiling     - a plain aiokafka ``getmany`` loop that decodes each value with orjson
                 and does nothing else (its own process);
2. faust       - a straightforward faust-streaming app (memory:// store, its own app
                 id) whose agent updates a Faust table (count and sum) for each event
                 and each of the 8 default scopes; progress is its changelog's end
                 offset / 8, capped at ``--faust-seconds`` (the rate achieved is
                 reported when it does not finish);
3. worker x1 / worker x2 - ``python -m streams.worker`` processes (one consumer group),
                 timed until the partials' source offsets reach the end of the topic;
4. embedded    - ``python -m service serve`` fed over HTTP with POST /v1/events
                 batches of ``--batch`` (httpx, ``--http-concurrency`` requests in
                 flight); timed until the last batch is acknowledged (durable).

Rates exclude start-up: each clock starts at the first progress the contender shows
(for Kafka contenders: once every partition has shown progress). Peak RSS is VmHWM
from /proc of each measured process (summed over processes for two workers).

    python benchmarks/bench_pipeline.py                        # starts its own broker
    python benchmarks/bench_pipeline.py --events 50000 --bootstrap 127.0.0.1:9092
    python benchmarks/bench_pipeline.py --quick --bootstrap 127.0.0.1:9092   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from deploy.kafka.broker import free_port  # noqa: E402

SCOPES: tuple[tuple[str, ...], ...] = (
    (), ("channel",), ("touchpoint",), ("segment",), ("journey_type",), ("stage",),
    ("owner",), ("channel", "segment"),
)  # EngineConfig's default scopes, spelled out so the Faust process needs no engine import
FAUST_TABLE = "scope_stats"
CONTENDERS = ("faust", "worker1", "worker2", "embedded")
"""What ``--only`` selects from; the ceiling always runs (every ratio is to it)."""


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process, MiB (VmHWM), or nan when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- subprocess modes --------------------------------------------------------------------

def ceiling_main(bootstrap: str, topic: str, total: int) -> None:
    """Contender 1, run as its own process: getmany + orjson.loads, nothing else."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict[str, float]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            cluster = await consumer._client.fetch_all_metadata()
            parts = cluster.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in parts])
            loads = orjson.loads
            seen = 0
            started = time.perf_counter()
            while seen < total:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    for r in records:
                        loads(r.value)
                    seen += len(records)
            took = time.perf_counter() - started
        finally:
            await consumer.stop()
        return {"events": seen, "seconds": took}

    result = asyncio.run(run())
    result["rss_mb"] = vm_hwm_mb(os.getpid())
    print(json.dumps(result), flush=True)


def faust_main(bootstrap: str, topic: str, app_id: str, partitions: int) -> None:
    """Contender 2, run as its own process: a Faust worker whose agent updates a table."""
    import faust
    import orjson

    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, topic_partitions=partitions)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                       value_serializer="raw", partitions=partitions)
    table = app.Table(FAUST_TABLE, default=lambda: [0, 0.0], partitions=partitions)

    @app.agent(source)
    async def aggregate(stream: Any) -> None:
        async for value in stream:
            event = orjson.loads(value)
            raw = event.get("value")
            v = float(raw) if isinstance(raw, int | float) else 0.0  # outcomes are words
            for dims in SCOPES:
                key = ",".join(dims) + "=" + "/".join(str(event.get(d)) for d in dims)
                count, total = table[key]
                table[key] = [count + 1, total + v]

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


# -- the bench process -------------------------------------------------------------------

def make_records(n: int) -> tuple[list[tuple[bytes, bytes]], float]:
    import orjson

    from streams.sources.simulator import Simulator

    span = 1800.0  # event time spread over half an hour ending now (nothing is late)
    sim = Simulator(seed=7, customers=20_000, rate=max(10.0, n / span),
                    start=datetime.now(UTC) - timedelta(seconds=span + 60))
    records = [(e["customer_id"].encode(), orjson.dumps(e)) for e in sim.events(n)]
    mean = sum(len(v) for _, v in records) / max(1, len(records))
    return records, mean


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()
        parts = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


def run_json_subprocess(args: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], cwd=REPO_ROOT, check=True,  # noqa: S603
                         capture_output=True, text=True, timeout=timeout)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def measure_faust(bootstrap: str, topic: str, partitions: int, total: int,
                        cap: float, log_path: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    app_id = f"bench-faust-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-{FAUST_TABLE}-changelog"
    target = total * len(SCOPES)
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - this script, in its Faust mode
            [sys.executable, __file__, "_faust", bootstrap, topic, app_id, str(partitions)],
            cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        try:
            deadline = time.monotonic() + 120
            parts: list[Any] = []
            while not parts:  # Faust declares its changelog topic at start-up
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"faust did not start; see {log_path}")
                await asyncio.sleep(0.5)
                cluster = await consumer._client.fetch_all_metadata()
                parts = [TopicPartition(changelog, p)
                         for p in cluster.partitions_for_topic(changelog) or ()]

            async def records() -> int:
                return sum((await consumer.end_offsets(parts)).values())

            n0 = 0
            while not n0:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"faust made no progress; see {log_path}")
                await asyncio.sleep(0.2)
                n0 = await records()
            t0 = time.perf_counter()
            n1 = n0
            while n1 < target and time.perf_counter() - t0 < cap:
                if process.poll() is not None:
                    raise RuntimeError(f"faust exited; see {log_path}")
                await asyncio.sleep(0.25)
                n1 = await records()
            t1 = time.perf_counter()
            rss = vm_hwm_mb(process.pid)
        finally:
            await consumer.stop()
            stop(process)
    events = (n1 - n0) / len(SCOPES)
    return {"events": events, "seconds": t1 - t0, "rss_mb": rss,
            "finished": n1 >= target, "done": n1 / len(SCOPES)}


def group_stable(admin: Any, group: str, members: int) -> bool:
    info = admin.describe_groups([group]).get(group) or {}  # kafka-python 3.x: dicts
    state = info.get("group_state", info.get("state"))
    return bool(state == "Stable" and len(info.get("members") or ()) == members)


async def measure_workers(bootstrap: str, topic: str, partitions: int, total: int,
                          count: int, root: Path) -> dict[str, Any]:
    from bench_worker import Progress, shutdown_stats
    from kafka.admin import KafkaAdminClient

    from streams.worker.settings import WorkerSettings

    name = f"bench-w{count}-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        kafka_bootstrap=bootstrap, app_id=name, topic_touchpoints=topic,
        topic_dlq=f"{name}.dlq", topic_scores=f"{name}.scores", topic_alerts=f"{name}.alerts",
        topic_partitions=partitions, store="memory://", state_dir=root / name,
        log_level="info")  # info: the shutdown line tells where each worker's time went
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update({f"TOUCHSTREAM_{k.upper()}": str(v)
                for k, v in settings.model_dump().items() if v is not None})
    progress = Progress(bootstrap, settings.partials_topic)
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    launched = time.perf_counter()
    try:
        for i in range(count):
            wenv = {**env, "TOUCHSTREAM_STATE_DIR": str(root / name / str(i))}
            log = (root / f"{name}-{i}.log").open("wb")
            logs.append(log)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "streams.worker"], cwd=REPO_ROOT, env=wenv,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while True:  # the partials topic is created by the first worker
            try:
                await progress.start()
                if progress.consumer.assignment():
                    break
            except Exception:  # noqa: BLE001, S110 - not there yet
                pass
            await progress.consumer.stop()
            progress = Progress(bootstrap, settings.partials_topic)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partials topic; see {root}")
            await asyncio.sleep(0.5)

        def check() -> None:
            for p in processes:
                if p.poll() is not None:
                    raise RuntimeError(f"a worker exited; see logs in {root}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers made no progress; see logs in {root}")

        n0 = await progress.poll()
        while len(progress.offsets) < partitions and n0 < total:
            check()
            n0 = await progress.poll()
        if count > 1:  # start the clock once every worker holds partitions (after rebalancing)
            admin = await asyncio.to_thread(KafkaAdminClient, bootstrap_servers=bootstrap)
            try:
                while n0 < total and not await asyncio.to_thread(group_stable, admin, name,
                                                                 count):
                    check()
                    n0 = await progress.poll()
            finally:
                admin.close()
        t0 = time.perf_counter()
        n1 = n0
        while n1 < total:
            check()
            n1 = await progress.poll()
        t1 = time.perf_counter()
        rss = [vm_hwm_mb(p.pid) for p in processes]
    finally:
        await progress.consumer.stop()
        for p in processes:
            stop(p)
        for log in logs:
            log.close()
    stats = [shutdown_stats(Path(log.name)) for log in logs]
    if total - n0 < total // 10:  # (tiny runs) done within the first flush: time from launch
        return {"events": total, "seconds": t1 - launched, "rss_mb": sum(rss),
                "rss_each": rss, "note": "incl. start-up", "stats": stats}
    return {"events": total - n0, "seconds": t1 - t0, "rss_mb": sum(rss), "rss_each": rss,
            "stats": stats}


async def measure_embedded(records: list[tuple[bytes, bytes]], batch: int, concurrency: int,
                           root: Path) -> dict[str, Any]:
    import httpx

    key = "bench-key-0123456789abcdef"
    port = free_port()
    data_dir = root / f"embedded-{uuid.uuid4().hex[:8]}"  # fresh state each round
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    env.update({"TOUCHSTREAM_DATA_DIR": str(data_dir), "TOUCHSTREAM_PORT": str(port),
                "TOUCHSTREAM_API_KEYS": f"bench:read+write:{key}",
                "TOUCHSTREAM_RATE_LIMIT": "0"})  # the ingest path, not its limiter
    bodies = [b'{"events":[' + b",".join(v for _, v in records[i:i + batch]) + b"]}"
              for i in range(0, len(records), batch)]
    log = (root / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=REPO_ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    accepted = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"}) as client:
            for _ in range(600):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError(f"serve exited; see {root / 'serve.log'}")
                await asyncio.sleep(0.1)
            queue = list(reversed(bodies))

            async def poster() -> None:
                nonlocal accepted
                while queue:
                    body = queue.pop()
                    response = await client.post("/v1/events", content=body)
                    response.raise_for_status()
                    accepted += int(response.json()["accepted"])

            t0 = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(concurrency)))
            t1 = time.perf_counter()
        rss = vm_hwm_mb(server.pid)
    finally:
        stop(server)
        log.close()
    return {"events": len(records), "seconds": t1 - t0, "rss_mb": rss, "accepted": accepted}


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    from bench_worker import produce

    from streams.worker.settings import WorkerSettings
    from streams.worker.topics import ensure_topics

    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}-touchpoints"
    ensure_topics(WorkerSettings(kafka_bootstrap=bootstrap, app_id=f"{topic}-setup",
                                 topic_touchpoints=topic, topic_partitions=args.partitions,
                                 topic_dlq=f"{topic}.dlq", topic_scores=f"{topic}.scores",
                                 topic_alerts=f"{topic}.alerts", state_dir=root / "setup"))
    records, mean = make_records(args.events)
    total = len(records)
    took = await produce(bootstrap, topic, records)
    ends = await end_offsets(bootstrap, topic)
    if sum(ends.values()) != total:
        raise RuntimeError(f"topic holds {sum(ends.values())} records, expected {total}")
    print(f"{total:,} simulated events (mean {mean:.0f} bytes, orjson), "
          f"{args.partitions} partition(s), broker {bootstrap}, {os.cpu_count()} CPUs; "
          f"produced at {total / took:,.0f} events/s", flush=True)
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    for round_ in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {round_} of {args.repeat}", flush=True)
        await measure_round(args, bootstrap, topic, records, root, rates, ratios)
    if args.repeat > 1:
        print(f"medians of {args.repeat} rounds (ratio: median of each round's ratio to the "
              "ceiling measured just before it, [lowest, highest])", flush=True)
        for label, values in rates.items():
            r = sorted(ratios[label])
            print(f"  {label:<34} {statistics.median(values):>10,.0f} "
                  f"{statistics.median(r):>10.3f}  [{r[0]:.3f}, {r[-1]:.3f}]", flush=True)
    finish(args, root)


CEILING = "1 ceiling (getmany + orjson)"


async def measure_round(args: argparse.Namespace, bootstrap: str, topic: str,
                        records: list[tuple[bytes, bytes]], root: Path,
                        rates: dict[str, list[float]], ratios: dict[str, list[float]]) -> None:
    """Each contender chosen, right after a ceiling run of its own, against the same topic.

    The machine's speed drifts within a minute; a ceiling measured just before each
    contender pairs them more closely than one ceiling per round (the whole comparison
    takes minutes per round).
    """
    total = len(records)
    print(f"  {'contender':<34} {'events/s':>10} {'x ceiling':>10} {'peak RSS':>10}", flush=True)
    ceiling_rate = 0.0

    def line(label: str, r: dict[str, Any], note: str = "") -> None:
        nonlocal ceiling_rate
        rate = r["events"] / r["seconds"]
        if label == CEILING:
            ceiling_rate = rate
        rates.setdefault(label, []).append(rate)
        ratios.setdefault(label, []).append(rate / ceiling_rate)
        print(f"  {label:<34} {rate:>10,.0f} {rate / ceiling_rate:>10.3f} "
              f"{r['rss_mb']:>7,.0f} MiB  {note}".rstrip(), flush=True)

    def ceiling() -> None:
        r = run_json_subprocess(["_ceiling", bootstrap, topic, str(total)], timeout=300)
        line(CEILING, r, f"{r['events']:,} events in {r['seconds']:.2f} s")

    if "faust" in args.only:
        ceiling()
        r = await measure_faust(bootstrap, topic, args.partitions, total, args.faust_seconds,
                                root / "faust.log")
        note = (f"{r['events']:,.0f} events in {r['seconds']:.1f} s"
                + ("" if r["finished"] else
                   f"; CAPPED at {args.faust_seconds:.0f} s ({r['done']:,.0f}/{total:,} done)"))
        line("2 faust agent + table, 8 scopes", r, note)

    for count in (1, 2):
        if f"worker{count}" not in args.only:
            continue
        ceiling()
        r = await measure_workers(bootstrap, topic, args.partitions, total, count, root)
        line(f"3 touchstream worker x{count}", r,
             f"{r['events']:,} events in {r['seconds']:.1f} s"
             + (f" ({r['note']})" if "note" in r else "")
             + (f"; RSS each {', '.join(f'{x:.0f}' for x in r['rss_each'])} MiB"
                if count > 1 else ""))
        for i, text in enumerate(r["stats"]):
            if text:
                print(f"      worker {i} (whole run): {text}", flush=True)

    if "embedded" in args.only:
        ceiling()
        r = await measure_embedded(records, args.batch, args.http_concurrency, root)
        line(f"4 embedded, HTTP batches of {args.batch:,}", r,
             f"{r['events']:,} events in {r['seconds']:.1f} s; {r['accepted']:,} accepted; "
             f"{args.http_concurrency} in flight")
    if not ceiling_rate:  # no contender chosen: the ceiling alone
        ceiling()


def finish(args: argparse.Namespace, root: Path) -> None:
    if args.keep:
        print(f"logs and state kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        ceiling_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_faust":
        faust_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=None, help="use this broker (default: start one)")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=2,
                        help="input partitions (two workers need at least 2)")
    parser.add_argument("--faust-seconds", type=float, default=60.0,
                        help="stop measuring Faust after this long and report its rate")
    parser.add_argument("--batch", type=int, default=1_000, help="HTTP batch size")
    parser.add_argument("--http-concurrency", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2,000 events, Faust capped at 15 s")
    parser.add_argument("--keep", action="store_true", help="keep logs and state")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure everything this many times, then print medians "
                             "(this machine's speed varies by 20%% from minute to minute)")
    parser.add_argument("--only", default=",".join(CONTENDERS),
                        help="comma-separated contenders to measure besides the ceiling "
                             f"(default: all of {','.join(CONTENDERS)})")
    args = parser.parse_args()
    args.only = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = sorted(args.only - set(CONTENDERS))
    if unknown:
        parser.error(f"--only: unknown contender(s) {', '.join(unknown)} "
                     f"(known: {', '.join(CONTENDERS)})")
    if args.quick:
        args.events, args.faust_seconds = min(args.events, 2_000), min(args.faust_seconds, 15)
    if args.bootstrap:
        asyncio.run(run(args, args.bootstrap))
        return
    from deploy.kafka.broker import KafkaBroker

    with KafkaBroker() as broker:
        asyncio.run(run(args, broker.bootstrap))


if __name__ == "__main__":
    main()
