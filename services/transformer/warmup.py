"""Warm-up bars: fetched only so the indicators of the newer bars are exact, never emitted.

The fetcher asks for history before the bars it wants (``request["since"]``) so every window
is filled; those older bars carry partial windows here and would overwrite the exact values
stored by an earlier load. Bars before ``since`` are therefore dropped after enrichment, and
daily rows only from the day before ``since`` on are kept (the warm-up spans weeks, so those
days are whole). Without ``since``, a payload cut by its outputsize has a first day that may be
partial: it gives no daily row.
"""

from __future__ import annotations

import pandas as pd

from marketpipe.contract import RawPayload

ONE_DAY = pd.Timedelta(days=1)


def since(payload: RawPayload) -> pd.Timestamp | None:
    """The first bar the fetcher wants (UTC), if it asked for warm-up history before it."""
    raw = payload.request.get("since")
    if not raw:
        return None
    stamp = pd.Timestamp(raw)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def was_cut(payload: RawPayload) -> bool:
    """True when the API returned as many bars as asked for, so older history exists."""
    values = payload.body.get("values") if isinstance(payload.body, dict) else None
    asked = payload.request.get("outputsize")
    return isinstance(values, list) and isinstance(asked, int) and len(values) >= asked


def drop_warmup(
    bars: pd.DataFrame, daily: pd.DataFrame, payload: RawPayload
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The bars at or after ``since``; the daily rows of whole days only.

    Both frames are in time order, so the warm-up is a prefix of each.
    """
    start = since(payload)
    if start is not None:
        bars = bars.iloc[bars["bar_time"].searchsorted(start) :]
        first_whole_day = (start - ONE_DAY).tz_localize(None).normalize()
    elif was_cut(payload) and not daily.empty:
        first_whole_day = daily["trading_date"].iloc[0] + ONE_DAY
    else:
        return bars, daily
    return bars, daily.iloc[daily["trading_date"].searchsorted(first_whole_day) :]
