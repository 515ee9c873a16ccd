"""Daily aggregates per symbol and trading day, from the enriched bars.

Stock days are the exchange's session days (the local date of the bar), crypto and forex days
are UTC days. When a batch holds several intervals of one symbol, the finest intraday interval
(or 1day) feeds the day; weekly and monthly bars never do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import DAILY_COLUMNS, column_names
from services.transformer.timeconv import (
    INTRADAY_MINUTES,
    UTC_DTYPE,
)

DAILY_COLUMN_NAMES = column_names(DAILY_COLUMNS)
_INTERVAL_RANK = {**INTRADAY_MINUTES, "1day": 24 * 60}


def daily_aggregates(
    bars: pd.DataFrame, payloads: pd.DataFrame, *, transformed_at: pd.Timestamp
) -> pd.DataFrame:
    """One row per (symbol, trading_date): OHLC, volume, VWAP, change vs the previous day."""
    del payloads  # completeness of a day is judged from its bars' flags
    if bars.empty:
        return _empty()
    rank = bars["interval"].map(_INTERVAL_RANK)
    usable = rank.notna().to_numpy()
    finest = rank.groupby(bars["symbol"]).transform("min")
    selected = bars.loc[usable & (rank == finest).to_numpy()]
    if selected.empty:
        return _empty()
    # Bars are sorted by series then time; one series per symbol remains, so days are runs.
    symbol = selected["symbol"].to_numpy(dtype=object)
    day = selected["trading_date"].to_numpy()
    new_day = np.r_[True, (symbol[1:] != symbol[:-1]) | (day[1:] != day[:-1])]
    starts = np.flatnonzero(new_day)
    ends = np.r_[starts[1:], len(selected)] - 1
    high = np.maximum.reduceat(selected["high"].to_numpy(), starts)
    low = np.minimum.reduceat(selected["low"].to_numpy(), starts)
    volume_bars = selected["volume"].to_numpy()
    typical = (
        selected["high"].to_numpy() + selected["low"].to_numpy() + selected["close"].to_numpy()
    ) / 3.0
    # A day's volume is only known when every bar of it has one (NaN propagates through sums).
    volume = np.add.reduceat(volume_bars, starts)
    vwap = np.add.reduceat(typical * volume_bars, starts) / volume
    vwap[~(volume > 0)] = np.nan
    close = selected["close"].to_numpy()[ends]
    same_symbol_as_prev = np.r_[False, symbol[starts][1:] == symbol[starts][:-1]]
    previous = np.where(same_symbol_as_prev, np.r_[np.nan, close[:-1]], np.nan)
    complete_bars = np.minimum.reduceat(selected["is_complete"].to_numpy().astype(np.int8), starts)
    frame = pd.DataFrame(
        {
            "symbol": symbol[starts],
            "trading_date": day[starts],
            "asset_class": selected["asset_class"].to_numpy(dtype=object)[starts],
            "open": selected["open"].to_numpy()[starts],
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": vwap,
            "change": close - previous,
            "pct_change": (close - previous) / previous * 100.0,
            "range": high - low,
            "bar_count": (ends - starts + 1).astype(np.int64),
            "is_complete": complete_bars.astype(bool),
            "payload_id": selected["payload_id"].to_numpy(dtype=object)[ends],
            "transformed_at": np.full(len(starts), transformed_at),
        }
    )
    frame = frame.astype({"symbol": object, "asset_class": object, "payload_id": object})
    frame["transformed_at"] = frame["transformed_at"].astype(UTC_DTYPE)
    return frame[DAILY_COLUMN_NAMES]


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype=object) for name in DAILY_COLUMN_NAMES})
    floats = ["open", "high", "low", "close", "volume", "vwap", "change", "pct_change", "range"]
    frame = frame.astype({c: np.float64 for c in floats})
    return frame.astype(
        {
            "trading_date": "datetime64[us]",
            "bar_count": np.int64,
            "is_complete": bool,
            "transformed_at": UTC_DTYPE,
        }
    )
