"""What a runner offers the HTTP API: durable ingestion and a consistent view of state.

Two runners implement it: the embedded runner (one process, SQLite) and the Kafka
runner (events produced to the ``touchpoints`` topic, state from the workers). The API
only talks to this protocol, so its routes do not change with the deployment.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, TypeVar

import msgspec

from streams.deadletters import ItemBytes
from streams.detection import Detector, FollowUp, FollowUpUpdate
from streams.engine.engine import Engine, Erased
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
ERASE: Final = "erase"
"""A customer erased on request (GDPR Art. 17); payload: ``encode_erase`` of an
``ErasureRequest``. ``apply_command`` removes the customer from the engine
(``Engine.erase_customer``); the runner also blanks their follow-ups
(``FollowUpBook.erase_customer``)."""
COMMANDS: Final = (PULSE_START, PULSE_END, ERASE)
"""Commands that change state besides events. Both runners keep them in the same order
as the events around them (the embedded command log; a control record in every input
partition on Kafka), so replaying the input gives the same state."""


def encode_pulse_start(request: PulseRequest) -> bytes:
    """The payload of a ``pulse_start`` command."""
    return msgspec.json.encode(request)


# -- erasure ---------------------------------------------------------------------------

DIGEST_HMAC: Final = "hmac-sha256"
DIGEST_PLAIN: Final = "sha256"


def erasure_digest(customer_id: str, key: bytes | None) -> str:
    """The digest an erased customer is named by in the audit trail, never the id:
    ``hmac-sha256:<hex>`` of the id's UTF-8 bytes under ``key`` (``TOUCHSTREAM_ERASURE_KEY``),
    or ``sha256:<hex>`` without a key (customer ids are often guessable: set a key in
    production, so that the audit trail cannot be matched against a list of ids)."""
    data = customer_id.encode("utf-8")
    if key:
        return f"{DIGEST_HMAC}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"
    return f"{DIGEST_PLAIN}:{hashlib.sha256(data).hexdigest()}"


class ErasureRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One erasure, as the ``erase`` command carries it (``encode_erase`` /
    ``decode_erase``; JSON, UTF-8):

    ``{"customer_id": "cus-42", "digest": "hmac-sha256:9f…", "by": "ops",
    "at": "2026-12-07T15:04:05.123456+00:00"}``

    - ``customer_id``: whom to erase; ``null`` once ``redacted`` (a runner that keeps its
      commands, the embedded log, keeps the redacted payload after applying it: a
      redacted erasure applies as a no-op, so replays stay the same);
    - ``digest``: ``erasure_digest`` of the id, the audit trail's name for the customer;
    - ``by``: who asked (the API key's name);
    - ``at``: when, ISO-8601 UTC.
    """

    customer_id: str | None
    digest: str
    by: str
    at: str

    @classmethod
    def new(cls, customer_id: str, by: str, key: bytes | None,
            at: datetime | None = None) -> ErasureRequest:
        """An erasure of ``customer_id`` asked by ``by`` now (or ``at``), its digest
        under ``key`` (``TouchstreamSettings.erasure_secret()``)."""
        when = (at or datetime.now(UTC)).astimezone(UTC)
        return cls(customer_id, erasure_digest(customer_id, key), by, when.isoformat())

    def redacted(self) -> ErasureRequest:
        """The same request without the id: what may be kept once it has applied."""
        return ErasureRequest(None, self.digest, self.by, self.at)


def encode_erase(request: ErasureRequest) -> bytes:
    """The payload of an ``erase`` command: the request as JSON (``ErasureRequest``)."""
    return msgspec.json.encode(request)


def decode_erase(payload: bytes) -> ErasureRequest:
    """Read an ``erase`` payload; ``PulseError`` naming the field when it is not one
    (the error every bad command raises: a dead letter of kind ``bad_command`` on Kafka)."""
    try:
        request = msgspec.json.decode(payload, type=ErasureRequest)
    except msgspec.ValidationError as exc:
        raise PulseError("erase", f"not an erasure ({exc})") from None
    except msgspec.DecodeError as exc:
        raise PulseError("erase", f"not an erasure: not JSON ({exc})") from None
    if request.customer_id == "":
        raise PulseError("erase.customer_id", "must not be empty")
    return request


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """The audit record of one erasure, as ``DELETE /v1/customers/{id}`` answers it: who
    asked (``by``), when (``at``, ISO-8601 UTC) and the customer's ``digest``, never the
    id. ``state``: ``erased`` when the runner has removed the customer everywhere it
    keeps state, ``erasing`` when the erasure is durable (it will apply, in order) but
    not yet complete (the API answers 202). ``removed``: what went, by kind
    (``customers``, ``journeys``, ``followups``, ...), when the runner knows; empty when
    it does not (on Kafka the workers apply it, partition by partition)."""

    digest: str
    by: str
    at: str
    state: Literal["erased", "erasing"]
    removed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, request: ErasureRequest, state: Literal["erased", "erasing"],
           removed: dict[str, int] | None = None) -> ErasureReport:
        """The report of ``request``."""
        return cls(request.digest, request.by, request.at, state, dict(removed or {}))

    def to_dict(self) -> dict[str, Any]:
        """As plain data: the API's answer and the audit log line."""
        return {"digest": self.digest, "by": self.by, "at": self.at, "state": self.state,
                "removed": dict(self.removed)}


def apply_command(engine: Engine, kind: str, payload: bytes) -> Erased | None:
    """Apply one command to ``engine``; an ``erase`` returns what it removed
    (``Engine.erase_customer``: counts for the audit), other commands None.

    Raises ``PulseError`` naming the field when the command cannot be applied (unknown
    kind, a payload that is not a study or an erasure, an id that exists or does not).
    Ending a study that has ended already changes nothing; neither does erasing a
    customer that is not held, or a redacted erasure.
    """
    if kind == ERASE:
        erasure = decode_erase(payload)
        if erasure.customer_id is None:
            return Erased()
        return engine.erase_customer(erasure.customer_id)
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
    return None


class Runner(Protocol):
    """The API's view of a runner. Any method may raise :class:`RunnerUnavailable`
    when the runner cannot serve now (the API answers 503 with ``Retry-After``)."""

    async def submit(self, items: Sequence[Any], raw: ItemBytes | None = None,
                     backfill: bool = False) -> list[EventOutcome]:
        """Validate and durably accept parsed JSON events; return one outcome each.

        Returns only once every accepted event is durable (committed to SQLite, or
        acknowledged by the Kafka broker). ``raw(i)``: the bytes item ``i`` was received
        as (``streams.deadletters.BodyItems``), kept in its dead letter; without it, the
        item's JSON is kept. ``backfill``: history loaded on purpose (bounded by what the
        state keeps rather than the lateness horizon; never pages: ``Pipeline.run``).
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

    async def erase_customer(self, request: ErasureRequest) -> ErasureReport:
        """Erase a customer durably (``DELETE /v1/customers/{id}``): an ``erase`` command
        with ``encode_erase(request)`` as payload, kept in order with the events around it
        (the embedded command log; a control record in every input partition on Kafka),
        applied with ``apply_command`` (the engine) and ``FollowUpBook.erase_customer``
        (the personal fields of the customer's follow-ups), and whatever the runner keeps
        besides (stored events and comments, dead letters, snapshots, compacted topics)
        cleared of the customer. Idempotent: a repeated request removes nothing more and
        answers alike. Returns the audit record; ``state="erasing"`` when it is durable
        but not yet complete everywhere."""
        ...

    async def dead_letters(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Rejected and late events, newest first, with their reasons: dicts of the
        dead-letter contract (``streams.deadletters.letter``)."""
        ...

    async def ready(self) -> tuple[bool, str]:
        """Whether state is recovered and the backing store/broker reachable, and why not."""
        ...

