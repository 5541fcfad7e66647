"""Records of the compacted ``touchstream.scores`` topic: the latest score per window,
scope value and metric.

Key (JSON, canonical): ``{"family": "continuous", "window": "15m", "scope": {"channel":
"chat"}, "metric": "csat"}``. Value (JSON): the score with its n, interval, target and
gap, the window's bounds, and the raw aggregate ``vector`` (so a consumer can merge or
recompute: ``streams.engine.metrics.score(metric, np.array(vector))``). A score that no
longer has data in its window is deleted (tombstone). After each round of changes the
publisher writes a progress record, key ``{"progress": true}``, with the input offsets
per partition and the watermark the round's scores reflect.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from streams.engine.config import EngineConfig
from streams.engine.engine import Engine, Family, ScopeScore

FAMILIES: Final[tuple[Family, ...]] = ("continuous", "periodic")
PROGRESS_KEY: Final = orjson.dumps({"progress": True})


def score_key(family: str, window: str, scope: dict[str, str], metric: str) -> bytes:
    """The canonical key of one score."""
    return orjson.dumps({"family": family, "window": window, "scope": scope,
                         "metric": metric}, option=orjson.OPT_SORT_KEYS)


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def score_value(s: ScopeScore, vector: list[float]) -> dict[str, Any]:
    """The JSON body of one score."""
    sc = s.score
    body: dict[str, Any] = {
        "family": s.window.family,
        "window": s.window.name,
        "label": s.window.label,
        "start": _time(s.window.start),
        "end": _time(s.window.end),
        "scope": s.scope,
        "metric": s.metric,
        "value": _num(sc.value),
        "n": sc.n,
        "low": _num(sc.low),
        "high": _num(sc.high),
        "unit": sc.unit,
        "share": _num(sc.share),
        "share_low": _num(sc.share_low),
        "share_high": _num(sc.share_high),
        "not_applicable": sc.not_applicable,
        "target": s.target,
        "gap": _num(s.gap),
        "latest_event": _time(s.latest_event),
        "late_answers": s.late_answers,
        "revised_at": _time(s.revised_at),
        "vector": vector,
    }
    if s.previous is not None:
        body["previous"] = {"value": _num(s.previous.value), "n": s.previous.n}
        body["change"] = _num(s.change)
    return body


def windows(engine: Engine) -> list[tuple[str, str]]:
    """Every (family, window) whose scores are published."""
    return [(family, window) for family in FAMILIES for window in engine.window_names(family)]


def scope_records(engine: Engine, family: str, window: str,
                  scope: tuple[str, ...]) -> dict[bytes, bytes]:
    """Every score of one window in one scope, as (key, value) bytes."""
    out: dict[bytes, bytes] = {}
    for s in engine.scores(family, window, scope=scope):  # type: ignore[arg-type]
        assert s.vector is not None  # noqa: S101 - scores() sets it
        out[score_key(family, window, s.scope, s.metric)] = orjson.dumps(
            score_value(s, s.vector.tolist()))
    return out


def window_records(engine: Engine, config: EngineConfig, family: str,
                   window: str) -> dict[bytes, bytes]:
    """Every score of one window, in every configured scope, as (key, value) bytes."""
    out: dict[bytes, bytes] = {}
    for scope in config.scopes:
        out.update(scope_records(engine, family, window, scope))
    return out


def score_records(engine: Engine, config: EngineConfig) -> dict[bytes, bytes]:
    """Every score of every configured window and scope, as (key, value) bytes."""
    out: dict[bytes, bytes] = {}
    for family, window in windows(engine):
        out.update(window_records(engine, config, family, window))
    return out


def progress_value(offsets: dict[int, int], watermark: int | None) -> bytes:
    """The progress record: what the last published round reflects."""
    return orjson.dumps({
        "source_offsets": {str(p): o for p, o in sorted(offsets.items())},
        "watermark": None if watermark is None else datetime.fromtimestamp(
            watermark, UTC).isoformat(),
        "published_at": datetime.now(UTC).isoformat(),
    })
