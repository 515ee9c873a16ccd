"""Time rules of the transformer: intervals, exchange sessions, local -> UTC, bar ends.

Twelve Data stamps intraday bars with their *open* time as naive wall-clock text: stocks in the
exchange's time zone (whose UTC offset moves at DST), crypto and forex in UTC. Everything here
is vectorised over numpy/pandas arrays; no function loops over bars in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from marketpipe.intervals import INTRADAY_MINUTES

TIME_UNIT = "us"  # PostgreSQL timestamps have microsecond resolution; so do our columns.
UTC_DTYPE = f"datetime64[{TIME_UNIT}, UTC]"
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


def parse_api_datetimes(text: Sequence[str] | np.ndarray) -> np.ndarray:
    """Parse 'YYYY-MM-DD[ HH:MM:SS]' text to naive datetime64[s]; unparseable text gives NaT.

    A list of str is parsed directly by numpy's C parser (no intermediate fixed-width unicode
    array, which costs several times the parse itself).
    """
    try:
        return np.array(text, dtype="datetime64[s]")
    except (ValueError, TypeError):
        # One bad string spoils the fast path; only then pay the per-element cost.
        return np.array([_parse_one(value) for value in text], dtype="datetime64[s]")


def _parse_one(value: object) -> np.datetime64:
    if not isinstance(value, str) or not value.strip():
        return np.datetime64("NaT", "s")
    try:
        parsed = np.datetime64(value.strip(), "s")
    except ValueError:
        return np.datetime64("NaT", "s")
    return parsed


@dataclass(frozen=True)
class LocalizeResult:
    utc: np.ndarray  # datetime64[us] (UTC, naive representation), NaT where nonexistent
    nonexistent: np.ndarray  # bool: the wall time does not exist in the zone (spring forward)


def local_to_utc(local: np.ndarray, timezone: str, first_is_dst: np.ndarray) -> LocalizeResult:
    """Convert naive wall times of one zone to UTC.

    ``first_is_dst`` decides ambiguous wall times (the repeated hour when clocks fall back): True
    means the DST reading (the first occurrence), False the standard-time one (the repeat).
    Wall times skipped when clocks spring forward do not exist and come back as NaT, flagged.
    """
    index = pd.DatetimeIndex(local.astype(NAIVE_DTYPE))
    localized = index.tz_localize(timezone, ambiguous=first_is_dst, nonexistent="NaT")
    # NaT in the input stays NaT without being a DST gap.
    nonexistent = np.asarray(localized.isna()) & ~np.asarray(index.isna())
    utc = np.asarray(localized.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT))
    return LocalizeResult(utc=utc, nonexistent=nonexistent)


def ambiguous_mask(local: np.ndarray, timezone: str) -> np.ndarray:
    """True where the wall time happens twice in the zone (the hour repeated at fall-back)."""
    index = pd.DatetimeIndex(local.astype(NAIVE_DTYPE))
    as_dst = index.tz_localize(timezone, ambiguous=np.ones(len(index), bool), nonexistent="NaT")
    as_std = index.tz_localize(timezone, ambiguous=np.zeros(len(index), bool), nonexistent="NaT")
    return np.asarray(as_dst != as_std) & ~np.asarray(as_dst.isna())


def utc_to_local(utc: np.ndarray, timezone: str) -> np.ndarray:
    index = pd.DatetimeIndex(utc.astype(NAIVE_DTYPE)).tz_localize("UTC").tz_convert(timezone)
    return np.asarray(index.tz_localize(None).as_unit(TIME_UNIT))


def bar_end_local(
    local_open: np.ndarray, interval: str, asset_class: str, exchange_timezone: str | None
) -> np.ndarray:
    """Wall-clock end of each bar (naive local for stocks, UTC for crypto and forex).

    A stock bar never ends after its session's close: the last NYSE 1h bar opens at 15:30 and
    ends at 16:00. A stock day ends at the session close, a week at Friday's close.
    """
    local_open = local_open.astype(NAIVE_DTYPE)
    day = local_open.astype("datetime64[D]").astype(NAIVE_DTYPE)
    is_stock = asset_class == "stock"
    session = session_for(exchange_timezone)
    close = day + np.timedelta64(session.close_minute, "m")
    if interval in INTRADAY_MINUTES:
        end = local_open + np.timedelta64(INTRADAY_MINUTES[interval], "m")
        return np.minimum(end, close) if is_stock else end
    if interval == "1day":
        return close if is_stock else day + np.timedelta64(1, "D")
    if interval == "1week":
        return close + np.timedelta64(4, "D") if is_stock else day + np.timedelta64(7, "D")
    month = local_open.astype("datetime64[M]")
    return (month + np.timedelta64(1, "M")).astype(NAIVE_DTYPE)


def session_start_local(local_open: np.ndarray, asset_class: str, tz: str | None) -> np.ndarray:
    """Wall-clock start of the trading day each bar belongs to."""
    day = local_open.astype("datetime64[D]").astype(NAIVE_DTYPE)
    if asset_class != "stock":
        return day
    return day + np.timedelta64(session_for(tz).open_minute, "m")


def session_end_local(local_open: np.ndarray, asset_class: str, tz: str | None) -> np.ndarray:
    day = local_open.astype("datetime64[D]").astype(NAIVE_DTYPE)
    if asset_class != "stock":
        return day + np.timedelta64(1, "D")
    return day + np.timedelta64(session_for(tz).close_minute, "m")
