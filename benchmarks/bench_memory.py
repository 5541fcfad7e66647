"""Memory as distinct customers and scope series grow: peak RSS, each run in a fresh process.

Every measurement runs in its own subprocess (this script with ``--child``) and reports
its peak resident set (``VmHWM`` from /proc/self/status), so one run's garbage never
counts in the next. The baseline of each table is the same process with an empty engine
(everything imported, the engine built, no events), measured in the same run.

    python benchmarks/bench_memory.py [--quick] [--parts customers,scopes,book,journeys,dedupe]
                                      [--max-customers N] [--days D] [--no-snapshot]
                                      [--dedupe-horizon SECONDS] [--events-per-series N]
                                      [--ids-per-day N]

Parts:

customers  The default ``EngineConfig`` fed 10^3 .. 10^6 distinct customers with four
           events each: a three-touchpoint journey (ces, outcome, then csat with the end
           marker) and a relationship NPS survey. Channels, touchpoints, owners, segments
           and offerings are the simulator's (streams/sources/simulator.py), so the number
           of series stays put while customers grow. Customers come in blocks of 1,000
           whose journeys interleave (about 1,000 open at a time); all events lie evenly
           over ``--days`` (30) of event time, in order, so the dedupe memory holds the
           event ids of the whole dedupe horizon (the lateness horizon, 35 days, unless
           ``--dedupe-horizon``). After ingest the engine takes a
           snapshot (``Engine.snapshot``), which is when the peak may move; a fresh
           process then reads it back (``Engine.restore``), as a restart would.
scopes     The default scopes with V channels, V touchpoints (one per channel) and V
           segments (caps raised to fit), one metric (csat), every (channel, segment)
           pair used: V^2 + 3V + 4 series, about 10, 100, 1,000 and 10,000. Each series
           gets ``--events-per-series`` (20) events spread over 7 days; 1,000 customers.
book       ``CustomerBook`` alone: N customers, four values each (no engine around it).
journeys   ``JourneyTracker`` alone: N open journeys of three touchpoints on two channels.
dedupe     The dedupe memory alone (``SeenIds``) over the default 35-day horizon: D ids a
           day (10^4 .. ``--ids-per-day``, 10^6), in event-time order, pruned as the
           engine prunes it, side by side: "set" is every id in the hot tier (a Python set
           of ints, as before the frozen tier); "two-tier" freezes buckets older than the
           hot range (2 h behind the watermark at the default ``allowed_lateness``) into
           sorted uint64 arrays. Each row also gives the snapshot bytes per id.

``--quick`` runs a tiny version (a few seconds) for the smoke test.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from schemas.event import Ces, Csat, Nps, Outcome, TouchpointEvent  # noqa: E402
from streams.engine.config import DimensionConfig, EngineConfig  # noqa: E402
from streams.engine.customers import CustomerBook  # noqa: E402
from streams.engine.dedupe import SeenIds, bucket_width  # noqa: E402
from streams.engine.engine import Engine  # noqa: E402
from streams.engine.journeys import JourneyTracker  # noqa: E402
from streams.sources.simulator import (  # noqa: E402
    CHANNEL_TOUCHPOINTS,
    JOURNEY_TOUCHPOINTS,
    JOURNEY_TYPES,
    SEGMENTS,
    SURVEY_SOURCES,
)

START = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
BATCH = 10_000
BLOCK = 1_000  # customers whose journeys interleave
JOURNEY_CHANNELS = ("web", "app", "phone", "chat", "email", "store")
STAGES = ("recognize", "request", "respond")
MiB = 1024 * 1024


def status_kib(field: str) -> int:
    """A ``Vm*`` figure of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def customer_id(i: int) -> str:
    """A pseudonymous id like the simulator's: 48 bits in hex, distinct for distinct i."""
    return f"cus-{(i * 0x9E3779B97F4B) % (1 << 48):012x}"


def when(at: int) -> datetime:
    return datetime.fromtimestamp(at, UTC)


# -- event streams ---------------------------------------------------------------------


def customer_events(n: int, days: float, seed: int = 7) -> Iterator[list[TouchpointEvent]]:
    """Four events per customer (a 3-touchpoint journey and an NPS survey), in batches."""
    rng = random.Random(seed)
    total = 4 * n
    step = days * 86_400 / max(total, 1)
    batch: list[TouchpointEvent] = []
    k = 0
    for first in range(0, n, BLOCK):
        block = range(first, min(first + BLOCK, n))
        profile = {i: (SEGMENTS[i % len(SEGMENTS)], rng.random()) for i in block}
        for round_ in range(4):
            for i in block:
                segment, temper = profile[i]
                at = when(START + int(k * step))
                common: dict[str, Any] = {
                    "event_id": f"evt-{k:032x}", "occurred_at": at,
                    "customer_id": customer_id(i), "segment": segment.name,
                    "offering": segment.offerings[i % 2],
                }
                good = rng.random() < 0.55 + 0.4 * temper
                if round_ < 3:
                    jtype = JOURNEY_TYPES[i % len(JOURNEY_TYPES)]
                    channel = JOURNEY_CHANNELS[(i + (round_ == 2)) % len(JOURNEY_CHANNELS)]
                    touchpoint, owner = JOURNEY_TOUCHPOINTS.get(
                        (jtype, channel), CHANNEL_TOUCHPOINTS[channel])
                    common.update(journey_id=f"jrn-{i:016x}", journey_type=jtype,
                                  stage=STAGES[round_], touchpoint=touchpoint,
                                  channel=channel, owner=owner,
                                  source=f"sim-{SURVEY_SOURCES[channel]}")
                    if round_ == 0:
                        event: TouchpointEvent = Ces(
                            value=rng.choice((5, 6, 7) if good else (1, 2, 3, 4)), **common)
                    elif round_ == 1:
                        event = Outcome(value="resolved" if good else "unresolved", **common)
                    else:
                        event = Csat(value=rng.choice((4, 5) if good else (1, 2, 3)),
                                     journey_end=True, **common)
                else:
                    common.update(touchpoint="relationship_survey", channel="email",
                                  owner="customer_experience", program="periodic",
                                  source="sim-nps-survey")
                    event = Nps(value=rng.choice((9, 10) if good else (3, 6, 7)), **common)
                batch.append(event)
                k += 1
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
    if batch:
        yield batch


def customer_config(args: argparse.Namespace) -> EngineConfig:
    """The default configuration, or with a shorter dedupe horizon when asked."""
    if args.dedupe_horizon is None:
        return EngineConfig()
    return EngineConfig(dedupe_horizon=args.dedupe_horizon)


def scope_config(v: int) -> EngineConfig:
    """Default scopes, with caps that keep ``v`` channels, touchpoints and segments apart."""
    cap = DimensionConfig(cap=max(100, v))
    return EngineConfig(dimensions={"channel": cap, "touchpoint": cap, "segment": cap})


def scope_events(v: int, per_series: int, days: float = 7.0,
                 customers: int = 1_000) -> Iterator[list[TouchpointEvent]]:
    """csat events cycling through every (channel, segment) pair of ``v`` x ``v``."""
    pairs = v * v
    total = per_series * pairs
    step = days * 86_400 / max(total, 1)
    batch: list[TouchpointEvent] = []
    for k in range(total):
        pair = k % pairs
        channel, segment = pair % v, pair // v
        batch.append(Csat(
            event_id=f"evt-{k:032x}", occurred_at=when(START + int(k * step)),
            customer_id=customer_id(k % customers), segment=f"segment-{segment}",
            channel=f"channel-{channel}", touchpoint=f"touchpoint-{channel}",
            value=1 + (k * 7919) % 5,
        ))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# -- one measurement (in a child process) ---------------------------------------------


def feed(engine: Engine, batches: Iterable[list[TouchpointEvent]]) -> int:
    """Ingest every batch; the number of events fed."""
    events = 0
    for batch in batches:
        engine.ingest(batch)
        events += len(batch)
    return events


def measure(kind: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    out: dict[str, Any] = {"kind": kind, "size": size}
    if kind == "customers":
        engine = Engine(customer_config(args))
        events = feed(engine, customer_events(size, args.days))
        out.update(events=events, customers=len(engine.customers.customers),
                   series=len(engine.series), seen=len(engine.seen),
                   open_journeys=len(engine.journeys.open),
                   closed_journeys=len(engine.journeys.closed))
        out["hwm_ingest_kib"] = status_kib("VmHWM")
        if args.snapshot:
            data = engine.snapshot()
            out["snapshot_bytes"] = len(data)
            if args.snapshot_file:
                Path(args.snapshot_file).write_bytes(data)
            del data
    elif kind == "restore":  # a snapshot written by a "customers" child, in a fresh process
        data = Path(args.snapshot_file).read_bytes()
        engine = Engine.restore(customer_config(args), data)
        out["customers"] = len(engine.customers.customers)
    elif kind == "scopes":
        engine = Engine(scope_config(size))
        events = feed(engine, scope_events(size, args.events_per_series))
        out.update(events=events, customers=len(engine.customers.customers),
                   series=len(engine.series), seen=len(engine.seen))
    elif kind in ("dedupe-set", "dedupe-tiers"):  # size: ids per day, over 35 days
        config = EngineConfig()
        width = bucket_width(config.dedupe_span)
        seen = SeenIds(width)
        days = config.lateness_horizon // 86_400
        total = size * days
        step = config.lateness_horizon / max(total, 1)
        hot = config.allowed_lateness + 3600 + width  # as Engine._prune_seen
        for lo in range(0, total, BATCH):
            n = min(BATCH, total - lo)
            times = (START + (np.arange(lo, lo + n) * step)).astype(np.int64)
            seen.add([f"evt-{k:032x}" for k in range(lo, lo + n)], times)
            wm = int(times[-1])
            seen.prune(wm - config.dedupe_span,
                       wm - hot if kind == "dedupe-tiers" else None)
        out.update(ids=len(seen), hot=seen.hot, frozen=seen.frozen,
                   hwm_ingest_kib=status_kib("VmHWM"), rss_kib=status_kib("VmRSS"))
        out["snapshot_bytes"] = len(msgspec.msgpack.encode(seen.state()))
    elif kind == "book":
        book = CustomerBook(EngineConfig().customers)
        for r in range(4):
            for i in range(size):
                book.add(customer_id(i), SEGMENTS[i % 5].name, ((i + r) % 5) / 4,
                         START + 60 * r)
        out["customers"] = len(book.customers)
    elif kind == "journeys":
        tracker = JourneyTracker(14 * 86_400, 100_000)
        for r in range(3):
            for i in range(size):
                channel = JOURNEY_CHANNELS[(i + (r == 2)) % len(JOURNEY_CHANNELS)]
                tracker.add(f"jrn-{i:016x}", customer_id(i), JOURNEY_TYPES[i % 5],
                            START + 60 * r, channel, CHANNEL_TOUCHPOINTS[channel][0],
                            STAGES[r], ((i + r) % 5) / 4, False)
        out["open_journeys"] = len(tracker.open)
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    out["seconds"] = time.perf_counter() - started
    out["hwm_kib"] = status_kib("VmHWM")
    return out


# -- the parent: run the children, print the tables -----------------------------------


def run_child(kind: str, size: int, args: argparse.Namespace,
              snapshot_file: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, str(size), "--days", str(args.days),
           "--events-per-series", str(args.events_per_series)]
    if not args.snapshot:
        cmd.append("--no-snapshot")
    if args.dedupe_horizon is not None:
        cmd += ["--dedupe-horizon", str(args.dedupe_horizon)]
    if snapshot_file is not None:
        cmd += ["--snapshot-file", str(snapshot_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"{kind} {size} failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def mib(kib: int) -> str:
    return f"{kib / 1024:8.1f}"


def per_item(kib: int, base: int, count: int) -> str:
    return f"{(kib - base) * 1024 / count:10,.0f}" if count else f"{'-':>10}"


def table(title: str, unit: str, kind: str, sizes: list[int], args: argparse.Namespace,
          extra: list[str]) -> None:
    base = run_child(kind, 0, args)
    print(f"\n{title}")
    head = (f"  {unit:>10}  {'peak RSS MiB':>12}  {'over base':>9}  {'B/' + unit:>10}"
            f"  {'marginal':>10}")
    head += "".join(f"  {e:>12}" for e in extra)
    print(head)
    print(f"  {'baseline':>10}  {mib(base['hwm_kib']):>12}  {'':>9}  {'':>10}  {'':>10}   "
          f"empty ({base['seconds']:.1f} s)")
    before: tuple[int, int] | None = None
    for size in sizes:
        restored: dict[str, Any] | None = None
        if kind == "customers" and args.snapshot:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "engine.snapshot"
                r = run_child(kind, size, args, path)
                restored = run_child("restore", size, args, path)
        else:
            r = run_child(kind, size, args)
        hwm = r["hwm_ingest_kib"] if "hwm_ingest_kib" in r else r["hwm_kib"]
        count = r.get("series", size) if kind == "scopes" else size
        line = (f"  {count:>10,}  {mib(hwm):>12}  {mib(hwm - base['hwm_kib']):>9}  "
                f"{per_item(hwm, base['hwm_kib'], count)}  ")
        line += (per_item(hwm, before[1], count - before[0]) if before and count > before[0]
                 else f"{'':>10}")
        before = (count, hwm)
        line += "".join(f"  {r.get(e, ''):>12,}" if isinstance(r.get(e), int)
                        else f"  {'':>12}" for e in extra)
        line += f"   ({r['seconds']:.1f} s"
        if "snapshot_bytes" in r:
            line += (f"; with snapshot: peak {r['hwm_kib'] / 1024:.1f} MiB, "
                     f"snapshot {r['snapshot_bytes'] / MiB:.1f} MiB")
        if restored is not None:
            line += (f"; restore in a fresh process: peak {restored['hwm_kib'] / 1024:.1f} MiB"
                     f" in {restored['seconds']:.1f} s")
        print(line + ")", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--parts", default="customers,scopes,book,journeys,dedupe")
    parser.add_argument("--max-customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--events-per-series", type=int, default=20)
    parser.add_argument("--no-snapshot", dest="snapshot", action="store_false")
    parser.add_argument("--dedupe-horizon", type=int, default=None,
                        help="seconds of event ids kept for dedupe in part (a) (default: "
                             "the lateness horizon, 35 days)")
    parser.add_argument("--ids-per-day", type=int, default=1_000_000,
                        help="the most ids a day in part (dedupe), over 35 days")
    parser.add_argument("--snapshot-file", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return
    parts = args.parts.split(",")
    if args.quick:
        customers, scopes, book, journeys = [1_000, 10_000], [1, 8], [100_000], [10_000]
        per_day = [1_000]
    else:
        per_day = [n for n in (10_000, 100_000, 1_000_000) if n <= args.ids_per_day]
        customers = [n for n in (1_000, 10_000, 100_000, 1_000_000) if n <= args.max_customers]
        scopes, book, journeys = [1, 8, 30, 98], [10_000, 100_000, 1_000_000], \
            [1_000, 10_000, 100_000]
    print(f"bench_memory: Python {sys.version.split()[0]}, peak RSS = VmHWM of a fresh "
          f"process per row{' (quick)' if args.quick else ''}")
    if "customers" in parts:
        config = ("default EngineConfig" if args.dedupe_horizon is None
                  else f"dedupe_horizon={args.dedupe_horizon:,} s")
        table(f"(a) distinct customers, {config}, 4 events each over {args.days:g} days",
              "customers", "customers", customers, args,
              ["events", "series", "seen", "closed_journeys"])
    if "scopes" in parts:
        table(f"(b) distinct scope series, default scopes, V channels x V segments, "
              f"{args.events_per_series} events per series over 7 days", "series",
              "scopes", scopes, args, ["events"])
    if "book" in parts:
        table("(c) CustomerBook alone, 4 values per customer", "customers", "book", book,
              args, [])
    if "journeys" in parts:
        table("(d) JourneyTracker alone, open journeys of 3 touchpoints", "journeys",
              "journeys", journeys, args, [])
    if "dedupe" in parts:
        dedupe_table(per_day, args)


def dedupe_table(per_day: list[int], args: argparse.Namespace) -> None:
    """(e) the dedupe memory over the 35-day horizon: the set alone against two tiers."""
    base = run_child("dedupe-set", 0, args)["hwm_ingest_kib"]
    print("\n(e) dedupe memory alone (SeenIds), 35-day horizon, ids in event-time order;"
          " peak before the snapshot")
    print(f"  {'ids/day':>10}  {'ids kept':>11}  {'layout':>8}  {'peak RSS MiB':>12}"
          f"  {'over base':>9}  {'B/id':>6}  {'hot ids':>10}  {'snapshot B/id':>13}")
    print(f"  {'baseline':>10}  {'':>11}  {'':>8}  {mib(base):>12}")
    for size in per_day:
        for kind, name in (("dedupe-set", "set"), ("dedupe-tiers", "two-tier")):
            r = run_child(kind, size, args)
            ids = r["ids"]
            over = r["hwm_ingest_kib"] - base
            print(f"  {size:>10,}  {ids:>11,}  {name:>8}  {mib(r['hwm_ingest_kib']):>12}"
                  f"  {mib(over):>9}  {over * 1024 / max(ids, 1):>6.1f}  {r['hot']:>10,}"
                  f"  {r['snapshot_bytes'] / max(ids, 1):>13.2f}   ({r['seconds']:.1f} s;"
                  f" with the snapshot: peak {r['hwm_kib'] / 1024:.1f} MiB)",
                  flush=True)


if __name__ == "__main__":
    main()
