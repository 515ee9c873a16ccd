"""Pure metrics of the dashboard: frames in, frames or numbers out (no SQL, no Streamlit)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from cronsim import CronSim

Freshness = Literal["fresh", "late", "stale", "no data"]

SECONDS_PER_YEAR = 365.25 * 24 * 3600
# The API's clock (fetched_at) and ours may disagree a little; a fetch this early still counts.
CLOCK_SKEW = timedelta(minutes=2)
CHANGE_HORIZONS = (("1h", "close_1h_ago"), ("24h", "close_24h_ago"), ("7d", "close_7d_ago"))


def pct_change(now: pd.Series, before: pd.Series) -> pd.Series:
    """Percent change from ``before`` to ``now``; NaN where there is no (or a zero) reference."""
    reference = before.astype(float).where(before.astype(float) != 0)
    return 100.0 * (now.astype(float) / reference - 1.0)


def with_changes(overview: pd.DataFrame) -> pd.DataFrame:
    """The overview with ``change_<horizon>`` columns for 1 h, 24 h, 7 d and the window."""
    changes = {
        f"change_{label}": pct_change(overview["last_price"], overview[column])
        for label, column in (*CHANGE_HORIZONS, ("window", "close_window_ago"))
    }
    return overview.assign(**changes)


def best_and_worst(changes: pd.DataFrame, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``count`` best and worst symbols by change over the window (unknown changes left out)."""
    ranked = changes.dropna(subset=["change_window"]).sort_values(
        ["change_window", "symbol"], ascending=[False, True]
    )
    best = ranked.head(count)
    worst = ranked.iloc[::-1].head(count)
    return best, worst


def rebase_to_100(closes: pd.DataFrame) -> pd.DataFrame:
    """Each symbol's close divided by its first close in the frame, times 100."""
    ordered = closes.sort_values(["symbol", "bar_time"])
    first = ordered.groupby("symbol")["close"].transform("first")
    return ordered.assign(rebased=ordered["close"] / first * 100.0)


def bar_returns(closes: pd.DataFrame) -> pd.DataFrame:
    """Bar-to-bar simple returns in percent per symbol (the first bar of each has none)."""
    ordered = closes.sort_values(["symbol", "bar_time"])
    previous = ordered.groupby("symbol")["close"].shift(1)
    returns = ordered.assign(return_pct=pct_change(ordered["close"], previous))
    return returns.dropna(subset=["return_pct"])[["symbol", "bar_time", "return_pct"]]


def max_drawdown_pct(close: pd.Series) -> float:
    """The deepest fall from a running peak, in percent (0 for a series that never falls)."""
    values = close.astype(float)
    if values.empty:
        return float("nan")
    return float(100.0 * (values / values.cummax() - 1.0).min())


def annualized_volatility_pct(close: pd.Series, times: pd.Series) -> float:
    """Standard deviation of bar returns scaled by the observed number of bars per year.

    Counting bars per year from the data (not 252 or 8760) makes a stock's hourly session bars
    and a coin's round-the-clock bars comparable without knowing either calendar.
    """
    returns = close.astype(float).pct_change().dropna()
    span = (times.iloc[-1] - times.iloc[0]).total_seconds() if len(times) > 1 else 0.0
    if len(returns) < 2 or span <= 0:
        return float("nan")
    bars_per_year = len(returns) / (span / SECONDS_PER_YEAR)
    return float(100.0 * returns.std(ddof=1) * np.sqrt(bars_per_year))


def performance_summary(closes: pd.DataFrame) -> pd.DataFrame:
    """Per symbol over the frame: first and last close, return, volatility, max drawdown."""
    rows = []
    for symbol, series in closes.sort_values(["symbol", "bar_time"]).groupby("symbol"):
        first, last = float(series["close"].iloc[0]), float(series["close"].iloc[-1])
        rows.append(
            {
                "symbol": symbol,
                "first_close": first,
                "last_close": last,
                "return_pct": 100.0 * (last / first - 1.0) if first else float("nan"),
                "volatility_pct": annualized_volatility_pct(series["close"], series["bar_time"]),
                "max_drawdown_pct": max_drawdown_pct(series["close"]),
                "bars": len(series),
            }
        )
    columns = [
        "symbol",
        "first_close",
        "last_close",
        "return_pct",
        "volatility_pct",
        "max_drawdown_pct",
        "bars",
    ]
    return pd.DataFrame(rows, columns=columns)


def return_correlation(closes: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of bar returns, pairwise over the bar times both symbols share."""
    returns = bar_returns(closes)
    wide = returns.pivot_table(index="bar_time", columns="symbol", values="return_pct")
    wide.columns.name = None
    return wide.corr(min_periods=3)


def with_indicators(bars: pd.DataFrame) -> pd.DataFrame:
    """SMA 20/50/200, EMA 12/26, Bollinger (20, 2 std), RSI 14 (Wilder) and MACD (12, 26, 9).

    For bars the pipeline does not store indicators for (daily bars); the caller passes
    warm-up bars before the range it shows so the long averages exist from its first bar.
    """
    close = bars["close"].astype(float)
    out: dict[str, pd.Series] = {
        f"sma_{n}": close.rolling(n, min_periods=n).mean() for n in (20, 50, 200)
    }
    for span in (12, 26):
        out[f"ema_{span}"] = close.ewm(span=span, adjust=False, min_periods=span).mean()
    deviation = close.rolling(20, min_periods=20).std(ddof=0)
    out["bb_middle"] = out["sma_20"]
    out["bb_upper"] = out["sma_20"] + 2 * deviation
    out["bb_lower"] = out["sma_20"] - 2 * deviation
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
    # A series that never falls has loss 0: RSI is 100 there, not a division error.
    out["rsi_14"] = (100 - 100 / (1 + gain / loss)).where(loss != 0, 100.0)
    out["rsi_14"] = out["rsi_14"].where(gain.notna())
    out["macd"] = out["ema_12"] - out["ema_26"]
    out["macd_signal"] = out["macd"].ewm(span=9, adjust=False, min_periods=9).mean()
    out["macd_hist"] = out["macd"] - out["macd_signal"]
    return bars.assign(**out)


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


def classify_freshness(last_fetch: datetime | None, due: Sequence[datetime]) -> Freshness:
    """fresh: the newest due fetch is in; late: one missed; stale: more missed; or no data."""
    if last_fetch is None or pd.isna(last_fetch):
        return "no data"
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
) -> pd.DataFrame:
    """Every configured or stored symbol with its freshness against the fetch schedule."""
    due = due_fetches(schedule, now, grace)
    known = set(freshness["symbol"])
    missing = pd.DataFrame({"symbol": [s for s in configured if s not in known]})
    table = pd.concat([freshness, missing], ignore_index=True) if len(missing) else freshness
    status = [
        classify_freshness(None if pd.isna(fetch) else fetch, due) for fetch in table["last_fetch"]
    ]
    age = now - pd.to_datetime(table["last_fetch"], utc=True)
    return table.assign(status=status, fetch_age_minutes=age.dt.total_seconds() / 60).sort_values(
        "symbol", ignore_index=True
    )


def sparkline_points(sparklines: pd.DataFrame) -> dict[str, list[float]]:
    """Each symbol's closes, oldest first, as plain lists for metric cards and table cells."""
    ordered = sparklines.sort_values(["symbol", "bar_time"])
    return {
        str(symbol): series["close"].astype(float).tolist()
        for symbol, series in ordered.groupby("symbol")
    }
