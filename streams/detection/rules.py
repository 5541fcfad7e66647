"""Detection rules: what is watched, against what, and how long a condition must hold.

``DetectionConfig`` holds the alert rules (``DropRule``, ``TargetRule``, ``DriftRule``,
named uniquely, as alerts are keyed by their names) and the ``FollowUpRule``s, with their
windows, baselines and durations (``parse_duration``). They are frozen pydantic models, so
a malformed configuration fails when it is read; whether the engine keeps what a rule
needs is ``Detector.check``'s question. ``default_detection`` is what a first run gets.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.detection.baseline import DEFAULT_HARMONICS
from streams.engine.config import CALENDAR_UNITS, DIMENSIONS, CalendarUnit, EngineConfig

Severity = Literal["critical", "warning", "info"]
Condition = Literal["detractor", "very_dissatisfied", "unresolved"]
SHARES: Final = ("csat", "outcome")
"""The metrics that are shares of answers (tested as proportions)."""
_METRIC = re.compile(r"^(csat|nps|ces|outcome|sentiment|rating:[01]-\d{1,3})$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


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


def default_min_effect(metric: str) -> float:
    """The smallest drop that matters by default, in the metric's units."""
    if metric in SHARES:
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


DEFAULT_SHIFTS: Final = (0.05, 0.075, 0.125, 0.2, 0.325)
"""The drops the sequential test looks for, in standard deviations of one answer (2, 3,
5, 8 and 13 points of a share near 0.80, whose SD is 0.40)."""


class DropRule(_AlertRule):
    """A scope value whose metric fell below its baseline, per scope value.

    ``test`` chooses how (``default_detection`` uses ``"sequential"``; the field's
    default stays ``"window"`` so existing configurations keep their meaning).

    ``"window"``: the window (default the last hour) against the baseline (default the
    7 days before) with Benjamini-Hochberg across the rule's scope values (``alpha``), a
    minimum effect (``min_effect`` None means the metric's default: 0.03 share, 5 NPS
    points, 0.2 scale points for CES and ratings, 0.05 sentiment) and minimum n
    (``min_n_window``, ``min_n_baseline``).

    ``"sequential"`` (``streams.detection.sequential``): a CUSUM of log-likelihood ratios
    over every bucket since the change, at any volume, for drops of ``shifts`` standard
    deviations, against the baseline's ``span`` before the last ``horizon`` (a younger
    history is split the same way after a first day), per hour of the day (``cycle``;
    each hour shrunk toward a curve through the day — the pooled baseline, or
    ``cycle_harmonics`` daily harmonics when the hours differ by more than noise — by a
    weight estimated from the hours' spread about it, at least ``cycle_prior`` + 1
    answers), with a threshold from the false-alarm
    budget: one false page per series per ``false_page_days`` at most, and
    ``DetectionConfig.false_pages_per_week`` across every distinct series; the window
    comparison is kept as the alert's readable evidence. A sequential rule holds no time
    by default (``hold_seconds`` 0: the threshold is the persistence).
    """

    test: Literal["window", "sequential"] = "window"
    window: Window = Field(default_factory=lambda: Window(family="continuous", span=3600))
    baseline: Baseline = Field(default_factory=lambda: Baseline(kind="prior"))
    min_n_window: Annotated[int, Field(ge=2)] = 100
    min_n_baseline: Annotated[int, Field(ge=2)] = 200
    min_effect: Annotated[float, Field(ge=0)] | None = None
    alpha: Annotated[float, Field(gt=0, le=0.5)] = 0.05
    horizon: Duration = 7 * 86_400
    false_page_days: Annotated[float, Field(gt=0)] = 30.0
    shifts: tuple[Annotated[float, Field(gt=0, le=2)], ...] = DEFAULT_SHIFTS
    cycle: Literal["hour_of_day", "hour_of_week", "none"] = "hour_of_day"
    cycle_prior: Annotated[float, Field(ge=0)] = 20.0
    cycle_harmonics: Annotated[int, Field(ge=0, le=6)] = DEFAULT_HARMONICS

    @model_validator(mode="before")
    @classmethod
    def _sequential_holds_nothing(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("test") == "sequential":
            data = {"hold_seconds": 0, **data}
        return data

    @field_validator("horizon", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _pairing(self) -> DropRule:
        if self.window.family == "continuous" and self.baseline.kind != "prior":
            raise ValueError("a continuous window takes a 'prior' baseline")
        if self.window.family == "periodic":
            if self.baseline.kind != "periodic":
                raise ValueError("a periodic window takes a 'periodic' baseline")
            if self.baseline.unit not in (None, self.window.unit):
                raise ValueError("the baseline's unit must be the window's")
        if self.test == "sequential":
            if self.window.family != "continuous":
                raise ValueError("a sequential drop rule takes a continuous window")
            if self.horizon % 3600 or self.baseline.span % 3600:
                raise ValueError("a sequential rule's horizon and baseline are whole hours")
            if not self.shifts:
                raise ValueError("a sequential rule needs at least one shift")
        return self

    @property
    def effect_threshold(self) -> float:
        """The smallest drop that matters, in the metric's units."""
        return default_min_effect(self.metric) if self.min_effect is None else self.min_effect


class TargetRule(_AlertRule):
    """A score whose 95% interval lies wholly below its target (configured or ``target``)."""

    window: Window = Field(default_factory=lambda: Window(family="continuous", span=86_400))
    min_n: Annotated[int, Field(ge=2)] = 100
    target: float | None = None


class DriftRule(_AlertRule):
    """A lower CUSUM of per-bucket drop scores, bucket against the span before it.

    ``scopes`` defaults to the overall scope only (see ARL0 per series in
    ``significance``). A bucket with fewer than ``min_n`` answers (or a baseline under
    ``min_n_baseline``) leaves the series' statistic as it was.
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
    false_pages_per_week: Annotated[float, Field(gt=0)] = 1.0
    """Sequential drop rules: false pages a week at most across every distinct series
    they watch (with each rule's ``false_page_days`` per series, the stricter wins)."""

    @model_validator(mode="after")
    def _unique_names(self) -> DetectionConfig:
        names = [r.name for r in self.rules()]
        if len(set(names)) != len(names):
            raise ValueError("alert rule names must be unique")
        return self

    def rules(self) -> tuple[AlertRule, ...]:
        """Every alerting rule, in evaluation order."""
        return (*self.drops, *self.targets, *self.drifts)


def default_detection(engine: EngineConfig) -> DetectionConfig:
    """Rules a first run can live with: sequential drops (CSAT, NPS, CES, resolution) in
    every scope, against the 7 days before the last 7 (while the history is younger, its
    first part), within the default false-page budget; scores below their configured
    target, a slow CSAT drift overall, and follow-ups for detractors and unresolved
    contacts."""
    targeted = sorted({t.metric for t in engine.targets if t.metric != "rating"})
    return DetectionConfig(
        drops=tuple(DropRule(name=f"{m}-drop", metric=m, test="sequential")
                    for m in ("csat", "nps", "ces", "outcome")),
        targets=tuple(TargetRule(name=f"{m}-below-target", metric=m) for m in targeted),
        drifts=(DriftRule(name="csat-drift", metric="csat"),),
        followups=(FollowUpRule(name="detractor", condition="detractor"),
                   FollowUpRule(name="unresolved", condition="unresolved")),
    )
