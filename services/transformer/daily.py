"""Daily aggregates per symbol and trading day, from the enriched bars.

Stock days are the exchange's session days (the local date of the bar), crypto and forex days
are UTC days. When a batch holds several intervals of one symbol, the finest intraday interval
(or 1day) feeds the day; weekly and monthly bars never do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import DAILY_COLUMNS, column_names
from marketpipe.intervals import INTRADAY_MINUTES
from services.transformer.timeconv import UTC_DTYPE

DAILY_COLUMN_NAMES = column_names(DAILY_COLUMNS)
_INTERVAL_RANK = {**INTRADAY_MINUTES, "1day": 24 * 60}


def daily_aggregates(
    bars: pd.DataFrame,
    payloads: pd.DataFrame,
    *,
    transformed_at: pd.Timestamp,
    series: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (symbol, trading_date): OHLC, volume, VWAP, change vs the previous day."""
    del payloads  # completeness of a day is judged from its bars' flags
    if bars.empty:
        return _empty()
    if series is None:
        keys = bars["symbol"].astype(object) + "\x00" + bars["interval"].astype(object)
        series = pd.factorize(keys.to_numpy(dtype=object))[0]
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
    lengths = np.diff(np.r_[starts, series.size])
    per_series = pd.DataFrame(
        {
            "symbol": bars["symbol"].to_numpy(dtype=object)[starts],
            "rank": [_INTERVAL_RANK.get(i, np.nan) for i in bars["interval"].to_numpy()[starts]],
        }
    )
    finest = per_series.groupby("symbol")["rank"].transform("min")
    chosen = (per_series["rank"] == finest).to_numpy()
    if not chosen.any():
        return _empty()
    # Row positions of the bars that feed days; usually all of them (one interval per symbol),
    # and then no column is copied.
    keep = None if chosen.all() else np.flatnonzero(np.repeat(chosen, lengths))

    def column(name: str) -> np.ndarray:
        values = bars[name].to_numpy()
        return values if keep is None else values[keep]

    def at_rows(name: str, positions: np.ndarray) -> np.ndarray:
        """``column(name)[positions]`` without materialising the column (text columns)."""
        rows = positions if keep is None else keep[positions]
        return bars[name].to_numpy()[rows].astype(object, copy=False)

    # Bars are sorted by series then time, and one series per symbol remains: days are the
    # runs of equal (series, trading_date); integer codes, not symbol strings, are compared.
    series_kept = series if keep is None else series[keep]
    day = column("trading_date")
    day_int = day.view(np.int64)
    new_day = np.r_[True, (series_kept[1:] != series_kept[:-1]) | (day_int[1:] != day_int[:-1])]
    starts = np.flatnonzero(new_day)
    ends = np.r_[starts[1:], series_kept.size] - 1
    high_bars, low_bars, close_bars = column("high"), column("low"), column("close")
    volume_bars = column("volume")
    high = np.maximum.reduceat(high_bars, starts)
    low = np.minimum.reduceat(low_bars, starts)
    typical = (high_bars + low_bars + close_bars) / 3.0
    # A day's volume is only known when every bar of it has one (NaN propagates through sums).
    volume = np.add.reduceat(volume_bars, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.add.reduceat(typical * volume_bars, starts) / volume
    vwap[~(volume > 0)] = np.nan
    close = close_bars[ends]
    day_series = series_kept[starts]
    same_symbol_as_prev = np.r_[False, day_series[1:] == day_series[:-1]]
    previous = np.where(same_symbol_as_prev, np.r_[np.nan, close[:-1]], np.nan)
    complete_bars = np.minimum.reduceat(column("is_complete").astype(np.int8), starts)
    stamp = transformed_at.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64()
    frame = pd.DataFrame(
        {
            "symbol": pd.Series(at_rows("symbol", starts), dtype=object),
            "trading_date": day[starts],
            "asset_class": pd.Series(at_rows("asset_class", starts), dtype=object),
            "open": column("open")[starts],
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
            "payload_id": pd.Series(at_rows("payload_id", ends), dtype=object),
            "transformed_at": np.full(len(starts), stamp),
        }
    )
    frame["transformed_at"] = frame["transformed_at"].dt.tz_localize("UTC")
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
