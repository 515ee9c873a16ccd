"""Pure metrics of the dashboard: frames in, frames or numbers out (no SQL, no Streamlit).

No indicator and no period return is computed here: they are stored by the pipeline or defined
in SQL (db/init/0007). What stays is presentation: ranking, a common grid for comparisons,
summary statistics of that grid, and pipeline freshness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from cronsim import CronSim

from marketpipe.market import bars_per_year, venue

Freshness = Literal[
    "fresh", "late", "stale", "no data", "first fetch in progress", "awaiting first fetch"
]
# The statuses that are an alarm: a fetch that was due is missing.
BEHIND: tuple[Freshness, ...] = ("late", "stale", "no data")

# The API's clock (fetched_at) and ours may disagree a little; a fetch this early still counts.
CLOCK_SKEW = timedelta(minutes=2)


def pct_change(now: pd.Series, before: pd.Series) -> pd.Series:
    """Percent change from ``before`` to ``now``; NaN where there is no (or a zero) reference."""
    reference = before.astype(float).where(before.astype(float) != 0)
    return 100.0 * (now.astype(float) / reference - 1.0)


def best_and_worst(changes: pd.DataFrame, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to ``count`` best and worst symbols by change over the window, never one in both
    lists: with fewer than ``2 * count`` symbols the ranking is split in halves (the middle one
    of an odd count goes to the best). Unknown changes are left out."""
    ranked = changes.dropna(subset=["change_window"]).sort_values(
        ["change_window", "symbol"], ascending=[False, True]
    )
    best_count = min(count, (len(ranked) + 1) // 2)
    worst_count = min(count, len(ranked) - best_count)
    best = ranked.head(best_count)
    worst = ranked.iloc[len(ranked) - worst_count :].iloc[::-1]
    return best, worst


def short_histories(
    first_bars: pd.DataFrame, since: datetime, symbols: Iterable[str]
) -> pd.DataFrame:
    """The ``symbols`` whose stored history (``first_bar``) begins after ``since``, with its
    length in days: their window return has no reference close (NULL by definition)."""
    frame = first_bars[first_bars["symbol"].isin(list(symbols))]
    first = pd.to_datetime(frame["first_bar"], utc=True)
    short = frame.assign(first_bar=first)[first > pd.Timestamp(since)]
    newest = pd.to_datetime(short["last_bar"], utc=True)
    days = (newest - short["first_bar"]).dt.total_seconds() / 86_400
    return short.assign(history_days=days)[["symbol", "first_bar", "history_days"]].reset_index(
        drop=True
    )


def relative_performance(
    grid: Grid, start_closes: pd.Series, benchmark: str, peer_average: str
) -> pd.DataFrame:
    """Each symbol's rebased index against a benchmark's, 100 = moving with it (stockpeers).

    ``start_closes``: each symbol's reference close (period_returns.start_close), so the index
    is marketpipe.rebased sampled on the grid. ``benchmark`` is a symbol, or ``peer_average``
    for the mean index of the other symbols. Long form (symbol, bar_time, rebased).
    """
    references = start_closes.reindex(grid.closes.columns)
    index = 100.0 * grid.closes / references
    if benchmark == peer_average:
        reference = pd.DataFrame(
            {s: index.drop(columns=[s]).mean(axis=1) for s in index.columns}, index=index.index
        )
        relative = 100.0 * index / reference
    else:
        relative = 100.0 * index.div(index[benchmark], axis=0).drop(columns=[benchmark])
    long = (
        relative.rename_axis("bar_time")
        .reset_index()
        .melt(id_vars="bar_time", var_name="symbol", value_name="rebased")
    )
    return long.dropna(subset=["rebased"])[["symbol", "bar_time", "rebased"]]


@dataclass(frozen=True)
class Grid:
    """Closes of several symbols on common times, so their returns can be compared."""

    closes: pd.DataFrame  # index: grid time (UTC); one column per symbol
    description: str  # what the grid is, said on the page
    per_year: float  # grid steps per year (annualises volatility)


WEEKS_PER_YEAR = 365.25 / 7


def common_grid(closes: pd.DataFrame, interval: str, *, daily: bool, weekly: bool = False) -> Grid:
    """Every symbol's last close at or before each grid point (docs/indicators.md, "Compare").

    The grid is the bar times of the stocks in the set (their sessions), or of every symbol when
    the set holds no stock. Stocks open their bars at :30 and crypto at :00, so without a common
    grid no timestamp would be shared. ``daily``: ``closes`` holds each symbol's last bar per
    trading day (``trading_date``) and the grid is the stocks' trading days (every day without
    a stock): trading-day returns, a coin's weekend in its Friday-to-Monday step. ``weekly``:
    ``trading_date`` is the week (its Monday) of each symbol's last close of the week.
    """
    key = "trading_date" if daily else "bar_time"
    classes = closes.groupby("symbol")["asset_class"].first()
    has_stock = bool((classes == "stock").any())
    leaders = closes[closes["asset_class"] == "stock"] if has_stock else closes
    points = pd.DatetimeIndex(leaders[key].unique()).sort_values()
    columns = {}
    for symbol, series in closes.sort_values(key).groupby("symbol", sort=True):
        values = pd.Series(series["close"].to_numpy(float), index=pd.DatetimeIndex(series[key]))
        values = values[~values.index.duplicated(keep="last")]
        sampled = values.reindex(values.index.union(points)).ffill().reindex(points)
        # Before its first bar a symbol has no close, not the next one's.
        columns[str(symbol)] = sampled.where(points >= values.index[0])
    wide = pd.DataFrame(columns, index=points)
    kind = "stock" if has_stock else str(classes.iloc[0]) if len(classes) else "crypto"
    zones = leaders["exchange_timezone"].dropna() if has_stock else pd.Series(dtype=object)
    place = venue(kind, str(zones.iloc[0]) if len(zones) else None)
    per_year = WEEKS_PER_YEAR if weekly else bars_per_year("1day" if daily else interval, place)
    unit = "trading-day closes" if daily else f"{interval} bar closes"
    if weekly:
        unit = "weekly closes (each symbol's last close of the week)"
    if has_stock and (classes != "stock").any():
        description = (
            f"Returns on the stocks' {unit} ({place.calendar} calendar); the other symbols are"
            " sampled at the same points (their last close at or before each)."
        )
    else:
        description = f"Returns on common {unit}."
    return Grid(wide, description, per_year)


def grid_returns(grid: Grid) -> pd.DataFrame:
    """Step-to-step simple returns in percent on the grid, long form (symbol, bar_time)."""
    returns = grid.closes.pct_change(fill_method=None) * 100.0
    long = (
        returns.rename_axis("bar_time")
        .reset_index()
        .melt(id_vars="bar_time", var_name="symbol", value_name="return_pct")
    )
    return long.dropna(subset=["return_pct"])[["symbol", "bar_time", "return_pct"]]


def return_correlation(grid: Grid) -> pd.DataFrame:
    """Pearson correlation of grid returns, pairwise over the steps both symbols have."""
    return grid.closes.pct_change(fill_method=None).corr(min_periods=3)


def max_drawdown_pct(close: pd.Series) -> float:
    """The deepest fall from a running peak, in percent (0 for a series that never falls)."""
    values = close.astype(float)
    if values.empty:
        return float("nan")
    return float(100.0 * (values / values.cummax() - 1.0).min())


def performance_summary(grid: Grid, returns: pd.DataFrame) -> pd.DataFrame:
    """Per symbol: the period return (``returns``: marketpipe.period_returns), volatility of its
    grid returns (annualised by the grid's steps per year) and max drawdown on the grid."""
    rows = []
    symbols = sorted({*grid.closes.columns, *returns["symbol"]})
    for symbol in symbols:
        # A symbol without bars inside the window still has a period return (0 when unchanged).
        closes = grid.closes[symbol].dropna() if symbol in grid.closes else pd.Series(dtype=float)
        steps = closes.pct_change(fill_method=None).dropna()
        period = returns[returns["symbol"] == symbol]
        rows.append(
            {
                "symbol": symbol,
                "start_close": period["start_close"].iloc[0] if len(period) else np.nan,
                "end_close": period["end_close"].iloc[0] if len(period) else np.nan,
                "return_pct": period["return_pct"].iloc[0] if len(period) else np.nan,
                "volatility_pct": float(100.0 * steps.std(ddof=1) * np.sqrt(grid.per_year))
                if len(steps) > 1
                else np.nan,
                "max_drawdown_pct": max_drawdown_pct(closes),
                "grid_points": len(closes),
            }
        )
    columns = [
        "symbol",
        "start_close",
        "end_close",
        "return_pct",
        "volatility_pct",
        "max_drawdown_pct",
        "grid_points",
    ]
    return pd.DataFrame(rows, columns=columns)


def due_fetches(schedule: str, now: datetime, grace: timedelta, count: int = 2) -> list[datetime]:
    """The last ``count`` scheduled fetch times whose results should be loaded by ``now``."""
    ticks = CronSim(schedule, now - grace, reverse=True)
    due: list[datetime] = []
    for tick in ticks:
        # reverse iteration may yield the start itself when it falls on a tick: that one counts
        due.append(tick)
        if len(due) == count:
            break
    return due


@dataclass(frozen=True)
class FetcherState:
    """What the fetcher's schedule state in Redis says (marketpipe.ticks)."""

    last_tick: datetime | None  # the newest tick a fetcher finished
    running_tick: datetime | None  # a claimed tick newer than that: a fetch in progress

    @property
    def first_fetch_pending(self) -> bool:
        return self.last_tick is None


def classify_freshness(
    last_fetch: datetime | None, due: Sequence[datetime], fetcher: FetcherState
) -> Freshness:
    """fresh: the newest due fetch is in; late: one missed; stale: more missed; no data: a tick
    finished without it. Before any tick finished a symbol without data is not late: its first
    fetch is in progress (a tick is claimed) or still to come."""
    if last_fetch is None or pd.isna(last_fetch):
        if fetcher.running_tick is not None:
            return "first fetch in progress"
        return "awaiting first fetch" if fetcher.first_fetch_pending else "no data"
    missed = sum(1 for tick in due if last_fetch < tick - CLOCK_SKEW)
    if missed == 0:
        return "fresh"
    return "late" if missed == 1 else "stale"


def freshness_table(
    freshness: pd.DataFrame,
    configured: Iterable[str],
    now: datetime,
    schedule: str,
    grace: timedelta,
    fetcher: FetcherState,
) -> pd.DataFrame:
    """Every configured or stored symbol with its freshness against the fetch schedule."""
    due = due_fetches(schedule, now, grace)
    known = set(freshness["symbol"])
    missing = pd.DataFrame({"symbol": [s for s in configured if s not in known]})
    table = pd.concat([freshness, missing], ignore_index=True) if len(missing) else freshness
    status = [
        classify_freshness(None if pd.isna(fetch) else fetch, due, fetcher)
        for fetch in table["last_fetch"]
    ]
    # whole minutes (elapsed, floored): a fetch 25 min 40 s ago is 25 min old, not 25.667
    age = (now - pd.to_datetime(table["last_fetch"], utc=True)) // pd.Timedelta(minutes=1)
    return table.assign(status=status, fetch_age_minutes=age.astype("Int64")).sort_values(
        "symbol", ignore_index=True
    )


def sparkline_points(sparklines: pd.DataFrame) -> dict[str, list[float]]:
    """Each symbol's closes, oldest first, as plain lists for metric cards and table cells."""
    ordered = sparklines.sort_values(["symbol", "bar_time"])
    return {
        str(symbol): series["close"].astype(float).tolist()
        for symbol, series in ordered.groupby("symbol")
    }
