"""Follow-ups: single answers that need a human, and the book that keeps them.

Closed loop: ``followups`` turns single answers that need a human (a detractor, a very
dissatisfied answer, an unresolved or abandoned contact) in key segments into
``FollowUp`` records, kept by ``FollowUpBook``. People close or assign them
(``FollowUpUpdate``, a logged command on the embedded runner).
"""

from __future__ import annotations

import builtins
import hashlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from schemas import event as signals
from schemas.event import TouchpointEvent
from streams.detection.rules import Condition, FollowUpRule
from streams.detection.significance import iso


@dataclass(slots=True)
class FollowUp:
    """One answer that needs a human, with its owner; times are epoch seconds."""

    id: str
    rule: str
    event_id: str
    customer_id: str
    journey_id: str | None
    segment: str
    channel: str
    touchpoint: str
    reason: str
    owner: str
    created_at: int
    status: Literal["open", "closed"] = "open"
    closed_at: int | None = None
    note: str | None = None
    assignee: str | None = None
    """The person it is assigned to (``owner`` is the function responsible)."""
    updated_by: str | None = None
    """Who last closed or assigned it (the API key's name)."""
    updated_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As plain data with ISO 8601 UTC times (for the API and the follow-ups topic)."""
        # Every field is a scalar: no need for asdict's deep copy (one per follow-up on
        # the worker's hot path).
        out = {name: getattr(self, name) for name in _FOLLOWUP_FIELDS}
        for name in _FOLLOWUP_TIMES:
            out[name] = iso(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FollowUp:
        """Read back ``to_dict`` (the follow-ups topic); unknown fields are ignored."""
        values: dict[str, Any] = {name: data[name] for name in _FOLLOWUP_FIELDS if name in data}
        for name in _FOLLOWUP_TIMES:
            raw = values.get(name)
            values[name] = None if raw is None else int(datetime.fromisoformat(raw).timestamp())
        return cls(**values)


_FOLLOWUP_FIELDS = tuple(f.name for f in fields(FollowUp))
_FOLLOWUP_TIMES = ("created_at", "closed_at", "updated_at")


ERASED_FIELDS = ("customer_id", "event_id", "journey_id", "note")
"""The personal fields of a follow-up, blanked by an erasure (``scrubbed``): who the
customer is (``customer_id``), what links it to their events and journey (``event_id``,
``journey_id``) and the person's free-text ``note``. The rest — the rule, segment,
channel, touchpoint, reason, owner, times, status and assignee — stays: it is about the
business, not the customer."""


def scrubbed(item: FollowUp) -> FollowUp:
    """A copy of ``item`` with its personal fields (``ERASED_FIELDS``) blanked:
    ``customer_id`` and ``event_id`` empty, ``journey_id`` and ``note`` None. Its id
    stays (a digest of the event id and rule: it says nothing of the customer)."""
    return replace(item, customer_id="", event_id="", journey_id=None, note=None)


def is_scrubbed(item: FollowUp) -> bool:
    """Whether ``item``'s personal fields are blank (an erased customer's follow-up)."""
    return (item.customer_id == "" and item.event_id == "" and item.journey_id is None
            and item.note is None)


@dataclass(frozen=True, slots=True)
class FollowUpUpdate:
    """A person closing or assigning a follow-up, with who, when and a note: a logged
    command on the embedded runner, replayed in order."""

    id: str
    action: Literal["close", "assign"]
    by: str
    note: str
    at: int
    assignee: str | None = None

    def encode(self) -> bytes:
        """As JSON bytes (the command's payload)."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> FollowUpUpdate:
        """Read ``encode``'s bytes; ``ValueError`` when they are not an update."""
        try:
            data = orjson.loads(raw)
            update = cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a follow-up update: {exc}") from exc
        if update.action not in ("close", "assign"):
            raise ValueError(f"unknown follow-up action {update.action!r}")
        return update


def _needs_human(condition: Condition, event: TouchpointEvent) -> str | None:
    """Why ``event`` needs a human under ``condition``, or ``None``."""
    if condition == "detractor":
        if isinstance(event, signals.Nps) and event.value <= 6:
            return f"detractor: nps {event.value}"
    elif condition == "very_dissatisfied":
        if isinstance(event, signals.Csat | signals.Ces) and event.value <= 2:
            return f"very dissatisfied: {event.kind} {event.value}"
    elif condition == "unresolved" and isinstance(event, signals.Outcome):
        if event.value != "resolved":
            return f"outcome {event.value}"
    return None


def followups(events: Sequence[TouchpointEvent],
              rules: Sequence[FollowUpRule]) -> list[FollowUp]:
    """Follow-ups for the answers that need a human; the first matching rule wins.

    Ids hash the event id and rule, so a replayed event yields the same follow-up.
    """
    if not rules:
        return []
    checks = [(rule, frozenset(rule.applies_to), frozenset(rule.segments)) for rule in rules]
    kinds = frozenset().union(*(applies for _, applies, _ in checks))
    kind_of = {cls: kind for cls, kind in signals.KIND_OF.items() if kind in kinds}
    out: list[FollowUp] = []
    for event in events:
        kind = kind_of.get(type(event))
        if kind is None:
            continue
        for rule, applies, segments in checks:
            if kind not in applies or (segments and event.segment not in segments):
                continue
            reason = _needs_human(rule.condition, event)
            if reason is None:
                continue
            raw = f"{event.event_id}\x1f{rule.name}"
            out.append(FollowUp(
                hashlib.sha256(raw.encode()).hexdigest()[:16], rule.name, event.event_id,
                event.customer_id, event.journey_id, event.segment, event.channel,
                event.touchpoint, reason, rule.owner or event.owner,
                int(event.occurred_at.timestamp() // 1)))
            break
    return out


class FollowUpBook:
    """Open follow-ups and a bounded list of recently closed ones."""

    def __init__(self, closed_kept: int = 10_000) -> None:
        self.closed_kept = closed_kept
        self.open: dict[str, FollowUp] = {}
        self.closed: deque[FollowUp] = deque()

    def add(self, items: Iterable[FollowUp]) -> builtins.list[FollowUp]:
        """Record new follow-ups; returns those not already known (replays are no-ops)."""
        known = {f.id for f in self.closed}
        new = [f for f in items if f.id not in self.open and f.id not in known]
        for f in new:
            self.open[f.id] = f
        return new

    def get(self, followup_id: str) -> FollowUp | None:
        """An open or recently closed follow-up by id."""
        found = self.open.get(followup_id)
        return found or next((f for f in self.closed if f.id == followup_id), None)

    def list(self, status: Literal["open", "closed"] | None = None, owner: str | None = None,
             segment: str | None = None) -> builtins.list[FollowUp]:
        """Open follow-ups (oldest first), then closed ones (newest first)."""
        found = sorted(self.open.values(), key=lambda f: (f.created_at, f.id))
        found += reversed(self.closed)
        return [f for f in found if (status is None or f.status == status)
                and (owner is None or f.owner == owner)
                and (segment is None or f.segment == segment)]

    def close(self, followup_id: str, note: str, at: int | None = None,
              by: str | None = None) -> FollowUp:
        """Close an open follow-up with a note; ``at`` defaults to the wall clock."""
        found = self.open.pop(followup_id, None)
        if found is None:
            raise KeyError(f"no open follow-up with id {followup_id!r}")
        found.status, found.note = "closed", note
        found.closed_at = int(datetime.now(UTC).timestamp()) if at is None else at
        found.updated_by, found.updated_at = by, found.closed_at
        self._keep_closed(found)
        return found

    def _keep_closed(self, item: FollowUp) -> None:
        self.closed.append(item)
        while len(self.closed) > self.closed_kept:
            self.closed.popleft()

    def apply(self, update: FollowUpUpdate) -> FollowUp:
        """Close or assign a follow-up. ``KeyError`` when it is unknown; closing a closed
        one changes nothing (a retried request); assigning a closed one is a
        ``ValueError``."""
        found = self.get(update.id)
        if found is None:
            raise KeyError(f"no follow-up with id {update.id!r}")
        if found.status == "closed":
            if update.action == "close":
                return found
            raise ValueError(f"follow-up {update.id!r} is closed")
        if update.action == "close":
            return self.close(update.id, update.note, update.at, update.by)
        found.assignee, found.note = update.assignee, update.note
        found.updated_by, found.updated_at = update.by, update.at
        return found

    def erase_customer(self, customer_id: str) -> builtins.list[FollowUp]:
        """Blank the personal fields (``ERASED_FIELDS``) of every follow-up of
        ``customer_id``, open or closed, in place; the anonymous rest stays (and so do
        the counts by owner, segment and status). Returns the follow-ups changed, as
        they now are (the Kafka runner re-publishes them). Idempotent: a second call
        finds none."""
        changed: builtins.list[FollowUp] = []
        for book in (self.open.values(), self.closed):
            for item in book:
                if item.customer_id == customer_id:
                    for name, blank in zip(ERASED_FIELDS, ("", "", None, None), strict=True):
                        setattr(item, name, blank)
                    changed.append(item)
        return changed

    def mirror(self, item: FollowUp) -> None:
        """Take a follow-up as published (the follow-ups topic): it replaces what is
        known under its id, open or closed."""
        self.open.pop(item.id, None)
        if any(f.id == item.id for f in self.closed):
            self.closed = deque(f for f in self.closed if f.id != item.id)
        if item.status == "open":
            self.open[item.id] = item
        else:
            self._keep_closed(item)

    def state(self) -> dict[str, Any]:
        """Snapshot as plain (msgpack-able) data."""
        return {"open": [asdict(f) for f in self.open.values()],
                "closed": [asdict(f) for f in self.closed]}

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the contents with a snapshot taken by ``state`` (trimmed to this bound)."""
        self.open = {f["id"]: FollowUp(**f) for f in state["open"]}
        closed = state["closed"][-self.closed_kept:] if self.closed_kept else []
        self.closed = deque(FollowUp(**f) for f in closed)
