"""What the engine monitors: dimensions and their caps, scopes, windows, targets.

Plain pydantic models, so the same configuration loads from a JSON/TOML file, from
environment settings, or from a test, and is validated with the field named.
"""

from __future__ import annotations

import json
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DIMENSIONS: tuple[str, ...] = (
    "channel",
    "touchpoint",
    "segment",
    "offering",
    "journey_type",
    "stage",
    "owner",
    "contact",
    "program",
    "source",
)
"""Event fields a scope may group by."""

CalendarUnit = Literal["day", "week", "month", "quarter"]
CALENDAR_UNITS: tuple[CalendarUnit, ...] = ("day", "week", "month", "quarter")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DimensionConfig(_Frozen):
    """How many distinct values a dimension keeps before folding new ones into ``other``."""

    cap: Annotated[int, Field(ge=1, le=100_000)] = 100


class ContinuousWindow(_Frozen):
    """A sliding window of ``span`` seconds that moves in steps of ``step`` seconds."""

    name: Annotated[str, Field(min_length=1, max_length=16)]
    span: Annotated[int, Field(gt=0)]
    step: Annotated[int, Field(gt=0)]

    @model_validator(mode="after")
    def _step_divides_span(self) -> ContinuousWindow:
        if self.span % self.step:
            raise ValueError(f"window {self.name}: step {self.step}s must divide span {self.span}s")
        if 86_400 % self.step:
            raise ValueError(f"window {self.name}: step {self.step}s must divide a day")
        return self


class Target(_Frozen):
    """The score a metric should reach, for a segment or an offering (or everyone)."""

    metric: Annotated[str, Field(min_length=1)]
    value: float
    segment: str | None = None
    offering: str | None = None


class CustomerConfig(_Frozen):
    """When a customer's recent experience counts as clearly below their own history."""

    recent: Annotated[int, Field(ge=1, le=50)] = 5
    min_recent: Annotated[int, Field(ge=1)] = 3
    min_history: Annotated[int, Field(ge=2)] = 5
    min_drop: Annotated[float, Field(gt=0, le=1)] = 0.15
    z: Annotated[float, Field(gt=0)] = 1.645


def _default_windows() -> tuple[ContinuousWindow, ...]:
    return (
        ContinuousWindow(name="15m", span=900, step=60),
        ContinuousWindow(name="1h", span=3600, step=60),
        ContinuousWindow(name="24h", span=86_400, step=3600),
        ContinuousWindow(name="7d", span=604_800, step=3600),
    )


def _default_periods() -> dict[CalendarUnit, int]:
    return {"day": 35, "week": 13, "month": 13, "quarter": 8}


def _default_scopes() -> tuple[tuple[str, ...], ...]:
    return (
        (),
        ("channel",),
        ("touchpoint",),
        ("segment",),
        ("journey_type",),
        ("stage",),
        ("owner",),
        ("channel", "segment"),
    )


class EngineConfig(_Frozen):
    """Everything the monitoring engine needs to know; defaults suit a first run."""

    dimensions: dict[str, DimensionConfig] = Field(default_factory=dict)
    default_cap: Annotated[int, Field(ge=1, le=100_000)] = 100
    scopes: tuple[tuple[str, ...], ...] = Field(default_factory=_default_scopes)
    continuous: tuple[ContinuousWindow, ...] = Field(default_factory=_default_windows)
    timezone: str = "UTC"
    periods_kept: dict[CalendarUnit, Annotated[int, Field(ge=2, le=1000)]] = Field(
        default_factory=_default_periods
    )
    allowed_lateness: Annotated[int, Field(ge=0, le=86_400)] = 3600
    """Seconds behind the watermark (the newest event time seen) an answer is on time.
    A bucket closes this long after its end (detection evaluates closed buckets); an
    answer that arrives later still counts, up to ``lateness_horizon``, and revises the
    windows it falls in (``ScopeScore.late_answers`` and ``revised_at``)."""
    lateness_horizon: Annotated[int, Field(ge=0, le=400 * 86_400)] = 35 * 86_400
    """Seconds behind the watermark an answer still counts in the buckets of its event
    time (those its granularities still keep); only older answers are dead-lettered as
    late. 35 days by default: a monthly export, and a quarter's calendar windows."""
    dedupe_horizon: Annotated[int | None, Field(ge=0)] = None
    """Seconds of event time an event id is remembered; ``None``: ``lateness_horizon``
    (a resent answer the horizon still takes is a duplicate)."""
    journey_timeout: Annotated[int, Field(gt=0)] = 14 * 86_400
    journeys_kept: Annotated[int, Field(ge=0)] = 100_000
    targets: tuple[Target, ...] = ()
    customers: CustomerConfig = Field(default_factory=CustomerConfig)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("scopes")
    @classmethod
    def _known_dimensions(cls, scopes: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        seen: set[tuple[str, ...]] = set()
        for scope in scopes:
            for dim in scope:
                if dim not in DIMENSIONS:
                    raise ValueError(f"unknown dimension {dim!r} (known: {', '.join(DIMENSIONS)})")
            if len(set(scope)) != len(scope):
                raise ValueError(f"scope {scope} repeats a dimension")
            key = tuple(sorted(scope))
            if key in seen:
                raise ValueError(f"scope {scope} is listed twice")
            seen.add(key)
        return tuple(tuple(sorted(s, key=DIMENSIONS.index)) for s in scopes)

    @field_validator("dimensions")
    @classmethod
    def _dimension_names(cls, dims: dict[str, DimensionConfig]) -> dict[str, DimensionConfig]:
        for dim in dims:
            if dim not in DIMENSIONS:
                raise ValueError(f"unknown dimension {dim!r} (known: {', '.join(DIMENSIONS)})")
        return dims

    @field_validator("continuous")
    @classmethod
    def _unique_windows(cls, windows: tuple[ContinuousWindow, ...]) -> tuple[ContinuousWindow, ...]:
        names = [w.name for w in windows]
        if len(set(names)) != len(names):
            raise ValueError("continuous window names must be unique")
        return windows

    @model_validator(mode="after")
    def _coherent(self) -> EngineConfig:
        if self.lateness_horizon < self.allowed_lateness:
            raise ValueError("lateness_horizon must be at least allowed_lateness (answers "
                             "on time are within the horizon)")
        if self.dedupe_horizon is not None and self.dedupe_horizon < self.lateness_horizon:
            raise ValueError(
                "dedupe_horizon must be at least lateness_horizon, or a resent late-but-"
                "counted event could be counted twice"
            )
        if self.customers.min_recent > self.customers.recent:
            raise ValueError("customers.min_recent cannot exceed customers.recent")
        return self

    @property
    def dedupe_span(self) -> int:
        """Seconds of event time an event id is remembered (``dedupe_horizon``, else
        ``lateness_horizon``)."""
        return self.lateness_horizon if self.dedupe_horizon is None else self.dedupe_horizon

    def same_state(self, other: EngineConfig) -> bool:
        """Whether state built with ``other`` serves this configuration: every field
        equal but the horizons (``lateness_horizon``, ``dedupe_horizon``), which only
        decide what an ingest takes and may change between runs."""
        return (self.model_copy(update=_HORIZONS) == other.model_copy(update=_HORIZONS))

    @classmethod
    def stored(cls, text: str | bytes) -> EngineConfig:
        """A configuration saved with state (``model_dump_json``), by any version: one
        saved before ``lateness_horizon`` existed (where ``allowed_lateness`` was the
        horizon) reads with its horizons migrated, so that its state still restores.
        Raises ``ValueError`` when unreadable."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a configuration")
        if "lateness_horizon" not in raw:
            raw["lateness_horizon"] = raw.get("allowed_lateness", 3600)
        return cls.model_validate(raw)

    def cap(self, dimension: str) -> int:
        """The distinct-value cap of ``dimension``."""
        found = self.dimensions.get(dimension)
        return found.cap if found else self.default_cap

    def scope_dimensions(self) -> tuple[str, ...]:
        """Every dimension some scope groups by, in canonical order."""
        used = {d for scope in self.scopes for d in scope}
        return tuple(d for d in DIMENSIONS if d in used)


_HORIZONS: Final[dict[str, object]] = {"lateness_horizon": 0, "dedupe_horizon": None}
