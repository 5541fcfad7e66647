"""Map the airline passenger satisfaction survey (``datasets/``) to touchpoint events.

Each passenger is one flight journey. Each of the fourteen 1-5 service ratings becomes
a touchpoint event on a 1-5 rating scale where 0 is "not applicable", with a channel
(web, app, airport, onboard), a stage (recognize, request, respond) and an owner; the
overall verdict closes the journey as a rating on a 1-2 scale (2 = satisfied).

The file has no timestamps, so event times follow one documented rule: passenger
number ``i`` (in file order) starts their journey at ``start + i * passenger_gap``, and
their touchpoints follow in the order below, ``touchpoint_gap`` apart, overall last.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

DEFAULT_PATH: Final = Path(__file__).resolve().parents[2] / "datasets" / "airline-satisfaction.csv"
DEFAULT_START: Final = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """Where one survey column sits in the journey."""

    column: str
    touchpoint: str
    channel: str
    stage: Literal["recognize", "request", "respond"]
    owner: str


TOUCHPOINTS: Final[tuple[Touchpoint, ...]] = (
    Touchpoint("Departure/Arrival time convenient", "schedule", "web", "recognize", "network"),
    Touchpoint("Ease of Online booking", "online_booking", "web", "request", "digital"),
    Touchpoint("Online boarding", "online_boarding", "app", "request", "digital"),
    Touchpoint("Checkin service", "checkin", "airport", "request", "ground"),
    Touchpoint("Gate location", "gate", "airport", "respond", "ground"),
    Touchpoint("Inflight wifi service", "wifi", "onboard", "respond", "cabin"),
    Touchpoint("Seat comfort", "seat", "onboard", "respond", "cabin"),
    Touchpoint("Leg room service", "leg_room", "onboard", "respond", "cabin"),
    Touchpoint("Food and drink", "food", "onboard", "respond", "cabin"),
    Touchpoint("Inflight entertainment", "entertainment", "onboard", "respond", "cabin"),
    Touchpoint("On-board service", "onboard_service", "onboard", "respond", "cabin"),
    Touchpoint("Inflight service", "inflight_service", "onboard", "respond", "cabin"),
    Touchpoint("Cleanliness", "cleanliness", "onboard", "respond", "cabin"),
    Touchpoint("Baggage handling", "baggage", "airport", "respond", "ground"),
)

SegmentBy = Literal["class", "loyalty", "travel"]
_SEGMENT_COLUMN: Final[dict[str, str]] = {
    "class": "Class",
    "loyalty": "Customer Type",
    "travel": "Type of Travel",
}


def _slug(text: str) -> str:
    return text.strip().lower().replace(" ", "_")


def events(
    path: Path = DEFAULT_PATH,
    *,
    start: datetime = DEFAULT_START,
    passenger_gap: timedelta = timedelta(minutes=1),
    touchpoint_gap: timedelta = timedelta(seconds=2),
    segment_by: SegmentBy = "class",
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Events as JSON-ready dicts, in time order, ready for the event decoder.

    ``segment_by`` picks which passenger attribute becomes ``segment`` (class by
    default: what counts as excellent differs by class); type of travel is always the
    ``offering``.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if limit is not None and i >= limit:
                return
            yield from passenger_events(row, i, start, passenger_gap, touchpoint_gap,
                                        segment_by)


def passenger_events(
    row: dict[str, str],
    index: int,
    start: datetime,
    passenger_gap: timedelta,
    touchpoint_gap: timedelta,
    segment_by: SegmentBy,
) -> Iterator[dict[str, Any]]:
    """The fifteen events of one passenger (one survey row)."""
    passenger = row["id"]
    began = start + index * passenger_gap
    common = {
        "source": "airline-satisfaction-survey",
        "customer_id": f"passenger-{passenger}",
        "segment": _slug(row[_SEGMENT_COLUMN[segment_by]]),
        "offering": _slug(row["Type of Travel"]),
        "journey_type": "flight",
        "journey_id": f"flight-{passenger}",
        "program": "periodic",
    }
    for k, tp in enumerate(TOUCHPOINTS):
        yield {
            **common,
            "event_id": f"airline-{passenger}-{tp.touchpoint}",
            "occurred_at": (began + k * touchpoint_gap).isoformat(),
            "touchpoint": tp.touchpoint,
            "channel": tp.channel,
            "stage": tp.stage,
            "owner": tp.owner,
            "kind": "rating",
            "value": int(row[tp.column]),
            "scale_min": 1,
            "scale_max": 5,
            "na_code": 0,
        }
    yield {
        **common,
        "event_id": f"airline-{passenger}-overall",
        "occurred_at": (began + len(TOUCHPOINTS) * touchpoint_gap).isoformat(),
        "touchpoint": "overall",
        "channel": "survey",
        "stage": "respond",
        "owner": "customer_experience",
        "kind": "rating",
        "value": 2 if row["satisfaction"] == "satisfied" else 1,
        "scale_min": 1,
        "scale_max": 2,
        "journey_end": True,
    }
