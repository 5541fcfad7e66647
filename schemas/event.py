"""The touchpoint event contract, version 1.

One event is one customer signal (a survey answer, a rating, a contact outcome, a
sentiment score) at one touchpoint. The models are msgspec structs: decoding and
validating an event costs about a microsecond, and the JSON Schema published beside
them (``touchpoint-event.v1.schema.json``) is generated from these same classes.

The signal is a tagged union on ``kind``: each kind declares the type and scale of its
``value``, so an off-scale answer is rejected by the decoder with the field named.
Field names follow CloudEvents where it is natural: ``event_id`` is the CloudEvents
``id``, ``occurred_at`` its ``time``, ``source`` its ``source``; see ``to_cloudevent``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

SCHEMA_VERSION: Final = "1"
CLOUDEVENT_TYPE: Final = "io.touchstream.touchpoint.v1"
MAX_COMMENT_CHARS: Final = 4000

Id = Annotated[str, Meta(min_length=1, max_length=128, description="Opaque identifier.")]
Dimension = Annotated[
    str, Meta(min_length=1, max_length=64, description="A dimension value used in scopes.")
]
Comment = Annotated[
    str,
    Meta(
        max_length=MAX_COMMENT_CHARS,
        description="Free text in any language and script; kept byte for byte.",
    ),
]
EventTime = Annotated[
    datetime,
    Meta(tz=True, description="When the signal happened (RFC 3339 with a zone or offset)."),
]
Stage = Literal["recognize", "request", "respond"]
Contact = Literal["direct", "indirect"]
OutcomeValue = Literal["resolved", "unresolved", "abandoned"]

STAGES: Final[tuple[Stage, ...]] = ("recognize", "request", "respond")
OUTCOMES: Final[tuple[OutcomeValue, ...]] = ("resolved", "unresolved", "abandoned")


class _Touchpoint(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="kind",
    omit_defaults=True,
):
    """Fields every touchpoint event carries, whatever its signal."""

    schema_version: Literal["1"] = "1"
    event_id: Id
    source: Dimension = "unknown"
    occurred_at: EventTime
    customer_id: Id
    segment: Dimension = "unspecified"
    offering: Dimension = "unspecified"
    journey_type: Dimension | None = None
    journey_id: Id | None = None
    stage: Stage | None = None
    journey_end: bool = False
    touchpoint: Dimension
    channel: Dimension
    contact: Contact = "direct"
    owner: Dimension = "unassigned"
    program: Dimension = "continuous"
    comment: Comment | None = None

    @property
    def kind(self) -> str:
        """The signal kind: the tag this event was decoded by."""
        return str(type(self).__struct_config__.tag)


class Csat(_Touchpoint, frozen=True, tag="csat"):
    """Customer satisfaction, 1 (very dissatisfied) to 5 (very satisfied)."""

    value: Annotated[int, Meta(ge=1, le=5)]


class Nps(_Touchpoint, frozen=True, tag="nps"):
    """Likelihood to recommend, 0 to 10."""

    value: Annotated[int, Meta(ge=0, le=10)]


class Ces(_Touchpoint, frozen=True, tag="ces"):
    """Customer effort, 1 (very difficult) to 7 (very easy)."""

    value: Annotated[int, Meta(ge=1, le=7)]


class Rating(_Touchpoint, frozen=True, tag="rating"):
    """A rating on a declared integer scale; ``na_code`` marks "not applicable"."""

    value: int
    scale_min: Annotated[int, Meta(ge=0, le=1)] = 1
    scale_max: Annotated[int, Meta(ge=2, le=100)] = 5
    na_code: Annotated[int, Meta(ge=-1, le=100)] | None = None

    def __post_init__(self) -> None:
        if self.na_code is not None and self.scale_min <= self.na_code <= self.scale_max:
            raise ValueError(
                f"`na_code` {self.na_code} lies inside the scale "
                f"{self.scale_min}..{self.scale_max} - at `$.na_code`"
            )
        if self.value == self.na_code:
            return
        if not self.scale_min <= self.value <= self.scale_max:
            raise ValueError(
                f"`value` {self.value} is off the declared scale "
                f"{self.scale_min}..{self.scale_max} - at `$.value`"
            )

    @property
    def not_applicable(self) -> bool:
        """True when the answer is the declared not-applicable code."""
        return self.na_code is not None and self.value == self.na_code


class Outcome(_Touchpoint, frozen=True, tag="outcome"):
    """How a contact ended."""

    value: OutcomeValue


class Sentiment(_Touchpoint, frozen=True, tag="sentiment"):
    """Sentiment of a text or call, -1 (negative) to 1 (positive)."""

    value: Annotated[float, Meta(ge=-1.0, le=1.0)]


TouchpointEvent = Csat | Nps | Ces | Rating | Outcome | Sentiment
"""One touchpoint event: the union of every signal kind, tagged by ``kind``."""

KINDS: Final[tuple[str, ...]] = ("csat", "nps", "ces", "rating", "outcome", "sentiment")
KIND_OF: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag) for cls in (Csat, Nps, Ces, Rating, Outcome, Sentiment)
}
"""The kind of each event class: ``KIND_OF[type(event)]`` is ``event.kind``, cheaper."""


def to_cloudevent(event: TouchpointEvent) -> dict[str, object]:
    """The event as a CloudEvents 1.0 structured-mode dict (JSON data)."""
    return {
        "specversion": "1.0",
        "id": event.event_id,
        "source": event.source,
        "type": CLOUDEVENT_TYPE,
        "subject": event.customer_id,
        "time": event.occurred_at.isoformat(),
        "datacontenttype": "application/json",
        "dataschema": f"touchpoint-event.v{SCHEMA_VERSION}.schema.json",
        "data": msgspec.to_builtins(event),
    }
