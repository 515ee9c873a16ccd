"""Validated bars -> the denormalised OLAP rows (attributes, times, indicators, lineage)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import OLAP_COLUMNS, column_names
from services.transformer import indicators as ind
from services.transformer.flatten import INSTRUMENT_FIELDS
from services.transformer.timeconv import NAIVE_DTYPE, TIME_UNIT, UTC_DTYPE, bar_end_local

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

    computed = compute_indicators(layout, bars)
    for column in FLOAT_COLUMNS:
        if column in computed:
            out[column] = computed[column]
        elif column not in out:
            out[column] = np.full(size, np.nan)

    out["is_complete"] = completeness(bars, payloads)
    out["transformed_at"] = np.full(size, transformed_at.tz_localize(None).to_datetime64())
    # Explicit object Series: pandas 3 would infer "str" and turn None into NaN.
    frame = pd.DataFrame(
        {k: pd.Series(v, dtype=object) if k in TEXT_COLUMNS else v for k, v in out.items()}
    )
    for column in ("bar_time", "transformed_at"):
        frame[column] = frame[column].astype(f"datetime64[{TIME_UNIT}]").dt.tz_localize("UTC")
    frame = frame.astype({"bar_time": UTC_DTYPE, "transformed_at": UTC_DTYPE})
    return frame[BAR_COLUMNS]


def compute_indicators(layout: ind.Layout, bars: pd.DataFrame) -> dict[str, np.ndarray]:
    close = bars["close"].to_numpy(dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    mats = layout.to_matrices(close)
    per_bucket = [ind.change_columns(mat) for mat in mats]
    for name in ("previous_close", "change", "pct_change", "log_return"):
        out[name] = layout.to_flat([cols[name] for cols in per_bucket])
    for window in (20, 50, 200):
        out[f"sma_{window}"] = layout.to_flat([ind.rolling_mean(m, window) for m in mats])
    return out


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
    for i in newest:
        payload = payloads.iloc[int(payload_of_bar[i])]
        zone = payload["exchange_timezone"]
        end_local = bar_end_local(
            local[i : i + 1], payload["interval"], payload["asset_class"], zone
        )
        if zone:
            end = (
                pd.DatetimeIndex(end_local)
                .tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
                .tz_convert("UTC")[0]
            )
        else:
            end = pd.Timestamp(end_local[0]).tz_localize("UTC")
        complete[i] = end <= payload["fetched_at"]
    return complete
