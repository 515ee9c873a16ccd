"""The derived columns of one series, bars in time order; definitions: docs/indicators.md.

Shared by the transformer (every interval's bars) and the loader (the stored daily series).

Plain numpy and pandas over one series. Windows not yet filled are NaN, never a partial value.
Fixed-length windows are computed from the window's own values (``sliding_window_view``), so a
bar's SMA, Bollinger bands and volatility do not depend on how much history the request reached
back; the exponential averages do, through their seed, by definition.

The series is the *stored* one: new bars continue it (:class:`StoredHistory`): the windows are
refilled from the stored bars before them and every recurrence (EMA, MACD signal, Wilder
averages) continues from its stored value, so the result equals one pass over the whole stored
series, however few bars a request brought.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

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


def _windows(values: np.ndarray, window: int, start: int) -> tuple[int, np.ndarray]:
    """The full windows ending at ``start`` or later: (the first one's end, the windows)."""
    first_end = max(start, window - 1)
    if first_end >= len(values):
        return first_end, np.empty((0, window))
    return first_end, sliding_window_view(values[first_end - window + 1 :], window)


def rolling_mean(values: np.ndarray, window: int, start: int = 0) -> np.ndarray:
    """Mean of the last ``window`` values; NaN until the window is full or if one is NaN.

    Only positions from ``start`` on are computed (NaN before): a continuation emits only its
    new bars, and each window is reduced on its own, so the values do not depend on ``start``.
    """
    out = np.full(len(values), np.nan)
    first_end, windows = _windows(values, window, start)
    out[first_end:] = windows.mean(axis=1)
    return out


def rolling_std(values: np.ndarray, window: int, *, ddof: int, start: int = 0) -> np.ndarray:
    """Standard deviation of the last ``window`` values: ddof=0 population, ddof=1 sample.

    Two-pass (squared deviations from the window's mean, as numpy's std), never sum of squares
    minus squared sum, which loses most digits when the spread is small against the level. The
    std does not change when every value moves by the same amount: taken of the differences to
    the window's first value, a flat window gives exactly 0. ``start``: as for rolling_mean.
    """
    out = np.full(len(values), np.nan)
    first_end, windows = _windows(values, window, start)
    out[first_end:] = (windows - windows[:, :1]).std(axis=1, ddof=ddof)
    return out


def seeded_average(
    values: np.ndarray,
    period: int,
    alpha: float,
    first: int = 0,
    known: tuple[int, float] | None = None,
) -> np.ndarray:
    """Exponential average seeded with the simple mean of its first ``period`` inputs.

    The inputs start at ``first`` (1 for averages of differences: the first bar has none). NaN
    before ``first + period - 1``; there y = mean(x[first .. first + period - 1]), then
    y[t] = y[t-1] + alpha * (x[t] - y[t-1]), which is pandas' recursive EWM (``adjust=False``)
    started at the seed. ``known`` = (position, value): the average's value at that position
    is already known (stored), so it continues from there instead of seeding.
    """
    out = np.full(len(values), np.nan)
    if known is not None:
        seed_at, seed = known
    else:
        seed_at = first + period - 1
        seed = values[first : seed_at + 1].mean() if seed_at < len(values) else np.nan
    if seed_at < len(values):
        inputs = values[seed_at:].copy()
        inputs[0] = seed
        out[seed_at:] = pd.Series(inputs).ewm(alpha=alpha, adjust=False).mean().to_numpy()
    return out


def ema(
    values: np.ndarray, period: int, first: int = 0, known: tuple[int, float] | None = None
) -> np.ndarray:
    """EMA with alpha = 2 / (period + 1), seeded with the SMA of its first ``period`` values."""
    return seeded_average(values, period, 2.0 / (period + 1), first, known)


def wilder_average(
    values: np.ndarray, period: int, first: int, known: tuple[int, float] | None = None
) -> np.ndarray:
    """Wilder's smoothing: alpha = 1 / period, seeded with the mean of its first ``period``."""
    return seeded_average(values, period, 1.0 / period, first, known)


def rsi_averages(
    close: np.ndarray,
    period: int = 14,
    known: tuple[int, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Wilder averages of gains and of losses; ``known`` = (position, gain, loss) continues."""
    delta = close - lagged(close)
    gain_at = loss_at = None
    if known is not None:
        gain_at, loss_at = (known[0], known[1]), (known[0], known[2])
    average_gain = wilder_average(np.maximum(delta, 0.0), period, first=1, known=gain_at)
    average_loss = wilder_average(np.maximum(-delta, 0.0), period, first=1, known=loss_at)
    return average_gain, average_loss


def rsi_of(average_gain: np.ndarray, average_loss: np.ndarray) -> np.ndarray:
    """RSI = 100 * AG / (AG + AL); 50 where neither gains nor losses (flat)."""
    total = average_gain + average_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100.0 * average_gain / total
    return np.where(total == 0.0, 50.0, value)


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's RSI = 100 * AG / (AG + AL); 50 where neither gains nor losses (flat)."""
    return rsi_of(*rsi_averages(close, period))


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
    typical = (high + low + close) / 3.0
    # Bars are in time order, so each day is one run: number the runs (grouping by an integer
    # is ~0.3 ms cheaper a call than by datetime64), one grouped cumsum for the three totals. As
    # an Index: a bare ndarray key is first tried as a column label, and formatting it for that
    # lookup cost 3.5 ms a call (cProfile of a load job).
    day = np.cumsum(trading_date[1:] != trading_date[:-1])
    day_number = np.concatenate(([0], day))[: len(trading_date)]
    so_far = (
        pd.DataFrame({"traded": typical * volume, "shares": volume, "missing": np.isnan(volume)})
        .groupby(pd.Index(day_number), sort=False)
        .cumsum()
    )
    traded, shares = so_far["traded"].to_numpy(), so_far["shares"].to_numpy()
    missing_so_far = so_far["missing"].to_numpy() > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = traded / shares
    return np.where(missing_so_far | ~(shares > 0), np.nan, vwap)


def fifty_two_week_extremes(
    bar_time: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    series_start: np.datetime64 | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low over [t - 52 weeks, t], only where history reaches that far.

    ``series_start``: the series' first bar when ``bar_time`` does not begin with it.
    """
    index = pd.DatetimeIndex(bar_time)
    highest = pd.Series(high, index=index).rolling(FIFTY_TWO_WEEKS, closed="both").max()
    lowest = pd.Series(low, index=index).rolling(FIFTY_TWO_WEEKS, closed="both").min()
    if len(index):
        start = index[0] if series_start is None else min(index[0], pd.Timestamp(series_start))
        reaches = np.asarray(index - FIFTY_TWO_WEEKS >= start)
    else:
        reaches = np.zeros(0, bool)
    return (
        np.where(reaches, highest.to_numpy(), np.nan),
        np.where(reaches, lowest.to_numpy(), np.nan),
    )


# The stored columns a continuation starts from: each recurrence's value at the last stored bar.
STATE_COLUMNS: Final = (
    *(f"ema_{n}" for n in INDICATORS.ema),
    "macd_signal",
    f"atr_{INDICATORS.atr}",
    "rsi_avg_gain",
    "rsi_avg_loss",
)
EMPTY_STATE: Final = dict.fromkeys(STATE_COLUMNS, np.nan)


@dataclass(frozen=True)
class StoredHistory:
    """The stored bars just before the new ones, and the recurrence state at the last of them.

    ``bars``: bar_time (naive UTC), high, low, close, volume in time order: at least the window
    lengths and 52 weeks before the first new bar. ``from_start``: they begin at the series'
    first bar (then every indicator is simply computed over them and the new bars); otherwise
    ``state`` (STATE_COLUMNS of the last stored bar) continues the recurrences.
    """

    bars: pd.DataFrame
    trading_date: np.ndarray
    from_start: bool = True
    series_start: np.datetime64 | None = None
    state: dict[str, float] = field(default_factory=lambda: dict(EMPTY_STATE))

    @classmethod
    def empty(cls) -> StoredHistory:
        frame = pd.DataFrame(
            {
                "bar_time": np.array([], "datetime64[us]"),
                **{c: np.array([], np.float64) for c in ("high", "low", "close", "volume")},
            }
        )
        return cls(frame, np.array([], "datetime64[us]"))


def indicator_columns(
    bars: pd.DataFrame,
    trading_date: np.ndarray,
    bars_per_year: float,
    periods: IndicatorSet = INDICATORS,
    history: StoredHistory | None = None,
) -> dict[str, np.ndarray]:
    """Every derived float column of one series (``bars``: bar_time and OHLCV, time order).

    The one implementation for hourly bars (the transformer) and daily bars (the loader, over
    the stored daily series); the periods are marketpipe.market's indicator set. With
    ``history`` the new ``bars`` continue the stored series (see :class:`StoredHistory`); the
    columns are those of the new bars only.
    """
    names = ("close", "high", "low", "volume")
    stored = 0 if history is None else len(history.bars)
    if history is not None and stored:
        close, high, low, volume = (
            np.concatenate(
                [history.bars[n].to_numpy(np.float64), bars[n].to_numpy(dtype=np.float64)]
            )
            for n in names
        )
        times = np.concatenate(
            [history.bars["bar_time"].to_numpy("datetime64[us]"), _naive(bars["bar_time"])]
        )
        days = np.concatenate([history.trading_date, trading_date]).astype("datetime64[us]")
    else:
        close, high, low, volume = (bars[n].to_numpy(dtype=np.float64) for n in names)
        times, days = _naive(bars["bar_time"]), trading_date
    # Where the recurrences continue from: the last stored bar, unless the series starts here.
    seeded = history is not None and stored > 0 and not history.from_start
    state = history.state if history is not None and seeded else EMPTY_STATE
    at = stored - 1

    def known(column: str) -> tuple[int, float] | None:
        return (at, state[column]) if seeded else None

    previous = lagged(close)
    change = close - previous
    log_return = np.log(close / previous)
    fast, slow, signal = periods.macd
    ema_fast = ema(close, fast, known=known(f"ema_{fast}"))
    ema_slow = ema(close, slow, known=known(f"ema_{slow}"))
    macd = ema_fast - ema_slow
    # macd starts where the slow EMA does
    macd_signal = ema(macd, signal, first=slow - 1, known=known("macd_signal"))
    # Windows only for the bars returned (each is computed from its own window's values).
    bb_middle = rolling_mean(close, periods.bollinger, start=stored)
    # Bollinger: population std
    bb_spread = periods.bollinger_width * rolling_std(
        close, periods.bollinger, ddof=0, start=stored
    )
    start = history.series_start if history is not None else None
    high_52w, low_52w = fifty_two_week_extremes(times, high, low, start)
    gains = (at, state["rsi_avg_gain"], state["rsi_avg_loss"]) if seeded else None
    average_gain, average_loss = rsi_averages(close, periods.rsi, gains)
    emas = {fast: ema_fast, slow: ema_slow}
    columns = {
        "previous_close": previous,
        "change": change,
        "pct_change": change / previous * 100.0,
        "log_return": log_return,
        **{f"sma_{n}": rolling_mean(close, n, start=stored) for n in periods.sma},
        **{
            f"ema_{n}": emas[n] if n in emas else ema(close, n, known=known(f"ema_{n}"))
            for n in periods.ema
        },
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd - macd_signal,
        f"rsi_{periods.rsi}": rsi_of(average_gain, average_loss),
        "rsi_avg_gain": average_gain,
        "rsi_avg_loss": average_loss,
        "bb_middle": bb_middle,
        "bb_upper": bb_middle + bb_spread,
        "bb_lower": bb_middle - bb_spread,
        f"atr_{periods.atr}": wilder_average(
            true_range(high, low, close), periods.atr, first=1, known=known(f"atr_{periods.atr}")
        ),
        # Close-to-close volatility: sample std (ddof=1) of log returns, annualised.
        f"volatility_{periods.volatility}": rolling_std(
            log_return, periods.volatility, ddof=1, start=stored
        )
        * np.sqrt(bars_per_year),
        "vwap_session": session_vwap(days, high, low, close, volume),
        "high_52w": high_52w,
        "low_52w": low_52w,
        "pct_from_52w_high": (close / high_52w - 1.0) * 100.0,
        "pct_from_52w_low": (close / low_52w - 1.0) * 100.0,
    }
    return {name: values[stored:] for name, values in columns.items()}


def _naive(bar_time: pd.Series | np.ndarray) -> np.ndarray:
    """UTC bar times as naive datetime64[us] (the transformer's are timezone-aware)."""
    index = pd.DatetimeIndex(bar_time)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.to_numpy("datetime64[us]")
