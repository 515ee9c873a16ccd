"""Trading calendars of the sandbox's markets (marketpipe.market's sessions) and UTC offsets.

A :class:`SessionTable` lists every trading session of a market between 2000 and 2060 as numpy
arrays (local date, UTC open, UTC close), so the market model can locate bars by binary search
instead of walking the calendar.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from marketpipe.market import CALENDAR_END, CALENDAR_START, exchange_calendar, sessions

FIRST_DAY = CALENDAR_START
LAST_DAY = CALENDAR_END
UNIX_EPOCH_DAY = date(1970, 1, 1)
SATURDAY = 5

CalendarName = Literal["XNYS", "CRYPTO", "FOREX"]


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
    # The stock market's sessions are the pipeline's own calendar (exchange-calendars' XNYS),
    # holidays and early closes included, so the sandbox and the pipeline never disagree.
    table = sessions(name)
    epoch_days = (pd.to_datetime(table["day"]) - pd.Timestamp(UNIX_EPOCH_DAY)).dt.days
    return SessionTable(
        name,
        str(exchange_calendar(name).tz),
        epoch_days.to_numpy(dtype=np.int64),
        _epoch_seconds(table["open"]),
        _epoch_seconds(table["close"]),
    )


def _epoch_seconds(moments: pd.Series) -> np.ndarray:
    utc = pd.DatetimeIndex(moments).tz_convert("UTC").tz_localize(None)
    return np.asarray(utc.as_unit("s").asi8, dtype=np.int64)


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
