"""Independent, straightforward implementations: plain Python loops over one series.

Written from the definitions in docs/indicators.md, deliberately without numpy, pandas or the
transformer's code, so the transformer is checked against something else.
"""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timedelta

NAN = float("nan")


def previous(close: list[float]) -> list[float]:
    return [NAN, *close[:-1]]


def sma(values: list[float], n: int) -> list[float]:
    out = [NAN] * len(values)
    for i in range(n - 1, len(values)):
        out[i] = math.fsum(values[i - n + 1 : i + 1]) / n
    return out


def seeded_average(values: list[float], n: int, alpha: float, first: int) -> list[float]:
    out = [NAN] * len(values)
    seed_at = first + n - 1
    if seed_at >= len(values):
        return out
    state = math.fsum(values[first : seed_at + 1]) / n
    out[seed_at] = state
    for i in range(seed_at + 1, len(values)):
        state = state + alpha * (values[i] - state)
        out[i] = state
    return out


def ema(values: list[float], n: int, first: int = 0) -> list[float]:
    return seeded_average(values, n, 2 / (n + 1), first)


def macd(close: list[float]) -> tuple[list[float], list[float], list[float]]:
    fast, slow = ema(close, 12), ema(close, 26)
    line = [f - s for f, s in zip(fast, slow, strict=True)]
    signal = ema(line, 9, first=25)
    return line, signal, [m - s for m, s in zip(line, signal, strict=True)]


def rsi(close: list[float], n: int = 14) -> list[float]:
    gains = [NAN] + [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [NAN] + [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    avg_gain = seeded_average(gains, n, 1 / n, 1)
    avg_loss = seeded_average(losses, n, 1 / n, 1)
    out = []
    for gain, loss in zip(avg_gain, avg_loss, strict=True):
        if math.isnan(gain):
            out.append(NAN)
        elif loss == 0:
            out.append(50.0 if gain == 0 else 100.0)
        else:
            out.append(100 - 100 / (1 + gain / loss))
    return out


def bollinger(close: list[float], n: int = 20, k: float = 2.0) -> tuple[list[float], ...]:
    middle, upper, lower = [NAN] * len(close), [NAN] * len(close), [NAN] * len(close)
    for i in range(n - 1, len(close)):
        window = close[i - n + 1 : i + 1]
        mean = math.fsum(window) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in window) / n)
        middle[i], upper[i], lower[i] = mean, mean + k * std, mean - k * std
    return middle, upper, lower


def atr(high: list[float], low: list[float], close: list[float], n: int = 14) -> list[float]:
    true_range = [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    return seeded_average(true_range, n, 1 / n, 1)


def volatility(close: list[float], bars_per_year: float, n: int = 20) -> list[float]:
    log_returns = [NAN] + [math.log(close[i] / close[i - 1]) for i in range(1, len(close))]
    out = [NAN] * len(close)
    for i in range(n, len(close)):
        out[i] = statistics.stdev(log_returns[i - n + 1 : i + 1]) * math.sqrt(bars_per_year)
    return out


def session_vwap(
    days: list[object], high: list[float], low: list[float], close: list[float], volume: list[float]
) -> list[float]:
    out = []
    traded = shares = 0.0
    for i, day in enumerate(days):
        if i == 0 or day != days[i - 1]:
            traded = shares = 0.0
        traded += (high[i] + low[i] + close[i]) / 3 * volume[i]
        shares += volume[i]
        out.append(traded / shares if shares > 0 else NAN)
    return out


def fifty_two_week(
    times: list[datetime], high: list[float], low: list[float]
) -> tuple[list[float], list[float]]:
    highest, lowest = [], []
    for i, t in enumerate(times):
        start = t - timedelta(weeks=52)
        if start < times[0]:
            highest.append(NAN)
            lowest.append(NAN)
            continue
        in_window = [j for j in range(i + 1) if times[j] >= start]
        highest.append(max(high[j] for j in in_window))
        lowest.append(min(low[j] for j in in_window))
    return highest, lowest


def daily(
    days: list[object],
    open_: list[float],
    high: list[float],
    low: list[float],
    close: list[float],
    volume: list[float],
) -> list[dict[str, float]]:
    """One aggregate per run of equal days, in order; NaN volume/VWAP unless every bar has one."""
    out: list[dict[str, float]] = []
    start = 0
    for i in range(1, len(days) + 1):
        if i < len(days) and days[i] == days[start]:
            continue
        bars = range(start, i)
        total = math.fsum(volume[j] for j in bars)
        traded = math.fsum((high[j] + low[j] + close[j]) / 3 * volume[j] for j in bars)
        previous_close = out[-1]["close"] if out else NAN
        row = {
            "open": open_[start],
            "high": max(high[j] for j in bars),
            "low": min(low[j] for j in bars),
            "close": close[i - 1],
            "volume": total,
            "vwap": traded / total if total > 0 else NAN,
            "change": close[i - 1] - previous_close,
            "pct_change": (close[i - 1] - previous_close) / previous_close * 100,
            "bar_count": float(i - start),
        }
        row["range"] = row["high"] - row["low"]
        out.append(row)
        start = i
    return out
