"""Daily aggregates of one series, per trading day, from its enriched bars.

Stock days are the exchange's session days (the local date of the bar), crypto and forex days
are UTC days. Intraday and daily bars feed days; weekly and monthly bars never do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import DAILY_COLUMNS
from marketpipe.indicators import lagged
from marketpipe.market import INTRADAY_MINUTES
from services.transformer.enrich import contract_frame, empty_frame

FEEDS_DAYS = frozenset({*INTRADAY_MINUTES, "1day"})


def daily_aggregates(bars: pd.DataFrame, *, transformed_at: pd.Timestamp) -> pd.DataFrame:
    """One row per trading_date: OHLC, volume, VWAP, change vs the previous day."""
    if bars.empty or bars["interval"].iloc[0] not in FEEDS_DAYS:
        return empty_frame(DAILY_COLUMNS)
    # Bars are in time order, so each trading day is one run of rows: [starts[k], ends[k]].
    day = bars["trading_date"].to_numpy()
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    ends = np.r_[starts[1:], len(day)] - 1
    high, low, close, volume = (
        bars[name].to_numpy() for name in ("high", "low", "close", "volume")
    )
    day_high = np.maximum.reduceat(high, starts)
    day_low = np.minimum.reduceat(low, starts)
    day_close = close[ends]
    # A day's volume is only known when every bar of it has one (NaN propagates through sums).
    day_volume = np.add.reduceat(volume, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.add.reduceat((high + low + close) / 3.0 * volume, starts) / day_volume
    previous_close = lagged(day_close)
    change = day_close - previous_close
    return contract_frame(
        DAILY_COLUMNS,
        {
            "symbol": bars["symbol"].iloc[0],
            "trading_date": day[starts],
            "asset_class": bars["asset_class"].iloc[0],
            "open": bars["open"].to_numpy()[starts],
            "high": day_high,
            "low": day_low,
            "close": day_close,
            "volume": day_volume,
            "vwap": np.where(day_volume > 0, vwap, np.nan),
            "change": change,
            "pct_change": change / previous_close * 100.0,
            "range": day_high - day_low,
            "bar_count": ends - starts + 1,
            "is_complete": np.minimum.reduceat(bars["is_complete"].to_numpy(), starts),
            "payload_id": bars["payload_id"].iloc[0],
            "transformed_at": transformed_at,
        },
        len(starts),
    )
