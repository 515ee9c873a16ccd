"""The market's rules, in one place: intervals, asset classes, sessions, bar ends, indicator set.

Fetcher, transformer, loader, dashboard and sandbox import these; none restates them.

- Intervals are Twelve Data's (``INTRADAY_MINUTES``, ``CALENDAR_INTERVALS``) with its request
  limits.
- An instrument is a ``stock`` (it trades on an exchange, in the exchange's time zone), ``crypto``
  (a digital-currency pair, 24/7, UTC days) or ``forex`` (a physical-currency pair, weekdays,
  UTC days): :func:`asset_class_of`.
- Exchange sessions, holidays and early closes come from ``exchange-calendars`` (the calendars
  maintained for Zipline and its successors), never from hand-written holiday lists.
- :func:`bar_end` is the one rule for when a bar ends; :func:`bars_per_year` the one
  annualisation; :data:`INDICATORS` the one indicator set, from which the fetcher's warm-up
  (:meth:`IndicatorSet.warmup_bars`) follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any, Final, Literal

import exchange_calendars as xcals
import pandas as pd

# --- intervals -----------------------------------------------------------------------------

# Minutes per bar of the intraday intervals ("5h" exists only in an older spec; still accepted).
INTRADAY_MINUTES: Final[dict[str, int]] = {
    "1min": 1,
    "5min": 5,
    "15min": 15,
    "30min": 30,
    "45min": 45,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "5h": 300,
    "8h": 480,
}
CALENDAR_INTERVALS: Final = ("1day", "1week", "1month")
KNOWN_INTERVALS: Final = frozenset(INTRADAY_MINUTES) | frozenset(CALENDAR_INTERVALS)

MAX_OUTPUTSIZE: Final = 5000
MAX_BATCH_SYMBOLS: Final = 120

# daily_bars are built from the stored bars of this one interval only (docs/indicators.md):
# loading a second interval (2h, 1day, ...) never rebuilds a day from other bars.
DAILY_SOURCE_INTERVAL: Final = "1h"

_CALENDAR_DAYS: Final = {"1day": 1, "1week": 7, "1month": 31}


def interval_length(interval: str) -> timedelta:
    """Nominal length of one bar (a month counts 31 days: an upper bound)."""
    if interval in INTRADAY_MINUTES:
        return timedelta(minutes=INTRADAY_MINUTES[interval])
    return timedelta(days=_CALENDAR_DAYS[interval])


# --- asset classes -------------------------------------------------------------------------

AssetClass = Literal["stock", "crypto", "forex"]
ASSET_CLASSES: Final[tuple[AssetClass, ...]] = ("stock", "crypto", "forex")


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def asset_class_of(
    symbol: str,
    *,
    meta: dict[str, Any] | None = None,
    instrument: dict[str, Any] | None = None,
) -> AssetClass | None:
    """stock / crypto / forex of an instrument; None when the evidence names none.

    With a /time_series ``meta``: an exchange time zone makes a stock; a base and quote currency
    a pair, crypto or forex by its type (the docs: forex meta is crypto's without an exchange).
    Without one, the reference data's ``type`` decides, else the symbol's shape (a pair has a
    slash and stays undecided).
    """
    kind = (_text((meta or {}).get("type")) or _text((instrument or {}).get("type"))).lower()
    pair_kind: AssetClass | None = None
    if "digital" in kind or "crypto" in kind:
        pair_kind = "crypto"
    elif "physical" in kind or "forex" in kind:
        pair_kind = "forex"
    if meta is not None:
        if _text(meta.get("exchange_timezone")):
            return "stock"
        if _text(meta.get("currency_base")) and _text(meta.get("currency_quote")):
            return pair_kind or ("crypto" if _text(meta.get("exchange")) else "forex")
        return None
    if pair_kind:
        return pair_kind
    if kind:
        return "stock"
    return None if "/" in symbol else "stock"


# --- calendars and sessions ----------------------------------------------------------------

# The API names an exchange by MIC and time zone; the zone picks the calendar when the MIC is
# not one exchange-calendars knows. An unknown zone falls back to the NYSE, the API's main market.
CALENDAR_BY_ZONE: Final[dict[str, str]] = {
    "America/New_York": "XNYS",
    "America/Toronto": "XTSE",
    "America/Sao_Paulo": "BVMF",
    "Europe/London": "XLON",
    "Europe/Berlin": "XETR",
    "Europe/Paris": "XPAR",
    "Europe/Amsterdam": "XAMS",
    "Europe/Zurich": "XSWX",
    "Asia/Tokyo": "XTKS",
    "Asia/Hong_Kong": "XHKG",
    "Asia/Shanghai": "XSHG",
    "Asia/Kolkata": "XBOM",
    "Australia/Sydney": "XASX",
}
DEFAULT_STOCK_CALENDAR: Final = "XNYS"
# The span every calendar is built for (the sandbox models 2000-2060).
CALENDAR_START: Final = date(2000, 1, 1)
CALENDAR_END: Final = date(2060, 12, 31)

# Sessions a year used to annualise: a stock exchange's ~252, 365 days of crypto, 260 weekdays.
SESSIONS_PER_YEAR: Final[dict[str, int]] = {"stock": 252, "crypto": 365, "forex": 260}


def calendar_name(exchange_timezone: str | None, mic_code: str | None = None) -> str:
    """The exchange-calendars name of a stock's exchange (by MIC, else by time zone)."""
    if mic_code and mic_code.upper() in _known_calendars():
        return mic_code.upper()
    return CALENDAR_BY_ZONE.get(exchange_timezone or "", DEFAULT_STOCK_CALENDAR)


@cache
def _known_calendars() -> frozenset[str]:
    return frozenset(xcals.get_calendar_names(include_aliases=True))


@cache
def exchange_calendar(name: str) -> xcals.ExchangeCalendar:
    """One exchange's calendar over CALENDAR_START..CALENDAR_END (built once per process)."""
    return xcals.get_calendar(name, start=CALENDAR_START.isoformat(), end=CALENDAR_END.isoformat())


@dataclass(frozen=True)
class Venue:
    """Where an instrument trades: its asset class and, for a stock, its exchange calendar."""

    asset_class: str
    timezone: str  # the zone its bars are stamped in: the exchange's, or UTC
    calendar: str | None  # exchange-calendars name; None for crypto and forex (UTC days)

    @property
    def is_stock(self) -> bool:
        return self.asset_class == "stock"


_ZONE_OF_CALENDAR: Final = {name: zone for zone, name in CALENDAR_BY_ZONE.items()}


def venue(asset_class: str, exchange_timezone: str | None, mic_code: str | None = None) -> Venue:
    if asset_class == "stock":
        name = calendar_name(exchange_timezone, mic_code)
        zone = exchange_timezone or _ZONE_OF_CALENDAR.get(name)
        return Venue("stock", zone or str(exchange_calendar(name).tz), name)
    return Venue(asset_class, "UTC", None)


def preload(names: tuple[str, ...] = (DEFAULT_STOCK_CALENDAR,)) -> None:
    """Build the calendars' session tables now (seconds each): call before a worker forks."""
    _known_calendars()
    for name in names:
        _closes(name)
        regular_session_minutes(name)


@cache
def _closes(name: str) -> dict[date, pd.Timestamp]:
    """Session date -> UTC close, holidays absent, early closes as they are."""
    closes = exchange_calendar(name).closes
    return {day.date(): close.tz_convert("UTC") for day, close in closes.items()}


@cache
def regular_session_minutes(name: str) -> int:
    """Length of a regular (not early-closing) session of the exchange, in minutes."""
    calendar = exchange_calendar(name)
    lengths = (calendar.closes - calendar.opens).dt.total_seconds() // 60
    return int(lengths.mode().iloc[0])


def session_close(place: Venue, day: date) -> pd.Timestamp | None:
    """UTC close of the session on ``day`` (None on a holiday or weekend, and for non-stocks)."""
    if place.calendar is None:
        return None
    return _closes(place.calendar).get(day)


def is_session(place: Venue, day: date) -> bool:
    """Whether the market trades on ``day`` (a local date)."""
    if place.calendar is not None:
        return day in _closes(place.calendar)
    return place.asset_class == "crypto" or day.weekday() < 5


def sessions(name: str) -> pd.DataFrame:
    """Every session of a calendar: ``day`` (date), ``open`` and ``close`` (UTC)."""
    calendar = exchange_calendar(name)
    return pd.DataFrame(
        {
            "day": calendar.sessions.date,
            "open": calendar.opens.dt.tz_convert("UTC").to_numpy(),
            "close": calendar.closes.dt.tz_convert("UTC").to_numpy(),
        }
    )


def _localize(wall: pd.Timestamp, zone: str) -> pd.Timestamp:
    return wall.tz_localize(zone, ambiguous=True, nonexistent="shift_forward").tz_convert("UTC")


def _last_close_until(place: Venue, first: date, last: date) -> pd.Timestamp | None:
    """Close of the last session in [first, last] (the week's or month's closing session)."""
    day = last
    while day >= first:
        close = session_close(place, day)
        if close is not None:
            return close
        day -= timedelta(days=1)
    return None


def bar_end(local_open: pd.Timestamp, interval: str, place: Venue) -> pd.Timestamp:
    """When a bar that opened at wall time ``local_open`` ends, in UTC: the one bar-end rule.

    Crypto and forex: open + interval (a day is the UTC day, a month ends where the next one
    begins). A stock bar never ends after its session's close, holidays and early closes
    included: the last NYSE 1h bar opens 15:30 and ends 16:00 (13:00 on an early close); a daily
    bar ends at that day's close, a weekly or monthly one at the close of the period's last
    session. Bars outside any session (none should exist) end at open + interval.
    """
    wall = pd.Timestamp(local_open)
    if wall.tzinfo is not None:
        wall = wall.tz_convert(place.timezone).tz_localize(None)
    day = wall.normalize()
    if interval == "1month":
        following = day + pd.offsets.MonthBegin(1)
    elif interval == "1week":
        following = day + pd.Timedelta(days=7 - day.weekday())
    elif interval == "1day":
        following = day + pd.Timedelta(days=1)
    else:
        following = wall + pd.Timedelta(minutes=INTRADAY_MINUTES[interval])
    nominal = _localize(following, place.timezone)
    if not place.is_stock:
        return nominal
    if interval in INTRADAY_MINUTES:
        close = session_close(place, wall.date())
        return min(nominal, close) if close is not None else nominal
    period_start = wall.date() if interval == "1day" else day.date()
    close = _last_close_until(place, period_start, (following - pd.Timedelta(days=1)).date())
    return close if close is not None else nominal


def _period_open(day: date, interval: str) -> date:
    if interval == "1month":
        return day.replace(day=1)
    if interval == "1week":
        return day - timedelta(days=day.weekday())
    return day


def latest_bar_end(interval: str, place: Venue, at: datetime) -> pd.Timestamp | None:
    """When the newest bar of a calendar interval (1day, 1week, 1month) that ended by ``at``
    ended: a stock's last session close (holidays skipped, early closes as they are), a
    coin's or currency's last UTC midnight after a session day. None for intraday intervals
    (they follow FETCH_SCHEDULE) and when no session ended in the last 400 days.
    """
    if interval not in CALENDAR_INTERVALS:
        return None
    moment = pd.Timestamp(at)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    opened = _period_open(moment.tz_convert(place.timezone).date(), interval)
    for _ in range(400):
        if interval != "1day" or is_session(place, opened):
            end = bar_end(pd.Timestamp(opened), interval, place)
            if end <= moment:
                return end
        opened = _period_open(opened - timedelta(days=1), interval)
    return None


def bars_per_session(interval: str, place: Venue) -> float:
    """Bars in one trading day: a regular stock session (a partial last bar counts) or 24 h."""
    if interval in INTRADAY_MINUTES:
        minutes = regular_session_minutes(place.calendar) if place.calendar else 24 * 60
        return float(math.ceil(minutes / INTRADAY_MINUTES[interval]))
    return 1.0 / _CALENDAR_DAYS[interval]


def bars_per_year(interval: str, place: Venue) -> float:
    """Bars in a year of the venue's calendar (annualises volatility; sizes the warm-up).

    Stocks: 252 sessions x bars per regular session (NYSE 1h: 7, the 15:30 bar counts).
    Crypto: 365 x 24 h. Forex: 260 weekdays x 24 h. Weekly 52, monthly 12.
    """
    if interval == "1week":
        return 52.0
    if interval == "1month":
        return 12.0
    days = float(SESSIONS_PER_YEAR.get(place.asset_class, 365))
    return days * bars_per_session(interval, place)


# --- indicator set -------------------------------------------------------------------------

# An exponential average's seed must weigh less than this before a bar's value counts as exact.
EMA_TOLERANCE: Final = 1e-6


def settle_bars(alpha: float, tolerance: float = EMA_TOLERANCE) -> int:
    """Bars after which an exponential average's seed weighs less than ``tolerance``."""
    return math.ceil(math.log(tolerance) / math.log(1.0 - alpha))


@dataclass(frozen=True)
class IndicatorSet:
    """The periods of every derived column (docs/indicators.md); the warm-up follows from them."""

    sma: tuple[int, ...] = (20, 50, 200)
    ema: tuple[int, ...] = (12, 26)
    macd: tuple[int, int, int] = (12, 26, 9)  # fast, slow, signal
    rsi: int = 14
    bollinger: int = 20
    bollinger_width: float = 2.0  # population standard deviations
    atr: int = 14
    volatility: int = 20
    range_weeks: int = 52

    def lookback_bars(self) -> int:
        """Stored bars before a new bar that its windows reach: N - 1 for a window of N, and
        the N previous closes of N log returns (the 52-week range is counted in time)."""
        return max(*(n - 1 for n in self.sma), self.bollinger - 1, self.volatility, 1)

    def settle_horizon_bars(self, tolerance: float = 1e-15) -> int:
        """Bars after a changed bar beyond which none of its derived values moves by more than
        ``tolerance`` (relative to the change): the windows, then every recurrence's fade (the
        MACD signal's after the slow EMA's). Bounds the recompute of a stored series."""
        fast, slow, signal = self.macd

        def fade(alpha: float) -> int:
            return settle_bars(alpha, tolerance)

        return max(
            self.lookback_bars() + 1,
            *(fade(2.0 / (n + 1)) for n in (*self.ema, fast)),
            fade(2.0 / (slow + 1)) + fade(2.0 / (signal + 1)),
            1 + fade(1.0 / self.rsi),
            1 + fade(1.0 / self.atr),
        )

    def warmup_bars(self) -> int:
        """Bars before the first wanted bar that make every indicator of it exact.

        A window of n needs n - 1 earlier bars (returns one more); an exponential average
        needs its seed window plus the bars for the seed to fade below EMA_TOLERANCE; MACD's
        signal starts where its slow EMA does. The 52-week range is left to the fetcher,
        which adds a year when one fits in a request.
        """
        fast, slow, signal = self.macd
        needs = [
            *self.sma,
            self.bollinger,
            self.volatility + 1,
            *(n + settle_bars(2.0 / (n + 1)) for n in (*self.ema, fast)),
            slow + settle_bars(2.0 / (slow + 1)) + settle_bars(2.0 / (signal + 1)),
            1 + self.rsi + settle_bars(1.0 / self.rsi),
            1 + self.atr + settle_bars(1.0 / self.atr),
        ]
        return max(needs)


INDICATORS: Final = IndicatorSet()


def market_open(place: Venue, at: datetime) -> tuple[bool, pd.Timestamp | None]:
    """Whether the venue trades at ``at`` (UTC) and when that next changes (None: never).

    Crypto trades around the clock; forex on weekdays (UTC days, as ``is_session``); a stock
    exchange in its calendar's sessions (holidays and early closes included).
    """
    stamp = pd.Timestamp(at)
    moment = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if place.calendar is None:
        if place.asset_class == "crypto":
            return True, None
        is_open = is_session(place, moment.date())
        change = moment.normalize() + pd.Timedelta(days=1)
        while is_session(place, change.date()) == is_open:
            change += pd.Timedelta(days=1)
        return is_open, change
    # From the session table, not ``is_open_on_minute``: that builds an index of every trading
    # minute of 2000-2060 (0.5 s, the overview's first draw) to answer one question.
    return _stock_open(_session_edges(place.calendar), moment.floor("min"))


@cache
def _session_edges(name: str) -> pd.DatetimeIndex:
    """Every UTC instant the exchange opens or closes, sorted: opens at even places, closes at
    odd ones (a lunch break is a close and an open inside its session)."""
    calendar = exchange_calendar(name)
    edges: list[pd.Timestamp] = []
    for opens, break_start, break_end, closes in zip(
        calendar.opens, calendar.break_starts, calendar.break_ends, calendar.closes, strict=True
    ):
        if pd.notna(break_start) and pd.notna(break_end):
            edges += [opens, break_start, break_end, closes]
        else:
            edges += [opens, closes]
    return pd.DatetimeIndex(edges).tz_convert("UTC")


def _stock_open(edges: pd.DatetimeIndex, minute: pd.Timestamp) -> tuple[bool, pd.Timestamp]:
    """Open at ``minute`` (opening minute in, closing minute out) and the next edge."""
    after = int(edges.searchsorted(minute, side="right"))
    if after >= len(edges):
        raise ValueError(f"{minute} is beyond the calendars' end, {CALENDAR_END}")
    return after % 2 == 1, edges[after]
