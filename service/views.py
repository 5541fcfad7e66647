"""Engine answers turned into JSON-ready dicts: NaN becomes null, times become RFC 3339."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from streams.engine.engine import ScopeScore
from streams.engine.metrics import Score
from streams.engine.pulses import PulseStudy


def num(value: float | None) -> float | None:
    """A float for JSON: NaN and infinities become null."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def iso(seconds: int | float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC timestamp."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def score_view(sc: Score) -> dict[str, Any]:
    """One score with its n and interval."""
    return {
        "value": num(sc.value),
        "n": sc.n,
        "low": num(sc.low),
        "high": num(sc.high),
        "unit": sc.unit,
        "share": num(sc.share),
        "share_low": num(sc.share_low),
        "share_high": num(sc.share_high),
        "not_applicable": sc.not_applicable,
    }


def scope_score_view(s: ScopeScore, computed_at: float) -> dict[str, Any]:
    """A scope's score in a window, against its target, with freshness."""
    return {
        "scope": s.scope,
        "metric": s.metric,
        **score_view(s.score),
        "target": s.target,
        "gap": num(s.gap),
        "window": {
            "family": s.window.family,
            "name": s.window.name,
            "label": s.window.label,
            "start": s.window.start.isoformat().replace("+00:00", "Z"),
            "end": s.window.end.isoformat().replace("+00:00", "Z"),
        },
        "latest_event_at": None if s.latest_event is None
        else s.latest_event.isoformat().replace("+00:00", "Z"),
        "computed_at": iso(computed_at),
        "previous": None if s.previous is None else score_view(s.previous),
        "change": num(s.change),
        # Answers that arrived after (a bucket of) the window closed, and the watermark
        # when the last of them revised it (null: never revised).
        "late_answers": s.late_answers,
        "revised_at": None if s.revised_at is None
        else s.revised_at.isoformat().replace("+00:00", "Z"),
    }


def pulse_view(study: PulseStudy) -> dict[str, Any]:
    """A pulse study, its state and its results against the baseline."""
    results = []
    for metric, current, baseline in study.results():
        diff = None
        if current.n and baseline.n:
            diff = num(current.value - baseline.value)
        results.append({
            "metric": metric,
            "study": score_view(current),
            "baseline": score_view(baseline),
            "difference": diff,
        })
    return {
        "pulse_id": study.pulse_id,
        "name": study.name,
        "filter": {k: list(v) for k, v in study.filter.items()},
        "start": iso(study.start),
        "end": iso(study.end),
        "baseline_start": iso(study.baseline_start),
        "baseline_end": iso(study.baseline_end),
        "state": "running" if study.active else "ended",
        "ended_at": iso(study.ended_at),
        **seed_view(study),
        "results": results,
    }


def seed_view(study: PulseStudy) -> dict[str, Any]:
    """How a study's baseline and span took the answers already in the state when it
    started: ``baseline_source`` (``state``: they are in it; ``live only``: only answers
    that arrived after the start, ``baseline_note`` says why; ``mixed``: partitions
    differed), the same for the study's span, and per side the span counted (the asked
    one, or the whole buckets covering it when ``exact`` is false) and the buckets summed
    (``granularity``: ``60s``, ``3600s``, ``day`` ...; null when live only), with the
    finer buckets that summed the bucket holding its end (``tail_granularity``)."""
    baseline, current = study.seed_of("baseline"), study.seed_of("study")
    return {
        "baseline_source": baseline.source,
        "baseline_note": baseline.note,
        "study_source": current.source,
        "study_note": current.note,
        "counted": {side: {"start": iso(seed.start), "end": iso(seed.end),
                           "granularity": seed.granularity,
                           "tail_granularity": seed.tail, "exact": seed.exact}
                    for side, seed in (("baseline", baseline), ("study", current))},
    }


def journey_view(view: dict[str, Any]) -> dict[str, Any]:
    """A journey with its times as RFC 3339."""
    out = dict(view)
    for key in ("started_at", "last_event_at", "ended_at"):
        out[key] = iso(out[key])
    out["score"] = num(out["score"])
    return out


def customer_view(view: dict[str, Any]) -> dict[str, Any]:
    """A customer's baseline, trend and at-risk flag."""
    out = dict(view)
    out["last_seen"] = iso(out["last_seen"])
    return out
