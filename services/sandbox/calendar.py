"""Trading calendars: US equity holidays by rule, sessions per market, and UTC offsets.

A :class:`SessionTable` lists every trading session of a market between 2000 and 2060 as numpy
arrays (local date, UTC open, UTC close), so the market model can locate bars by binary search
instead of walking the calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)

FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2060, 12, 31)
UNIX_EPOCH_DAY = date(1970, 1, 1)

MONDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = 0, 3, 4, 5, 6

CalendarName = Literal["XNYS", "CRYPTO", "FOREX"]


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    weekday_shift = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday_shift) // 451
    month = (h + weekday_shift - 7 * m + 114) // 31
    day = (h + weekday_shift - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def last_weekday(year: int, month: int, weekday: int) -> date:
    following = date(year + month // 12, month % 12 + 1, 1)
    last = following - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def observed(holiday: date) -> date:
    """Saturday holidays are observed on Friday, Sunday ones on Monday."""
    if holiday.weekday() == SATURDAY:
        return holiday - timedelta(days=1)
    if holiday.weekday() == SUNDAY:
        return holiday + timedelta(days=1)
    return holiday


@lru_cache(maxsize=256)
def us_market_holidays(year: int) -> dict[date, str]:
    """NYSE/Nasdaq full-day holidays of ``year`` by rule (one-off closures are not modelled)."""
    holidays: dict[date, str] = {}
    new_year = date(year, 1, 1)
    # NYSE does not observe New Year's Day on the previous Friday when it falls on a Saturday.
    if new_year.weekday() != SATURDAY:
        holidays[observed(new_year)] = "New Year's Day"
    holidays[nth_weekday(year, 1, MONDAY, 3)] = "Martin Luther King Jr. Day"
    holidays[nth_weekday(year, 2, MONDAY, 3)] = "Washington's Birthday"
    holidays[easter_sunday(year) - timedelta(days=2)] = "Good Friday"
    holidays[last_weekday(year, 5, MONDAY)] = "Memorial Day"
    if year >= 2022:
        holidays[observed(date(year, 6, 19))] = "Juneteenth"
    holidays[observed(date(year, 7, 4))] = "Independence Day"
    holidays[nth_weekday(year, 9, MONDAY, 1)] = "Labor Day"
    holidays[nth_weekday(year, 11, THURSDAY, 4)] = "Thanksgiving Day"
    holidays[observed(date(year, 12, 25))] = "Christmas Day"
    return holidays


@lru_cache(maxsize=256)
def us_early_closes(year: int) -> frozenset[date]:
    """13:00 closes: July 3 and Dec 24 when Monday-Thursday, and the day after Thanksgiving."""
    days = {nth_weekday(year, 11, THURSDAY, 4) + timedelta(days=1)}
    for eve in (date(year, 7, 3), date(year, 12, 24)):
        if eve.weekday() <= THURSDAY:
            days.add(eve)
    return frozenset(days)


def is_us_trading_day(day: date) -> bool:
    return day.weekday() < SATURDAY and day not in us_market_holidays(day.year)


def us_session(day: date) -> tuple[datetime, datetime] | None:
    """UTC (open, close) of the US equity session on ``day``, or None when closed."""
    if not is_us_trading_day(day):
        return None
    close_time = EARLY_CLOSE if day in us_early_closes(day.year) else SESSION_CLOSE
    opens = datetime.combine(day, SESSION_OPEN, NEW_YORK).astimezone(UTC)
    closes = datetime.combine(day, close_time, NEW_YORK).astimezone(UTC)
    return opens, closes


@dataclass(frozen=True)
class SessionTable:
    """Every session of one market, ascending; days are local dates as days since 1970-01-01."""

    name: CalendarName
    timezone: str
    day: np.ndarray
    open_s: np.ndarray
    close_s: np.ndarray

    def __len__(self) -> int:
        return len(self.day)


def _epoch_day(day: date) -> int:
    return (day - UNIX_EPOCH_DAY).days


@cache
def session_table(name: CalendarName) -> SessionTable:
    """The cached session table of a market (built once, about 20k rows)."""
    first, last = _epoch_day(FIRST_DAY), _epoch_day(LAST_DAY)
    all_days = np.arange(first, last + 1, dtype=np.int64)
    if name == "CRYPTO":
        opens = all_days * 86400
        return SessionTable(name, "UTC", all_days, opens, opens + 86400)
    if name == "FOREX":
        # 1970-01-01 was a Thursday: (day + 3) % 7 is the ISO weekday index, Monday = 0.
        weekdays = all_days[(all_days + 3) % 7 < SATURDAY]
        opens = weekdays * 86400
        return SessionTable(name, "UTC", weekdays, opens, opens + 86400)
    days: list[int] = []
    opens_list: list[int] = []
    closes_list: list[int] = []
    current = FIRST_DAY
    while current <= LAST_DAY:
        session = us_session(current)
        if session is not None:
            days.append(_epoch_day(current))
            opens_list.append(int(session[0].timestamp()))
            closes_list.append(int(session[1].timestamp()))
        current += timedelta(days=1)
    return SessionTable(
        name,
        "America/New_York",
        np.array(days, dtype=np.int64),
        np.array(opens_list, dtype=np.int64),
        np.array(closes_list, dtype=np.int64),
    )


# Real time-zone rules change at most a few times a year; sampling every 6 days and bisecting
# between samples that disagree finds every transition without a zoneinfo call per bar.
_OFFSET_SAMPLE_SECONDS = 6 * 86400


def _offset_at(epoch_seconds: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(epoch_seconds, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def utc_offsets(epoch_seconds: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """UTC offset in seconds of ``zone`` at each instant (vectorised, DST-aware)."""
    offsets = np.zeros(len(epoch_seconds), dtype=np.int64)
    if len(epoch_seconds) == 0 or zone.key == "UTC":
        return offsets
    first, last = int(epoch_seconds.min()), int(epoch_seconds.max())
    samples = [*range(first, last, _OFFSET_SAMPLE_SECONDS), last]
    sample_offsets = [_offset_at(t, zone) for t in samples]
    offsets[:] = sample_offsets[0]
    for left, right, left_offset, right_offset in zip(
        samples, samples[1:], sample_offsets, sample_offsets[1:], strict=False
    ):
        if left_offset == right_offset:
            continue
        while right - left > 1:
            middle = (left + right) // 2
            if _offset_at(middle, zone) == left_offset:
                left = middle
            else:
                right = middle
        offsets[epoch_seconds >= right] = right_offset
    return offsets


def local_to_epoch(moment: datetime, zone: ZoneInfo) -> int:
    """Epoch seconds of a naive wall time in ``zone`` (aware values keep their own offset)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp())
