"""``Detector``: evaluates the configured rules against an engine at an event time.

Each evaluation screens the drop rules (``significance.screen_drops`` over the ``spans``
of a rule's window and baseline), checks the targets, takes each newly closed bucket into
the drift rules' CUSUMs, and hands the outcomes to the ``AlertBook``, which turns them into
state changes. A drop that holds carries in its evidence what explains it (``attribution``:
a shift-share decomposition over the configured scopes, a one-line
``attribution_summary``, and ``explained_by`` when another alert of the same rule explains
it). The detector also keeps the follow-up book; ``state`` and ``restore`` snapshot both
books and the CUSUMs.

Targets (``TargetRule``). The condition holds where a series' 95% interval (the one the
API shows) lies wholly below its target. This is a per-scope check against a fixed
standard (one-sided 2.5% error each), so use ``min_n`` and the hold time to keep it calm.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np

from schemas.event import TouchpointEvent
from streams.detection import attribution, sequential
from streams.detection.alerts import AlertBook, AlertChange, Outcome, alert_id, book_key_of
from streams.detection.followups import FollowUp, FollowUpBook, followups
from streams.detection.rules import DetectionConfig, DriftRule, DropRule, TargetRule
from streams.detection.significance import Evidence, compare, iso, lower_cusum, screen_drops
from streams.detection.spans import (
    Dense,
    baseline_span,
    copies,
    oldest,
    select_series,
    window_span,
)
from streams.engine.engine import Engine
from streams.engine.metrics import FloatArray, N, score
from streams.engine.store import Granularity, SeriesKey

STATE_VERSION: Final = 1
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _DriftState:
    """The CUSUM of every series of one drift rule, and the last bucket it has taken."""

    last: int | None = None
    sums: dict[SeriesKey, float] = field(default_factory=dict)
    evidence: dict[SeriesKey, Evidence] = field(default_factory=dict)


class Detector:
    """Evaluates the configured rules against an engine; keeps alerts and follow-ups."""

    def __init__(self, config: DetectionConfig, followups_kept: int = 10_000) -> None:
        self.config = config
        self.alerts = AlertBook(config.recent_alerts)
        self.followups = FollowUpBook(followups_kept)
        self.last_evaluated: int | None = None
        self.changes: Counter[str] = Counter()
        """State changes by new state since this process started (for a metrics counter)."""
        self.failures = 0
        """Evaluations that raised (logged, skipped; counted for a metrics counter)."""
        self._drift: dict[str, _DriftState] = {}
        self._closed_hours: dict[sequential.MemoKey, FloatArray] = {}
        """Sequential rules: sums of hourly buckets no event can change any more."""
        self._closed_parts: dict[Hashable, sequential.Hours] = {}
        """Sequential rules: what their scans derive from those hours alone."""

    def due(self, now: int, every: int = 60) -> bool:
        """Whether event time ``now`` entered a new ``every``-second slot since the last
        evaluation: a cadence that depends only on the watermarks, so replays repeat it."""
        return self.last_evaluated is None or now // every > self.last_evaluated // every

    def check(self, engine: Engine) -> None:
        """Raise ``ValueError`` naming the rule if the engine cannot serve a rule.

        (Scopes not configured, windows or baselines longer than the engine keeps.)
        """
        now = engine.watermark if engine.watermark is not None else 0
        for rule in self.config.rules():
            select_series(engine, rule)
            if isinstance(rule, DropRule):
                baseline_span(engine, rule, window_span(engine, rule.name, rule.window, now),
                               now)
                if rule.test == "sequential":
                    sequential.layout(engine, rule, now)
            elif isinstance(rule, TargetRule):
                window_span(engine, rule.name, rule.window, now)
            else:
                gran = engine.granularities.get(f"{rule.step}s")
                lateness = -(-engine.config.allowed_lateness // rule.step)
                if gran is None or gran.keep < rule.baseline // rule.step + 2 + lateness:
                    raise ValueError(f"rule {rule.name}: the engine keeps no {rule.step}s "
                                     f"buckets for a {rule.baseline}s baseline")

    def evaluate(self, engine: Engine, now: int) -> list[AlertChange]:
        """Evaluate every rule at event time ``now``; return the alert state changes.

        An evaluation that raises is logged with its traceback, counted in ``failures``
        and skipped until the next slot: a fault in detection must not stop the events
        (the runners ingest through here) or the scores; the failures counter pages
        platform (TouchstreamDetectionFailing)."""
        try:
            return self._evaluate(engine, now)
        except Exception:
            self.failures += 1
            self.last_evaluated = now
            log.exception("alert evaluation at %d failed (%d so far); skipped", now,
                          self.failures)
            return []

    def _evaluate(self, engine: Engine, now: int) -> list[AlertChange]:
        dense = Dense(engine)
        book = self.alerts
        changes: list[AlertChange] = []
        scans = self._scans(engine, now)
        distinct = sum(int(found.tested.sum()) for found in scans.values())
        for rule in self.config.drops:
            outcomes = (self._drops(engine, rule, now, dense) if rule.test == "window"
                        else self._sequential(engine, rule, now, dense, scans[rule.name],
                                              distinct))
            changes += book.update(rule, "drop", now, outcomes)
        for target in self.config.targets:
            changes += book.update(target, "target", now,
                                   self._targets(engine, target, now, dense))
        for drift in self.config.drifts:
            changes += book.update(drift, "drift", now, self._drifts(engine, drift, now))
        changes += book.retire({r.name for r in self.config.rules()}, now)
        self.last_evaluated = now
        self.changes.update(change.state for change in changes)
        return changes

    def follow_up(self, events: Sequence[TouchpointEvent]) -> list[FollowUp]:
        """Open follow-ups for a batch by the configured rules; returns only the new ones."""
        return self.followups.add(followups(events, self.config.followups))

    def _scans(self, engine: Engine, now: int) -> dict[str, sequential.Scan]:
        """The sequential rules' statistics (their thresholds need every rule's count of
        distinct series, ``DetectionConfig.false_pages_per_week``)."""
        buckets = sequential.Buckets(engine, self._closed_hours, self._closed_parts)
        restarts = self.restarts()
        out = {}
        for rule in self.config.drops:
            if rule.test == "sequential":
                sids = select_series(engine, rule)
                out[rule.name] = sequential.scan(
                    engine, rule, now, sids, buckets,
                    restart_times(engine, sids, restarts.get(rule.name, {})))
        return out

    def restarts(self) -> dict[str, dict[SeriesKey, int]]:
        """Per sequential rule and series, when its last page that has since resolved
        fired: the series' CUSUM restarts there (``sequential.scan``), so one change
        pages once, not each time its statistic crosses the threshold again."""
        names = {r.name for r in self.config.drops if r.test == "sequential"}
        out: dict[str, dict[SeriesKey, int]] = {}
        for alert in self.alerts.recent:
            if alert.rule in names and alert.firing_at is not None:
                key: SeriesKey = (tuple(alert.scope), tuple(alert.scope.values()),
                                  alert.metric)
                mine = out.setdefault(alert.rule, {})
                mine[key] = max(mine.get(key, alert.firing_at), alert.firing_at)
        return out

    def _sequential(self, engine: Engine, rule: DropRule, now: int, dense: Dense,
                    found: sequential.Scan, distinct: int) -> dict[SeriesKey, Outcome]:
        """Outcomes of a sequential drop rule; the evidence carries the window comparison
        (the last hour against the baseline) for people to read, and the CUSUM.

        Only a series that holds or has an active alert gets an outcome: the others
        would neither open nor change an alert, and their evidence would be computed
        for nothing (1,000 series: most of an evaluation's time).
        """
        decided = sequential.decided(found, distinct, self.config.false_pages_per_week)
        keys = engine.series.keys
        wanted = decided.holds
        active = {k: a for k, a in self.alerts.active.items() if a.rule == rule.name}
        if active:
            where = {sid: i for i, sid in enumerate(found.sids)}
            for skey, alert in active.items():
                # the alert's series: its scope is the series' dimensions in order
                sid = engine.series.get((tuple(alert.scope), tuple(alert.scope.values()),
                                         alert.metric))
                if sid is None or book_key_of(rule.name, keys[sid]) != skey:
                    sid = next((s for s in found.sids
                                if book_key_of(rule.name, keys[s]) == skey), None)
                if sid is not None and sid in where:
                    wanted[where[sid]] = True
        picked = [(found.sids[i], seq) for i in np.flatnonzero(wanted).tolist()
                  if (seq := decided.at(i)) is not None]
        out: dict[SeriesKey, Outcome] = {}
        if not picked:
            return out
        wspan = window_span(engine, rule.name, rule.window, now)
        bspan = baseline_span(engine, rule, wspan, now)
        window, base = dense(wspan), dense(bspan)
        for sid, seq in picked:
            c = compare(rule.metric, window[sid], base[sid])
            out[keys[sid]] = (seq.holds, Evidence(
                "sequential_llr", c.window_n, c.window_score, wspan.start, wspan.end,
                c.baseline_n, c.baseline_score, bspan.start, bspan.end, c.effect,
                c.statistic, c.dof, c.p, llr=seq.llr, threshold=seq.threshold,
                shift=seq.shift, destination=seq.destination,
                change_start=seq.change_start, change_n=seq.change_n,
                false_page_days=seq.false_page_days,
                decision_hours=sequential.time_to_decision(seq)))
        self._attribute(engine, rule, now, window, base, out)
        return out

    def _drops(self, engine: Engine, rule: DropRule, now: int,
               dense: Dense) -> dict[SeriesKey, Outcome]:
        sids = select_series(engine, rule)
        wspan = window_span(engine, rule.name, rule.window, now)
        bspan = baseline_span(engine, rule, wspan, now)
        if not sids:
            return {}
        # A copy of a coarser series (a dimension with one value) is not a test of its own.
        repeated = copies(engine, sids, dense(wspan), dense(bspan))
        sids = [sid for sid, dup in zip(sids, repeated, strict=True) if not dup]
        findings = screen_drops(rule, rule.metric, dense(wspan)[sids], dense(bspan)[sids])
        out: dict[SeriesKey, Outcome] = {}
        for sid, f in zip(sids, findings, strict=True):
            if f is None:
                continue
            c = f.comparison
            out[engine.series.keys[sid]] = (f.holds, Evidence(
                c.test, c.window_n, c.window_score, wspan.start, wspan.end, c.baseline_n,
                c.baseline_score, bspan.start, bspan.end, c.effect, c.statistic, c.dof, c.p,
                f.q))
        self._attribute(engine, rule, now, dense(wspan), dense(bspan), out)
        return out

    def _attribute(self, engine: Engine, rule: DropRule, now: int, window: FloatArray,
                   baseline: FloatArray, out: dict[SeriesKey, Outcome]) -> None:
        """Attach what explains each drop to its evidence (``attribution``).

        Series that stop holding keep the attribution of the last time they held, so a
        resolved alert still says why it fired.
        """
        ranked = sorted((_rank(ev), k) for k, (holds, ev) in out.items()
                        if holds and ev is not None)
        held = [k for _, k in ranked]  # the most significant first: they are explained first
        notes = attribution.explain_drops(engine, rule.metric, held, window, baseline,
                                          alpha=rule.alpha) if held else {}
        for key, (holds, ev) in out.items():
            if ev is None:
                continue
            note = notes.get(key)
            if note is not None:
                parent = None if note.parent is None else self._alert_id(rule, note.parent, now)
                out[key] = (holds, replace(
                    ev, attribution=note.to_dict() | {"window_end": iso(ev.window_end)},
                    attribution_summary=note.summary, explained_by=parent))
                continue
            active = self.alerts.active.get(book_key_of(rule.name, key))
            before = None if active is None else active.evidence
            if before is not None and before.attribution is not None:
                out[key] = (holds, replace(ev, attribution=before.attribution,
                                           attribution_summary=before.attribution_summary,
                                           explained_by=before.explained_by))

    def _alert_id(self, rule: DropRule, key: SeriesKey, now: int) -> str:
        """The id of the alert of ``rule`` on ``key``: the active one, or one opened now."""
        active = self.alerts.active.get(book_key_of(rule.name, key))
        if active is not None:
            return active.id
        return alert_id(rule.name, dict(zip(key[0], key[1], strict=True)), key[2], now)

    def _targets(self, engine: Engine, rule: TargetRule, now: int,
                 dense: Dense) -> dict[SeriesKey, Outcome]:
        sids = select_series(engine, rule)
        span = window_span(engine, rule.name, rule.window, now)
        vectors = dense(span)
        out: dict[SeriesKey, Outcome] = {}
        for sid in sids:
            vec = vectors[sid]
            key = engine.series.keys[sid]
            scope = dict(zip(key[0], key[1], strict=True))
            target = rule.target if rule.target is not None else engine.target(key[2], scope)
            if target is None or vec[N] < rule.min_n:
                continue
            sc = score(key[2], vec)
            holds = not math.isnan(sc.high) and sc.high < target
            out[key] = (holds, Evidence(
                "interval_below_target", sc.n, sc.value, span.start, span.end,
                effect=target - sc.value, window_low=sc.low, window_high=sc.high,
                target=target))
        return out

    def _drifts(self, engine: Engine, rule: DriftRule, now: int) -> dict[SeriesKey, Outcome]:
        name = f"{rule.step}s"
        gran = engine.granularities.get(name)
        if gran is None:
            raise ValueError(f"rule {rule.name}: the engine has no {name} buckets")
        state = self._drift.setdefault(rule.name, _DriftState())
        closed = (now - engine.config.allowed_lateness) // rule.step - 1
        width = rule.baseline // rule.step
        earliest = oldest(engine, gran, now) + width
        start = closed if state.last is None else max(state.last + 1, earliest)
        sids = select_series(engine, rule)
        n_series = len(engine.series)
        for bucket in range(start, closed + 1):
            self._drift_bucket(engine, rule, state, sids, gran, bucket, n_series)
        return {key: (s > rule.h, state.evidence.get(key)) for key, s in state.sums.items()}

    def _drift_bucket(self, engine: Engine, rule: DriftRule, state: _DriftState,
                      sids: Sequence[int], gran: Granularity, bucket: int,
                      n_series: int) -> None:
        width = rule.baseline // rule.step
        window = gran.dense(bucket, bucket, n_series)
        base = gran.dense(bucket - width, bucket - 1, n_series)
        tested = [(engine.series.keys[sid], compare(rule.metric, window[sid], base[sid]))
                  for sid in sids
                  if window[sid, N] >= rule.min_n and base[sid, N] >= rule.min_n_baseline]
        tested = [(key, c) for key, c in tested if not math.isnan(c.statistic)]
        if tested:
            before = np.array([state.sums.get(key, 0.0) for key, _ in tested])
            z = np.clip([c.statistic for _, c in tested], -1e6, 1e6)
            after = lower_cusum(before, z, rule.k, rule.ceiling).tolist()
            for (key, c), s in zip(tested, after, strict=True):
                state.sums[key] = s
                state.evidence[key] = Evidence(
                    "cusum", c.window_n, c.window_score, bucket * rule.step,
                    (bucket + 1) * rule.step, c.baseline_n, c.baseline_score,
                    (bucket - width) * rule.step, bucket * rule.step, c.effect, c.statistic,
                    c.dof, c.p, cusum=s)
        state.last = bucket

    def state(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data: alerts, follow-ups and the CUSUMs."""
        return {
            "version": STATE_VERSION,
            "last_evaluated": self.last_evaluated,
            "alerts": self.alerts.state(),
            "followups": self.followups.state(),
            "drift": {name: {"last": d.last, "series": [
                [list(k[0]), list(k[1]), k[2], s,
                 None if (ev := d.evidence.get(k)) is None else asdict(ev)]
                for k, s in d.sums.items()]} for name, d in self._drift.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a snapshot taken by ``state``."""
        if state["version"] != STATE_VERSION:
            raise ValueError(f"detector state version {state['version']} is not {STATE_VERSION}")
        self.last_evaluated = state["last_evaluated"]
        self.alerts.restore(state["alerts"])
        self.followups.restore(state["followups"])
        self._drift = {}
        for name, d in state["drift"].items():
            ds = self._drift[name] = _DriftState(d["last"])
            for dims, values, metric, s, ev in d["series"]:
                key: SeriesKey = (tuple(dims), tuple(values), metric)
                ds.sums[key] = float(s)
                if ev is not None:
                    ds.evidence[key] = Evidence(**ev)


def restart_times(engine: Engine, sids: list[int],
                  restarts: dict[SeriesKey, int]) -> FloatArray | None:
    """``restarts`` as an array over ``sids`` (NaN: none), or None when there is none."""
    if not restarts:
        return None
    out = np.full(len(sids), np.nan)
    keys = engine.series.keys
    for i, sid in enumerate(sids):
        found = restarts.get(keys[sid])
        if found is not None:
            out[i] = found
    return out


def detection_state(engine: Engine, config: DetectionConfig, now: int | None = None,
                    restarts: dict[str, dict[SeriesKey, int]] | None = None
                    ) -> list[dict[str, Any]]:
    """Each series a sequential drop rule watches, where its evidence stands at ``now``
    (default the engine's watermark): the CUSUM and its threshold, their ratio
    (``evidence``: 1 pages), the drop size and start behind it, and ``decision_hours``,
    the hours until it would page at the current volume if that drop is real and goes
    on (0: it holds; None: nothing accumulates). Recomputed from the buckets alone, as
    ``Detector.evaluate`` computes it (the same thresholds, the same distinct count), so
    every runner and replica answers the same. A series left out of the test says why
    (``reason``: a copy of a coarser series, or no baseline yet). ``restarts``:
    ``Detector.restarts()``, where series' CUSUMs restarted after a page."""
    at = engine.watermark if now is None else now
    rules = [r for r in config.drops if r.test == "sequential"]
    if at is None or not rules:
        return []
    buckets = sequential.Buckets(engine)
    scans = {}
    for r in rules:
        sids = select_series(engine, r)
        scans[r.name] = sequential.scan(engine, r, at, sids, buckets, restart_times(
            engine, sids, (restarts or {}).get(r.name, {})))
    distinct = sum(int(found.tested.sum()) for found in scans.values())
    out: list[dict[str, Any]] = []
    keys = engine.series.keys
    for rule in rules:
        found = scans[rule.name]
        decided = sequential.decided(found, distinct, config.false_pages_per_week)
        for i, sid in enumerate(found.sids):
            dims, values, metric = keys[sid]
            row: dict[str, Any] = {"rule": rule.name, "metric": metric,
                                   "scope": dict(zip(dims, values, strict=True))}
            seq = decided.at(i)
            if seq is None:
                row["tested"] = False
                row["reason"] = ("no baseline answers yet" if found.base_n[i] <= 0
                                 else "a copy of a coarser series (tested there)")
                out.append(row)
                continue
            hours = sequential.time_to_decision(seq)
            row |= {
                "tested": True, "holds": seq.holds, "llr": seq.llr,
                "threshold": seq.threshold, "evidence": seq.llr / seq.threshold,
                "shift": seq.shift, "destination": seq.destination,
                "change_start": iso(seq.change_start),
                "change_n": seq.change_n, "baseline_n": seq.baseline_n,
                "per_hour": seq.per_hour, "false_page_days": seq.false_page_days,
                "decision_hours": None if hours is None or math.isinf(hours) else hours,
            }
            out.append(row)
    return out


def _rank(ev: Evidence) -> float:
    """Most significant first: the q-value, or how far past its threshold a CUSUM is."""
    if ev.q is not None:
        return ev.q
    if ev.llr is not None and ev.threshold:
        return -ev.llr / ev.threshold
    return 1.0
