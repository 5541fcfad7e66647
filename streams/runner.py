"""What a runner offers the HTTP API: durable ingestion and a consistent view of state.

Two runners implement it: the embedded runner (one process, SQLite) and the Kafka
runner (events produced to the ``touchpoints`` topic, state from the workers). The API
only talks to this protocol, so its routes do not change with the deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

import msgspec

from streams.deadletters import ItemBytes
from streams.detection import Detector, FollowUp, FollowUpUpdate
from streams.engine.engine import Engine
from streams.engine.pulses import PulseError

Status = Literal["accepted", "duplicate", "late", "rejected"]
T = TypeVar("T")
RETRY_AFTER: Final = 5
"""Seconds a client is told to wait (``Retry-After``) when a runner cannot serve."""


class RunnerUnavailable(RuntimeError):
    """The runner cannot serve now: its storage is closed or broken, its broker is
    unreachable, its merged view has failed or is not started.

    Any :class:`Runner` method may raise it; the API answers 503 with ``Retry-After:
    retry_after`` and ``answer`` as the reason. ``what`` is the part that is unavailable
    (``storage``, ``Kafka``, ``merged view``), ``reason`` why; ``message`` (the
    exception's text, for logs and the command line) defaults to ``answer``.
    """

    def __init__(self, what: str, reason: str, *, retry_after: int = RETRY_AFTER,
                 message: str | None = None) -> None:
        self.what = what
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(message or self.answer)

    @property
    def answer(self) -> str:
        """What a client is told: ``<what> unavailable: <reason>``."""
        return f"{self.what} unavailable: {self.reason}"


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What became of one submitted event, in submission order.

    ``accepted`` and ``duplicate`` and ``late`` all mean "durably received": late
    events are kept with their reason, duplicates were already counted once.
    ``rejected`` events failed validation and are kept with ``field`` and ``reason``.
    """

    index: int
    status: Status
    event_id: str | None = None
    field: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PulseRequest:
    """A pulse study to start; times are epoch seconds."""

    pulse_id: str
    name: str
    filter: dict[str, list[str]]
    start: int
    end: int
    baseline_start: int
    baseline_end: int


PULSE_START: Final = "pulse_start"
PULSE_END: Final = "pulse_end"
FOLLOWUP_UPDATE: Final = "followup_update"
"""A follow-up closed or assigned (payload: ``FollowUpUpdate.encode``); applied to the
detector, not the engine."""
COMMANDS: Final = (PULSE_START, PULSE_END)
"""Commands that change state besides events. Both runners keep them in the same order
as the events around them (the embedded command log; a control record in every input
partition on Kafka), so replaying the input gives the same state."""


def encode_pulse_start(request: PulseRequest) -> bytes:
    """The payload of a ``pulse_start`` command."""
    return msgspec.json.encode(request)


def apply_command(engine: Engine, kind: str, payload: bytes) -> None:
    """Apply one command to ``engine``.

    Raises ``PulseError`` naming the field when the command cannot be applied (unknown
    kind, a payload that is not a study, an id that exists or does not). Ending a study
    that has ended already changes nothing.
    """
    if kind == PULSE_START:
        try:
            request = msgspec.json.decode(payload, type=PulseRequest)
        except msgspec.DecodeError as exc:
            raise PulseError("pulse", f"not a pulse study ({exc})") from None
        engine.start_pulse(request.pulse_id, request.name,
                           {k: list(v) for k, v in request.filter.items()},
                           request.start, request.end, request.baseline_start,
                           request.baseline_end)
    elif kind == PULSE_END:
        try:
            pulse_id = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise PulseError("pulse_id", "not UTF-8") from None
        engine.end_pulse(pulse_id)
    else:
        known = ", ".join(COMMANDS)
        raise PulseError("command", f"unknown command {kind!r} (known: {known})")


class Runner(Protocol):
    """The API's view of a runner. Any method may raise :class:`RunnerUnavailable`
    when the runner cannot serve now (the API answers 503 with ``Retry-After``)."""

    async def submit(self, items: Sequence[Any],
                     raw: ItemBytes | None = None) -> list[EventOutcome]:
        """Validate and durably accept parsed JSON events; return one outcome each.

        Returns only once every accepted event is durable (committed to SQLite, or
        acknowledged by the Kafka broker). ``raw(i)``: the bytes item ``i`` was received
        as (``streams.deadletters.BodyItems``), kept in its dead letter; without it, the
        item's JSON is kept.
        """
        ...

    async def read(self, query: Callable[[Engine], T]) -> T:
        """Run a read-only ``query`` against a consistent engine state."""
        ...

    async def read_state(self, key: str | None, query: Callable[[Engine], T | None]) -> T | None:
        """Per-customer or per-journey state: ``query`` on the engine that holds ``key``'s
        customer (``None``: look everywhere; the first non-None answer wins)."""
        ...

    async def dead_letter(self, payload: bytes, field: str, reason: str) -> None:
        """Keep a payload refused whole (not JSON, not an event batch) with its reason."""
        ...

    async def consumer_lag(self) -> dict[int, int]:
        """Input records not yet reflected in the readable state, per input partition
        (empty for a runner without partitions)."""
        ...

    async def read_detector(self, query: Callable[[Detector], T]) -> T:
        """Run a read-only ``query`` against the alert and follow-up state."""
        ...

    async def start_pulse(self, request: PulseRequest) -> None:
        """Start a pulse study durably; raises ``PulseError`` naming the bad field."""
        ...

    async def end_pulse(self, pulse_id: str) -> None:
        """End a pulse study durably; raises ``KeyError`` when unknown."""
        ...

    async def update_followup(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up durably; returns it as it now is. ``KeyError``
        when unknown, ``ValueError`` when the update does not apply (assigning a
        closed follow-up)."""
        ...

    async def dead_letters(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Rejected and late events, newest first, with their reasons: dicts of the
        dead-letter contract (``streams.deadletters.letter``)."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """Whether state is recovered and the backing store/broker reachable, and why not."""
        ...
