"""Decode and validate touchpoint events, with errors that name the field and the reason.

``EventDecoder`` is the one entry point every runner uses: the Kafka worker, the HTTP
ingestion route and the file replay. It checks the structure and scales (in msgspec)
and then what needs a clock: events too far in the future, or too old to be real.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.event import KINDS, SCHEMA_VERSION, TouchpointEvent

_AT_PATH = re.compile(r"^(?P<reason>.*?) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(
    r"^Object missing required field `(?P<field>[^`]+)`(?: - at `\$(?P<path>[^`]*)`)?$"
)


_REASONS = {
    ("kind", "Invalid value"): f"unknown kind (expected one of {', '.join(KINDS)})",
    ("schema_version", "Invalid enum value"): (
        f"unknown schema version (supported: {SCHEMA_VERSION})"
    ),
}


class EventError(ValueError):
    """A rejected event: ``field`` is a dotted path into the event (``$`` for the whole)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        """The error as it is reported over HTTP and in dead-letter headers."""
        return {"field": self.field, "reason": self.reason}


def _field_of(path: str) -> str:
    path = path.lstrip(".")
    return path or "$"


def explain(exc: msgspec.DecodeError | msgspec.ValidationError) -> EventError:
    """Turn a msgspec error into an ``EventError`` naming the field and the reason."""
    message = str(exc)
    missing = _MISSING.match(message)
    if missing:
        prefix = _field_of(missing.group("path") or "")
        field = missing.group("field") if prefix == "$" else f"{prefix}.{missing.group('field')}"
        return EventError(field, "is required")
    at = _AT_PATH.match(message)
    if at:
        reason = at.group("reason")
        # A __post_init__ message carries its own path; prefer it.
        inner = _AT_PATH.match(reason)
        if inner:
            return EventError(_field_of(inner.group("path")), inner.group("reason"))
        field = _field_of(at.group("path"))
        return EventError(field, _REASONS.get((field, reason.split(" '")[0]), reason))
    if isinstance(exc, msgspec.ValidationError):
        return EventError("$", message)
    return EventError("$", f"not valid JSON ({message})")


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """How far from the decoder's clock an event time may be and still be believed."""

    max_future: timedelta = timedelta(minutes=15)
    max_age: timedelta = timedelta(days=3650)


def _utf8_problem(data: bytes | str) -> str:
    """Why ``data`` is not UTF-8, in Python's words (e.g. "invalid start byte")."""
    try:
        (data.encode("utf-8", "surrogatepass") if isinstance(data, str) else
         bytes(data)).decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason
    return "invalid UTF-8"


@dataclass(slots=True)
class DecodedBatch:
    """What ``EventDecoder.decode_many`` made of a batch of values."""

    events: list[TouchpointEvent]
    """The acceptable events, in input order."""
    stamps: npt.NDArray[np.float64]
    """Each event's ``occurred_at`` as epoch seconds."""
    positions: list[int] | None = None
    """The input index of each event; ``None`` when every value was acceptable."""
    errors: list[tuple[int, EventError]] = field(default_factory=list)
    """(input index, why) of each rejected value, in input order."""


class EventDecoder:
    """Decodes JSON bytes into validated events; one instance is reused for speed."""

    def __init__(
        self,
        limits: TimeLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._decoder = msgspec.json.Decoder(TouchpointEvent)
        self._limits = limits or TimeLimits()
        self._future = self._limits.max_future.total_seconds()
        self._age = self._limits.max_age.total_seconds()
        self._clock = clock

    def decode(self, data: bytes | str) -> TouchpointEvent:
        """One event from JSON; raises ``EventError`` when it is not acceptable."""
        event = self._parse(data)
        self.check_time(event, self._clock())
        return event

    def decode_many(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Events from a batch of JSON values, with the same checks and errors as
        ``decode`` one by one, at a fraction of the cost per value: the values are
        parsed in one pass and the clock is checked once for the whole batch.
        A missing value (``None``, a Kafka record without one) is rejected."""
        parse = self._decoder.decode
        positions: list[int] | None = None
        errors: list[tuple[int, EventError]] = []
        try:
            # (a None among them raises TypeError here, and is rejected below)
            events: list[TouchpointEvent] = [parse(v) for v in cast("Sequence[bytes]", values)]
        except Exception:  # noqa: BLE001 - some value is not acceptable: one by one
            events, positions = [], []
            for i, value in enumerate(values):
                try:
                    if value is None:
                        raise EventError("$", "empty message (no value)")
                    events.append(self._parse(value))
                except EventError as exc:
                    errors.append((i, exc))
                    continue
                positions.append(i)
        stamps = np.array([e.occurred_at.timestamp() for e in events], dtype=np.float64)
        now = self._clock()
        wrong = np.flatnonzero((stamps > now + self._future) | (stamps < now - self._age))
        if len(wrong):  # rare: the reasons come from ``check_time`` itself
            where = list(range(len(events))) if positions is None else positions
            keep = np.ones(len(events), dtype=np.bool_)
            for i in wrong.tolist():
                try:
                    self.check_time(events[i], now)
                except EventError as exc:
                    errors.append((where[i], exc))
                    keep[i] = False
            events = [e for e, k in zip(events, keep.tolist(), strict=True) if k]
            positions = [p for p, k in zip(where, keep.tolist(), strict=True) if k]
            stamps = stamps[keep]
            errors.sort(key=lambda item: item[0])
        return DecodedBatch(events, stamps, positions, errors)

    def _parse(self, data: bytes | str) -> TouchpointEvent:
        """One event from JSON, checked for everything but its time."""
        try:
            event: TouchpointEvent = self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if isinstance(exc, msgspec.DecodeError) and "UTF-8" in str(exc):
                # msgspec >= 0.23 reports bad UTF-8 itself instead of raising
                # UnicodeDecodeError: give the same reason with either version.
                raise EventError("$", f"not valid UTF-8 ({_utf8_problem(data)})") from None
            raise explain(exc) from None
        except UnicodeDecodeError as exc:
            raise EventError("$", f"not valid UTF-8 ({exc.reason})") from None
        except RecursionError:
            raise EventError("$", "not valid JSON (nested too deeply)") from None
        return event

    def convert(self, obj: object) -> TouchpointEvent:
        """One event from already-parsed JSON (a dict), with the same checks as ``decode``."""
        try:
            event: TouchpointEvent = msgspec.convert(obj, TouchpointEvent)
        except msgspec.ValidationError as exc:
            raise explain(exc) from None
        except RecursionError:
            raise EventError("$", "nested too deeply") from None
        try:  # a str from Python (not from JSON bytes) may hold lone surrogates
            encode(event)
        except UnicodeEncodeError as exc:
            raise EventError("$", f"not encodable as UTF-8 ({exc.reason})") from None
        self.check_time(event, self._clock())
        return event

    def check_time(self, event: TouchpointEvent, now: float) -> None:
        """Reject event times too far ahead of ``now`` (epoch seconds) or implausibly old."""
        at = event.occurred_at.timestamp()
        if at > now + self._future:
            ahead = timedelta(seconds=round(at - now))
            raise EventError(
                "occurred_at",
                f"is {ahead} in the future (at most {self._limits.max_future} allowed)",
            )
        if at < now - self._age:
            raise EventError(
                "occurred_at",
                f"is older than the oldest accepted age ({self._limits.max_age.days} days)",
            )


def encode(event: TouchpointEvent) -> bytes:
    """The canonical JSON of an event (defaults omitted)."""
    return msgspec.json.encode(event)
