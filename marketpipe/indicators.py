"""The derived columns of one series, bars in time order; definitions: docs/indicators.md.

Shared by the transformer (every interval's bars) and the loader (the stored daily series).

Plain numpy and pandas over one series. Windows not yet filled are NaN, never a partial value.
Fixed-length windows are computed from the window's own values (``sliding_window_view``), so a
bar's SMA, Bollinger bands and volatility do not depend on how much history the request reached
back; the exponential averages do, through their seed, by definition.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from marketpipe.market import INDICATORS, IndicatorSet

FIFTY_TWO_WEEKS = pd.Timedelta(weeks=INDICATORS.range_weeks)  # 364 days


def lagged(values: np.ndarray) -> np.ndarray:
    """The previous bar's value (NaN for the first bar)."""
    out = np.full(len(values), np.nan)
    out[1:] = values[:-1]
    return out


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values; NaN until the window is full or if one is NaN."""
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        out[window - 1 :] = sliding_window_view(values, window).mean(axis=1)
    return out


def rolling_std(values: np.ndarray, window: int, *, ddof: int) -> np.ndarray:
    """Standard deviation of the last ``window`` values: ddof=0 population, ddof=1 sample.

    Two-pass (squared deviations from the window's mean, as numpy's std), never sum of squares
    minus squared sum, which loses most digits when the spread is small against the level. The
    std does not change when every value moves by the same amount: taken of the differences to
    the window's first value, a flat window gives exactly 0.
    """
    out = np.full(len(values), np.nan)
    if len(values) >= window:
        windows = sliding_window_view(values, window)
        out[window - 1 :] = (windows - windows[:, :1]).std(axis=1, ddof=ddof)
    return out


def seeded_average(values: np.ndarray, period: int, alpha: float, first: int = 0) -> np.ndarray:
    """Exponential average seeded with the simple mean of its first ``period`` inputs.

    The inputs start at ``first`` (1 for averages of differences: the first bar has none). NaN
    before ``first + period - 1``; there y = mean(x[first .. first + period - 1]), then
    y[t] = y[t-1] + alpha * (x[t] - y[t-1]), which is pandas' recursive EWM (``adjust=False``)
    started at the seed.
    """
    out = np.full(len(values), np.nan)
    seed_at = first + period - 1
    if seed_at < len(values):
        inputs = values[seed_at:].copy()
        inputs[0] = values[first : seed_at + 1].mean()
        out[seed_at:] = pd.Series(inputs).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return out


def ema(values: np.ndarray, period: int, first: int = 0) -> np.ndarray:
    """EMA with alpha = 2 / (period + 1), seeded with the SMA of its first ``period`` values."""
    return seeded_average(values, period, 2.0 / (period + 1), first)


def wilder_average(values: np.ndarray, period: int, first: int) -> np.ndarray:
    """Wilder's smoothing: alpha = 1 / period, seeded with the mean of its first ``period``."""
    return seeded_average(values, period, 1.0 / period, first)


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's RSI = 100 * AG / (AG + AL); 50 where neither gains nor losses (flat)."""
    delta = close - lagged(close)
    average_gain = wilder_average(np.maximum(delta, 0.0), period, first=1)
    average_loss = wilder_average(np.maximum(-delta, 0.0), period, first=1)
    total = average_gain + average_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100.0 * average_gain / total
    return np.where(total == 0.0, 50.0, value)


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(H - L, |H - C[i-1]|, |L - C[i-1]|); NaN for the first bar (no previous close)."""
    previous = lagged(close)
    gap_up, gap_down = np.abs(high - previous), np.abs(low - previous)
    largest: np.ndarray = np.maximum(high - low, np.maximum(gap_up, gap_down))
    return largest


def session_vwap(
    trading_date: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> np.ndarray:
    """Cumulative typical price x volume over cumulative volume within each trading day.

    NULL once a bar of the day so far has no volume (crypto, forex), and while the day's
    cumulative volume is 0.
    """
    day = pd.Series(trading_date)
    typical = (high + low + close) / 3.0
    traded = pd.Series(typical * volume).groupby(day, sort=False).cumsum().to_numpy()
    shares = pd.Series(volume).groupby(day, sort=False).cumsum().to_numpy()
    missing_so_far = pd.Series(np.isnan(volume)).groupby(day, sort=False).cummax().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = traded / shares
    return np.where(missing_so_far | ~(shares > 0), np.nan, vwap)


def fifty_two_week_extremes(
    bar_time: np.ndarray, high: np.ndarray, low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low over [t - 52 weeks, t], only where history reaches that far."""
    index = pd.DatetimeIndex(bar_time)
    highest = pd.Series(high, index=index).rolling(FIFTY_TWO_WEEKS, closed="both").max()
    lowest = pd.Series(low, index=index).rolling(FIFTY_TWO_WEEKS, closed="both").min()
    reaches = np.asarray(index - FIFTY_TWO_WEEKS >= index[0]) if len(index) else np.zeros(0, bool)
    return (
        np.where(reaches, highest.to_numpy(), np.nan),
        np.where(reaches, lowest.to_numpy(), np.nan),
    )


def indicator_columns(
    bars: pd.DataFrame,
    trading_date: np.ndarray,
    bars_per_year: float,
    periods: IndicatorSet = INDICATORS,
) -> dict[str, np.ndarray]:
    """Every derived float column of one series (``bars``: bar_time and OHLCV, time order).

    The one implementation for hourly bars (the transformer) and daily bars (the loader, over
    the stored daily series); the periods are marketpipe.market's indicator set.
    """
    close, high, low, volume = (
        bars[name].to_numpy(dtype=np.float64) for name in ("close", "high", "low", "volume")
    )
    previous = lagged(close)
    change = close - previous
    log_return = np.log(close / previous)
    fast, slow, signal = periods.macd
    macd = ema(close, fast) - ema(close, slow)
    macd_signal = ema(macd, signal, first=slow - 1)  # macd starts where the slow EMA does
    bb_middle = rolling_mean(close, periods.bollinger)
    # Bollinger: population std
    bb_spread = periods.bollinger_width * rolling_std(close, periods.bollinger, ddof=0)
    high_52w, low_52w = fifty_two_week_extremes(bars["bar_time"].to_numpy(), high, low)
    return {
        "previous_close": previous,
        "change": change,
        "pct_change": change / previous * 100.0,
        "log_return": log_return,
        **{f"sma_{n}": rolling_mean(close, n) for n in periods.sma},
        **{f"ema_{n}": ema(close, n) for n in periods.ema},
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd - macd_signal,
        f"rsi_{periods.rsi}": rsi(close, periods.rsi),
        "bb_middle": bb_middle,
        "bb_upper": bb_middle + bb_spread,
        "bb_lower": bb_middle - bb_spread,
        f"atr_{periods.atr}": wilder_average(true_range(high, low, close), periods.atr, first=1),
        # Close-to-close volatility: sample std (ddof=1) of log returns, annualised.
        f"volatility_{periods.volatility}": rolling_std(log_return, periods.volatility, ddof=1)
        * np.sqrt(bars_per_year),
        "vwap_session": session_vwap(trading_date, high, low, close, volume),
        "high_52w": high_52w,
        "low_52w": low_52w,
        "pct_from_52w_high": (close / high_52w - 1.0) * 100.0,
        "pct_from_52w_low": (close / low_52w - 1.0) * 100.0,
    }
