"""API latency at fixed request rates: ``GET /v1/scores`` and batch ``POST /v1/events``.

Starts ``touchstream serve`` (the embedded runner) as its own process on a free port
with a temporary data directory, then issues requests at a fixed rate from this
process (open-loop: a request is sent on schedule whether or not earlier ones have
answered) and prints p50/p99 latency per rate, side by side.

    python benchmarks/bench_api.py [--seconds 10] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # deploy/ is no installed package

from deploy.kafka.broker import free_port  # noqa: E402

KEY = "bench-key-0123456789abcdef"


def batch(start: int, n: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=5)
    channels = ("web", "app", "phone", "chat", "email", "store")
    segments = ("budget", "standard", "enterprise")
    return [{"event_id": f"b-{i}", "occurred_at": (at + timedelta(milliseconds=i)).isoformat(),
             "customer_id": f"c-{i % 5000}", "touchpoint": f"tp-{i % 12}",
             "channel": channels[i % 6], "segment": segments[i % 3], "kind": "csat",
             "value": 1 + (i * 7) % 5} for i in range(start, start + n)]


async def fixed_rate(client: httpx.AsyncClient, rate: float, seconds: float,
                     make: Any) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        method, url, body = make(i)
        started = time.perf_counter()
        response = await client.request(method, url, json=body)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            errors += 1

    tasks = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies, errors


def report(label: str, latencies: list[float], errors: int) -> None:
    ms = np.array(latencies) * 1000
    print(f"{label:38s} n={len(ms):5d}  p50 {np.percentile(ms, 50):7.2f} ms  "
          f"p99 {np.percentile(ms, 99):7.2f} ms  errors {errors}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "TOUCHSTREAM_DATA_DIR": data_dir, "TOUCHSTREAM_PORT": str(port),
               "TOUCHSTREAM_API_KEYS": f"bench:read+write:{KEY}",
               "TOUCHSTREAM_RATE_LIMIT": "0"}  # measured: the API, not its limiter
        server = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env,  # noqa: S603
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         headers={"Authorization": f"Bearer {KEY}"}) as client:
                for _ in range(300):
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
                # Warm state: 50,000 events so reads have something to compute.
                for start in range(0, 50_000, 5_000):
                    await client.post("/v1/events", json={"events": batch(start, 5_000)})
                print(f"embedded serve, {args.seconds:.0f} s per rate, state: 50,000 events")
                for rate in (20, 100):
                    lat, err = await fixed_rate(
                        client, rate, args.seconds,
                        lambda i: ("GET", "/v1/scores?scope=channel,segment&window=24h", None))
                    report(f"GET /v1/scores @ {rate}/s", lat, err)
                offset = 1_000_000
                for rate in (2, 10):
                    lat, err = await fixed_rate(
                        client, rate, args.seconds,
                        lambda i, r=rate: ("POST", "/v1/events",
                                           {"events": batch(offset * r + i * args.batch,
                                                            args.batch)}))
                    report(f"POST {args.batch} events @ {rate}/s "
                           f"({rate * args.batch:,} ev/s)", lat, err)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
