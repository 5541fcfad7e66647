"""Random SIGKILLs, Jepsen-style: nothing acknowledged is lost under any kill.

Two workers in one group share 6 input partitions on a real broker. While events are
produced, a seeded schedule SIGKILLs one worker or both at random moments — the first
kill before any checkpoint was written, some during the recovery that follows a
restart — and restarts each at once on its own state directory. Traffic then stops, so
partitions that go quiet are checked too. Pass: within ``SETTLE`` seconds the merged
view reflects every partition up to its end offset and equals an engine fed exactly the
valid events.

The suite runs a few seeds per guarantee. More, as a soak (``..._SEED_BASE`` shifts them):
``TOUCHSTREAM_KILL_SEEDS=20 .venv/bin/python -m pytest -s <this file>``.
Every run prints its seed and schedule.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from worker_support import (
    TEST_CONFIG,
    Item,
    Produced,
    WorkerProcess,
    Workers,
    end_offsets,
    engine_differences,
    make_stream,
    oracle,
    produce,
    producer,
    worker_settings,
    write_config,
)

from streams.worker.reader import ScoresReader
from streams.worker.settings import WorkerSettings
from streams.worker.topics import ensure_topics

pytestmark = pytest.mark.slow

PARTITIONS = 6
EVENTS = 24_000
TRAFFIC_SECONDS = 10.0
CHECKPOINT_INTERVALS = (3.0, 30.0)
"""A seed draws one: checkpoints now and then, or none before the traffic ends."""
SETTLE = 60.0
"""Seconds after the last record for the view to be exact (session timeout 6 s of a
killed member, a rebalance, recovery and catch-up fit well within)."""

SEEDS = int(os.environ.get("TOUCHSTREAM_KILL_SEEDS", "2"))
SEED_BASE = int(os.environ.get("TOUCHSTREAM_KILL_SEED_BASE", "7100"))
CASES = [("at_least_once", SEED_BASE + i) for i in range(SEEDS + 1)] + \
        [("exactly_once", SEED_BASE + 50 + i) for i in range(SEEDS)]


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL ``targets`` ``wait`` seconds after the previous kill, or, when
    ``in_recovery``, ``wait`` seconds after every target has been given partitions
    again (the group is then rebalancing and recovering); restart them ``down``
    seconds later (0: at once; past the session timeout, the survivor takes over the
    partitions of the killed worker first)."""

    wait: float
    targets: tuple[str, ...]
    in_recovery: bool = False
    down: float = 0.0

    def __str__(self) -> str:
        when = "assigned+" if self.in_recovery else "+"
        down = f"(down {self.down:.1f}s)" if self.down else ""
        return f"{when}{self.wait:.2f}s:{'+'.join(self.targets)}{down}"


def schedule(seed: int) -> tuple[float, list[Kill]]:
    """The checkpoint interval and the kills of one run: the first kill before any
    checkpoint, then kills anywhere in the traffic and after it, some while the group
    recovers from the previous one."""
    rng = random.Random(seed)
    interval = rng.choice(CHECKPOINT_INTERVALS)

    def targets() -> tuple[str, ...]:
        roll = rng.random()
        return ("w1", "w2") if roll < 0.3 else (("w1",) if roll < 0.65 else ("w2",))

    def down(victims: tuple[str, ...]) -> float:
        return rng.uniform(7.0, 9.0) if len(victims) == 1 and rng.random() < 0.4 else 0.0

    first = targets()
    kills = [Kill(rng.uniform(0.5, min(interval, TRAFFIC_SECONDS) * 0.6), first,
                  down=down(first))]
    for _ in range(rng.randint(3, 5)):
        victims = targets()
        if rng.random() < 0.5:
            kills.append(Kill(rng.uniform(0.0, 1.5), victims, in_recovery=True,
                              down=down(victims)))
        else:
            kills.append(Kill(rng.uniform(1.0, 5.0), victims, down=down(victims)))
    return interval, kills


@pytest.mark.parametrize(("guarantee", "seed"), CASES,
                         ids=[f"{g}-seed{s}" for g, s in CASES])
async def test_random_kills_lose_nothing(kafka_bootstrap: str, tmp_path: Path,
                                         guarantee: str, seed: int) -> None:
    interval, kills = schedule(seed)
    print(f"seed={seed} guarantee={guarantee} checkpoint_interval={interval:g}"  # noqa: T201
          f" kills={' '.join(map(str, kills))}")
    name = f"rand-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-touchpoints"
    config_path = write_config(tmp_path / "engine.json", TEST_CONFIG)
    # The product's defaults, but for the checkpoint interval and a short session
    # timeout (a killed member's partitions move on after 6 s).
    base = dict(input_topic=topic, partitions=PARTITIONS, batch_max=10_000,
                checkpoint_interval=interval, flush_interval=0.5,
                processing_guarantee=guarantee, store="rocksdb://")
    settings = {w: worker_settings(kafka_bootstrap, name, tmp_path / f"state-{w}", **base)
                for w in ("w1", "w2")}
    ensure_topics(settings["w1"])
    items = make_stream(EVENTS, seed=seed, customers=600)
    workers = Workers(tmp_path)
    cluster = _Cluster(workers, settings, config_path)
    try:
        cluster.start("w1", "w2")
        cluster.wait_assigned(("w1", "w2"), {"w1": 0, "w2": 0})
        traffic = _Traffic(kafka_bootstrap, topic, items)
        traffic.start()
        for kill in kills:
            cluster.kill(kill)
        traffic.join()
        assert traffic.error is None, f"producing failed: {traffic.error!r}"
        quiet = time.monotonic()  # the last kill and the last record are behind us
        produced = traffic.produced
        ends = end_offsets(kafka_bootstrap, topic)
        async with ScoresReader.from_settings(settings["w1"], TEST_CONFIG) as reader:
            try:
                await reader.wait_for_offsets(ends, SETTLE)
            except TimeoutError as exc:
                raise AssertionError(f"seed {seed}: not settled within {SETTLE:.0f} s "
                                     f"after the last kill: {exc}") from None
            print(f"seed={seed}: every partition at its end {time.monotonic() - quiet:.1f} s"  # noqa: T201
                  " after the last kill and the last record")
            workers.check_alive()
            problems = engine_differences(reader.engine(), oracle(TEST_CONFIG, produced),
                                          TEST_CONFIG)
            assert problems == [], f"seed {seed} ({len(problems)} differences): {problems[:5]}"
    except BaseException as exc:
        print(workers.logs())  # noqa: T201 - shown on failure
        # Last, so the tail of a long CI log still says what failed.
        print(f"seed={seed} guarantee={guarantee} FAILED: {type(exc).__name__}: "  # noqa: T201
              f"{str(exc)[:2000]}")
        raise
    finally:
        workers.kill_all()


ASSIGNED = "assigned input partitions"


class _Cluster:
    """The two workers, killed and restarted by name."""

    def __init__(self, workers: Workers, settings: dict[str, WorkerSettings],
                 config_path: Path) -> None:
        self.workers = workers
        self.settings = settings
        self.config_path = config_path
        self.running: dict[str, WorkerProcess] = {}
        self._last_start = {w: 0 for w in settings}

    def start(self, *names: str) -> dict[str, int]:
        """Start ``names``; how many assignments each log held before."""
        before = {w: self._assignments(w) for w in names}
        for w in names:
            self.running[w] = self.workers.start(w, self.settings[w], self.config_path)
        return before

    def _assignments(self, name: str) -> int:
        worker = self.running.get(name)
        return 0 if worker is None else worker.log_text().count(ASSIGNED)

    def wait_assigned(self, names: tuple[str, ...], before: dict[str, int],
                      timeout: float = 30.0) -> None:
        """Wait until each of ``names`` logged a new assignment (bounded: a worker
        that is not given partitions in time is killed anyway)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._assignments(w) > before[w] for w in names):
                return
            time.sleep(0.05)

    def kill(self, kill: Kill) -> None:
        if kill.in_recovery:
            self.wait_assigned(kill.targets, self._last_start)
        time.sleep(kill.wait)
        for w in kill.targets:
            self.running[w].kill()
        time.sleep(kill.down)
        self._last_start.update(self.start(*kill.targets))


class _Traffic(threading.Thread):
    """Produces ``items`` evenly over ``TRAFFIC_SECONDS``, in its own thread."""

    def __init__(self, bootstrap: str, topic: str, items: list[Item]) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.items = items
        self.produced: list[Produced] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        slices = 50
        per = -(-len(self.items) // slices)
        prod = producer(self.bootstrap)
        started = time.monotonic()
        try:
            for i in range(slices):
                self.produced += produce(self.bootstrap, self.topic,
                                         self.items[i * per:(i + 1) * per], prod)
                time.sleep(max(0.0, started + TRAFFIC_SECONDS * (i + 1) / slices
                               - time.monotonic()))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            prod.close()
