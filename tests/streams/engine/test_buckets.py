"""Time buckets: fixed steps on the epoch, calendar periods in a zone (DST included)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from streams.engine.buckets import CalendarBucketing, FixedBucketing

EPOCH = date(1970, 1, 1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def seconds(*times: datetime) -> np.ndarray:
    return np.array([int(t.timestamp()) for t in times], dtype=np.int64)


def one_id(bucketing: CalendarBucketing | FixedBucketing, at: datetime) -> int:
    return int(bucketing.ids(seconds(at))[0])


# -- fixed steps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "second", "bucket", "start", "end"),
    [
        (60, 0, 0, utc(1970, 1, 1), utc(1970, 1, 1, 0, 1)),
        (60, 59, 0, utc(1970, 1, 1), utc(1970, 1, 1, 0, 1)),
        (60, 60, 1, utc(1970, 1, 1, 0, 1), utc(1970, 1, 1, 0, 2)),
        (60, -1, -1, utc(1969, 12, 31, 23, 59), utc(1970, 1, 1)),
        (60, -60, -1, utc(1969, 12, 31, 23, 59), utc(1970, 1, 1)),
        (60, -61, -2, utc(1969, 12, 31, 23, 58), utc(1969, 12, 31, 23, 59)),
        (3600, 1_774_652_399, 492_958, utc(2026, 3, 27, 22), utc(2026, 3, 27, 23)),
        (3600, 1_774_652_400, 492_959, utc(2026, 3, 27, 23), utc(2026, 3, 28)),
        (900, 1_774_652_400 + 899, 1_971_836, utc(2026, 3, 27, 23), utc(2026, 3, 27, 23, 15)),
        (86_400, 1_774_652_400, 20_539, utc(2026, 3, 27), utc(2026, 3, 28)),
    ],
)
def test_fixed_ids_and_bounds(step: int, second: int, bucket: int, start: datetime,
                              end: datetime) -> None:
    fixed = FixedBucketing(step)
    assert fixed.name == f"{step}s"
    assert fixed.ids(np.array([second], dtype=np.int64)).tolist() == [bucket]
    assert fixed.bounds(bucket) == (start, end)
    assert start.timestamp() <= second < end.timestamp()


def test_fixed_ids_of_an_array_keep_order_and_dtype() -> None:
    got = FixedBucketing(60).ids(np.array([125, -1, 0, 3599, 3600], dtype=np.int64))
    assert got.dtype == np.int64
    assert got.tolist() == [2, -1, 0, 59, 60]


# -- calendar days ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "start", "end", "hours"),
    [
        # Oslo springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST): a 23-hour day.
        ("Europe/Oslo", date(2026, 3, 28), utc(2026, 3, 27, 23), utc(2026, 3, 28, 23), 24),
        ("Europe/Oslo", date(2026, 3, 29), utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), 23),
        ("Europe/Oslo", date(2026, 3, 30), utc(2026, 3, 29, 22), utc(2026, 3, 30, 22), 24),
        # ... and falls back on 2026-10-25: a 25-hour day.
        ("Europe/Oslo", date(2026, 10, 25), utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 25),
        # New York: 2026-03-08 and 2026-11-01.
        ("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), 23),
        ("America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 4), utc(2026, 11, 2, 5), 25),
        # Kolkata: +05:30 all year, so days start at 18:30 UTC the evening before.
        ("Asia/Kolkata", date(2026, 3, 29), utc(2026, 3, 28, 18, 30), utc(2026, 3, 29, 18, 30),
         24),
    ],
)
def test_local_day_bounds_follow_dst(zone: str, day: date, start: datetime, end: datetime,
                                     hours: int) -> None:
    days = CalendarBucketing("day", zone)
    bucket = (day - EPOCH).days
    assert days.bounds(bucket) == (start, end)
    assert days.bounds(bucket)[1] - days.bounds(bucket)[0] == timedelta(hours=hours)
    assert days.label(bucket) == day.isoformat()
    assert days.start_date(bucket) == day
    # The first and last second of the local day map to it, the neighbours do not.
    ids = days.ids(seconds(start - timedelta(seconds=1), start, end - timedelta(seconds=1), end))
    assert ids.tolist() == [bucket - 1, bucket, bucket, bucket + 1]


@pytest.mark.parametrize(
    ("zone", "at", "day"),
    [
        # Oslo, the night of the spring change: 00:59:59Z is 01:59:59 CET, 01:00Z 03:00 CEST.
        ("Europe/Oslo", utc(2026, 3, 28, 22, 59, 59), 20_540),
        ("Europe/Oslo", utc(2026, 3, 28, 23), 20_541),
        ("Europe/Oslo", utc(2026, 3, 29, 0, 59, 59), 20_541),
        ("Europe/Oslo", utc(2026, 3, 29, 1), 20_541),
        ("Europe/Oslo", utc(2026, 3, 29, 21, 59, 59), 20_541),
        ("Europe/Oslo", utc(2026, 3, 29, 22), 20_542),
        ("Asia/Kolkata", utc(2026, 3, 28, 18, 29, 59), 20_540),
        ("Asia/Kolkata", utc(2026, 3, 28, 18, 30), 20_541),
        ("America/New_York", utc(2026, 3, 8, 4, 59, 59), 20_519),
        ("America/New_York", utc(2026, 3, 8, 5), 20_520),
        ("America/New_York", utc(2026, 3, 9, 3, 59, 59), 20_520),
        ("America/New_York", utc(2026, 3, 9, 4), 20_521),
        ("UTC", utc(2026, 3, 29), 20_541),
    ],
)
def test_local_day_ids(zone: str, at: datetime, day: int) -> None:
    assert one_id(CalendarBucketing("day", zone), at) == day


def test_a_batch_straddling_the_change_gets_each_event_its_own_offset() -> None:
    """One array, times on both sides of the Oslo change and of local midnight."""
    days = CalendarBucketing("day", "Europe/Oslo")
    times = [utc(2026, 3, 29, 21, 59, 59), utc(2026, 3, 28, 22, 59, 59), utc(2026, 3, 29, 1),
             utc(2026, 3, 29, 0, 59, 59), utc(2026, 3, 29, 22), utc(2026, 3, 28, 23)]
    assert days.ids(seconds(*times)).tolist() == [20_541, 20_540, 20_541, 20_541, 20_542,
                                                  20_541]


def test_a_clock_change_off_the_quarter_hour_is_exact() -> None:
    """St. John's fell back at 00:01 local (02:31 UTC) from 1987 to 2011.

    Regression: local days used one offset per quarter-hour, so 02:31..02:44 UTC on
    1987-10-25 landed on the 25th instead of 23:01..23:14 NST on the 24th.
    """
    days = CalendarBucketing("day", "America/St_Johns")
    times = [utc(1987, 10, 25, 2, 30, 59), utc(1987, 10, 25, 2, 31), utc(1987, 10, 25, 2, 44),
             utc(1987, 10, 25, 2, 45), utc(1987, 10, 25, 3, 30)]
    zone = ZoneInfo("America/St_Johns")
    expected = [(t.astimezone(zone).date() - EPOCH).days for t in times]
    assert expected == [6506, 6505, 6505, 6505, 6506]
    assert days.ids(seconds(*times)).tolist() == expected


# -- weeks, months, quarters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "at", "label", "start", "end"),
    [
        # The week of the Oslo change: Monday 2026-03-23 .. Monday 2026-03-30, 167 hours.
        ("Europe/Oslo", utc(2026, 3, 27, 22), "2026-W13", utc(2026, 3, 22, 23),
         utc(2026, 3, 29, 22)),
        ("Europe/Oslo", utc(2026, 3, 29, 21, 59, 59), "2026-W13", utc(2026, 3, 22, 23),
         utc(2026, 3, 29, 22)),
        ("Europe/Oslo", utc(2026, 3, 29, 22), "2026-W14", utc(2026, 3, 29, 22),
         utc(2026, 4, 5, 22)),
        # ISO years: 2026 has 53 weeks, and 2027-01-01..03 still belong to 2026-W53.
        ("Europe/Oslo", utc(2026, 12, 31, 12), "2026-W53", utc(2026, 12, 27, 23),
         utc(2027, 1, 3, 23)),
        ("Europe/Oslo", utc(2027, 1, 1, 12), "2026-W53", utc(2026, 12, 27, 23),
         utc(2027, 1, 3, 23)),
        ("Europe/Oslo", utc(2027, 1, 3, 22, 59, 59), "2026-W53", utc(2026, 12, 27, 23),
         utc(2027, 1, 3, 23)),
        ("Europe/Oslo", utc(2027, 1, 3, 23), "2027-W01", utc(2027, 1, 3, 23),
         utc(2027, 1, 10, 23)),
        ("Europe/Oslo", utc(2025, 12, 29, 12), "2026-W01", utc(2025, 12, 28, 23),
         utc(2026, 1, 4, 23)),
        ("UTC", utc(2021, 1, 1), "2020-W53", utc(2020, 12, 28), utc(2021, 1, 4)),
        ("UTC", utc(2024, 12, 30), "2025-W01", utc(2024, 12, 30), utc(2025, 1, 6)),
        # Kolkata: Monday starts at 18:30 UTC on Sunday.
        ("Asia/Kolkata", utc(2026, 12, 27, 18, 29, 59), "2026-W52", utc(2026, 12, 20, 18, 30),
         utc(2026, 12, 27, 18, 30)),
        ("Asia/Kolkata", utc(2026, 12, 27, 18, 30), "2026-W53", utc(2026, 12, 27, 18, 30),
         utc(2027, 1, 3, 18, 30)),
        ("America/New_York", utc(2026, 3, 8, 12), "2026-W10", utc(2026, 3, 2, 5),
         utc(2026, 3, 9, 4)),
    ],
)
def test_iso_weeks(zone: str, at: datetime, label: str, start: datetime,
                   end: datetime) -> None:
    weeks = CalendarBucketing("week", zone)
    bucket = one_id(weeks, at)
    assert weeks.label(bucket) == label
    assert weeks.bounds(bucket) == (start, end)
    assert weeks.start_date(bucket).weekday() == 0  # Monday
    assert weeks.start_date(bucket) == start.astimezone(ZoneInfo(zone)).date()


def test_week_ids_count_mondays_since_the_epoch_week() -> None:
    weeks = CalendarBucketing("week", "UTC")
    # 1970-01-01 was a Thursday: week 0 runs from Monday 1969-12-29.
    assert weeks.start_date(0) == date(1969, 12, 29)
    assert one_id(weeks, utc(1969, 12, 29)) == 0
    assert one_id(weeks, utc(1969, 12, 28, 23, 59, 59)) == -1
    assert one_id(weeks, utc(1970, 1, 4, 23, 59, 59)) == 0
    assert one_id(weeks, utc(1970, 1, 5)) == 1
    assert one_id(weeks, utc(2026, 12, 31)) == one_id(weeks, utc(2027, 1, 1)) == 2974


@pytest.mark.parametrize(
    ("unit", "zone", "at", "bucket", "label", "start", "end"),
    [
        ("month", "Europe/Oslo", utc(2026, 3, 29, 12), 674, "2026-03", utc(2026, 2, 28, 23),
         utc(2026, 3, 31, 22)),
        ("month", "Europe/Oslo", utc(2026, 2, 28, 22, 59, 59), 673, "2026-02",
         utc(2026, 1, 31, 23), utc(2026, 2, 28, 23)),
        ("month", "Europe/Oslo", utc(2026, 12, 31, 23), 683 + 1, "2027-01",
         utc(2026, 12, 31, 23), utc(2027, 1, 31, 23)),
        ("month", "America/New_York", utc(2026, 11, 15), 682, "2026-11", utc(2026, 11, 1, 4),
         utc(2026, 12, 1, 5)),
        ("month", "Asia/Kolkata", utc(2026, 3, 31, 18, 29, 59), 674, "2026-03",
         utc(2026, 2, 28, 18, 30), utc(2026, 3, 31, 18, 30)),
        ("month", "Asia/Kolkata", utc(2026, 3, 31, 18, 30), 675, "2026-04",
         utc(2026, 3, 31, 18, 30), utc(2026, 4, 30, 18, 30)),
        ("month", "UTC", utc(1969, 12, 31, 23, 59, 59), -1, "1969-12", utc(1969, 12, 1),
         utc(1970, 1, 1)),
        ("quarter", "Europe/Oslo", utc(2026, 3, 29, 12), 224, "2026-Q1", utc(2025, 12, 31, 23),
         utc(2026, 3, 31, 22)),
        ("quarter", "Europe/Oslo", utc(2026, 3, 31, 22), 225, "2026-Q2", utc(2026, 3, 31, 22),
         utc(2026, 6, 30, 22)),
        ("quarter", "America/New_York", utc(2026, 12, 31, 12), 227, "2026-Q4",
         utc(2026, 10, 1, 4), utc(2027, 1, 1, 5)),
        ("quarter", "America/New_York", utc(2027, 1, 1, 4, 59, 59), 227, "2026-Q4",
         utc(2026, 10, 1, 4), utc(2027, 1, 1, 5)),
        ("quarter", "Asia/Kolkata", utc(2026, 5, 1), 225, "2026-Q2", utc(2026, 3, 31, 18, 30),
         utc(2026, 6, 30, 18, 30)),
        ("quarter", "UTC", utc(1969, 11, 1), -1, "1969-Q4", utc(1969, 10, 1), utc(1970, 1, 1)),
    ],
)
def test_months_and_quarters(unit: str, zone: str, at: datetime, bucket: int, label: str,
                             start: datetime, end: datetime) -> None:
    periods = CalendarBucketing(unit, zone)  # type: ignore[arg-type]
    assert periods.name == unit
    assert one_id(periods, at) == bucket
    assert periods.label(bucket) == label
    assert periods.bounds(bucket) == (start, end)


# -- against a plain zoneinfo computation --------------------------------------------------


def _expected(unit: str, local: date) -> int:
    if unit == "day":
        return (local - EPOCH).days
    if unit == "week":
        return ((local - timedelta(days=local.weekday())) - date(1969, 12, 29)).days // 7
    months = (local.year - 1970) * 12 + local.month - 1
    return months if unit == "month" else months // 3


@pytest.mark.parametrize("zone", ["Europe/Oslo", "Asia/Kolkata", "America/New_York",
                                  "America/St_Johns", "Australia/Lord_Howe"])
def test_ids_equal_zoneinfo_for_random_times(zone: str) -> None:
    rng = random.Random(zone)
    lo, hi = int(utc(1971, 1, 1).timestamp()), int(utc(2070, 1, 1).timestamp())
    # Uniform times plus times within a day of every 2026 DST change (and its seconds).
    near = [int(utc(2026, m, d).timestamp()) for m, d in ((3, 8), (3, 29), (10, 25), (11, 1))]
    times = [rng.randrange(lo, hi) for _ in range(2000)]
    times += [t + rng.randrange(-86_400, 2 * 86_400) for t in near for _ in range(250)]
    arr = np.array(times, dtype=np.int64)
    tz = ZoneInfo(zone)
    locals_ = [datetime.fromtimestamp(t, UTC).astimezone(tz).date() for t in times]
    for unit in ("day", "week", "month", "quarter"):
        periods = CalendarBucketing(unit, zone)  # type: ignore[arg-type]
        got = periods.ids(arr).tolist()
        assert got == [_expected(unit, d) for d in locals_], unit
        for t, bucket, local in zip(times[:300], got[:300], locals_[:300], strict=True):
            start, end = periods.bounds(bucket)
            assert start.timestamp() <= t < end.timestamp()
            if unit == "week":
                year, week, _ = local.isocalendar()
                assert periods.label(bucket) == f"{year}-W{week:02d}"


@pytest.mark.parametrize("unit", ["day", "week", "month", "quarter"])
def test_consecutive_periods_tile_time(unit: str) -> None:
    periods = CalendarBucketing(unit, "Europe/Oslo")  # type: ignore[arg-type]
    first = one_id(periods, utc(2025, 12, 1))
    for bucket in range(first, first + 40):
        assert periods.bounds(bucket)[1] == periods.bounds(bucket + 1)[0]
        assert periods.bounds(bucket)[0] < periods.bounds(bucket)[1]
