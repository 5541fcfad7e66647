"""Instructions per event of the worker's batch path, counted by valgrind: a figure that
does not move with the machine's speed.

This machine's speed swings 20-40% from one minute to the next, so wall-clock A/B runs
of a 5-10% change need many rounds. The number of instructions executed is nearly
deterministic: ``PartitionState.process`` (decode, engine, customers, journeys) runs
under callgrind on simulated events, once with a warm-up only and once with the warm-up
and ``--events`` more; the difference, per event, is the figure. ``--against REV``
measures a git revision too (checked out in a temporary worktree), side by side, on
the same events.

Instructions are not time: memory stalls do not count (so a change that cuts cache
misses, such as fewer garbage-collector walks, shows less here than on the clock).

    python benchmarks/bench_instructions.py [--events 20000] [--warm 20000] [--against HEAD~3]

Needs valgrind (``apt-get install valgrind``); ~1.5 min per revision at the defaults.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCH = 5_000
"""Records per ``process`` call: about what one fetch of one partition brings."""


def make_records(n: int, path: Path) -> None:
    """``n`` simulated events (the pipeline benchmark's kind), pickled to ``path``."""
    import orjson

    sys.path.insert(0, str(REPO_ROOT))
    from streams.sources.simulator import Simulator

    span = 1800.0  # event time spread over the half hour ending now: nothing is late
    sim = Simulator(seed=7, customers=20_000, rate=max(10.0, n / span),
                    start=datetime.now(UTC) - timedelta(seconds=span + 60))
    records = [(e["customer_id"].encode(), orjson.dumps(e)) for e in sim.events(n)]
    path.write_bytes(pickle.dumps(records))


def child(root: str, path: str, warm: int, events: int) -> None:
    """Process ``warm`` then ``events`` records with the code under ``root``."""
    import gc

    sys.path.insert(0, root)
    from streams.engine.config import EngineConfig
    from streams.worker.partition import PartitionState

    class Record:
        __slots__ = ("headers", "key", "offset", "timestamp", "value")

        def __init__(self, offset: int, key: bytes, value: bytes) -> None:
            self.offset, self.key, self.value = offset, key, value
            self.timestamp, self.headers = None, ()

    pairs = pickle.loads(Path(path).read_bytes())[: warm + events]  # noqa: S301 - our file
    records = [Record(i, k, v) for i, (k, v) in enumerate(pairs)]
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 10, 10)  # as the worker runs
    state = PartitionState.fresh(0, EngineConfig())
    for i in range(0, len(records), BATCH):
        state.process(records[i : i + BATCH])


def count(root: Path, path: Path, warm: int, events: int) -> int:
    """Instructions callgrind counted for a whole child run."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, __file__, "--child", str(root), str(path), str(warm),
               str(events)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_event(root: Path, path: Path, warm: int, events: int) -> float:
    return (count(root, path, warm, events) - count(root, path, warm, 0)) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--warm", type=int, default=20_000,
                        help="events processed first, in both runs (journeys, customers)")
    parser.add_argument("--against", metavar="REV", help="also measure this git revision")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, path, warm, events = args.child
        child(root, path, int(warm), int(events))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        path = Path(tmp) / "records.pickle"
        make_records(args.warm + args.events, path)
        rows = [("working tree", REPO_ROOT)]
        if args.against:
            other = Path(tmp) / "against"
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach",  # noqa: S603,S607
                            "-q", str(other), args.against], check=True)
            rows.append((args.against, other))
        try:
            print(f"{args.events:,} simulated events after {args.warm:,} warm-up ones, "
                  f"batches of {BATCH:,}, under callgrind (Python {sys.version.split()[0]})")
            figures = []
            for label, root in rows:
                figures.append(per_event(root, path, args.warm, args.events))
                print(f"  {label:24s} {figures[-1]:>10,.0f} instructions/event", flush=True)
            if len(figures) == 2:
                print(f"  ratio (working tree / {args.against}): {figures[0] / figures[1]:.3f}")
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove",  # noqa: S603,S607
                                "--force", str(Path(tmp) / "against")], check=False)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every run
    main()
