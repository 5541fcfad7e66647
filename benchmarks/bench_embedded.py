"""Embedded runner: durable submit throughput and recovery time, measured in one run.

Submits batches of 1,000 valid events (parsed JSON dicts, as the HTTP route hands
them over) with the default engine configuration and ``synchronous=FULL``, and prints:

- events/s for validation + engine alone (no SQLite): the ceiling;
- events/s for ``submit`` (validate, one committed transaction per batch, apply), with
  periodic snapshots off and at the default 50,000, and through the async ``submit``;
- the time ``open()`` takes to recover N logged events by replay (no snapshot), and to
  restore the snapshot ``close()`` wrote of the same state.

    python benchmarks/bench_embedded.py [--events 100000] [--batch 1000] [--dir /path]

``--dir`` picks the file system (default: a temp dir under the system temp directory);
fsync cost is the file system's, so say which one when quoting the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas import EventDecoder
from streams.embedded import EmbeddedRunner
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine

CHANNELS = ("web", "app", "phone", "chat", "email", "store")
SEGMENTS = ("smb", "enterprise", "consumer")
TOUCHPOINTS = ("support_call", "checkout", "delivery", "onboarding", "billing")


def make_item(i: int, base: int) -> dict[str, Any]:
    """A varied, valid event: three kinds, six channels, journeys on every fifth."""
    kind = ("csat", "nps", "ces")[i % 3]
    value = {"csat": 1 + i * 7 % 5, "nps": i * 3 % 11, "ces": 1 + i % 7}[kind]
    item: dict[str, Any] = {
        "event_id": f"bench-{i}",
        "occurred_at": datetime.fromtimestamp(base + i, UTC).isoformat(),
        "customer_id": f"cus-{i % 5003}",
        "segment": SEGMENTS[i % 3],
        "touchpoint": TOUCHPOINTS[i % 5],
        "channel": CHANNELS[i % 6],
        "owner": "support",
        "kind": kind,
        "value": value,
    }
    if i % 5 == 0:
        item.update(journey_id=f"j-{i // 25}", journey_type="fix", stage="respond")
    return item


def batches(n: int, size: int, base: int) -> list[list[dict[str, Any]]]:
    return [[make_item(i, base) for i in range(s, min(n, s + size))] for s in range(0, n, size)]


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ceiling(work: list[list[dict[str, Any]]], config: EngineConfig) -> float:
    decoder, engine = EventDecoder(), Engine(config)

    def run() -> None:
        for batch in work:
            engine.ingest([decoder.convert(x) for x in batch])

    return timed(run)


def durable(work: list[list[dict[str, Any]]], config: EngineConfig, path: Path,
            snapshot_every: int) -> float:
    with EmbeddedRunner(path, config, snapshot_every=snapshot_every) as runner:
        return timed(lambda: [runner.submit_blocking(b) for b in work])


def durable_async(work: list[list[dict[str, Any]]], config: EngineConfig, path: Path) -> float:
    async def run() -> float:
        async with EmbeddedRunner(path, config, snapshot_every=10**9) as runner:
            started = time.perf_counter()
            for batch in work:
                await runner.submit(batch)
            return time.perf_counter() - started

    gc.collect()
    return asyncio.run(run())


def recovery(work: list[list[dict[str, Any]]], config: EngineConfig,
             path: Path) -> tuple[float, float, float]:
    """(replay N logged rows, write the close snapshot, restore that snapshot) seconds."""
    runner = EmbeddedRunner(path, config, snapshot_every=10**9)
    runner.open()
    for batch in work:
        runner.submit_blocking(batch)
    del runner  # dropped, not closed: no snapshot, everything is in the log
    gc.collect()
    replayed = EmbeddedRunner(path, config, snapshot_every=10**9)
    replay_s = timed(replayed.open)
    if replayed.stats()["log_rows"] != sum(len(b) for b in work):
        raise RuntimeError("the replay did not see every logged event")
    close_s = timed(replayed.close)
    restored = EmbeddedRunner(path, config, snapshot_every=10**9)
    restore_s = timed(restored.open)
    restored.close()
    return replay_s, close_s, restore_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    config = EngineConfig()  # 8 scopes, 4 sliding + 4 calendar windows, journeys
    base = int(time.time()) - 3 * 86_400
    work = batches(args.events, args.batch, base)
    n = args.events
    root = Path(tempfile.mkdtemp(prefix="bench-embedded-", dir=args.dir))
    try:
        top = ceiling(work, config)
        off = durable(work, config, root / "a", 10**9)
        default = durable(work, config, root / "b", 50_000)
        via_async = durable_async(work, config, root / "c")
        replay_s, close_s, restore_s = recovery(work, config, root / "d")
    finally:
        shutil.rmtree(root)
    print(f"{n:,} events in batches of {args.batch:,}; default EngineConfig; "
          f"synchronous=FULL, WAL; data under {root.parent}")
    print(f"  validate + engine, no SQLite      {n / top:>10,.0f} events/s  (ceiling)")
    for label, seconds in (("submit, snapshots off", off),
                           ("submit, snapshot every 50,000", default),
                           ("async submit (to_thread), no snap", via_async)):
        print(f"  {label:<33} {n / seconds:>10,.0f} events/s  "
              f"{len(work) / seconds:>6,.0f} commits/s  {top / seconds:.0%} of the ceiling")
    for label, seconds in ((f"recover {n:,} logged events (replay)", replay_s),
                           ("write the snapshot at close", close_s),
                           ("recover from that snapshot", restore_s)):
        print(f"  {label:<33} {seconds:>10.2f} s")

if __name__ == "__main__":
    main()
