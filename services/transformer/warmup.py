"""Warm-up bars: fetched only so the indicators of the newer bars are exact, never emitted.

The fetcher asks for history before the bars it wants (``request["since"]``) so every window
is filled; those older bars carry partial windows here and would overwrite the exact values
stored by an earlier load. Bars before ``since`` are therefore dropped after enrichment; daily
bars are built from stored bars only (services/loader/daily.py), so dropped ones make none.
"""

from __future__ import annotations

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
    """The bars at or after ``since`` (bars are in time order, so the warm-up is a prefix)."""
    start = since(payload)
    if start is None:
        return bars
    return bars.iloc[bars["bar_time"].searchsorted(start) :]
