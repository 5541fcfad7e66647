"""Time buckets on event time: fixed steps for sliding windows, calendar periods in a zone.

A bucketing maps epoch seconds to integer bucket ids, for a whole array at once, and
each id back to its [start, end) bounds. Calendar periods are computed in the
configured IANA zone, so a "day" in Europe/Oslo starts at local midnight, DST included.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streams.engine.config import CalendarUnit

IntArray = npt.NDArray[np.int64]
_EPOCH = date(1970, 1, 1)
_QUARTER_HOUR = 900


class Bucketing(Protocol):
    """Maps event times (epoch seconds) to bucket ids and back."""

    name: str

    def ids(self, seconds: IntArray) -> IntArray: ...

    def bounds(self, bucket: int) -> tuple[datetime, datetime]: ...


class FixedBucketing:
    """Buckets of ``step`` seconds aligned to the epoch (so to UTC midnight)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.name: str = f"{step}s"

    def ids(self, seconds: IntArray) -> IntArray:
        """Bucket id of each time."""
        return seconds // self.step

    def bounds(self, bucket: int) -> tuple[datetime, datetime]:
        """[start, end) of a bucket, in UTC."""
        start = datetime.fromtimestamp(bucket * self.step, UTC)
        return start, start + timedelta(seconds=self.step)


class CalendarBucketing:
    """Calendar days, ISO weeks (Monday first), months or quarters in a time zone."""

    def __init__(self, unit: CalendarUnit, zone: str) -> None:
        self.unit = unit
        self.zone = ZoneInfo(zone)
        self.name: str = unit

    def local_days(self, seconds: IntArray) -> IntArray:
        """Local calendar day (days since 1970-01-01) of each time.

        UTC offsets almost always change on quarter-hour boundaries, so one zone lookup
        at each end of every distinct quarter-hour in the batch is enough; the rare
        quarter-hour whose ends differ (St. John's moved its clocks at 00:01 until 2011)
        looks up each of its events.
        """
        quarters, inverse = np.unique(seconds // _QUARTER_HOUR, return_inverse=True)
        firsts, lasts = (
            np.fromiter(
                (int(_offset(self.zone, int(q) * _QUARTER_HOUR + at)) for q in quarters),
                dtype=np.int64,
                count=len(quarters),
            )
            for at in (0, _QUARTER_HOUR - 1)
        )
        offsets = firsts[inverse]
        for i in np.flatnonzero((firsts != lasts)[inverse]).tolist():
            offsets[i] = int(_offset(self.zone, int(seconds[i])))
        return (seconds + offsets) // 86_400

    def ids(self, seconds: IntArray) -> IntArray:
        """Period id of each time: days, weeks, months or quarters since the epoch."""
        return self.ids_of_days(self.local_days(seconds))

    def ids_of_days(self, days: IntArray) -> IntArray:
        """Period id of each local day (as ``local_days`` gives them, in this zone)."""
        if self.unit == "day":
            return days
        if self.unit == "week":
            return (days + 3) // 7  # 1970-01-01 was a Thursday; weeks start on Monday
        months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        return months if self.unit == "month" else months // 3

    def start_date(self, bucket: int) -> date:
        """The local date a period starts on."""
        if self.unit == "day":
            return _EPOCH + timedelta(days=bucket)
        if self.unit == "week":
            return _EPOCH + timedelta(days=bucket * 7 - 3)
        months = bucket if self.unit == "month" else bucket * 3
        return date(1970 + months // 12, months % 12 + 1, 1)

    def bounds(self, bucket: int) -> tuple[datetime, datetime]:
        """[start, end) of a period: local midnights, returned in UTC."""
        start = self.start_date(bucket)
        end = self.start_date(bucket + 1)
        return _midnight(start, self.zone), _midnight(end, self.zone)

    def label(self, bucket: int) -> str:
        """A readable period name: 2026-11-24, 2026-W48, 2026-11, 2026-Q4."""
        start = self.start_date(bucket)
        if self.unit == "day":
            return start.isoformat()
        if self.unit == "week":
            year, week, _ = start.isocalendar()
            return f"{year}-W{week:02d}"
        if self.unit == "month":
            return f"{start.year}-{start.month:02d}"
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"

    def parse(self, label: str) -> int:
        """The period a ``label`` names (its inverse); ValueError naming the form."""
        forms = {"day": "2026-11-24", "week": "2026-W48", "month": "2026-11",
                 "quarter": "2026-Q4"}
        match = _LABELS[self.unit].fullmatch(label.strip())
        try:
            if match is None:
                raise ValueError
            year = int(match.group(1))
            if self.unit == "day":
                day = date.fromisoformat(label.strip())
                return (day - _EPOCH).days
            if self.unit == "week":
                monday = date.fromisocalendar(year, int(match.group(2)), 1)
                return ((monday - _EPOCH).days + 3) // 7
            number = int(match.group(2))
            if self.unit == "month":
                if not 1 <= number <= 12:
                    raise ValueError
                return (year - 1970) * 12 + number - 1
            if not 1 <= number <= 4:
                raise ValueError
            return (year - 1970) * 4 + number - 1
        except ValueError:
            raise ValueError(f"not a {self.unit} (expected the form "
                             f"{forms[self.unit]}): {label!r}") from None


_LABELS: Final = {
    "day": re.compile(r"(\d{4})-(\d{2})-(\d{2})"),
    "week": re.compile(r"(\d{4})-W(\d{2})"),
    "month": re.compile(r"(\d{4})-(\d{2})"),
    "quarter": re.compile(r"(\d{4})-Q(\d)"),
}


def _offset(zone: ZoneInfo, second: int) -> float:
    off = datetime.fromtimestamp(second, UTC).astimezone(zone).utcoffset()
    return off.total_seconds() if off is not None else 0.0


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
