"""Validated bars -> the denormalised OLAP rows (attributes, times, indicators, lineage)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import OLAP_COLUMNS, column_names
from services.transformer import indicators as ind
from services.transformer.flatten import INSTRUMENT_FIELDS
from services.transformer.timeconv import (
    NAIVE_DTYPE,
    TIME_UNIT,
    UTC_DTYPE,
    bar_end_local,
    bars_per_year,
)

BAR_COLUMNS = column_names(OLAP_COLUMNS)
TEXT_COLUMNS = [name for name, sql in OLAP_COLUMNS if sql == "text"]
FLOAT_COLUMNS = [name for name, sql in OLAP_COLUMNS if sql == "double precision"]


def series_bounds(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each run of equal series codes in a sorted array."""
    if series.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]])
    lengths = np.diff(np.r_[starts, series.size])
    return starts, lengths


def enrich(
    bars: pd.DataFrame, payloads: pd.DataFrame, *, transformed_at: pd.Timestamp
) -> pd.DataFrame:
    """Every OLAP column for ``bars`` (sorted by series, bar_time; see validate.ValidatedBatch)."""
    size = len(bars)
    payload_of_bar = bars["payload"].to_numpy()
    starts, lengths = series_bounds(bars["series"].to_numpy())
    layout = ind.Layout.from_groups(starts, lengths, size)

    out: dict[str, object] = {}
    for column in ("symbol", "interval", "asset_class", "exchange_timezone", *INSTRUMENT_FIELDS):
        out[column] = payloads[column].to_numpy(dtype=object)[payload_of_bar]
    out["payload_id"] = payloads["payload_id"].to_numpy(dtype=object)[payload_of_bar]

    bar_time = bars["bar_time"].to_numpy().astype(NAIVE_DTYPE)
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE)
    out["bar_time"] = bar_time
    out["bar_time_local"] = local
    out["trading_date"] = local.astype("datetime64[D]").astype(NAIVE_DTYPE)

    for column in ("open", "high", "low", "close", "volume"):
        out[column] = bars[column].to_numpy(dtype=np.float64)
    close = out["close"]
    assert isinstance(close, np.ndarray)

    computed = compute_indicators(
        layout,
        bars,
        trading_date=out["trading_date"],
        annualisation=annualisation(payloads, payload_of_bar, starts, lengths),
        series_start=starts,
        series_length=lengths,
    )
    for column in FLOAT_COLUMNS:
        if column in computed:
            out[column] = computed[column]
        elif column not in out:
            out[column] = np.full(size, np.nan)

    out["is_complete"] = completeness(bars, payloads)
    out["transformed_at"] = np.full(size, transformed_at.tz_localize(None).to_datetime64())
    # Explicit object Series: pandas 3 would infer "str" and turn None into NaN.
    frame = pd.DataFrame(
        {k: pd.Series(v, dtype=object) if k in TEXT_COLUMNS else v for k, v in out.items()},
        copy=False,
    )
    for column in ("bar_time", "transformed_at"):
        frame[column] = frame[column].astype(f"datetime64[{TIME_UNIT}]").dt.tz_localize("UTC")
    frame = frame.astype({"bar_time": UTC_DTYPE, "transformed_at": UTC_DTYPE})
    return frame[BAR_COLUMNS]


def compute_indicators(
    layout: ind.Layout,
    bars: pd.DataFrame,
    *,
    trading_date: np.ndarray,
    annualisation: np.ndarray,
    series_start: np.ndarray,
    series_length: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every derived float column, flat and aligned with ``bars``."""
    close_flat = bars["close"].to_numpy(dtype=np.float64)
    high_flat = bars["high"].to_numpy(dtype=np.float64)
    low_flat = bars["low"].to_numpy(dtype=np.float64)
    volume_flat = bars["volume"].to_numpy(dtype=np.float64)

    def per_bucket(close: ind.Matrix, high: ind.Matrix, low: ind.Matrix) -> dict[str, ind.Matrix]:
        changes = ind.change_columns(close)
        bollinger = ind.bollinger_columns(close, 20, 2.0)
        return {
            **changes,
            "sma_20": bollinger["bb_middle"],
            "sma_50": ind.rolling_mean(close, 50),
            "sma_200": ind.rolling_mean(close, 200),
            **ind.macd_columns(close),
            "rsi_14": ind.rsi(close, 14),
            **bollinger,
            "atr_14": ind.atr(high, low, close, 14),
            "volatility_20": ind.rolling_std(changes["log_return"], 20, ddof=1),
        }

    buckets = [
        per_bucket(c, h, lo)
        for c, h, lo in zip(
            layout.to_matrices(close_flat),
            layout.to_matrices(high_flat),
            layout.to_matrices(low_flat),
            strict=True,
        )
    ]
    out = {name: layout.to_flat([b[name] for b in buckets]) for name in MATRIX_COLUMNS}
    out["volatility_20"] *= np.sqrt(annualisation)
    out["vwap_session"] = session_vwap(
        bars["series"].to_numpy(), trading_date, high_flat, low_flat, close_flat, volume_flat
    )
    out.update(
        fifty_two_week_columns(
            bars["bar_time"].to_numpy(),
            series_start,
            series_length,
            high_flat,
            low_flat,
            close_flat,
        )
    )
    return out


MATRIX_COLUMNS = (
    "previous_close",
    "change",
    "pct_change",
    "log_return",
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "bb_middle",
    "bb_upper",
    "bb_lower",
    "atr_14",
    "volatility_20",
)
FIFTY_TWO_WEEKS = np.timedelta64(52 * 7, "D")


def session_vwap(
    series: np.ndarray,
    trading_date: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> np.ndarray:
    """Cumulative typical price x volume over cumulative volume within each trading day."""
    size = series.size
    if size == 0 or np.isnan(volume).all():
        return np.full(size, np.nan)
    day = trading_date.view(np.int64)
    new_segment = np.r_[True, (series[1:] != series[:-1]) | (day[1:] != day[:-1])]
    starts = np.flatnonzero(new_segment)
    lengths = np.diff(np.r_[starts, size])
    days = ind.Layout.from_groups(starts, lengths, size)
    typical = (high + low + close) / 3.0
    traded = ind.segmented_cumsum(typical * volume, days)
    shares = ind.segmented_cumsum(volume, days)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = traded / shares
    vwap[~(shares > 0)] = np.nan
    return vwap


def fifty_two_week_columns(
    bar_time: np.ndarray,
    series_start: np.ndarray,
    series_length: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
) -> dict[str, np.ndarray]:
    """Highest high / lowest low over [t - 52 weeks, t], only where history reaches that far."""
    size = bar_time.size
    empty = {
        name: np.full(size, np.nan)
        for name in ("high_52w", "low_52w", "pct_from_52w_high", "pct_from_52w_low")
    }
    if size == 0:
        return empty
    seconds = bar_time.astype("datetime64[s]").view(np.int64)
    window = int(FIFTY_TWO_WEEKS / np.timedelta64(1, "s"))
    first_of_series = np.repeat(seconds[series_start], series_length)
    eligible = seconds - window >= first_of_series
    if not eligible.any():
        return empty
    # One sorted key over all series so a single searchsorted finds every window's left edge.
    span = int(seconds.max() - seconds.min()) + window + 1
    series_rank = np.repeat(np.arange(series_start.size, dtype=np.int64), series_length)
    key = (seconds - seconds.min()) + series_rank * span
    left = np.searchsorted(key, key - window, side="left")
    high_52w = ind.trailing_extreme(high, left, eligible, np.maximum)
    low_52w = ind.trailing_extreme(low, left, eligible, np.minimum)
    return {
        "high_52w": high_52w,
        "low_52w": low_52w,
        "pct_from_52w_high": (close / high_52w - 1.0) * 100.0,
        "pct_from_52w_low": (close / low_52w - 1.0) * 100.0,
    }


def annualisation(
    payloads: pd.DataFrame, payload_of_bar: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Bars per year of each bar's series (one calendar per series, taken from its first bar)."""
    if starts.size == 0:
        return np.zeros(0)
    first_payload = payloads.iloc[payload_of_bar[starts]]
    calendars = first_payload[["asset_class", "interval", "exchange_timezone"]].astype(object)
    per_calendar = {
        key: bars_per_year(*key) for key in set(calendars.itertuples(index=False, name=None))
    }
    per_series = np.array(
        [per_calendar[key] for key in calendars.itertuples(index=False, name=None)]
    )
    return np.repeat(per_series, lengths)


def completeness(bars: pd.DataFrame, payloads: pd.DataFrame) -> np.ndarray:
    """False for the newest bar of a payload when that bar had not ended at fetch time."""
    size = len(bars)
    complete = np.ones(size, bool)
    if size == 0:
        return complete
    payload_of_bar = bars["payload"].to_numpy()
    bar_time = bars["bar_time"].to_numpy().astype(NAIVE_DTYPE)
    newest = (
        pd.DataFrame({"payload": payload_of_bar, "t": bar_time.view(np.int64)})
        .groupby("payload")["t"]
        .idxmax()
        .to_numpy()
    )
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE)
    owner = payload_of_bar[newest]
    calendars = payloads[["interval", "asset_class", "exchange_timezone"]].astype(object)
    calendar_of = calendars.to_numpy()[owner]
    fetched = payloads["fetched_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    fetched = fetched.astype(NAIVE_DTYPE)[owner]
    end_utc = np.empty(newest.size, dtype=NAIVE_DTYPE)
    # One vectorised pass per calendar (interval, asset class, zone), not per payload.
    keys = pd.Series([tuple(row) for row in calendar_of], dtype=object)
    for key, members in keys.groupby(keys, sort=False).groups.items():
        interval, asset_class, zone = key
        at = np.asarray(members)
        end_local = bar_end_local(local[newest[at]], interval, asset_class, zone)
        if zone:
            end_local = np.asarray(
                pd.DatetimeIndex(end_local)
                .tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
                .tz_convert("UTC")
                .tz_localize(None)
                .as_unit(TIME_UNIT)
            )
        end_utc[at] = end_local
    complete[newest] = end_utc <= fetched
    return complete
