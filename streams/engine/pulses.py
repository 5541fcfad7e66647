"""Pulse studies: targeted, time-boxed measurements started on demand, against a baseline.

A study has a filter on dimensions (e.g. segment=enterprise and channel=chat), a span
[start, end) and a baseline span. Matching events inside the span count for the study,
matching events inside the baseline span count for its baseline, per metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.engine.config import DIMENSIONS
from streams.engine.metrics import NCOLS, FloatArray, Score, score


class PulseError(ValueError):
    """A pulse study that cannot be created as asked; names the field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(slots=True)
class PulseStudy:
    """One study and its running aggregates per metric."""

    pulse_id: str
    name: str
    filter: dict[str, tuple[str, ...]]
    start: int
    end: int
    baseline_start: int
    baseline_end: int
    created_at: int
    ended_at: int | None = None
    study: dict[str, FloatArray] = field(default_factory=dict)
    baseline: dict[str, FloatArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dim, values in self.filter.items():
            if dim not in DIMENSIONS:
                known = ", ".join(DIMENSIONS)
                raise PulseError(f"filter.{dim}", f"unknown dimension (known: {known})")
            if not values:
                raise PulseError(f"filter.{dim}", "needs at least one value")
        if self.end <= self.start:
            raise PulseError("end", "must be after start")
        if self.baseline_end <= self.baseline_start:
            raise PulseError("baseline_end", "must be after baseline_start")

    @property
    def active(self) -> bool:
        """Whether the study still counts events."""
        return self.ended_at is None

    def add(self, target: str, metrics: list[str], vectors: FloatArray) -> None:
        """Add per-event vectors to the study or its baseline, per metric."""
        book = self.study if target == "study" else self.baseline
        for metric, vec in zip(metrics, vectors, strict=True):
            acc = book.get(metric)
            if acc is None:
                acc = book[metric] = np.zeros(NCOLS, dtype=np.float64)
            acc += vec

    def results(self) -> list[tuple[str, Score, Score]]:
        """(metric, study score, baseline score) for every metric seen on either side."""
        empty = np.zeros(NCOLS, dtype=np.float64)
        metrics = sorted(set(self.study) | set(self.baseline))
        return [
            (m, score(m, self.study.get(m, empty)), score(m, self.baseline.get(m, empty)))
            for m in metrics
        ]

    def state(self) -> dict[str, Any]:
        """Snapshot."""
        return {
            "pulse_id": self.pulse_id, "name": self.name,
            "filter": {k: list(v) for k, v in self.filter.items()},
            "start": self.start, "end": self.end, "baseline_start": self.baseline_start,
            "baseline_end": self.baseline_end, "created_at": self.created_at,
            "ended_at": self.ended_at,
            "study": {m: v.tobytes() for m, v in self.study.items()},
            "baseline": {m: v.tobytes() for m, v in self.baseline.items()},
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> PulseStudy:
        """Restore a snapshot taken by ``state``."""
        def arrays(d: dict[str, bytes]) -> dict[str, FloatArray]:
            return {m: np.frombuffer(b, dtype=np.float64).copy() for m, b in d.items()}

        return cls(
            s["pulse_id"], s["name"], {k: tuple(v) for k, v in s["filter"].items()},
            s["start"], s["end"], s["baseline_start"], s["baseline_end"], s["created_at"],
            s["ended_at"], arrays(s["study"]), arrays(s["baseline"]),
        )


def merge_studies(parts: list[list[dict[str, Any]]]) -> dict[str, PulseStudy]:
    """Studies kept by several partitions of the input, as one set of studies.

    ``parts`` holds each partition's ``PulseStudy.state()`` list, in partition order.
    Counts add up; the definition is the first partition's (every partition applied the
    same command); a study has ended once every partition that has it has ended it,
    and was created at the earliest of their creation times.
    """
    merged: dict[str, PulseStudy] = {}
    for states in parts:
        for state in states:
            part = PulseStudy.from_state(state)
            have = merged.get(part.pulse_id)
            if have is None:
                merged[part.pulse_id] = part
                continue
            have.created_at = min(have.created_at, part.created_at)
            if have.ended_at is None or part.ended_at is None:
                have.ended_at = None
            else:
                have.ended_at = max(have.ended_at, part.ended_at)
            for book, other in ((have.study, part.study), (have.baseline, part.baseline)):
                for metric, vector in other.items():
                    if metric in book:
                        book[metric] = book[metric] + vector
                    else:
                        book[metric] = vector
    return merged
