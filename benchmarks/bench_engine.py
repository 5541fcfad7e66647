"""Engine throughput: decode alone vs decode + engine ingest, on the airline survey.

Prints events per second for each stage, measured side by side in one run, and the
ratio to the decode-only ceiling. The events are the real airline survey (389,640
events) encoded once to JSON lines, so the decoder sees what a consumer would. Each
stage also reports its CPU time per event, steadier than wall time on a shared machine.

    python benchmarks/bench_engine.py [--passengers N] [--batch N]
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import timedelta

import msgspec

from schemas import EventDecoder
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.sources import airline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passengers", type=int, default=None)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    lines = [msgspec.json.encode(e) for e in airline.events(limit=args.passengers)]
    clock = (airline.DEFAULT_START + timedelta(days=60)).timestamp
    decoder = EventDecoder(clock=clock)
    gc.collect()

    started, cpu = time.perf_counter(), time.process_time()
    decoded = [decoder.decode(line) for line in lines]
    decode_s, decode_cpu = time.perf_counter() - started, time.process_time() - cpu

    engine = Engine(EngineConfig())  # 8 scopes x (4 continuous + 4 calendar) windows
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(decoded), args.batch):
        engine.ingest(decoded[i : i + args.batch])
    ingest_s, ingest_cpu = time.perf_counter() - started, time.process_time() - cpu

    n = len(lines)
    total = decode_s + ingest_s
    print(f"{n:,} events, batches of {args.batch:,}, {len(engine.series):,} series")
    for label, seconds, cpu_s in (("decode only", decode_s, decode_cpu),
                                  ("engine ingest only", ingest_s, ingest_cpu)):
        print(f"{label:20s}  {n / seconds:>10,.0f} events/s  {seconds / n * 1e6:6.2f} µs/event"
              f"  (CPU {cpu_s / n * 1e6:.2f} µs/event)")
    print(f"decode + ingest       {n / total:>10,.0f} events/s  ratio to decode-only "
          f"{(n / total) / (n / decode_s):.2f}")


if __name__ == "__main__":
    main()
