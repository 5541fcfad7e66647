"""A brute-force model of the engine, written independently of it, for property tests.

It keeps every accepted event in a list and recomputes any window from scratch with
plain Python: no numpy, no buckets, no dictionary codes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from schemas import TouchpointEvent
from streams.engine.config import EngineConfig

BASE = datetime(2026, 3, 27, 22, 0, tzinfo=UTC)  # the weekend Europe switches to summer time


def make_event(**fields: Any) -> TouchpointEvent:
    """An event with sensible defaults for the fields a test does not care about."""
    data: dict[str, Any] = {
        "event_id": "e-0",
        "occurred_at": BASE,
        "customer_id": "c-0",
        "touchpoint": "call",
        "channel": "phone",
        "kind": "csat",
        "value": 4,
    }
    data.update(fields)
    if isinstance(data["occurred_at"], datetime):
        data["occurred_at"] = data["occurred_at"].isoformat()
    return msgspec.convert(data, TouchpointEvent)  # type: ignore[arg-type]


def metric_name(e: TouchpointEvent) -> str:
    if e.kind == "rating":
        return f"rating:{e.scale_min}-{e.scale_max}"
    return str(e.kind)


def contribution(e: TouchpointEvent) -> list[float]:
    """The 17-wide vector one event adds, from the DESIGN's definitions."""
    kind = str(e.kind)
    v: Any = e.value
    vec = [0.0] * 17
    if kind == "rating" and e.na_code is not None and v == e.na_code:
        vec[5] = 1.0
        return vec
    if kind == "outcome":
        x = 1.0 if v == "resolved" else 0.0
        top, bottom = v == "resolved", v == "abandoned"
        hist = ["resolved", "unresolved", "abandoned"].index(v)
    elif kind == "csat":
        x, top, bottom, hist = v, v in (4, 5), v in (1, 2), v - 1
    elif kind == "nps":
        x, top, bottom, hist = v, v >= 9, v <= 6, v
    elif kind == "ces":
        x, top, bottom, hist = v, v >= 5, v <= 3, v - 1
    elif kind == "rating":
        lo, hi = e.scale_min, e.scale_max
        x, top, bottom = v, v == hi, v == lo
        hist = v - lo if hi - lo + 1 <= 11 else -1
    else:
        x, top, bottom, hist = v, v > 0, v < 0, -1
    vec[0], vec[1], vec[2] = 1.0, float(x), float(x) * float(x)
    vec[3], vec[4] = float(top), float(bottom)
    if hist >= 0:
        vec[6 + hist] = 1.0
    return vec


@dataclass
class Reference:
    config: EngineConfig
    accepted: list[tuple[TouchpointEvent, int]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    watermark: int | None = None
    duplicates: int = 0
    late: int = 0
    folded_values: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def ingest(self, events: list[TouchpointEvent]) -> None:
        for e in events:
            t = math.floor(e.occurred_at.timestamp())
            if e.event_id in self.seen:
                self.duplicates += 1
                continue
            if self.watermark is not None and t < self.watermark - self.config.lateness_horizon:
                self.late += 1  # never counted, so not remembered: a resend is not a duplicate
                continue
            self.seen.add(e.event_id)
            self.accepted.append((e, t))
            self.watermark = t if self.watermark is None else max(self.watermark, t)

    def value(self, e: TouchpointEvent, dim: str) -> str:
        """The dimension value after folding past the cap, in order of first acceptance."""
        raw = getattr(e, dim)
        raw = "none" if raw is None else str(raw)
        kept: list[str] = []
        for other, _ in self.accepted:
            value = getattr(other, dim)
            value = "none" if value is None else str(value)
            if value not in kept and value != "other":
                if len(kept) >= self.config.cap(dim):
                    continue
                kept.append(value)
        return raw if raw in kept or raw == "other" else "other"

    def window(self, family: str, name: str) -> tuple[int, int]:
        assert self.watermark is not None
        wm = self.watermark
        if family == "continuous":
            spec = next(w for w in self.config.continuous if w.name == name)
            end = (wm // spec.step + 1) * spec.step
            return end - spec.span, end
        zone = ZoneInfo(self.config.timezone)
        local = datetime.fromtimestamp(wm, UTC).astimezone(zone).date()
        start, end = _period(local, name)
        return (
            int(datetime(start.year, start.month, start.day, tzinfo=zone).timestamp()),
            int(datetime(end.year, end.month, end.day, tzinfo=zone).timestamp()),
        )

    def vectors(self, family: str, name: str) -> dict[tuple[Any, ...], list[float]]:
        lo, hi = self.window(family, name)
        out: dict[tuple[Any, ...], list[float]] = {}
        folded = {d: {} for d in self.config.scope_dimensions()}  # type: dict[str, dict[str, str]]
        for e, t in self.accepted:
            if not lo <= t < hi:
                continue
            for scope in self.config.scopes:
                values = []
                for d in scope:
                    if getattr(e, d) not in folded[d]:
                        folded[d][getattr(e, d)] = self.value(e, d)
                    values.append(folded[d][getattr(e, d)])
                key = (scope, tuple(values), metric_name(e))
                acc = out.setdefault(key, [0.0] * 17)
                for i, x in enumerate(contribution(e)):
                    acc[i] += x
        return out


def _period(day: date, unit: str) -> tuple[date, date]:
    if unit == "day":
        return day, day + timedelta(days=1)
    if unit == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if unit == "month":
        start = day.replace(day=1)
        nxt = (start + timedelta(days=32)).replace(day=1)
        return start, nxt
    q = (day.month - 1) // 3
    start = date(day.year, 3 * q + 1, 1)
    end = date(day.year + (q == 3), (3 * q + 3) % 12 + 1, 1)
    return start, end
