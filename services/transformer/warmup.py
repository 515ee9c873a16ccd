"""Warm-up bars: history a request reached back to only to fill windows, never emitted.

A tick's answer may also reach back before the stored series' first bar: it asks for the gap
since the watermark plus an overlap counted as if the market never closed, so after a short
backfill (or a weekend) its oldest bars predate the series. Those are not an overlap with
anything stored: a tick only continues the series (:func:`drop_before_series`); extending it
backwards is the backfill's job, so the series starts where the operator's backfill said.

Indicators continue the stored series (marketpipe/history.py), so nothing needs a payload's
own warm-up any more; payloads that asked for one (``request["since"]``, landed before the
fetcher asked only for the gap) are replayed the same way: bars before ``since`` are dropped
before enrichment, so they are never stored, never seed anything and make no daily row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marketpipe.contract import RawPayload


def since(payload: RawPayload) -> pd.Timestamp | None:
    """The first bar the fetcher wants (UTC), if it asked for warm-up history before it."""
    raw = payload.request.get("since")
    if not raw:
        return None
    stamp = pd.Timestamp(raw)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def drop_warmup(bars: pd.DataFrame, payload: RawPayload) -> pd.DataFrame:
    """The bars at or after ``since`` (time order, so the warm-up is a prefix).

    ``bars["bar_time"]``: UTC, naive (validate's) or timezone-aware.
    """
    start = since(payload)
    if start is None:
        return bars
    times = pd.DatetimeIndex(bars["bar_time"])
    if times.tz is None:
        start = start.tz_localize(None)
    return bars.iloc[times.searchsorted(start) :]


def drop_before_series(
    bars: pd.DataFrame, payload: RawPayload, series_start: np.datetime64 | None
) -> pd.DataFrame:
    """A tick's bars from the stored series' first bar on (``series_start``, naive UTC).

    Only answers that continued a watermark (``request["watermark"]``) are trimmed: a first
    tick, a backfill window or a replay of one stores what it asked for.
    """
    if series_start is None or not payload.request.get("watermark"):
        return bars
    times = pd.DatetimeIndex(bars["bar_time"])
    start = pd.Timestamp(series_start)
    if times.tz is not None:
        start = start.tz_localize("UTC")
    return bars.iloc[times.searchsorted(start) :]
