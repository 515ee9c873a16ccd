"""Warm-up bars: fetched only so the indicators of the newer bars are exact, never emitted.

The fetcher asks for history before the bars it wants (``request["since"]``) so every window
is filled; those older bars carry partial windows here and would overwrite the exact values
stored by an earlier load. Bars before ``since`` are therefore dropped after enrichment, and
daily rows only from the day before ``since`` on are kept (the warm-up spans weeks, so those
days are whole). Without ``since``, a payload cut by its outputsize has a first day that may be
partial: it gives no daily row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from marketpipe.contract import RawPayload

ONE_DAY = pd.Timedelta(days=1)


def _since(payload: RawPayload) -> pd.Timestamp | None:
    raw = payload.request.get("since")
    if not raw:
        return None
    stamp = pd.Timestamp(raw)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _was_cut(payload: RawPayload) -> bool:
    """True when the API returned as many bars as asked for, so older history exists."""
    values = payload.body.get("values") if isinstance(payload.body, dict) else None
    asked = payload.request.get("outputsize")
    return isinstance(values, list) and isinstance(asked, int) and len(values) >= asked


def drop_warmup(
    bars: pd.DataFrame, daily: pd.DataFrame, payloads: Sequence[RawPayload]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bars at or after each payload's ``since``; daily rows only for whole days."""
    since = {p.payload_id: _since(p) for p in payloads}
    with_since = {pid: start for pid, start in since.items() if start is not None}
    if with_since and len(bars):
        # Vectorised: each bar's payload -> its since (NaT when none), compared as datetime64;
        # a per-bar map to Timestamp objects costs seconds per million bars.
        owner = pd.Index(list(with_since)).get_indexer(bars["payload_id"].to_numpy())
        starts = np.array(
            [start.tz_localize(None).as_unit("us").to_datetime64() for start in with_since.values()]
            + [np.datetime64("NaT", "us")],
            dtype="datetime64[us]",
        )
        bar_from = starts[owner]  # owner -1 (no since) picks the trailing NaT
        bar_time = bars["bar_time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        keep_bars = np.isnat(bar_from) | (bar_time.astype("datetime64[us]") >= bar_from)
        if not keep_bars.all():
            bars = bars[keep_bars]

    first_days: pd.Series | None = None
    first_whole_day: dict[str, pd.Timestamp] = {}
    for payload in payloads:
        start = since[payload.payload_id]
        if start is not None:
            day = (start - ONE_DAY).tz_localize(None).normalize()
        elif _was_cut(payload):
            if first_days is None:  # once per batch, not a scan of the days per payload
                first_days = daily.groupby("symbol", sort=False)["trading_date"].min()
            if payload.symbol not in first_days.index:
                continue
            day = pd.Timestamp(first_days[payload.symbol]) + ONE_DAY
        else:
            continue
        # Several payloads of one symbol in a batch: keep the most history any of them covers.
        known = first_whole_day.get(payload.symbol)
        first_whole_day[payload.symbol] = day if known is None else min(known, day)
    if first_whole_day:
        day_from = daily["symbol"].map(first_whole_day)
        keep_days = day_from.isna() | (pd.to_datetime(daily["trading_date"]) >= day_from)
        daily = daily[keep_days.to_numpy(dtype=bool)]
    return bars, daily
