"""Prometheus metrics: scores, pipeline health, built in one place on a given registry.

Scores are read from the engine by a background refresh into a small cached
"scoreboard", so a scrape never waits on the engine and costs the same however much
traffic flows. Labels are bounded: the scope dimensions are fixed by configuration and
their values capped by the engine (past the cap a value is ``other``); customer and
journey ids never become labels.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter as TallyCounter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.detection import Alert, Detector
from streams.engine.engine import Engine, Family

log = logging.getLogger(__name__)

OUTCOMES = ("accepted", "duplicate", "late", "rejected")


@dataclass(slots=True)
class Scoreboard:
    """What the last refresh read from the engine."""

    scores: list[tuple[tuple[str, ...], dict[str, float]]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)
    watermark: int | None = None
    series: int = 0
    open_journeys: int = 0
    customers: int = 0
    refreshed_at: float = 0.0
    alerts: list[tuple[str, ...]] = field(default_factory=list)
    alert_changes: dict[str, int] = field(default_factory=dict)
    detection_failures: int = 0
    followups_open: int = 0
    consumer_lag: dict[int, int] = field(default_factory=dict)
    attributions: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    explained: list[tuple[str, ...]] = field(default_factory=list)


ALERT_LABELS = ("rule", "kind", "metric", "scope", "owner", "severity", "state")
ATTRIBUTION_LABELS = ("rule", "metric", "scope", "lead", "effect")
EXPLAINED_LABELS = ("rule", "metric", "scope")
EFFECTS = frozenset({"rate", "mix", "rate+mix", "spread", "journey"})


def _scope_text(scope: Mapping[str, Any]) -> str:
    """``channel=chat,segment=enterprise``; ``overall`` for the empty scope."""
    return ",".join(f"{k}={v}" for k, v in scope.items()) or "overall"


def _attribution(alert: Alert) -> tuple[tuple[str, ...], float] | None:
    """(labels, lead fraction) of a drop alert whose evidence names a lead, else None.

    Bounded like the scopes: the lead is a cell of configured dimensions whose values
    the engine caps, and the effect is one of ``EFFECTS``.
    """
    ev = alert.evidence
    note = None if ev is None else ev.attribution
    if alert.kind != "drop" or not note:
        return None
    lead, fraction, effect = note.get("lead"), note.get("lead_fraction"), note.get("effect")
    if (not isinstance(lead, Mapping) or not lead or effect not in EFFECTS
            or not isinstance(fraction, int | float) or not math.isfinite(fraction)):
        return None
    return ((alert.rule, alert.metric, _scope_text(alert.scope), _scope_text(lead),
             str(effect)), float(fraction))


def read_alerts(detector: Detector, board: Scoreboard) -> None:
    """Add the detector's active alerts, their attributions and change counts to ``board``."""
    active = list(detector.alerts.active.values())
    board.alerts = [
        (a.rule, a.kind, a.metric, _scope_text(a.scope), a.owner, a.severity, a.state)
        for a in active
    ]
    board.attributions = [found for a in active if (found := _attribution(a)) is not None]
    board.explained = [(a.rule, a.metric, _scope_text(a.scope)) for a in active
                       if a.kind == "drop" and a.evidence is not None
                       and a.evidence.explained_by]
    board.alert_changes = dict(detector.changes)
    board.detection_failures = detector.failures
    board.followups_open = len(detector.followups.open)


def read_scoreboard(engine: Engine, windows: Iterable[str]) -> Scoreboard:
    """Collect the exported numbers from the engine (runs under the runner's read lock)."""
    board = Scoreboard()
    dims = engine.config.scope_dimensions()
    for spec in windows:
        family_text, _, name = spec.partition(":")
        family: Family = "periodic" if family_text == "periodic" else "continuous"
        for scope in engine.config.scopes:
            for s in engine.scores(family, name, scope=scope):
                labels = (s.metric, name, ",".join(scope) or "overall",
                          *(s.scope.get(d, "") for d in dims))
                values = {"score": s.score.value, "n": float(s.score.n),
                          "low": s.score.low, "high": s.score.high}
                if s.target is not None:
                    values["target"] = s.target
                if s.gap is not None:
                    values["gap"] = s.gap
                if s.latest_event is not None:
                    values["latest"] = s.latest_event.timestamp()
                board.scores.append((labels, values))
    board.counters = dict(engine.counters)
    board.folded = engine.folded()
    board.watermark = engine.watermark
    board.series = len(engine.series)
    board.open_journeys = engine.journeys.open_count
    board.customers = len(engine.customers.customers)
    board.refreshed_at = time.time()
    return board


class ServiceMetrics:
    """Every metric the service exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, scope_dimensions: tuple[str, ...]) -> None:
        self.registry = registry
        self.dimensions = scope_dimensions
        self.board = Scoreboard()
        self.requests = Counter(
            "touchstream_ingest_events", "Events received over HTTP, by outcome.",
            ["outcome"], registry=registry,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.ingest_seconds = Histogram(
            "touchstream_ingest_batch_seconds",
            "Time to validate, persist and apply one ingested batch.",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.refresh_seconds = Histogram(
            "touchstream_merge_seconds",
            "Time to read every exported score from the engine (the scoreboard refresh).",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.rate_limited = Counter(
            "touchstream_api_rate_limited",
            "Requests refused with 429 because their API key spent its rate limit, by key "
            "name (bounded by the configured keys).",
            ["key"], registry=registry,
        )
        self.key_reloads = Counter(
            "touchstream_api_key_reloads",
            "Reloads of the API keys file, by outcome (a failed one keeps the old keys).",
            ["outcome"], registry=registry,
        )
        for outcome in ("ok", "failed"):
            self.key_reloads.labels(outcome)
        registry.register(_ScoreboardCollector(self))

    def observe_outcomes(self, counts: TallyCounter[str]) -> None:
        """Count one request's outcomes."""
        for outcome, n in counts.items():
            self.requests.labels(outcome).inc(n)


class _ScoreboardCollector(Collector):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        board = self.metrics.board
        labels = ["metric", "window", "scope", *self.metrics.dimensions]
        families = {
            "score": GaugeMetricFamily(
                "touchstream_score",
                "Score of a scope in a window: a ratio 0-1 for shares (CSAT, resolution), "
                "points for NPS, the mean for CES, ratings and sentiment.", labels=labels),
            "n": GaugeMetricFamily("touchstream_score_responses",
                                   "Answers behind the score (its n).", labels=labels),
            "low": GaugeMetricFamily("touchstream_score_lower_bound",
                                     "Lower bound of the score's 95% interval.", labels=labels),
            "high": GaugeMetricFamily("touchstream_score_upper_bound",
                                      "Upper bound of the score's 95% interval.",
                                      labels=labels),
            "target": GaugeMetricFamily("touchstream_score_target",
                                        "Target of the scope's segment or offering.",
                                        labels=labels),
            "gap": GaugeMetricFamily("touchstream_score_gap",
                                     "Score minus target (negative: below target).",
                                     labels=labels),
            "latest": GaugeMetricFamily("touchstream_latest_event_timestamp_seconds",
                                        "Event time of the newest event in the scope.",
                                        labels=labels),
        }
        for label_values, values in board.scores:
            for key, value in values.items():
                if value == value:  # NaN (no interval yet) is left out, not exported
                    families[key].add_metric(list(label_values), value)
        yield from families.values()
        active = GaugeMetricFamily(
            "touchstream_alert_active",
            "1 for each pending or firing alert (rule, scope, owner and severity labelled).",
            labels=list(ALERT_LABELS))
        for alert in board.alerts:
            active.add_metric(list(alert), 1.0)
        yield active
        ratio = GaugeMetricFamily(
            "touchstream_alert_attribution_ratio",
            "Share of an active drop alert's change explained by its leading cell (lead, "
            "e.g. channel=chat,segment=enterprise) and whether by rate, mix, rate+mix, "
            "spread (no dominant cell) or journey (between touchpoints). Above 1: the rest "
            "rose.", labels=list(ATTRIBUTION_LABELS))
        for cell, value in board.attributions:
            ratio.add_metric(list(cell), value)
        yield ratio
        explained = GaugeMetricFamily(
            "touchstream_alert_explained",
            "1 for an active drop alert explained by another alert of the same rule "
            "(its parent pages; this one does not).", labels=list(EXPLAINED_LABELS))
        for series in board.explained:
            explained.add_metric(list(series), 1.0)
        yield explained
        yield _counter("touchstream_alert_changes",
                       "Alert state changes since start, by new state.", "state",
                       {k: board.alert_changes.get(k, 0)
                        for k in ("pending", "firing", "resolved")})
        yield CounterMetricFamily(
            "touchstream_detection_failures", "Alert evaluations that failed (logged with "
            "their traceback and skipped): detection is blind while this grows.",
            value=float(board.detection_failures))
        yield _counter("touchstream_events", "Events the engine processed, by outcome.",
                       "outcome",
                       {k: board.counters.get(k, 0) for k in ("accepted", "late", "duplicate")})
        yield _counter("touchstream_dimension_folded",
                       "Events whose dimension value was folded into 'other' past the cap.",
                       "dimension", dict(sorted(board.folded.items())))
        gauges: tuple[tuple[str, str, float | None], ...] = (
            ("touchstream_watermark_timestamp_seconds",
             "Newest event time the engine has seen.", board.watermark),
            ("touchstream_series", "Scope-metric series the engine keeps.", board.series),
            ("touchstream_open_journeys", "Journeys not yet ended.", board.open_journeys),
            ("touchstream_customers", "Distinct customers seen.", board.customers),
            ("touchstream_followups_open", "Follow-ups waiting for a human.",
             board.followups_open),
            ("touchstream_scoreboard_refreshed_timestamp_seconds",
             "When the exported scores were last read from the engine.",
             board.refreshed_at or None),
        )
        lag = GaugeMetricFamily(
            "touchstream_consumer_lag",
            "Input records not yet reflected in the served state, per input partition "
            "(Kafka runner).", labels=["partition"])
        for partition, behind in sorted(board.consumer_lag.items()):
            lag.add_metric([str(partition)], float(behind))
        yield lag
        for name, doc, reading in gauges:
            gauge = GaugeMetricFamily(name, doc)
            if reading is not None:
                gauge.add_metric([], float(reading))
            yield gauge


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    """A counter family with one label, one sample per key of ``values`` (in order)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], float(value))
    return family
