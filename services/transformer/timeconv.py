"""Time rules of the transformer: bars per year, exchange sessions, wall time -> UTC, bar ends.

Twelve Data stamps intraday bars with their *open* time as naive wall-clock text: stocks in the
exchange's time zone (whose UTC offset moves at DST), crypto and forex in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from marketpipe.intervals import INTRADAY_MINUTES

TIME_UNIT = "us"  # PostgreSQL timestamps have microsecond resolution; so do our columns.
NAIVE_DTYPE = f"datetime64[{TIME_UNIT}]"


# Trading days per year by asset class: stocks follow an exchange calendar, crypto never closes,
# forex trades around the clock on weekdays.
TRADING_DAYS_PER_YEAR = {"stock": 252, "crypto": 365, "forex": 260}


@dataclass(frozen=True)
class Session:
    """Regular (not extended) trading hours of an exchange, in its local wall time."""

    open_minute: int
    close_minute: int

    @property
    def minutes(self) -> int:
        return self.close_minute - self.open_minute


def _hm(hours: int, minutes: int = 0) -> int:
    return hours * 60 + minutes


# Regular sessions by exchange time zone. The API names the time zone, not the session, so the
# zone is the key; an unknown zone falls back to the New York session, the API's main market.
SESSIONS: dict[str, Session] = {
    "America/New_York": Session(_hm(9, 30), _hm(16)),
    "America/Toronto": Session(_hm(9, 30), _hm(16)),
    "America/Chicago": Session(_hm(8, 30), _hm(15)),
    "America/Sao_Paulo": Session(_hm(10), _hm(17)),
    "Europe/London": Session(_hm(8), _hm(16, 30)),
    "Europe/Berlin": Session(_hm(9), _hm(17, 30)),
    "Europe/Paris": Session(_hm(9), _hm(17, 30)),
    "Europe/Amsterdam": Session(_hm(9), _hm(17, 30)),
    "Europe/Zurich": Session(_hm(9), _hm(17, 30)),
    "Asia/Tokyo": Session(_hm(9), _hm(15, 30)),
    "Asia/Hong_Kong": Session(_hm(9, 30), _hm(16)),
    "Asia/Shanghai": Session(_hm(9, 30), _hm(15)),
    "Asia/Kolkata": Session(_hm(9, 15), _hm(15, 30)),
    "Australia/Sydney": Session(_hm(10), _hm(16)),
}
DEFAULT_SESSION = SESSIONS["America/New_York"]


def session_for(exchange_timezone: str | None) -> Session:
    return SESSIONS.get(exchange_timezone or "", DEFAULT_SESSION)


def bars_per_year(asset_class: str, interval: str, exchange_timezone: str | None) -> float:
    """Bars in a year of the asset class's trading calendar (annualises volatility).

    Stocks: 252 sessions x bars per session, a partial last bar counting as a bar (NYSE 1h: the
    15:30 bar exists, so 7 bars a day). Crypto: 365 x 24h. Forex: 260 weekdays x 24h.
    """
    if interval == "1week":
        return 52.0
    if interval == "1month":
        return 12.0
    days = float(TRADING_DAYS_PER_YEAR.get(asset_class, 365))
    if interval == "1day":
        return days
    minutes = INTRADAY_MINUTES[interval]
    if asset_class == "stock":
        return days * math.ceil(session_for(exchange_timezone).minutes / minutes)
    return days * (24 * 60 / minutes)


def parse_api_datetimes(text: Sequence[str]) -> np.ndarray:
    """Parse 'YYYY-MM-DD[ HH:MM:SS]' text to naive datetime64[s]; unparseable text gives NaT.

    A list of str is parsed directly by numpy's C parser; only a list holding something it
    refuses is parsed value by value.
    """
    try:
        return np.array(text, dtype="datetime64[s]")
    except (ValueError, TypeError):
        return np.array([_parse_one(value) for value in text], dtype="datetime64[s]")


def _parse_one(value: str) -> np.datetime64:
    try:
        return np.datetime64(value.strip(), "s") if value.strip() else np.datetime64("NaT", "s")
    except ValueError:
        return np.datetime64("NaT", "s")


@dataclass(frozen=True)
class UtcTimes:
    utc: np.ndarray  # datetime64[us] (UTC, naive representation), NaT where nonexistent
    nonexistent: np.ndarray  # bool: the wall time does not exist in the zone (spring forward)


def wall_to_utc(wall: np.ndarray, timezone: str) -> UtcTimes:
    """UTC times of one zone's wall times, which must be listed in time order.

    A wall time repeated when clocks fall back (01:00-02:00 twice in New York) is read as DST at
    its first occurrence and as standard time at the repeat, because bars come in time order; a
    third occurrence reads as DST again. Wall times skipped when clocks spring forward do not
    exist: NaT, flagged ``nonexistent``.
    """
    index = pd.DatetimeIndex(wall.astype(NAIVE_DTYPE))
    size = len(index)
    as_dst = index.tz_localize(timezone, ambiguous=np.ones(size, bool), nonexistent="NaT")
    as_std = index.tz_localize(timezone, ambiguous=np.zeros(size, bool), nonexistent="NaT")
    ambiguous = np.asarray(as_dst != as_std) & np.asarray(as_dst.notna())
    is_dst = np.ones(size, bool)
    if ambiguous.any():
        repeated = pd.Series(index[ambiguous])
        is_dst[ambiguous] = repeated.groupby(repeated).cumcount().to_numpy() % 2 == 0
    utc_dst = np.asarray(as_dst.tz_convert("UTC").tz_localize(None))
    utc_std = np.asarray(as_std.tz_convert("UTC").tz_localize(None))
    nonexistent = np.asarray(as_dst.isna()) & ~np.asarray(index.isna())
    return UtcTimes(utc=np.where(is_dst, utc_dst, utc_std), nonexistent=nonexistent)


def bar_end_local(
    local_open: pd.Timestamp, interval: str, asset_class: str, exchange_timezone: str | None
) -> pd.Timestamp:
    """Wall-clock end of a bar (naive local for stocks, UTC for crypto and forex).

    A stock bar never ends after its session's close: the last NYSE 1h bar opens at 15:30 and
    ends at 16:00. A stock day ends at the session close, a week at Friday's close.
    """
    day = local_open.normalize()
    is_stock = asset_class == "stock"
    close = day + pd.Timedelta(minutes=session_for(exchange_timezone).close_minute)
    if interval in INTRADAY_MINUTES:
        end = local_open + pd.Timedelta(minutes=INTRADAY_MINUTES[interval])
        return min(end, close) if is_stock else end
    if interval == "1day":
        return close if is_stock else day + pd.Timedelta(days=1)
    if interval == "1week":
        return close + pd.Timedelta(days=4) if is_stock else day + pd.Timedelta(days=7)
    return day + pd.offsets.MonthBegin(1)  # a month ends where the next one begins
