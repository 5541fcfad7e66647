"""Helpers for the worker tests: event streams with known flaws, real worker processes,
Kafka reads, and the oracle (a fresh Engine over exactly the valid events).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from schemas.decode import EventDecoder, EventError
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.worker.scores import FAMILIES
from streams.worker.settings import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]

CHANNELS = ("web", "app", "phone", "store", "email", "chat")
TOUCHPOINTS = ("survey", "support_call", "chat_end", "checkout", "review")
SEGMENTS = ("consumer", "smb", "enterprise")
OWNERS = ("support", "sales", "digital")
JOURNEYS = ("onboarding", "technical_problem", "upgrade")
STAGES = ("recognize", "request", "respond")

# A small configuration keeps the comparisons quick; windows still span minutes to days.
TEST_CONFIG = EngineConfig(
    scopes=((), ("channel",), ("segment",), ("channel", "segment"), ("journey_type",)),
)


# -- event streams --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One record to produce, and what the worker must make of it."""

    key: bytes | None
    value: bytes | None
    kind: str  # valid | duplicate | invalid | late
    field: str | None = None  # the field a rejection names


@dataclass(slots=True)
class Produced:
    """An item and where the broker put it."""

    item: Item
    partition: int
    offset: int


def _event(rng: random.Random, i: int, at: datetime, customer: str) -> dict[str, Any]:
    kind = rng.choice(("csat", "nps", "ces", "rating", "outcome", "sentiment"))
    event: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "occurred_at": at.isoformat(),
        "customer_id": customer,
        "segment": rng.choice(SEGMENTS),
        "touchpoint": rng.choice(TOUCHPOINTS),
        "channel": rng.choice(CHANNELS),
        "owner": rng.choice(OWNERS),
        "kind": kind,
    }
    if rng.random() < 0.7:
        event["journey_type"] = rng.choice(JOURNEYS)
        event["journey_id"] = f"jrn-{customer}-{i % 3}"
        event["stage"] = rng.choice(STAGES)
        event["journey_end"] = rng.random() < 0.1
    if kind == "csat":
        event["value"] = rng.randint(1, 5)
    elif kind == "nps":
        event["value"] = rng.randint(0, 10)
    elif kind == "ces":
        event["value"] = rng.randint(1, 7)
    elif kind == "rating":
        event.update(scale_min=1, scale_max=10, na_code=0)
        event["value"] = 0 if rng.random() < 0.1 else rng.randint(1, 10)
    elif kind == "outcome":
        event["value"] = rng.choice(("resolved", "unresolved", "abandoned"))
    else:
        event["value"] = rng.randint(-8, 8) / 8  # exact in binary: sums never round
    if rng.random() < 0.05:
        event["comment"] = rng.choice(("Þjónustan var frábær", "太慢了", "ok 👍", "mauvais"))
    return event


def _invalid(rng: random.Random, i: int, at: datetime, customer: str) -> Item:
    key = customer.encode()
    base = _event(rng, i, at, customer)
    choice = i % 9
    if choice == 0:
        return Item(key, b'{"event_id": "broken', "invalid", "$")
    if choice == 1:
        base.update(kind="csat", value=7)
        return Item(key, json.dumps(base).encode(), "invalid", "value")
    if choice == 2:
        del base["event_id"]
        return Item(key, json.dumps(base).encode(), "invalid", "event_id")
    if choice == 3:
        del base["customer_id"]
        return Item(key, json.dumps(base).encode(), "invalid", "customer_id")
    if choice == 4:
        base["occurred_at"] = at.replace(tzinfo=None).isoformat()
        return Item(key, json.dumps(base).encode(), "invalid", "occurred_at")
    if choice == 5:
        base["kind"] = "mood"
        return Item(key, json.dumps(base).encode(), "invalid", "kind")
    if choice == 6:
        base["occurred_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        return Item(key, json.dumps(base).encode(), "invalid", "occurred_at")
    if choice == 7:
        return Item(key, None, "invalid", "$")
    return Item(key, b"\xff\xfe not utf-8 \xc3\x28", "invalid", "$")


def make_stream(n: int, *, seed: int, start: datetime | None = None,
                span: timedelta = timedelta(hours=2), customers: int = 150,
                duplicates: float = 0.05, invalid: float = 0.03, late: int = 10,
                first_id: int = 0) -> list[Item]:
    """``n`` valid events over ``span`` (some out of order, within the lateness), plus
    duplicates (same event id and key), invalid records and late events (40 days old:
    past the default 35-day ``lateness_horizon``).

    Times are in the past, so every valid event passes the decoder's clock checks.
    """
    rng = random.Random(seed)
    start = start or datetime.now(UTC).replace(microsecond=0) - span - timedelta(minutes=30)
    step = span / max(n, 1)
    items: list[Item] = []
    valid: list[Item] = []
    seen_customers: list[str] = []
    for j in range(n):
        i = first_id + j
        at = start + step * j
        if rng.random() < 0.2:
            at -= timedelta(seconds=rng.randint(1, 600))  # out of order, within lateness
        customer = f"cus-{rng.randrange(customers)}"
        seen_customers.append(customer)
        item = Item(customer.encode(), json.dumps(_event(rng, i, at, customer)).encode(),
                    "valid")
        items.append(item)
        valid.append(item)
        if valid and rng.random() < duplicates:
            again = rng.choice(valid)
            items.append(Item(again.key, again.value, "duplicate"))
        if rng.random() < invalid:
            items.append(_invalid(rng, i, at, customer))
    # Late events: customers already seen, so their partition's watermark is far ahead.
    for k in range(late):
        customer = rng.choice(seen_customers[: len(seen_customers) // 4 or 1])
        at = start - timedelta(days=40, minutes=k)
        position = rng.randrange(len(items) // 2, len(items) + 1)
        event = _event(rng, first_id + n + k, at, customer)
        event["event_id"] = f"late-{first_id}-{k}"
        items.insert(position, Item(customer.encode(), json.dumps(event).encode(), "late",
                                    "occurred_at"))
    return items


def producer(bootstrap: str, **config: Any) -> KafkaProducer:
    """kafka-python's producer: idempotent, so retries never add records we did not send."""
    settings: dict[str, Any] = {"bootstrap_servers": bootstrap, "acks": "all",
                                "linger_ms": 5, "enable_idempotence": True}
    settings.update(config)
    return KafkaProducer(**settings)


def produce(bootstrap: str, topic: str, items: Iterable[Item],
            prod: KafkaProducer | None = None,
            headers: list[tuple[str, bytes]] | None = None) -> list[Produced]:
    """Send ``items`` in order; return each with its partition and offset."""
    own = prod is None
    prod = prod or producer(bootstrap)
    try:
        futures = [(item, prod.send(topic, key=item.key, value=item.value, headers=headers))
                   for item in items]
        prod.flush()
        out = []
        for item, fut in futures:
            md = fut.get(timeout=30)
            out.append(Produced(item, md.partition, md.offset))
        return out
    finally:
        if own:
            prod.close()


# -- reading Kafka --------------------------------------------------------------------


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, *, isolation_level: str = "read_committed",
             timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to its current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level=isolation_level)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def latest_by_key(records: Iterable[Any]) -> dict[bytes, bytes]:
    """A compacted view: the latest value per key, tombstones removing keys."""
    latest: dict[bytes, bytes] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.value is None:
            latest.pop(r.key, None)
        else:
            latest[r.key] = r.value
    return latest


def wait_until(condition: Callable[[], Any], timeout: float, describe: Callable[[], str],
               interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``describe()``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {describe()}")
        time.sleep(interval)


# -- worker processes -----------------------------------------------------------------


def worker_settings(bootstrap: str, name: str, state_dir: Path, *, input_topic: str,
                    partitions: int, **overrides: Any) -> WorkerSettings:
    """Settings of one test deployment: every topic named after ``name``."""
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "app_id": name,
        "topic_touchpoints": input_topic,
        "topic_dlq": f"{name}.dlq",
        "topic_scores": f"{name}.scores",
        "topic_alerts": f"{name}.alerts",
        "topic_followups": f"{name}.followups",
        "topic_partitions": partitions,
        "store": "memory://",
        "state_dir": state_dir,
        "flush_interval": 0.2,
        "checkpoint_interval": 2.0,
        "scores_interval": 0.5,
        "session_timeout": 6.0,
        "rebalance_timeout": 10.0,
        "standby_replicas": 1,
    }
    values.update(overrides)
    return WorkerSettings(**values)


def settings_env(settings: WorkerSettings, config_path: Path | None) -> dict[str, str]:
    """The ``TOUCHSTREAM_*`` environment that reproduces ``settings`` in a process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHSTREAM_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"TOUCHSTREAM_{name.upper()}"] = str(value)
    if config_path is not None:
        env["TOUCHSTREAM_ENGINE_CONFIG"] = str(config_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(path: Path, config: EngineConfig) -> Path:
    """Write an engine configuration file for workers."""
    path.write_text(config.model_dump_json(), encoding="utf-8")
    return path


@dataclass
class WorkerProcess:
    """``python -m streams.worker`` as a separate OS process, logging to a file."""

    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)
    _log_start: int = 0
    """Where this process's output starts in the log (a restarted worker appends)."""

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.worker"], cwd=REPO_ROOT, env=self.env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") \
            if self.log_path.exists() else ""

    def log_tail(self, n: int = 80) -> str:
        lines = self.log_text().splitlines()[-n:]
        return f"--- last {len(lines)} lines of {self.name} ({self.log_path}) ---\n" + \
            "\n".join(lines)

    def own_log_tail(self, end: int | None = None, n: int = 80) -> str:
        """The end of what this process wrote (up to ``end``, where a restart's output
        begins) and how it exited."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_start)
            text = f.read(None if end is None else end - self._log_start)
        lines = text.decode("utf-8", errors="replace").splitlines()[-n:]
        assert self.process is not None
        return (f"--- {self.name} (pid {self.process.pid}) exited with "
                f"{self.process.returncode}; the last {len(lines)} lines it wrote to "
                f"{self.log_path} ---\n" + "\n".join(lines))

    def kill(self) -> None:
        """SIGKILL: no chance to flush or checkpoint."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._close()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after ``timeout``)."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s\n"
                                     + self.log_tail()) from None
        self._close()
        return int(self.process.returncode)

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Workers:
    """Every worker a test starts; all are killed at the end, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.all: list[WorkerProcess] = []

    def start(self, name: str, settings: WorkerSettings,
              config_path: Path | None) -> WorkerProcess:
        worker = WorkerProcess(name, settings_env(settings, config_path),
                               self.log_dir / f"{name}.log")
        self.all.append(worker.start())
        return worker

    def logs(self) -> str:
        return "\n".join(w.log_tail() for w in self.all)

    def check_alive(self) -> None:
        dead = [w for w in self.all if w.process is not None and not w.alive
                and w.process.returncode not in (0, -signal.SIGKILL)]
        if dead:
            raise AssertionError("worker died:\n" + "\n".join(
                w.own_log_tail(self._next_start(w)) for w in dead))

    def _next_start(self, worker: WorkerProcess) -> int | None:
        """Where the output of the next process writing ``worker``'s log begins."""
        later = self.all[self.all.index(worker) + 1:]
        return next((w._log_start for w in later if w.log_path == worker.log_path), None)

    def kill_all(self) -> None:
        for w in self.all:
            w.kill()


# -- the oracle -----------------------------------------------------------------------


def oracle(config: EngineConfig, produced: Iterable[Produced]) -> Engine:
    """A fresh Engine fed, in production order, every record that decodes."""
    decoder = EventDecoder()
    engine = Engine(config)
    events = []
    for p in produced:
        if p.item.value is None:
            continue
        try:
            events.append(decoder.decode(p.item.value))
        except EventError:
            continue
    engine.ingest(events)
    return engine


def engine_differences(got: Engine, want: Engine, config: EngineConfig, *,
                       journeys: bool = True) -> list[str]:
    """Every (window, series) whose aggregate vector differs, watermark differences and
    (unless ``journeys`` is false) journey differences. Journeys are stitched within a
    partition, so they match the oracle only when every event is keyed by its customer."""
    problems: list[str] = []
    if got.watermark != want.watermark:
        problems.append(f"watermark {got.watermark} != {want.watermark}")
    keys = set(got.series.keys) | set(want.series.keys)
    for family in FAMILIES:
        for window in want.window_names(family):
            for key in sorted(keys):
                a = got.vector(family, window, key)
                b = want.vector(family, window, key)
                if not np.array_equal(a, b):
                    problems.append(f"{family}/{window} {key}: got n={a[0]:g} sum={a[1]:g},"
                                    f" want n={b[0]:g} sum={b[1]:g}")
    if journeys:
        problems += journey_differences(got, want)
    return problems


def journey_differences(got: Engine, want: Engine) -> list[str]:
    """Journeys by channel count per journey type (n exactly; sums of scores are added in
    another order across partitions, so means to 1e-9), and the open journeys."""
    problems: list[str] = []
    if got.journeys.journey_types() != want.journeys.journey_types():
        problems.append(f"journey types {got.journeys.journey_types()} != "
                        f"{want.journeys.journey_types()}")
    if got.journeys.open_count != want.journeys.open_count:
        problems.append(f"open journeys {got.journeys.open_count} != "
                        f"{want.journeys.open_count}")
    for journey_type in ["all", *want.journeys.journey_types()]:
        ours = got.journeys.by_channel_count(journey_type)
        for band, theirs in want.journeys.by_channel_count(journey_type).items():
            mine = ours[band]
            same = mine["n"] == theirs["n"] and all(
                (mine[k] is None and theirs[k] is None) or (
                    mine[k] is not None and theirs[k] is not None
                    and math.isclose(mine[k], theirs[k], rel_tol=1e-9, abs_tol=1e-9))
                for k in ("score", "low", "high", "mean_duration_seconds"))
            if not same:
                problems.append(f"journeys {journey_type}/{band}: got {mine}, want {theirs}")
    return problems


def expected_dead_letters(produced: Iterable[Produced]) -> dict[tuple[int, int], Produced]:
    """(partition, offset) of every record that must reach the dead-letter topic."""
    return {(p.partition, p.offset): p for p in produced
            if p.item.kind in ("invalid", "late")}


def dead_letter_problems(records: list[Any], produced: list[Produced],
                         source_topic: str, *, repeats: bool = True) -> list[str]:
    """Compare the dead-letter topic with what was produced (``repeats``: allowed)."""
    want = expected_dead_letters(produced)
    got: dict[tuple[int, int], Any] = {}
    problems: list[str] = []
    for r in records:
        h = {k: v.decode() for k, v in (r.headers or [])}
        if h.get("touchstream.source.topic") != source_topic:
            problems.append(f"dead letter from another topic: {h}")
            continue
        pos = (int(h["touchstream.source.partition"]), int(h["touchstream.source.offset"]))
        if pos in got and not repeats:
            problems.append(f"dead letter {pos} repeated")
        got[pos] = (r, h)
    for pos, p in want.items():
        if pos not in got:
            problems.append(f"missing dead letter for {pos} ({p.item.kind}, {p.item.field})")
            continue
        r, h = got[pos]
        status = "late" if p.item.kind == "late" else "invalid"
        if h.get("touchstream.kind") != status or h.get("touchstream.field") != p.item.field:
            problems.append(f"dead letter {pos}: headers {h}, expected {status} "
                            f"{p.item.field}")
        if not h.get("touchstream.reason"):
            problems.append(f"dead letter {pos}: no reason")
        if r.value != p.item.value or r.key != p.item.key:
            problems.append(f"dead letter {pos}: original bytes not kept")
    for pos in got:
        if pos not in want:
            problems.append(f"unexpected dead letter {pos}: {got[pos][1]}")
    return problems


def counts(produced: Iterable[Produced]) -> dict[str, int]:
    """How many items of each kind."""
    out: dict[str, int] = {}
    for p in produced:
        out[p.item.kind] = out.get(p.item.kind, 0) + 1
    return out


def chunks(items: list[Item], n: int) -> Iterator[list[Item]]:
    """``items`` in ``n`` nearly equal consecutive parts."""
    size = -(-len(items) // n)
    for i in range(0, len(items), size):
        yield items[i:i + size]
