"""Decode and validate touchpoint events, with errors that name the field and the reason.

``EventDecoder`` is the one entry point every runner uses: the Kafka worker, the HTTP
ingestion route and the file replay. It checks the structure and scales (in msgspec)
and then what needs a clock: events too far in the future, or too old to be real.

An acceptable event costs one msgspec call. A rejected one is looked at again, field by
field, so that the error lists every problem of the event (``EventError.problems``),
not only the first one msgspec met: that work is done only for rejected events.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

import msgspec
import numpy as np
import numpy.typing as npt

from schemas.event import (
    KIND_OF,
    KINDS,
    MAX_COMMENT_CHARS,
    SCHEMA_VERSION,
    TouchpointEvent,
    _Touchpoint,
)
from schemas.redact import POLICIES, CommentPolicy
from schemas.redact import apply as apply_policy

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


Problem = tuple[str, str]
"""One problem of an event: (field, reason)."""


class EventError(ValueError):
    """A rejected event: ``field`` is a dotted path into the event (``$`` for the whole)
    and ``reason`` says what is wrong with it. ``problems`` holds every problem found,
    this first one included, in the order of the schema's fields (the checks that need
    a clock come last)."""

    def __init__(self, field: str, reason: str, more: Sequence[Problem] = ()) -> None:
        message = f"{field}: {reason}"
        super().__init__(f"{message} (and {len(more)} more)" if more else message)
        self.field = field
        self.reason = reason
        self.problems: tuple[Problem, ...] = ((field, reason), *more)

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> EventError:
        """The error of a non-empty list of problems, the first one leading."""
        (field, reason), *more = problems
        return cls(field, reason, more)

    def as_dict(self) -> dict[str, Any]:
        """The error as it is reported over HTTP: the first problem's ``field`` and
        ``reason``, and ``problems``, all of them (a list of one when there is one)."""
        return {"field": self.field, "reason": self.reason,
                "problems": [{"field": f, "reason": r} for f, r in self.problems]}


def _field_of(path: str, name: str = "") -> str:
    """The dotted field of a msgspec path; ``name`` is the field of a value checked on
    its own (its error paths start at that value)."""
    if name:
        return name + path
    path = path.lstrip(".")
    return path or "$"


def _describe(message: str, name: str = "") -> Problem | None:
    """(field, reason) of a msgspec validation message, or None when it names no field."""
    missing = _MISSING.match(message)
    if missing:
        prefix = _field_of(missing.group("path") or "", name)
        field = missing.group("field") if prefix == "$" else f"{prefix}.{missing.group('field')}"
        return field, "is required"
    at = _AT_PATH.match(message)
    if at:
        reason = at.group("reason")
        # A __post_init__ message carries its own path; prefer it.
        inner = _AT_PATH.match(reason)
        if inner:
            return _field_of(inner.group("path"), name), inner.group("reason")
        field = _field_of(at.group("path"), name)
        return field, _REASONS.get((field, reason.split(" '")[0]), reason)
    if name:
        return name, _REASONS.get((name, message.split(" '")[0]), message)
    return None


def explain(exc: msgspec.DecodeError | msgspec.ValidationError) -> EventError:
    """Turn a msgspec error into an ``EventError`` naming the field and the reason."""
    message = str(exc)
    found = _describe(message)
    if found:
        return EventError(*found)
    if isinstance(exc, msgspec.ValidationError):
        return EventError("$", message)
    return EventError("$", f"not valid JSON ({message})")


# -- every problem of a rejected event -------------------------------------------------

_TAG: Final = "kind"
_TOP: Final = re.compile(r"[.\[]")
"""Where a field path leaves its top-level field."""
_CLASS_OF: Final[dict[str, type]] = {kind: cls for cls, kind in KIND_OF.items()}
_RAW_OBJECT: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
"""An event's members as raw JSON, each to be decoded on its own."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    """Its JSON name."""
    required: bool
    type: Any
    """Its annotated type: what the event decoder checks it against."""
    decoder: msgspec.json.Decoder[Any]
    """A JSON decoder of that type alone."""


@functools.cache
def _fields(cls: type) -> tuple[_Field, ...]:
    """The fields of an event class in the schema's order: msgspec's, which is also the
    order of ``required`` in the published JSON Schema (the tag, ``kind``, is not among
    them; it comes before them all)."""
    return tuple(_Field(f.encode_name, f.required, f.type, msgspec.json.Decoder(f.type))
                 for f in msgspec.structs.fields(cls))


def _check_raw(spec: _Field, raw: Any) -> tuple[Any, Problem | None]:
    """One raw JSON member decoded as the event decoder would: (value, problem)."""
    try:
        return spec.decoder.decode(raw), None
    except msgspec.ValidationError as exc:
        return None, _describe(str(exc), spec.name)
    except msgspec.DecodeError as exc:  # its JSON was read: only its bytes can be wrong
        if "UTF-8" not in str(exc):
            raise
        return None, (spec.name, f"not valid UTF-8 ({_utf8_problem(bytes(raw))})")


def _check_value(spec: _Field, value: Any) -> tuple[Any, Problem | None]:
    """One parsed member converted as ``EventDecoder.convert`` would: (value, problem)."""
    try:
        return msgspec.convert(value, spec.type), None
    except msgspec.ValidationError as exc:
        return None, _describe(str(exc), spec.name)


_TAG_FIELD: Final = _Field(_TAG, True, str, msgspec.json.Decoder(str))


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
    """Decodes JSON bytes into validated events; one instance is reused for speed.

    ``comments`` is the comment policy (``schemas.redact``): ``keep`` the comment as
    sent, ``drop`` it, or ``redact`` its e-mail addresses and phone numbers. Every event
    this decoder returns (``decode``, ``decode_many``, ``convert``) already has it
    applied, so what the runners keep never held more; with ``keep`` it costs one
    comparison per batch."""

    def __init__(
        self,
        limits: TimeLimits | None = None,
        clock: Callable[[], float] = time.time,
        comments: CommentPolicy = "keep",
    ) -> None:
        if comments not in POLICIES:
            raise ValueError(f"comments: {comments!r} is not one of {', '.join(POLICIES)}")
        self.comments: CommentPolicy = comments
        self._decoder = msgspec.json.Decoder(TouchpointEvent)
        self._limits = limits or TimeLimits()
        self._future = self._limits.max_future.total_seconds()
        self._age = self._limits.max_age.total_seconds()
        self._clock = clock

    def decode(self, data: bytes | str) -> TouchpointEvent:
        """One event from JSON; raises ``EventError`` when it is not acceptable."""
        event = self._parse(data)
        self.check_time(event, self._clock())
        return event if self.comments == "keep" else self._apply_policy(event)

    def _apply_policy(self, event: TouchpointEvent) -> TouchpointEvent:
        """``event`` with its comment as the policy keeps it (the same event when the
        policy leaves it as it is)."""
        comment = event.comment
        if comment is None:
            return event
        kept = apply_policy(self.comments, comment)
        if kept == comment:
            return event
        # A mask may be longer than what it hides: stay within the contract's limit, so
        # that the runners' own strict decoders read back what they stored.
        return msgspec.structs.replace(
            event, comment=None if kept is None else kept[:MAX_COMMENT_CHARS])

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
        if self.comments != "keep":
            scrub = self._apply_policy
            events = [scrub(e) for e in events]
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
            first = explain(exc)
            if first.field == "$":  # not JSON, not an object: nothing more to look at
                raise first from None
            try:
                members = _RAW_OBJECT.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                raise first from None
            raise self._every_problem(first, members, _check_raw) from None
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
            raise self._every_problem(explain(exc), obj, _check_value) from None
        except RecursionError:
            raise EventError("$", "nested too deeply") from None
        try:  # a str from Python (not from JSON bytes) may hold lone surrogates
            encode(event)
        except UnicodeEncodeError as exc:
            raise EventError("$", f"not encodable as UTF-8 ({exc.reason})") from None
        self.check_time(event, self._clock())
        return event if self.comments == "keep" else self._apply_policy(event)

    def check_time(self, event: TouchpointEvent, now: float) -> None:
        """Reject event times too far ahead of ``now`` (epoch seconds) or implausibly old."""
        at = event.occurred_at.timestamp()
        if at > now + self._future or at < now - self._age:
            raise EventError("occurred_at", self._time_reason(at, now))

    def _time_reason(self, at: float, now: float) -> str:
        """Why ``at`` fails ``check_time`` against ``now`` (it does)."""
        if at > now + self._future:
            ahead = timedelta(seconds=round(at - now))
            return f"is {ahead} in the future (at most {self._limits.max_future} allowed)"
        return f"is older than the oldest accepted age ({self._limits.max_age.days} days)"

    def _every_problem(self, first: EventError, members: Any,
                       check: Callable[[_Field, Any], tuple[Any, Problem | None]]
                       ) -> EventError:
        """``first`` (what msgspec said of a rejected event) with every other problem of
        the event: each member is checked on its own against its field's type, in the
        schema's order, with ``kind`` first (it decides the other fields); a required
        field that is absent is a problem; the checks across fields (``__post_init__``)
        are msgspec's own, made only once every field is right on its own; the clock
        checks come last, when ``occurred_at`` is a time. ``members`` are the event's
        members (raw JSON or parsed values, as ``check`` takes them); anything but an
        object, or a problem with the whole value, stays one problem."""
        if first.field == "$" or not isinstance(members, dict):
            return first
        try:
            return EventError.of(self._problems(first, members, check))
        except Exception:  # noqa: BLE001 - never worse than msgspec's own answer
            return first

    def _problems(self, first: EventError, members: dict[Any, Any],
                  check: Callable[[_Field, Any], tuple[Any, Problem | None]]
                  ) -> list[Problem]:
        problems: list[Problem] = []
        cls: type = _Touchpoint  # the fields every kind has, when the kind is not known
        if first.field == _TAG:  # msgspec reads the tag before anything else
            problems.append((first.field, first.reason))
        else:
            kind, _ = check(_TAG_FIELD, members[_TAG]) if _TAG in members else (None, None)
            cls = _CLASS_OF.get(kind, _Touchpoint) if isinstance(kind, str) else _Touchpoint
        at: datetime | None = None
        for spec in _fields(cls):
            if spec.name not in members:
                if spec.required:
                    problems.append((spec.name, "is required"))
                continue
            value, problem = check(spec, members[spec.name])
            if problem is not None:
                problems.append(problem)
            elif spec.name == "occurred_at":
                at = value
        if (first.field, first.reason) not in problems:
            # Every field is right on its own, so the check across fields failed (or
            # msgspec saw what the members do not show, such as a key given twice):
            # msgspec's own problem, in its field's place.
            problems.append((first.field, first.reason))
            order = {name: i for i, name in enumerate((_TAG, *(f.name for f in _fields(cls))))}
            problems.sort(key=lambda p: order.get(_TOP.split(p[0], maxsplit=1)[0], len(order)))
        if at is not None:
            stamp, now = at.timestamp(), self._clock()
            if stamp > now + self._future or stamp < now - self._age:
                problems.append(("occurred_at", self._time_reason(stamp, now)))
        return problems


def encode(event: TouchpointEvent) -> bytes:
    """The canonical JSON of an event (defaults omitted)."""
    return msgspec.json.encode(event)
