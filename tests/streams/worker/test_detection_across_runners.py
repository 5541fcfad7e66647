"""Detection under late data, the same on both runners (issue 18, item 2).

A planted CSAT drop on one channel, answers arriving late by random delays (minutes to
hours, within the lateness horizon), in random batches. The embedded runner's path (one
engine: ``Pipeline`` with the detector) and the Kafka path (input partitions keyed by
customer, their partials merged, the leader's detector on the merged view at the same
event-time cadence) must raise the same alerts — ids, states, times — and neither may
re-date the past: every change is dated by the watermark of the evaluation that made it,
so an answer that arrives after its hour was evaluated changes later evaluations only.
No broker needed: the worker's transport-free core, as in test_partition_state.py.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EventDecoder
from streams.detection import AlertChange, Baseline, DetectionConfig, Detector, DropRule
from streams.engine.config import EngineConfig
from streams.engine.engine import Engine
from streams.pipeline import DETECT_EVERY, Pipeline, convert_many
from streams.worker.merge import MergedView
from streams.worker.partition import PartitionState
from tests.streams.worker.record_support import Record

START = 1_796_601_600  # 2026-12-07T00:00:00Z


@dataclass(frozen=True)
class Plan:
    """How long a stream runs, an answer every ``step`` seconds, chat dropping at hour
    ``drop``: the window test needs hours, the sequential one days (its baselines are
    per hour of the day)."""

    hours: int
    step: int
    drop: int

    @property
    def drop_at(self) -> int:
        return START + self.drop * 3600


PLANS = {"window": Plan(hours=8, step=5, drop=5), "sequential": Plan(hours=56, step=15, drop=50)}
CONFIG = EngineConfig(scopes=((), ("channel",)))
RULES = {
    "window": DetectionConfig(drops=(DropRule(name="csat-drop-1h", metric="csat"),)),
    # (a shorter history than the default 7 + 7 days, so that the test runs in seconds)
    "sequential": DetectionConfig(drops=(DropRule(
        name="csat-drop", metric="csat", test="sequential", horizon=12 * 3600,
        baseline=Baseline(kind="prior", span=36 * 3600)),)),
}
PARTITIONS = 3


def clock() -> float:
    return START + 80 * 3600


def stream(plan: Plan, seed: int, late_share: float, max_delay: int,
           ) -> list[dict[str, object]]:
    """Answers every ~``plan.step`` s; chat's CSAT drops at ``plan.drop_at``;
    ``late_share`` of them arrive up to ``max_delay`` seconds late. In arrival order."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, dict[str, object]]] = []
    for i in range(plan.hours * 3600 // plan.step):
        at = START + (i + rng.random()) * plan.step
        channel = ("chat", "phone", "web")[i % 3]
        happy = 0.3 if channel == "chat" and at >= plan.drop_at else 0.85
        value = rng.choice((4, 5)) if rng.random() < happy else rng.choice((1, 2, 3))
        event = {"event_id": f"e-{i}", "customer_id": f"c-{rng.randrange(400)}",
                 "touchpoint": "support", "channel": channel, "kind": "csat",
                 "value": value, "occurred_at": datetime.fromtimestamp(at, UTC).isoformat()}
        delay = rng.random() * max_delay if rng.random() < late_share else rng.random() * 20
        arrivals.append((at + delay, event))
    arrivals.sort(key=lambda pair: pair[0])
    return [event for _, event in arrivals]


def batches(events: list[dict[str, object]], seed: int) -> list[list[dict[str, object]]]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(events):
        n = rng.choice((1, 7, 40, 200))
        out.append(events[i:i + n])
        i += n
    return out


def partition_of(event: dict[str, object]) -> int:
    return zlib.crc32(str(event["customer_id"]).encode()) % PARTITIONS


Change = tuple[str, str, int]


def embedded(parts: list[list[dict[str, object]]], detection: DetectionConfig,
             ) -> tuple[list[Change], list[int]]:
    decoder = EventDecoder(clock=clock)
    pipeline = Pipeline(Engine(CONFIG), detector=Detector(detection))
    changes: list[AlertChange] = []
    evaluated: list[int] = []
    for batch in parts:
        report = pipeline.run(convert_many(decoder, batch))
        changes += report.changes
        if pipeline.detector is not None and pipeline.detector.last_evaluated is not None:
            if not evaluated or evaluated[-1] != pipeline.detector.last_evaluated:
                evaluated.append(pipeline.detector.last_evaluated)
    return [(c.alert.id, c.state, c.at) for c in changes], evaluated


def kafka(parts: list[list[dict[str, object]]], detection: DetectionConfig) -> list[Change]:
    states = [PartitionState.fresh(p, CONFIG, EventDecoder(clock=clock))
              for p in range(PARTITIONS)]
    offsets = [0] * PARTITIONS
    view = MergedView(CONFIG)
    leader = Detector(detection)
    changes: list[AlertChange] = []
    for batch in parts:
        routed: list[list[Record]] = [[] for _ in range(PARTITIONS)]
        for event in batch:
            p = partition_of(event)
            routed[p].append(Record(offsets[p], None, orjson.dumps(event)))
            offsets[p] += 1
        for state, records in zip(states, routed, strict=True):
            if records:
                state.process(records)
                for key, value in state.partial_records():
                    view.apply(key, value)
        engine = view.engine()
        watermark = engine.watermark
        if watermark is not None and leader.due(watermark, DETECT_EVERY):
            changes += leader.evaluate(engine, watermark)
    return [(c.alert.id, c.state, c.at) for c in changes]


def check(seed: int, late_share: float, max_delay: int, test: str = "window",
          ) -> list[Change]:
    parts = batches(stream(PLANS[test], seed, late_share, max_delay), seed)
    ours, evaluated = embedded(parts, RULES[test])
    assert ours == kafka(parts, RULES[test])
    # Never re-dated: each change is dated by an evaluation, in order (late answers move
    # later evaluations, never an earlier date).
    assert [at for _, _, at in ours] == sorted(at for _, _, at in ours)
    assert {at for _, _, at in ours} <= set(evaluated)
    return ours


@pytest.mark.parametrize("test", ["window", "sequential"])
def test_the_planted_drop_is_found_alike_on_both_runners(test: str) -> None:
    """The fixed case: on time and 30% up to 3 h late, the drop pages, the same alerts,
    with either drop test."""
    on_time = check(seed=1, late_share=0.0, max_delay=0, test=test)
    late = check(seed=1, late_share=0.3, max_delay=3 * 3600, test=test)
    drop_at = PLANS[test].drop_at
    pages = [[at for _, state, at in run if state == "firing" and at >= drop_at]
             for run in (on_time, late)]
    assert pages[0] and pages[1]  # the drop pages, on time and late


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), late_share=st.sampled_from([0.05, 0.3, 0.8]),
       max_delay=st.sampled_from([600, 3 * 3600, 20 * 3600]),
       test=st.sampled_from(["window", "sequential"]))
def test_random_arrival_gives_the_same_alerts_on_both_runners(
        seed: int, late_share: float, max_delay: int, test: str) -> None:
    check(seed, late_share, max_delay, test)
