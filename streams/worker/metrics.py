"""A worker's own Prometheus metrics: what it took in, how long batches and flushes took,
and how far each owned partition's state and checkpoint are.

Served by ``prometheus_client``'s HTTP server on ``TOUCHSTREAM_METRICS_PORT`` (off
unless set), beside the API's ``/metrics`` (which has the merged scores). Labels are
bounded: an outcome from a fixed set, or an input partition number.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streams.detection import Detector
from streams.worker.partition import PartitionState

OUTCOMES = ("accepted", "duplicates", "late", "rejected", "skipped", "commands")
"""Keys of the processor's totals exported as ``touchstream_worker_records_total``."""
_LABEL = {"duplicates": "duplicate", "commands": "command"}
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GcClock:
    """Seconds the interpreter spent in cyclic garbage collection, by generation.

    A callback on ``gc.callbacks`` times each collection; collections run on the thread
    that allocated, so in a worker this is time the event loop did not process events.
    """

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1

    def summary(self) -> str:
        """``total (young/middle/old)`` seconds, for the log."""
        young, middle, old = self.seconds
        counts = "/".join(map(str, self.collections))
        return f"{young + middle + old:.1f} ({young:.1f}/{middle:.1f}/{old:.1f} in {counts})"


_GC_CLOCK: GcClock | None = None


def gc_clock() -> GcClock:
    """The process's one ``GcClock``, started on first use."""
    global _GC_CLOCK  # noqa: PLW0603 - one per process, like gc.callbacks itself
    if _GC_CLOCK is None:
        _GC_CLOCK = GcClock()
    return _GC_CLOCK


class Processor(Protocol):
    """What the collector reads from the worker's processor."""

    @property
    def totals(self) -> dict[str, int]: ...

    @property
    def states(self) -> dict[int, PartitionState]: ...


class WorkerMetrics:
    """The histograms the processor observes, and a collector for everything else."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batch_seconds = Histogram(
            "touchstream_worker_batch_seconds",
            "Seconds to decode, validate and count one fetched batch of one partition",
            buckets=_SECONDS, registry=self.registry)
        self.flush_seconds = Histogram(
            "touchstream_worker_flush_seconds",
            "Seconds per flush of one partition (dead letters, partials, checkpoint)",
            buckets=_SECONDS, registry=self.registry)

    def watch(self, processor: Processor) -> None:
        """Export ``processor``'s totals and partition states on every scrape."""
        self.registry.register(_ProcessorCollector(processor))

    def watch_detection(self, source: DetectionSource) -> None:
        """Export the failed alert evaluations of ``source``'s detector (the group
        leader evaluates; elsewhere it stays 0)."""
        self.registry.register(_DetectionCollector(source))


class DetectionSource(Protocol):
    """What the collector reads from the scores publisher."""

    @property
    def detector(self) -> Detector: ...


class _DetectionCollector(Collector):
    def __init__(self, source: DetectionSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "touchstream_detection_failures", "Alert evaluations that failed (logged with "
            "their traceback and skipped): detection is blind while this grows.",
            value=float(self.source.detector.failures))


class _ProcessorCollector(Collector):
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def collect(self) -> Iterator[Metric]:
        totals = self.processor.totals
        records = CounterMetricFamily(
            "touchstream_worker_records", "Input records by what became of them "
            "(command: pulse studies started or ended)", labels=["outcome"])
        for key in OUTCOMES:
            records.add_metric([_LABEL.get(key, key)], float(totals.get(key, 0)))
        yield records
        yield CounterMetricFamily(
            "touchstream_worker_dead_letters", "Records sent to the dead-letter topic "
            "(rejected or late)", value=float(totals.get("rejected", 0) + totals.get("late", 0)))
        yield CounterMetricFamily("touchstream_worker_checkpoints",
                                  "Partition checkpoints written",
                                  value=float(totals.get("checkpoints", 0)))
        yield CounterMetricFamily("touchstream_worker_stale_batches", "Batches fetched "
                                  "before a rebalance and dropped (read again by the new "
                                  "owner)", value=float(totals.get("stale_batches", 0)))
        yield CounterMetricFamily(
            "touchstream_worker_rewinds", "Partitions sought back because a fetched batch "
            "was not delivered", value=float(totals.get("rewinds", 0)))
        yield CounterMetricFamily(
            "touchstream_worker_repositioned", "Partitions sought back to their state "
            "after a stall behind the partition's end",
            value=float(totals.get("repositioned", 0)))
        clock = gc_clock()
        gc_seconds = CounterMetricFamily(
            "touchstream_worker_gc_seconds", "Seconds spent in cyclic garbage collection, "
            "by generation (0 young, 2 whole heap): time not spent on events",
            labels=["generation"])
        for generation, seconds in enumerate(clock.seconds):
            gc_seconds.add_metric([str(generation)], seconds)
        yield gc_seconds
        states = dict(self.processor.states)
        yield GaugeMetricFamily("touchstream_worker_partitions",
                                "Input partitions this worker owns", value=len(states))
        offset = GaugeMetricFamily("touchstream_worker_input_offset",
                                   "Next input offset the partition's state reflects",
                                   labels=["partition"])
        age = GaugeMetricFamily("touchstream_worker_checkpoint_age_seconds",
                                "Seconds since the partition's last checkpoint",
                                labels=["partition"])
        behind = GaugeMetricFamily("touchstream_worker_unsaved_records",
                                   "Input records taken in since the last checkpoint",
                                   labels=["partition"])
        now = time.monotonic()
        for partition, state in sorted(states.items()):
            label = [str(partition)]
            offset.add_metric(label, state.next_offset)
            age.add_metric(label, now - state.checkpointed_at)
            behind.add_metric(label, state.events_since_checkpoint)
        yield offset
        yield age
        yield behind
