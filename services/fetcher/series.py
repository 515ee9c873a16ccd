"""Pure logic of incremental extraction: bar times, warm-up, outputsize, windows and job ids.

Nothing here talks to a server, so every rule the fetcher relies on is unit-testable.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marketpipe.intervals import INTRADAY_MINUTES, MAX_OUTPUTSIZE

_CALENDAR_DAYS: Final = {"1day": 1, "1week": 7, "1month": 31}

# The transformer's longest look-backs. SMA 200 needs 199 earlier bars; an EMA seeded from an
# SMA forgets its seed geometrically, so EMA 26 (MACD's slow line) and then the 9-bar signal on
# top of it need enough bars for the seed's weight to fall below EMA_TOLERANCE.
SMA_LONGEST: Final = 200
MACD_SLOW: Final = 26
MACD_SIGNAL: Final = 9
EMA_TOLERANCE: Final = 1e-6

# Upper bounds of sessions a year and session length, to size windows that never exceed 5000 bars.
TRADING_DAYS_PER_YEAR: Final = {"stock": 252, "crypto": 365, "forex": 260}
STOCK_SESSION_MINUTES: Final = 390


def ema_settle_bars(period: int, tolerance: float = EMA_TOLERANCE) -> int:
    """Bars after which an EMA's initial seed weighs less than ``tolerance``."""
    decay = 1.0 - 2.0 / (period + 1)
    return math.ceil(math.log(tolerance) / math.log(decay))


INDICATOR_WARMUP: Final = max(
    SMA_LONGEST, MACD_SLOW + ema_settle_bars(MACD_SLOW) + ema_settle_bars(MACD_SIGNAL)
)


def bars_per_day(interval: str, asset_class: str) -> float:
    """At most how many bars one trading day of this asset class holds."""
    if interval in INTRADAY_MINUTES:
        minutes = STOCK_SESSION_MINUTES if asset_class == "stock" else 24 * 60
        return float(math.ceil(minutes / INTRADAY_MINUTES[interval]))
    return 1.0 / _CALENDAR_DAYS[interval]


def bars_per_year(interval: str, asset_class: str) -> int:
    days = TRADING_DAYS_PER_YEAR.get(asset_class, 365)
    if interval in INTRADAY_MINUTES:
        return math.ceil(days * bars_per_day(interval, asset_class))
    return {"1day": days, "1week": 53, "1month": 12}[interval]


def warmup_bars(interval: str, asset_class: str | None) -> int:
    """History to ask before the first new bar so every indicator of the new bars is exact.

    The 52-week high/low joins in only when a year of bars still fits in one request; for
    24/7 hourly series it does not, and the transformer leaves those columns to longer history.
    """
    year = bars_per_year(interval, asset_class or "crypto")
    return max(INDICATOR_WARMUP, year) if year < MAX_OUTPUTSIZE else INDICATOR_WARMUP


def interval_length(interval: str) -> timedelta:
    """Nominal length of one bar (a month counts 31 days: an upper bound is what we need)."""
    if interval in INTRADAY_MINUTES:
        return timedelta(minutes=INTRADAY_MINUTES[interval])
    return timedelta(days=_CALENDAR_DAYS[interval])


def outputsize_for(
    watermark: datetime | None,
    now: datetime,
    interval: str,
    asset_class: str | None,
    initial: int,
) -> int:
    """Bars to ask for: the gap since the watermark plus the warm-up, capped at 5000.

    Without a watermark nothing is stored yet: ``initial`` bars (FETCH_OUTPUTSIZE). The gap is
    counted as if the market never closed, an over-estimate that costs nothing (a request costs
    one credit per symbol whatever its size).
    """
    if watermark is None:
        return min(initial, MAX_OUTPUTSIZE)
    gap = max(0, math.ceil((now - watermark) / interval_length(interval)))
    return max(1, min(MAX_OUTPUTSIZE, gap + warmup_bars(interval, asset_class)))


def asset_class_of(symbol: str, instrument: dict[str, Any] | None) -> str | None:
    """stock / crypto / forex from the reference data, else a guess from the symbol's shape."""
    kind = str((instrument or {}).get("type", "")).lower()
    if "digital" in kind or "crypto" in kind:
        return "crypto"
    if "physical" in kind or "forex" in kind:
        return "forex"
    if kind:
        return "stock"
    return None if "/" in symbol else "stock"


@dataclass(frozen=True)
class SeriesView:
    """What the fetcher needs to know about one /time_series answer."""

    newest_complete: datetime | None  # open time (UTC) of the newest bar that had ended
    open_bar: datetime | None  # open time (UTC) of a bar still running at fetch time
    open_signature: str  # digest of the still-open bar (empty without one)
    oldest: datetime | None
    newest: datetime | None
    bars: int


def _zone(meta: dict[str, Any]) -> ZoneInfo:
    name = meta.get("exchange_timezone")
    if name:
        try:
            return ZoneInfo(str(name))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _bar_open_and_end(text: str, interval: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    local = datetime.fromisoformat(text.strip())
    if interval == "1month":
        month = local.replace(day=1)
        end_local = (month + timedelta(days=32)).replace(day=1)
    else:
        end_local = local + interval_length(interval)
    return (
        local.replace(tzinfo=zone).astimezone(UTC),
        end_local.replace(tzinfo=zone).astimezone(UTC),
    )


def view_series(body: dict[str, Any], interval: str, now: datetime) -> SeriesView:
    """Newest complete bar and the still-open bar of an answer, on the API's clock ``now``.

    Unparseable rows are skipped: judging them is the transformer's job.
    """
    zone = _zone(body.get("meta") or {})
    stamped: list[tuple[datetime, datetime, Any]] = []
    for row in body.get("values") or []:
        try:
            opened, ended = _bar_open_and_end(str(row["datetime"]), interval, zone)
        except (KeyError, TypeError, ValueError):
            continue
        stamped.append((opened, ended, row))
    if not stamped:
        return SeriesView(None, None, "", None, None, 0)
    stamped.sort(key=lambda item: item[0])
    complete = [opened for opened, ended, _ in stamped if ended <= now]
    newest_open, newest_end, newest_row = stamped[-1]
    is_open = newest_end > now
    signature = (
        hashlib.sha256(json.dumps(newest_row, sort_keys=True).encode()).hexdigest()[:16]
        if is_open
        else ""
    )
    return SeriesView(
        newest_complete=max(complete) if complete else None,
        open_bar=newest_open if is_open else None,
        open_signature=signature,
        oldest=stamped[0][0],
        newest=newest_open,
        bars=len(stamped),
    )


def has_new_data(view: SeriesView, watermark: datetime | None, open_signature: str | None) -> bool:
    """Bars newer than the watermark, or a still-open bar we have not seen in this state."""
    if view.bars == 0:
        return False
    if view.newest_complete is not None and (watermark is None or view.newest_complete > watermark):
        return True
    return bool(view.open_signature) and view.open_signature != open_signature


def symbol_slug(symbol: str) -> str:
    """A symbol inside an RQ job id ([A-Za-z0-9_-]); '_' never occurs in symbols, so unique."""
    return symbol.replace("_", "_u").replace("/", "_s").replace(".", "_d").replace(":", "_c")


def _stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M") if moment else "none"


def transform_job_id(
    symbol: str, interval: str, window: tuple[datetime | None, datetime | None], payload_id: str
) -> str:
    """One job per (symbol, interval, window); the content digest tells a changed open bar apart.

    The same answer fetched by a restarted fetcher or another replica yields the same id.
    """
    start, end = window
    return (
        f"transform-{symbol_slug(symbol)}-{interval}-{_stamp(start)}-{_stamp(end)}"
        f"-{payload_id[:12]}"
    )


# --- backfill windows --------------------------------------------------------------------------


def window_days(interval: str, asset_class: str | None) -> int:
    """Calendar days a backfill window may span so that it and its warm-up fit in 5000 bars."""
    budget = MAX_OUTPUTSIZE - warmup_bars(interval, asset_class)
    per_day = bars_per_day(interval, asset_class or "crypto")
    days = int(budget / per_day)
    if asset_class in ("stock", "forex"):
        # Weekends hold no bars; a span of N days holds at most N*5/7 + 2 weekdays.
        while (days + 1) * 5 // 7 + 2 <= budget / per_day:
            days += 1
    return max(1, days)


def warmup_days(interval: str, asset_class: str | None) -> int:
    """Calendar days that hold at least the warm-up's bars (weekends and nights included)."""
    warm = warmup_bars(interval, asset_class)
    per_day = bars_per_day(interval, asset_class or "crypto")
    if asset_class in ("stock", "forex"):
        per_day = per_day * 5 / 7 * 0.9  # holidays too
    return math.ceil(warm / per_day) + 1


def backfill_windows(
    since: date, until: date, interval: str, asset_class: str | None
) -> list[tuple[date, date]]:
    """[start, end) windows from ``until`` back to ``since``, newest first.

    Newest first on purpose: a window's oldest bars lack warm-up in that answer but are the
    newest bars of the next (older) window, fetched later, so the exact values land last.
    """
    span = timedelta(days=window_days(interval, asset_class))
    windows: list[tuple[date, date]] = []
    end = until
    while end > since:
        start = max(since, end - span)
        windows.append((start, end))
        end = start
    return windows


def parse_utc(text: str | bytes | None) -> datetime | None:
    if not text:
        return None
    raw = text.decode() if isinstance(text, bytes) else text
    moment = datetime.fromisoformat(raw)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
