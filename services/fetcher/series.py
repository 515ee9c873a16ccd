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

import pandas as pd

from marketpipe.market import (
    INDICATORS,
    MAX_OUTPUTSIZE,
    IndicatorSet,
    Venue,
    asset_class_of,
    bar_end,
    bars_per_session,
    bars_per_year,
    interval_length,
    venue,
)

# The indicator set's warm-up: every indicator of the first wanted bar is exact (market.py).
INDICATOR_WARMUP: Final = INDICATORS.warmup_bars()


def _venue(asset_class: str | None) -> Venue:
    # Sizing only: a stock's exchange is not known here, so the NYSE's session stands for all.
    return venue(asset_class or "crypto", None)


def bars_per_day(interval: str, asset_class: str) -> float:
    """At most how many bars one trading day of this asset class holds."""
    return bars_per_session(interval, _venue(asset_class))


def warmup_bars(interval: str, asset_class: str | None, periods: IndicatorSet = INDICATORS) -> int:
    """History to ask before the first new bar so every indicator of the new bars is exact.

    The 52-week high/low joins in only when a year of bars still fits in one request; for
    24/7 hourly series it does not, and the transformer leaves those columns to longer history.
    """
    warm = periods.warmup_bars()
    year = math.ceil(bars_per_year(interval, _venue(asset_class)))
    return max(warm, year) if year < MAX_OUTPUTSIZE else warm


def outputsize_for(
    watermark: datetime | None,
    now: datetime,
    interval: str,
    initial: int,
    overlap: int,
) -> int:
    """Bars to ask for: the gap since the watermark plus ``overlap`` stored bars, at most 5000.

    Without a watermark nothing is stored yet: ``initial`` bars (FETCH_OUTPUTSIZE). With one,
    the indicators continue the stored series (marketpipe/history.py), so no warm-up is asked:
    only the bars after the watermark, counted as if the market never closed (an over-estimate
    for a stock over a night or a weekend), and ``overlap`` (FETCH_OVERLAP_BARS) bars before
    them, so the still-open bar is seen complete and a restated recent bar is seen at all. A
    gap longer than a page gets the newest 5000 bars; the backfill fills what lies before.
    """
    if watermark is None:
        return min(initial, MAX_OUTPUTSIZE)
    gap = max(0, math.ceil((now - watermark) / interval_length(interval)))
    return max(1, min(MAX_OUTPUTSIZE, gap + overlap))


@dataclass(frozen=True)
class SeriesView:
    """What the fetcher needs to know about one /time_series answer."""

    newest_complete: datetime | None  # open time (UTC) of the newest bar that had ended
    open_bar: datetime | None  # open time (UTC) of a bar still running at fetch time
    open_signature: str  # digest of the still-open bar (empty without one)
    oldest: datetime | None
    newest: datetime | None
    bars: int


def _meta_venue(meta: dict[str, Any]) -> Venue:
    zone = meta.get("exchange_timezone")
    if zone:
        try:
            ZoneInfo(str(zone))
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
    asset_class = asset_class_of("", meta=meta) if zone else "crypto"
    return venue(asset_class or "crypto", str(zone) if zone else None, meta.get("mic_code"))


def _bar_open_utc(text: str, place: Venue) -> tuple[pd.Timestamp, datetime]:
    local = pd.Timestamp(datetime.fromisoformat(text.strip()))
    opened = local.tz_localize(place.timezone, ambiguous=True, nonexistent="shift_forward")
    return local, opened.tz_convert("UTC").to_pydatetime()


def view_series(body: dict[str, Any], interval: str, now: datetime) -> SeriesView:
    """Newest complete bar and the still-open bar of an answer, on the API's clock ``now``.

    Unparseable rows are skipped: judging them is the transformer's job.
    """
    place = _meta_venue(body.get("meta") or {})
    stamped: list[tuple[datetime, pd.Timestamp, Any]] = []
    for row in body.get("values") or []:
        try:
            local, opened = _bar_open_utc(str(row["datetime"]), place)
        except (KeyError, TypeError, ValueError):
            continue
        stamped.append((opened, local, row))
    if not stamped:
        return SeriesView(None, None, "", None, None, 0)
    stamped.sort(key=lambda item: item[0])
    # Bar ends rise with bar opens: only the newest bars can still be running.
    complete: list[datetime] = []
    is_open = False
    for position, (opened, local, _) in enumerate(reversed(stamped)):
        if bar_end(local, interval, place).to_pydatetime() <= now:
            complete.append(opened)
            break
        is_open = is_open or position == 0
    newest_open, _, newest_row = stamped[-1]
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
