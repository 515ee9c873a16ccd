"""Validated bars -> the denormalised OLAP rows (attributes, times, indicators, lineage)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from marketpipe.contract import OLAP_COLUMNS, column_names
from services.transformer import indicators as ind
from services.transformer.flatten import INSTRUMENT_FIELDS
from services.transformer.timeconv import (
    NAIVE_DTYPE,
    TIME_UNIT,
    bar_end_local,
    bars_per_year,
)

BAR_COLUMNS = column_names(OLAP_COLUMNS)
TEXT_COLUMNS = [name for name, sql in OLAP_COLUMNS if sql == "text"]
PAYLOAD_TEXT_COLUMNS = ("symbol", "interval", "asset_class", "exchange_timezone", "payload_id")
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

    # Text attributes are per payload: repeat each payload's value over its run of bars (bars of
    # one payload are mostly adjacent) rather than a per-bar lookup.
    runs = payload_runs(payload_of_bar)
    out: dict[str, object] = {}
    for column in (*PAYLOAD_TEXT_COLUMNS, *INSTRUMENT_FIELDS):
        per_payload = payloads[column].to_numpy(dtype=object)
        out[column] = np.repeat(per_payload[runs.payload], runs.length)

    bar_time = bars["bar_time"].to_numpy().astype(NAIVE_DTYPE, copy=False)
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE, copy=False)
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

    out["is_complete"] = completeness(bars, payloads, runs)
    stamp = transformed_at.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT)
    out["transformed_at"] = np.full(size, stamp.to_datetime64())
    for column in ("bar_time", "transformed_at"):
        naive = pd.Series(out[column], copy=False).astype(NAIVE_DTYPE)
        out[column] = naive.dt.tz_localize("UTC")
    # Explicit object Series (pandas 3 would infer "str" and turn None into NaN), and no copies:
    # the frame is built once from the finished arrays, already in contract order.
    return pd.DataFrame(
        {
            name: pd.Series(out[name], dtype=object, copy=False)
            if name in TEXT_COLUMNS
            else out[name]
            for name in BAR_COLUMNS
        },
        copy=False,
    )


@dataclass(frozen=True)
class PayloadRuns:
    """Maximal runs of consecutive bars from the same payload."""

    start: np.ndarray
    length: np.ndarray
    payload: np.ndarray


def payload_runs(payload_of_bar: np.ndarray) -> PayloadRuns:
    if payload_of_bar.size == 0:
        empty = np.zeros(0, np.int64)
        return PayloadRuns(empty, empty, empty)
    start = np.flatnonzero(np.r_[True, payload_of_bar[1:] != payload_of_bar[:-1]])
    length = np.diff(np.r_[start, payload_of_bar.size])
    return PayloadRuns(start, length, payload_of_bar[start])


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

    # Block by block (each a few hundred KiB), so the dozens of passes per indicator run in
    # cache; each block's columns land straight in their slice of the flat output arrays.
    out = {name: np.empty(layout.size) for name in MATRIX_COLUMNS}
    for block in layout.blocks:
        columns = ind.block_indicators(
            block.gather(close_flat), block.gather(high_flat), block.gather(low_flat)
        )
        for name in MATRIX_COLUMNS:
            block.scatter(columns[name], out[name])
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
    vwap = np.full(size, np.nan)
    if size == 0 or np.isnan(volume).all():
        return vwap
    day = trading_date.view(np.int64)
    new_segment = np.r_[True, (series[1:] != series[:-1]) | (day[1:] != day[:-1])]
    starts = np.flatnonzero(new_segment)
    lengths = np.diff(np.r_[starts, size])
    # A day whose first bar has no volume is NULL throughout (crypto, forex): skip its bars.
    with_volume = ~np.isnan(volume[starts])
    if not with_volume.all():
        bars = np.flatnonzero(np.repeat(with_volume, lengths))
        lengths = lengths[with_volume]
        starts = np.cumsum(lengths) - lengths
    else:
        bars = slice(None)
    days = ind.Layout.from_groups(starts, lengths, int(lengths.sum()))
    volume_kept = volume[bars]
    typical = (high[bars] + low[bars] + close[bars]) / 3.0
    traded = ind.segmented_cumsum(typical * volume_kept, days)
    shares = ind.segmented_cumsum(volume_kept, days)
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = traded / shares
    kept[~(shares > 0)] = np.nan
    vwap[bars] = kept
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
    windows = ind.TrailingWindows.build(left, eligible)
    high_52w = windows.extreme(high, np.maximum)
    low_52w = windows.extreme(low, np.minimum)
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


def completeness(bars: pd.DataFrame, payloads: pd.DataFrame, runs: PayloadRuns) -> np.ndarray:
    """False for the newest bar of a payload when that bar had not ended at fetch time."""
    size = len(bars)
    complete = np.ones(size, bool)
    if size == 0:
        return complete
    payload_of_bar = bars["payload"].to_numpy()
    # A payload's bars all belong to one series and bars are sorted by (series, time), so its
    # newest bar is its last one: the largest run end among its runs.
    last_of_payload = np.full(len(payloads), -1, np.int64)
    np.maximum.at(last_of_payload, runs.payload, runs.start + runs.length - 1)
    newest = last_of_payload[last_of_payload >= 0]
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE, copy=False)
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
