"""Drop, target and drift detection over the engine's aggregates; alert and follow-up books.

Transport-free: ``Detector.evaluate(engine, now)`` reads the engine's bucketed sums and
returns ``AlertChange`` records, which a runner publishes on ``touchstream.alerts`` (or
writes to the embedded store). ``now`` is event time (the engine watermark), so a replay
of the same events evaluated at the same watermarks gives the same alerts.

Drops (``DropRule``). For each series of the rule's metric in the selected scopes, a
window (e.g. the last hour) is compared with a baseline (the 7 days before it, or the
previous N calendar periods). The test follows the metric: a two-proportion z for
shares (CSAT top-2-box, resolution) on Anscombe's arcsine scale (``arcsine_z`` says why
not the pooled z), the NPS difference over its multinomial SE, Welch's t for means (CES,
ratings, sentiment); all one-sided, "window below baseline".
Every series with at least ``min_n_window`` and ``min_n_baseline`` answers is one test
of the rule's family; Benjamini-Hochberg q-values are computed across that family, and
the condition holds where ``q <= alpha`` and the observed drop ``>= min_effect``. The
effect filter is applied after BH, not before it: choosing the family by its observed
effects would shrink it on the data and inflate false alarms. A drop that holds carries in
its evidence what explains it (``streams.engine.attribution``: a shift-share decomposition
over the configured scopes, a one-line ``attribution_summary``, and ``explained_by`` when
another alert of the same rule explains it).

Targets (``TargetRule``). The condition holds where a series' 95% interval (the one the
API shows) lies wholly below its target. This is a per-scope check against a fixed
standard (one-sided 2.5% error each), so use ``min_n`` and the hold time to keep it calm.

Drifts (``DriftRule``). A one-sided lower CUSUM per series on a per-bucket standardized
score: for each closed bucket b (closed once the allowed lateness has passed, so late
events cannot change a bucket already used) ``z_b`` is the same drop statistic as above,
bucket b against the ``baseline`` span just before it, and

    S_b = min(cap, max(0, S_{b-1} - z_b - k)),   condition: S_b > h.

In-control average run length (ARL0), by Siegmund's approximation for a one-sided CUSUM
on unit-variance normal scores with a mean shift ``delta`` (in SDs, in the direction
watched), ``D = delta - k`` and ``b = h + 1.166``:

    ARL(delta) ~= (exp(-2 D b) + 2 D b - 1) / (2 D^2)     (b^2 when D = 0)

Defaults k = 0.5, h = 5: ARL0 ~= 938 buckets (39 days of hourly buckets per series) and
ARL1 ~= 10.3 buckets for a 1-SD drop. (k = 0.5, h = 4 gives ARL0 ~= 338 one-sided; the
often-quoted 168 is the two-sided chart's, half of it. h = 6: 2573 and 12.3; h = 7: 7020
and 14.3.) ARL0 is per series and assumes independent N(0, 1) scores (``min_n`` keeps
them near that): m series watched hourly raise about 24 m / ARL0 false alarms a day, so
drift rules watch the overall scope unless told otherwise. The cap (default 2h) only acts
after a crossing, so it leaves run lengths alone and bounds how long recovery takes
(about (cap - h) / k buckets). ``siegmund_arl`` computes the formula; the tests check
it against a seeded simulation of ``lower_cusum``.

Lifecycle, per (rule, series): condition true -> ``pending`` (started_at); still true
``hold_seconds`` later -> ``firing``; false for ``clear_seconds`` while firing ->
``resolved``. A pending alert whose condition goes false never paged anybody: it is
resolved at once (``firing_at`` stays None), so every alert a consumer saw open is seen
to close. A series that cannot be tested (too few answers) counts as "condition false".
Alerts of a rule removed from the configuration are resolved at the next evaluation.

Closed loop: ``followups`` turns single answers that need a human (a detractor, a very
dissatisfied answer, an unresolved or abandoned contact) in key segments into
``FollowUp`` records, kept by ``FollowUpBook``.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import event as signals
from schemas.event import TouchpointEvent
from streams.engine import stats
from streams.engine.config import CALENDAR_UNITS, DIMENSIONS, CalendarUnit, EngineConfig
from streams.engine.dimensions import NONE, OTHER
from streams.engine.engine import Engine
from streams.engine.metrics import BOTTOM, SUM, SUMSQ, TOP, FloatArray, N, score
from streams.engine.store import Granularity, SeriesKey

Severity = Literal["critical", "warning", "info"]
AlertState = Literal["pending", "firing", "resolved"]
Condition = Literal["detractor", "very_dissatisfied", "unresolved"]
STATE_VERSION: Final = 1
_SHARES: Final = ("csat", "outcome")
_METRIC = re.compile(r"^(csat|nps|ces|outcome|sentiment|rating:[01]-\d{1,3})$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_NO_OWNER: Final = frozenset({OTHER, NONE, "unassigned"})


# ----------------------------------------------------------------------------- rules


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_duration(value: object) -> int:
    """Seconds from an int or a string like ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is seconds or a string like '1h'")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        found = _DURATION.match(value.strip())
        if found:
            return int(found.group(1)) * _UNIT_SECONDS[found.group(2)]
    raise ValueError(f"{value!r} is not a duration (seconds, or e.g. '15m', '1h', '7d')")


Duration = Annotated[int, Field(gt=0)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def _check_metric(metric: str) -> str:
    if not _METRIC.match(metric):
        raise ValueError(f"unknown metric {metric!r} (csat, nps, ces, outcome, sentiment, "
                         "rating:<min>-<max>)")
    return metric


def _check_scopes(scopes: tuple[tuple[str, ...], ...] | None) -> tuple[tuple[str, ...], ...] | None:
    if scopes is None:
        return None
    for scope in scopes:
        for dim in scope:
            if dim not in DIMENSIONS:
                raise ValueError(f"unknown dimension {dim!r} (known: {', '.join(DIMENSIONS)})")
    return tuple(tuple(sorted(s, key=DIMENSIONS.index)) for s in scopes)


class Window(_Frozen):
    """What is tested: the last ``span`` seconds (continuous) or this calendar ``unit``."""

    family: Literal["continuous", "periodic"]
    span: Duration | None = None
    unit: CalendarUnit | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        if isinstance(data, list | tuple):
            if len(data) != 2:
                raise ValueError("a window is (family, span-or-unit)")
            family, length = data
            key = "unit" if family == "periodic" else "span"
            return {"family": family, key: length}
        return data

    @field_validator("span", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _coherent(self) -> Window:
        if self.family == "continuous" and (self.span is None or self.unit is not None):
            raise ValueError("a continuous window needs a span and no unit")
        if self.family == "periodic" and (self.unit is None or self.span is not None):
            raise ValueError(f"a periodic window needs a unit ({', '.join(CALENDAR_UNITS)})")
        return self


class Baseline(_Frozen):
    """What the window is compared with.

    ``prior``: the ``span`` seconds just before a continuous window. ``periodic``: the
    ``periods`` calendar periods before a periodic window, pooled.
    """

    kind: Literal["prior", "periodic"]
    span: Duration = 7 * 86_400
    unit: CalendarUnit | None = None
    periods: Annotated[int, Field(ge=1, le=100)] = 4

    @model_validator(mode="before")
    @classmethod
    def _from_tuple(cls, data: Any) -> Any:
        if not isinstance(data, list | tuple):
            return data
        if len(data) == 2 and data[0] == "prior":
            return {"kind": "prior", "span": data[1]}
        if len(data) == 2 and data[0] == "periodic":
            return {"kind": "periodic", "periods": data[1]}
        if len(data) == 3 and data[0] == "periodic":
            return {"kind": "periodic", "unit": data[1], "periods": data[2]}
        raise ValueError("a baseline is ('prior', span) or ('periodic', [unit,] periods)")

    @field_validator("span", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)


def _default_min_effect(metric: str) -> float:
    if metric in _SHARES:
        return 0.03
    if metric == "nps":
        return 5.0
    if metric == "sentiment":
        return 0.05
    return 0.2


class _AlertRule(_Frozen):
    name: Name
    metric: str
    scopes: tuple[tuple[str, ...], ...] | None = None
    hold_seconds: Annotated[int, Field(ge=0)] = 600
    clear_seconds: Annotated[int, Field(ge=0)] = 900
    severity: Severity = "warning"
    owner: Annotated[str, Field(min_length=1, max_length=64)] = "unassigned"

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _check_metric(value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[tuple[str, ...], ...] | None
                ) -> tuple[tuple[str, ...], ...] | None:
        return _check_scopes(value)


class DropRule(_AlertRule):
    """A window significantly and materially below its baseline, per scope value.

    ``scopes`` None means every configured scope; ``min_effect`` None means the metric's
    default (0.03 share, 5 NPS points, 0.2 scale points for CES and ratings, 0.05
    sentiment). ``alpha`` is the false-discovery level across the rule's scope values.
    """

    window: Window = Field(default_factory=lambda: Window(family="continuous", span=3600))
    baseline: Baseline = Field(default_factory=lambda: Baseline(kind="prior"))
    min_n_window: Annotated[int, Field(ge=2)] = 100
    min_n_baseline: Annotated[int, Field(ge=2)] = 200
    min_effect: Annotated[float, Field(ge=0)] | None = None
    alpha: Annotated[float, Field(gt=0, le=0.5)] = 0.05

    @model_validator(mode="after")
    def _pairing(self) -> DropRule:
        if self.window.family == "continuous" and self.baseline.kind != "prior":
            raise ValueError("a continuous window takes a 'prior' baseline")
        if self.window.family == "periodic":
            if self.baseline.kind != "periodic":
                raise ValueError("a periodic window takes a 'periodic' baseline")
            if self.baseline.unit not in (None, self.window.unit):
                raise ValueError("the baseline's unit must be the window's")
        return self

    @property
    def effect_threshold(self) -> float:
        """The smallest drop that matters, in the metric's units."""
        return _default_min_effect(self.metric) if self.min_effect is None else self.min_effect


class TargetRule(_AlertRule):
    """A score whose 95% interval lies wholly below its target (configured or ``target``)."""

    window: Window = Field(default_factory=lambda: Window(family="continuous", span=86_400))
    min_n: Annotated[int, Field(ge=2)] = 100
    target: float | None = None


class DriftRule(_AlertRule):
    """A lower CUSUM of per-bucket drop scores, bucket against the span before it.

    ``scopes`` defaults to the overall scope only (see ARL0 per series above). A bucket
    with fewer than ``min_n`` answers (or a baseline under ``min_n_baseline``) leaves the
    series' statistic as it was.
    """

    scopes: tuple[tuple[str, ...], ...] | None = ((),)
    step: Duration = 3600
    baseline: Duration = 7 * 86_400
    k: Annotated[float, Field(ge=0)] = 0.5
    h: Annotated[float, Field(gt=0)] = 5.0
    cap: Annotated[float, Field(gt=0)] | None = None
    min_n: Annotated[int, Field(ge=2)] = 30
    min_n_baseline: Annotated[int, Field(ge=2)] = 200
    hold_seconds: Annotated[int, Field(ge=0)] = 0
    clear_seconds: Annotated[int, Field(ge=0)] = 0

    @field_validator("step", "baseline", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _whole_buckets(self) -> DriftRule:
        if self.baseline % self.step:
            raise ValueError("the baseline must be a whole number of steps")
        if self.cap is not None and self.cap <= self.h:
            raise ValueError("cap must exceed h")
        return self

    @property
    def ceiling(self) -> float:
        """Where the CUSUM statistic is capped (2h by default)."""
        return 2.0 * self.h if self.cap is None else self.cap


_CONDITION_KINDS: Final[dict[str, tuple[str, ...]]] = {
    "detractor": ("nps",),
    "very_dissatisfied": ("csat", "ces"),
    "unresolved": ("outcome",),
}


class FollowUpRule(_Frozen):
    """Which single answers become follow-ups, in which segments (empty: all), for whom.

    ``owner`` None routes to the event's own owner field.
    """

    name: Name
    condition: Condition
    kinds: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    owner: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _kinds_fit(self) -> FollowUpRule:
        allowed = _CONDITION_KINDS[self.condition]
        for kind in self.kinds:
            if kind not in allowed:
                raise ValueError(f"condition {self.condition} applies to {', '.join(allowed)}"
                                 f", not {kind}")
        return self

    @property
    def applies_to(self) -> tuple[str, ...]:
        """The signal kinds this rule looks at."""
        return self.kinds or _CONDITION_KINDS[self.condition]


AlertRule = DropRule | TargetRule | DriftRule


class DetectionConfig(_Frozen):
    """All detection rules; names are unique across kinds (alerts are keyed by them)."""

    drops: tuple[DropRule, ...] = ()
    targets: tuple[TargetRule, ...] = ()
    drifts: tuple[DriftRule, ...] = ()
    followups: tuple[FollowUpRule, ...] = ()
    recent_alerts: Annotated[int, Field(ge=0)] = 1000

    @model_validator(mode="after")
    def _unique_names(self) -> DetectionConfig:
        names = [r.name for r in self.rules()]
        if len(set(names)) != len(names):
            raise ValueError("alert rule names must be unique")
        return self

    def rules(self) -> tuple[AlertRule, ...]:
        """Every alerting rule, in evaluation order."""
        return (*self.drops, *self.targets, *self.drifts)


# -------------------------------------------------------------------------- evidence


@dataclass(frozen=True, slots=True)
class Comparison:
    """Window against baseline: drop (baseline minus window, metric units) and its test."""

    test: str
    window_n: int
    window_score: float
    baseline_n: int
    baseline_score: float
    effect: float
    statistic: float
    dof: float | None
    p: float


def compare(metric: str, window: FloatArray, baseline: FloatArray) -> Comparison:
    """The one-sided test of "window below baseline" that suits ``metric``."""
    wn, bn = float(window[N]), float(baseline[N])
    ws, bs = score(metric, window).value, score(metric, baseline).value
    dof: float | None = None
    if metric in _SHARES:
        test = "two_proportion_arcsine_z"
        stat = float(arcsine_z(window[TOP], wn, baseline[TOP], bn))
        p = stats.normal_sf(-stat)
    elif metric == "nps":
        test = "nps_difference_z"
        stat, p = stats.nps_difference_z(window[TOP], window[BOTTOM], wn,
                                         baseline[TOP], baseline[BOTTOM], bn)
    else:
        test = "welch_t"
        stat, dof, p = stats.welch_t(wn, window[SUM], window[SUMSQ],
                                     bn, baseline[SUM], baseline[SUMSQ])
    return Comparison(test, int(wn), ws, int(bn), bs, bs - ws, stat, dof, p)


def arcsine_z(x1: Any, n1: Any, x2: Any, n2: Any) -> Any:
    """Two-proportion z on Anscombe's variance-stabilized scale (floats or arrays).

    z = 2 (asin sqrt(p1') - asin sqrt(p2')) / sqrt(1 / (n1 + 1/2) + 1 / (n2 + 1/2)), with
    p' = (x + 3/8) / (n + 3/4). BH looks far into the tail (alpha / m), where the pooled
    z is anti-conservative for high shares and a small window against a large baseline
    (at p = 0.85, n = 100 vs 1000, P(p <= 0.001) is 1.8x nominal; 2.3x at 0.00025). On
    this scale the same tails stay near or below nominal (0.4-1.2x for shares 0.5-0.95,
    windows of 100-2000 against baselines of 400-10000, simulated).
    """
    a1 = np.arcsin(np.sqrt((np.asarray(x1, dtype=np.float64) + 0.375) / (n1 + 0.75)))
    a2 = np.arcsin(np.sqrt((np.asarray(x2, dtype=np.float64) + 0.375) / (n2 + 0.75)))
    return 2.0 * (a1 - a2) / np.sqrt(1.0 / (n1 + 0.5) + 1.0 / (n2 + 0.5))


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a condition holds (or not): both sides' n and scores, effect, test, bounds.

    Times are epoch seconds; bounds are [start, end) of the buckets summed.
    """

    test: str
    window_n: int
    window_score: float
    window_start: int
    window_end: int
    baseline_n: int | None = None
    baseline_score: float | None = None
    baseline_start: int | None = None
    baseline_end: int | None = None
    effect: float | None = None
    statistic: float | None = None
    dof: float | None = None
    p: float | None = None
    q: float | None = None
    window_low: float | None = None
    window_high: float | None = None
    target: float | None = None
    cusum: float | None = None
    attribution: dict[str, Any] | None = None
    """Drops: what explains it, as plain data (``attribution.Explanation.to_dict``)."""
    attribution_summary: str | None = None
    """Drops: the one line for a page, e.g. "channel=chat explains 82% of the drop; ..."."""
    explained_by: str | None = None
    """Drops: the id of the alert of the same rule whose drop explains this one."""

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC bounds (for the API and the alerts topic)."""
        out = asdict(self)
        for key in ("window_start", "window_end", "baseline_start", "baseline_end"):
            out[key] = _iso(out[key])
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One tested series of a drop rule: its comparison, q-value and whether it alerts."""

    comparison: Comparison
    q: float
    holds: bool


def screen_drops(rule: DropRule, metric: str, windows: FloatArray,
                 baselines: FloatArray) -> list[Finding | None]:
    """Test every row (one series each) of a rule's family; None where n is too small.

    BH q-values are computed across all rows with enough answers on both sides; a row
    holds when ``q <= alpha`` and its drop is at least the rule's minimum effect.
    """
    eligible = (windows[:, N] >= rule.min_n_window) & (baselines[:, N] >= rule.min_n_baseline)
    comparisons: list[Comparison | None] = [
        compare(metric, windows[i], baselines[i]) if ok else None
        for i, ok in enumerate(eligible.tolist())
    ]
    p = [math.nan if c is None else c.p for c in comparisons]
    q = stats.benjamini_hochberg(p).tolist()
    threshold = rule.effect_threshold
    out: list[Finding | None] = []
    for c, qi in zip(comparisons, q, strict=True):
        if c is None or math.isnan(qi):
            out.append(None)
            continue
        out.append(Finding(c, qi, qi <= rule.alpha and c.effect >= threshold))
    return out


# ---------------------------------------------------------------------- CUSUM helpers


def lower_cusum(s: FloatArray, z: FloatArray, k: float, cap: float = math.inf) -> FloatArray:
    """One step of the lower CUSUM for many series at once: min(cap, max(0, s - z - k))."""
    out: FloatArray = np.minimum(cap, np.maximum(0.0, s - z - k))
    return out


def siegmund_arl(k: float, h: float, shift: float = 0.0) -> float:
    """Siegmund's approximation to a one-sided CUSUM's average run length.

    ``shift`` is the mean change in SDs in the watched direction (0 gives ARL0).
    """
    d = shift - k
    b = h + 1.166
    if abs(d) < 1e-12:
        return b * b
    return (math.exp(-2.0 * d * b) + 2.0 * d * b - 1.0) / (2.0 * d * d)


# ---------------------------------------------------------------------------- alerts


@dataclass(slots=True)
class Alert:
    """One alert of one rule on one series; times are event-time epoch seconds."""

    id: str
    rule: str
    kind: str
    metric: str
    scope: dict[str, str]
    owner: str
    severity: str
    state: AlertState
    started_at: int
    updated_at: int
    firing_at: int | None = None
    resolved_at: int | None = None
    clear_since: int | None = None
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC times (for the API and the alerts topic)."""
        return {
            "id": self.id, "rule": self.rule, "kind": self.kind, "metric": self.metric,
            "scope": dict(self.scope), "owner": self.owner, "severity": self.severity,
            "state": self.state, "started_at": _iso(self.started_at),
            "firing_at": _iso(self.firing_at), "resolved_at": _iso(self.resolved_at),
            "updated_at": _iso(self.updated_at),
            "evidence": None if self.evidence is None else self.evidence.to_dict(),
            "attribution_summary": None if self.evidence is None
            else self.evidence.attribution_summary,
            "explained_by": None if self.evidence is None else self.evidence.explained_by,
        }

    def state_dict(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        out = asdict(self)
        out["evidence"] = None if self.evidence is None else asdict(self.evidence)
        return out

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> Alert:
        """Restore a snapshot taken by ``state_dict``."""
        data = dict(s)
        ev = data.pop("evidence")
        return cls(**data, evidence=None if ev is None else Evidence(**ev))


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One state change of one alert: an event for ``touchstream.alerts``."""

    alert: Alert
    previous: AlertState | None
    state: AlertState
    at: int

    def to_dict(self) -> dict[str, Any]:
        """The change as a topic event: the alert after the change, plus what it was."""
        return {**self.alert.to_dict(), "previous": self.previous, "changed_at": _iso(self.at)}

    def record(self) -> dict[str, Any]:
        """The change for the alerts topic: ``to_dict`` plus the alert's whole state
        (``book``), so that readers and a new evaluator rebuild the same alert book."""
        return {**self.to_dict(), "book": self.alert.state_dict()}


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def alert_id(rule: str, scope: dict[str, str], metric: str, started_at: int) -> str:
    """A stable id: the same alert gets the same id in a replay."""
    label = ",".join(f"{k}={v}" for k, v in scope.items())
    raw = f"{rule}\x1f{label}\x1f{metric}\x1f{started_at}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _scope_owner(rule: AlertRule, scope: dict[str, str]) -> str:
    value = scope.get("owner")
    return rule.owner if value is None or value in _NO_OWNER else value


Outcome = tuple[bool, Evidence | None]
"""Whether a rule's condition holds for a series now, and the evidence seen."""


def _key(rule: str, key: SeriesKey) -> str:
    dims, values, metric = key
    return "\x1f".join((rule, metric, *(f"{d}={v}" for d, v in zip(dims, values, strict=True))))


def book_key(alert: Alert) -> str:
    """Where ``alert`` is kept in an ``AlertBook``: its rule and series."""
    return _key(alert.rule, (tuple(alert.scope), tuple(alert.scope.values()), alert.metric))


class AlertBook:
    """Active alerts by (rule, series), and a bounded list of recently resolved ones."""

    def __init__(self, recent: int = 1000) -> None:
        self.recent_kept = recent
        self.active: dict[str, Alert] = {}
        self.recent: deque[Alert] = deque()
        self._by_id: dict[str, Alert] = {}

    def get(self, alert_id: str) -> Alert | None:
        """An active or recent alert by id."""
        return self._by_id.get(alert_id)

    def list(self, state: AlertState | None = None, owner: str | None = None,
             severity: str | None = None, rule: str | None = None) -> builtins.list[Alert]:
        """Active alerts (newest first), then recently resolved ones (newest first)."""
        found = sorted(self.active.values(), key=lambda a: (-a.started_at, a.id))
        found += reversed(self.recent)
        return [a for a in found
                if (state is None or a.state == state) and (owner is None or a.owner == owner)
                and (severity is None or a.severity == severity)
                and (rule is None or a.rule == rule)]

    def update(self, rule: AlertRule, kind: str, now: int,
               outcomes: dict[SeriesKey, Outcome]) -> builtins.list[AlertChange]:
        """Advance every alert of ``rule`` (and open new ones) from this evaluation."""
        seen = {_key(rule.name, k): (k, o) for k, o in outcomes.items()}
        ours = {k for k, a in self.active.items() if a.rule == rule.name}
        changes: builtins.list[AlertChange] = []
        for skey in sorted(seen.keys() | ours):
            alert = self.active.get(skey)
            if alert is None:
                key, (holds, evidence) = seen[skey]
                if holds:
                    changes += self._open(rule, kind, key, now, evidence, skey)
                continue
            holds, evidence = seen[skey][1] if skey in seen else (False, None)
            changes += self._advance(alert, rule, now, holds, evidence, skey)
        return changes

    def _open(self, rule: AlertRule, kind: str, key: SeriesKey, now: int,
              evidence: Evidence | None, skey: str) -> builtins.list[AlertChange]:
        dims, values, metric = key
        scope = dict(zip(dims, values, strict=True))
        alert = Alert(alert_id(rule.name, scope, metric, now), rule.name, kind, metric, scope,
                      _scope_owner(rule, scope), rule.severity, "pending", now, now,
                      evidence=evidence)
        self.active[skey] = alert
        self._by_id[alert.id] = alert
        changes = [_change(alert, None, now)]
        return changes + self._advance(alert, rule, now, True, evidence, skey)

    def _advance(self, alert: Alert, rule: AlertRule, now: int, holds: bool,
                 evidence: Evidence | None, skey: str) -> builtins.list[AlertChange]:
        if evidence is not None:
            alert.evidence = evidence
        alert.updated_at = now
        if holds:
            alert.clear_since = None
            if alert.state == "pending" and now - alert.started_at >= rule.hold_seconds:
                alert.state, alert.firing_at = "firing", now
                return [_change(alert, "pending", now)]
            return []
        if alert.state == "firing":
            if alert.clear_since is None:
                alert.clear_since = now
            if now - alert.clear_since < rule.clear_seconds:
                return []
        return [self._resolve(alert, now, skey)]

    def _resolve(self, alert: Alert, now: int, skey: str) -> AlertChange:
        previous = alert.state
        alert.state, alert.resolved_at, alert.updated_at = "resolved", now, now
        del self.active[skey]
        self._remember(alert)
        return _change(alert, previous, now)

    def _remember(self, alert: Alert) -> None:
        self.recent.append(alert)
        while len(self.recent) > self.recent_kept:
            old = self.recent.popleft()
            self._by_id.pop(old.id, None)

    def mirror(self, alert: Alert) -> bool:
        """Take ``alert`` as the evaluator published it (the alerts topic, in order);
        whether the book changed. Resolved is final: a later copy of a resolved alert
        (a replayed publication) changes nothing."""
        known = self._by_id.get(alert.id)
        if known is not None and known.state == "resolved":
            return False
        key = book_key(alert)
        if alert.state == "resolved":
            current = self.active.get(key)
            if current is not None and current.id == alert.id:
                del self.active[key]
            self._by_id[alert.id] = alert
            self._remember(alert)
        else:
            self.active[key] = alert
            self._by_id[alert.id] = alert
        return True

    def retire(self, keep: set[str], now: int) -> builtins.list[AlertChange]:
        """Resolve the active alerts of rules no longer configured."""
        gone = [(k, a) for k, a in sorted(self.active.items()) if a.rule not in keep]
        return [self._resolve(a, now, k) for k, a in gone]

    def state(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        return {"active": [[k, a.state_dict()] for k, a in self.active.items()],
                "recent": [a.state_dict() for a in self.recent]}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the contents with a snapshot taken by ``state`` (trimmed to this bound)."""
        self.active = {k: Alert.from_state(a) for k, a in state["active"]}
        recent = state["recent"][-self.recent_kept:] if self.recent_kept else []
        self.recent = deque(Alert.from_state(a) for a in recent)
        self._by_id = {a.id: a for a in (*self.active.values(), *self.recent)}


def _change(alert: Alert, previous: AlertState | None, now: int) -> AlertChange:
    return AlertChange(replace(alert, scope=dict(alert.scope)), previous, alert.state, now)


# -------------------------------------------------------------------------- spans


@dataclass(frozen=True, slots=True)
class _Span:
    """Buckets ``first..last`` of one granularity, covering [start, end) seconds."""

    granularity: str
    first: int
    last: int
    start: int
    end: int


def _steps(engine: Engine) -> list[tuple[int, Granularity]]:
    return sorted((int(name[:-1]), g) for name, g in engine.granularities.items()
                  if name.endswith("s") and name[:-1].isdigit())


def _oldest(engine: Engine, gran: Granularity, now: int) -> int:
    """The oldest bucket the engine still keeps (it expires buckets by its watermark)."""
    newest = max(now, engine.watermark if engine.watermark is not None else now)
    return int(gran.bucketing.ids(np.array([newest], dtype=np.int64))[0]) - gran.keep + 1


def _window_span(engine: Engine, rule: str, window: Window, now: int) -> _Span:
    if window.unit is not None:
        calendar = engine.calendars[window.unit]
        period = int(calendar.ids(np.array([now], dtype=np.int64))[0])
        return _calendar_span(engine, window.unit, period, period)
    span = window.span if window.span is not None else 0
    for step, gran in _steps(engine):
        last = now // step
        first = last - span // step + 1
        if span % step == 0 and first >= _oldest(engine, gran, now):
            return _Span(f"{step}s", first, last, first * step, (last + 1) * step)
    raise ValueError(f"rule {rule}: no continuous granularity keeps a {span}s window")


def _calendar_span(engine: Engine, unit: CalendarUnit, first: int, last: int) -> _Span:
    calendar = engine.calendars[unit]
    start, end = calendar.bounds(first)[0], calendar.bounds(last)[1]
    return _Span(unit, first, last, int(start.timestamp()), int(end.timestamp()))


def _baseline_span(engine: Engine, rule: DropRule, window: _Span, now: int) -> _Span:
    if rule.window.unit is not None:
        unit = rule.window.unit
        if engine.config.periods_kept[unit] < rule.baseline.periods + 1:
            raise ValueError(f"rule {rule.name}: the engine keeps too few {unit}s")
        return _calendar_span(engine, unit, window.first - rule.baseline.periods,
                              window.first - 1)
    span = rule.baseline.span
    for step, gran in _steps(engine):
        last = window.start // step - 1
        first = last - span // step + 1
        if span % step == 0 and first >= _oldest(engine, gran, now):
            return _Span(f"{step}s", first, last, first * step, (last + 1) * step)
    raise ValueError(f"rule {rule.name}: no continuous granularity keeps a {span}s baseline")


class _Dense:
    """Dense sums per span, computed once per evaluation and shared between rules."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.n_series = len(engine.series)
        self._cache: dict[tuple[str, int, int], FloatArray] = {}

    def __call__(self, span: _Span) -> FloatArray:
        key = (span.granularity, span.first, span.last)
        found = self._cache.get(key)
        if found is None:
            gran = self.engine.granularities[span.granularity]
            found = self._cache[key] = gran.dense(span.first, span.last, self.n_series)
        return found


def _select(engine: Engine, rule: AlertRule) -> list[int]:
    scopes = set(engine.config.scopes if rule.scopes is None else rule.scopes)
    missing = scopes - set(engine.config.scopes)
    if missing:
        raise ValueError(f"rule {rule.name}: scopes {sorted(missing)} are not configured")
    return [sid for sid, (dims, _, metric) in enumerate(engine.series.keys)
            if metric == rule.metric and dims in scopes]


# -------------------------------------------------------------------------- detector


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
        self._drift: dict[str, _DriftState] = {}

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
            _select(engine, rule)
            if isinstance(rule, DropRule):
                _baseline_span(engine, rule, _window_span(engine, rule.name, rule.window, now),
                               now)
            elif isinstance(rule, TargetRule):
                _window_span(engine, rule.name, rule.window, now)
            else:
                gran = engine.granularities.get(f"{rule.step}s")
                lateness = -(-engine.config.allowed_lateness // rule.step)
                if gran is None or gran.keep < rule.baseline // rule.step + 2 + lateness:
                    raise ValueError(f"rule {rule.name}: the engine keeps no {rule.step}s "
                                     f"buckets for a {rule.baseline}s baseline")

    def evaluate(self, engine: Engine, now: int) -> list[AlertChange]:
        """Evaluate every rule at event time ``now``; return the alert state changes."""
        dense = _Dense(engine)
        book = self.alerts
        changes: list[AlertChange] = []
        for rule in self.config.drops:
            changes += book.update(rule, "drop", now, self._drops(engine, rule, now, dense))
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

    def _drops(self, engine: Engine, rule: DropRule, now: int,
               dense: _Dense) -> dict[SeriesKey, Outcome]:
        sids = _select(engine, rule)
        wspan = _window_span(engine, rule.name, rule.window, now)
        bspan = _baseline_span(engine, rule, wspan, now)
        if not sids:
            return {}
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
        """Attach what explains each drop to its evidence (``streams.engine.attribution``).

        Series that stop holding keep the attribution of the last time they held, so a
        resolved alert still says why it fired.
        """
        from streams.detection import attribution  # it builds on this module

        ranked = sorted((ev.q if ev.q is not None else 1.0, k) for k, (holds, ev) in out.items()
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
                    ev, attribution=note.to_dict() | {"window_end": _iso(ev.window_end)},
                    attribution_summary=note.summary, explained_by=parent))
                continue
            active = self.alerts.active.get(_key(rule.name, key))
            before = None if active is None else active.evidence
            if before is not None and before.attribution is not None:
                out[key] = (holds, replace(ev, attribution=before.attribution,
                                           attribution_summary=before.attribution_summary,
                                           explained_by=before.explained_by))

    def _alert_id(self, rule: DropRule, key: SeriesKey, now: int) -> str:
        """The id of the alert of ``rule`` on ``key``: the active one, or one opened now."""
        active = self.alerts.active.get(_key(rule.name, key))
        if active is not None:
            return active.id
        return alert_id(rule.name, dict(zip(key[0], key[1], strict=True)), key[2], now)

    def _targets(self, engine: Engine, rule: TargetRule, now: int,
                 dense: _Dense) -> dict[SeriesKey, Outcome]:
        sids = _select(engine, rule)
        span = _window_span(engine, rule.name, rule.window, now)
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
        earliest = _oldest(engine, gran, now) + width
        start = closed if state.last is None else max(state.last + 1, earliest)
        sids = _select(engine, rule)
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


# ------------------------------------------------------------------------- follow-ups


@dataclass(slots=True)
class FollowUp:
    """One answer that needs a human, with its owner; times are epoch seconds."""

    id: str
    rule: str
    event_id: str
    customer_id: str
    journey_id: str | None
    segment: str
    channel: str
    touchpoint: str
    reason: str
    owner: str
    created_at: int
    status: Literal["open", "closed"] = "open"
    closed_at: int | None = None
    note: str | None = None
    assignee: str | None = None
    """The person it is assigned to (``owner`` is the function responsible)."""
    updated_by: str | None = None
    """Who last closed or assigned it (the API key's name)."""
    updated_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC times (for the API and the follow-ups topic)."""
        # Every field is a scalar: no need for asdict's deep copy (one per follow-up on
        # the worker's hot path).
        out = {name: getattr(self, name) for name in _FOLLOWUP_FIELDS}
        for name in _FOLLOWUP_TIMES:
            out[name] = _iso(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FollowUp:
        """Read back ``to_dict`` (the follow-ups topic); unknown fields are ignored."""
        values: dict[str, Any] = {name: data[name] for name in _FOLLOWUP_FIELDS if name in data}
        for name in _FOLLOWUP_TIMES:
            raw = values.get(name)
            values[name] = None if raw is None else int(datetime.fromisoformat(raw).timestamp())
        return cls(**values)


_FOLLOWUP_FIELDS = tuple(f.name for f in fields(FollowUp))
_FOLLOWUP_TIMES = ("created_at", "closed_at", "updated_at")


@dataclass(frozen=True, slots=True)
class FollowUpUpdate:
    """A person closing or assigning a follow-up, with who, when and a note: a logged
    command on the embedded runner, replayed in order."""

    id: str
    action: Literal["close", "assign"]
    by: str
    note: str
    at: int
    assignee: str | None = None

    def encode(self) -> bytes:
        """As JSON bytes (the command's payload)."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> FollowUpUpdate:
        """Read ``encode``'s bytes; ``ValueError`` when they are not an update."""
        try:
            data = orjson.loads(raw)
            update = cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a follow-up update: {exc}") from exc
        if update.action not in ("close", "assign"):
            raise ValueError(f"unknown follow-up action {update.action!r}")
        return update


def _needs_human(condition: Condition, event: TouchpointEvent) -> str | None:
    """Why ``event`` needs a human under ``condition``, or ``None``."""
    if condition == "detractor":
        if isinstance(event, signals.Nps) and event.value <= 6:
            return f"detractor: nps {event.value}"
    elif condition == "very_dissatisfied":
        if isinstance(event, signals.Csat | signals.Ces) and event.value <= 2:
            return f"very dissatisfied: {event.kind} {event.value}"
    elif condition == "unresolved" and isinstance(event, signals.Outcome):
        if event.value != "resolved":
            return f"outcome {event.value}"
    return None


def followups(events: Sequence[TouchpointEvent],
              rules: Sequence[FollowUpRule]) -> list[FollowUp]:
    """Follow-ups for the answers that need a human; the first matching rule wins.

    Ids hash the event id and rule, so a replayed event yields the same follow-up.
    """
    if not rules:
        return []
    checks = [(rule, frozenset(rule.applies_to), frozenset(rule.segments)) for rule in rules]
    kinds = frozenset().union(*(applies for _, applies, _ in checks))
    kind_of = {cls: kind for cls, kind in signals.KIND_OF.items() if kind in kinds}
    out: list[FollowUp] = []
    for event in events:
        kind = kind_of.get(type(event))
        if kind is None:
            continue
        for rule, applies, segments in checks:
            if kind not in applies or (segments and event.segment not in segments):
                continue
            reason = _needs_human(rule.condition, event)
            if reason is None:
                continue
            raw = f"{event.event_id}\x1f{rule.name}"
            out.append(FollowUp(
                hashlib.sha256(raw.encode()).hexdigest()[:16], rule.name, event.event_id,
                event.customer_id, event.journey_id, event.segment, event.channel,
                event.touchpoint, reason, rule.owner or event.owner,
                int(event.occurred_at.timestamp() // 1)))
            break
    return out


class FollowUpBook:
    """Open follow-ups and a bounded list of recently closed ones."""

    def __init__(self, closed_kept: int = 10_000) -> None:
        self.closed_kept = closed_kept
        self.open: dict[str, FollowUp] = {}
        self.closed: deque[FollowUp] = deque()

    def add(self, items: Iterable[FollowUp]) -> builtins.list[FollowUp]:
        """Record new follow-ups; returns those not already known (replays are no-ops)."""
        known = {f.id for f in self.closed}
        new = [f for f in items if f.id not in self.open and f.id not in known]
        for f in new:
            self.open[f.id] = f
        return new

    def get(self, followup_id: str) -> FollowUp | None:
        """An open or recently closed follow-up by id."""
        found = self.open.get(followup_id)
        return found or next((f for f in self.closed if f.id == followup_id), None)

    def list(self, status: Literal["open", "closed"] | None = None, owner: str | None = None,
             segment: str | None = None) -> builtins.list[FollowUp]:
        """Open follow-ups (oldest first), then closed ones (newest first)."""
        found = sorted(self.open.values(), key=lambda f: (f.created_at, f.id))
        found += reversed(self.closed)
        return [f for f in found if (status is None or f.status == status)
                and (owner is None or f.owner == owner)
                and (segment is None or f.segment == segment)]

    def close(self, followup_id: str, note: str, at: int | None = None,
              by: str | None = None) -> FollowUp:
        """Close an open follow-up with a note; ``at`` defaults to the wall clock."""
        found = self.open.pop(followup_id, None)
        if found is None:
            raise KeyError(f"no open follow-up with id {followup_id!r}")
        found.status, found.note = "closed", note
        found.closed_at = int(datetime.now(UTC).timestamp()) if at is None else at
        found.updated_by, found.updated_at = by, found.closed_at
        self._keep_closed(found)
        return found

    def _keep_closed(self, item: FollowUp) -> None:
        self.closed.append(item)
        while len(self.closed) > self.closed_kept:
            self.closed.popleft()

    def apply(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up. ``KeyError`` when it is unknown; closing a closed
        one changes nothing (a retried request); assigning a closed one is a
        ``ValueError``."""
        found = self.get(update.id)
        if found is None:
            raise KeyError(f"no follow-up with id {update.id!r}")
        if found.status == "closed":
            if update.action == "close":
                return found
            raise ValueError(f"follow-up {update.id!r} is closed")
        if update.action == "close":
            return self.close(update.id, update.note, update.at, update.by)
        found.assignee, found.note = update.assignee, update.note
        found.updated_by, found.updated_at = update.by, update.at
        return found

    def mirror(self, item: FollowUp) -> None:
        """Take a follow-up as published (the follow-ups topic): it replaces what is
        known under its id, open or closed."""
        self.open.pop(item.id, None)
        if any(f.id == item.id for f in self.closed):
            self.closed = deque(f for f in self.closed if f.id != item.id)
        if item.status == "open":
            self.open[item.id] = item
        else:
            self._keep_closed(item)

    def state(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        return {"open": [asdict(f) for f in self.open.values()],
                "closed": [asdict(f) for f in self.closed]}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the contents with a snapshot taken by ``state`` (trimmed to this bound)."""
        self.open = {f["id"]: FollowUp(**f) for f in state["open"]}
        closed = state["closed"][-self.closed_kept:] if self.closed_kept else []
        self.closed = deque(FollowUp(**f) for f in closed)


def default_detection(engine: EngineConfig) -> DetectionConfig:
    """Rules a first run can live with: drops of the last hour against the 7 days before
    (CSAT, NPS, CES, resolution) in every scope, scores below their configured target,
    a slow CSAT drift overall, and follow-ups for detractors and unresolved contacts."""
    targeted = sorted({t.metric for t in engine.targets if t.metric != "rating"})
    return DetectionConfig(
        drops=tuple(DropRule(name=f"{m}-drop-1h", metric=m)
                    for m in ("csat", "nps", "ces", "outcome")),
        targets=tuple(TargetRule(name=f"{m}-below-target", metric=m) for m in targeted),
        drifts=(DriftRule(name="csat-drift", metric="csat"),),
        followups=(FollowUpRule(name="detractor", condition="detractor"),
                   FollowUpRule(name="unresolved", condition="unresolved")),
    )
