"""Presentation of times and prices: exchange time for stocks, UTC for the rest, quoted precision.

Pure. Stock bars are shown in their exchange's time with the zone named; crypto and forex in UTC;
``utc=True`` (the sidebar's "Times in UTC") shows everything in UTC. Prices are rounded to the
decimals SQL gives (``marketpipe.price_decimals``, db/init/0007); tables and CSVs keep full
precision, only what is shown is rounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from services.dashboard.theme import MISSING

UTC_ZONE = "UTC"
PERCENT_DECIMALS = 2


def display_zone(asset_class: object, exchange_timezone: object, *, utc: bool) -> str:
    """The zone a series' times are shown in."""
    if utc or asset_class != "stock" or not isinstance(exchange_timezone, str):
        return UTC_ZONE
    return exchange_timezone or UTC_ZONE


def common_zone(zones: Iterable[str]) -> str:
    """One zone for several series: theirs if they share it, else UTC."""
    distinct = set(zones)
    return distinct.pop() if len(distinct) == 1 else UTC_ZONE


def in_zone(times: pd.Series, zone: str) -> pd.Series:
    """UTC times as timezone-aware times of ``zone`` (Plotly draws their wall time)."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(zone)


def with_local_times(frame: pd.DataFrame, zone: str, column: str = "bar_time") -> pd.DataFrame:
    """``column`` (UTC) kept, ``<column>_local`` added: wall time in ``zone``, named by it."""
    local = in_zone(frame[column], zone).dt.tz_localize(None)
    position = list(frame.columns).index(column) + 1
    out = frame.drop(columns=[f"{column}_local"], errors="ignore").copy()
    out.insert(min(position, len(out.columns)), f"{column}_local", local)
    out.insert(min(position + 1, len(out.columns)), "time_zone", zone)
    return out


def format_time(moment: Any, zone: str) -> str:
    """'2026-03-11 15:30 EDT' in ``zone`` ('UTC' for UTC)."""
    if moment is None or pd.isna(moment):
        return MISSING
    stamp = pd.Timestamp(moment)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    local = stamp.tz_convert(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"


def price(value: Any, decimals: Any) -> str:
    """A price at its quoted precision, with thousands separators."""
    if value is None or pd.isna(value):
        return MISSING
    places = 2 if decimals is None or pd.isna(decimals) else int(decimals)
    return f"{float(value):,.{places}f}"


def signed_percent(value: Any) -> str:
    if value is None or pd.isna(value):
        return MISSING
    return f"{float(value):+.{PERCENT_DECIMALS}f}%"


def rounded(frame: pd.DataFrame, prices: Iterable[str]) -> pd.DataFrame:
    """A copy for display: ``prices`` rounded per row to its ``price_decimals``.

    Percentages keep their value and are shown with 2 decimals by the column's format.
    """
    out = frame.copy()
    places = out["price_decimals"] if "price_decimals" in out else pd.Series(2, index=out.index)
    for column in prices:
        if column in out:
            out[column] = [
                v
                if v is None or (isinstance(v, float) and math.isnan(v))
                else round(float(v), int(p))
                for v, p in zip(out[column], places.fillna(2), strict=True)
            ]
    return out


def currency_of(currency: Any, symbol: str) -> str:
    """The quote currency: the stored one, else a pair's quote (``BTC/USD`` -> ``USD``)."""
    if isinstance(currency, str) and currency:
        return currency
    return symbol.split("/")[1] if "/" in symbol else ""


def styled(
    frame: pd.DataFrame,
    prices: Iterable[str] = (),
    percents: Iterable[str] = (),
    counts: Iterable[str] = (),
) -> Any:
    """``frame`` with display formats (the values stay numbers, so columns sort as numbers):
    ``prices`` at each row's ``price_decimals`` with thousands separators, ``percents`` signed
    with 2 decimals, ``counts`` as whole numbers with separators; missing values as MISSING."""
    styler = frame.style
    prices = [c for c in prices if c in frame]
    places = (
        frame["price_decimals"].fillna(2).astype(int)
        if "price_decimals" in frame
        else pd.Series(2, index=frame.index)
    )
    for decimals in sorted(set(places)):
        rows = frame.index[places == decimals]
        styler = styler.format(
            f"{{:,.{decimals}f}}", subset=pd.IndexSlice[rows, prices], na_rep=MISSING
        )
    styler = styler.format("{:+.2f}", subset=[c for c in percents if c in frame], na_rep=MISSING)
    return styler.format("{:,.0f}", subset=[c for c in counts if c in frame], na_rep=MISSING)
