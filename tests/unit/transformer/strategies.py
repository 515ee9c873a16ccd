"""Hypothesis strategies and comparison helpers shared by the transformer's property tests."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from tests.unit.transformer import reference as ref

RTOL = 1e-9

PricePath = dict[str, list[float]]


@st.composite
def price_paths(draw: st.DrawFn, max_bars: int = 260) -> PricePath:
    """OHLC(V) paths: random walks, sometimes with flat stretches and jumps."""
    bars = draw(st.integers(1, max_bars))
    level = draw(st.floats(0.01, 1e5))
    sigma = draw(st.sampled_from([0.0, 1e-4, 0.01, 0.2]))
    seed = draw(st.integers(0, 2**32 - 1))
    flat = draw(st.booleans())
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, sigma, bars)
    if flat:
        steps[rng.random(bars) < 0.5] = 0.0
    close = level * np.exp(np.cumsum(steps))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, bars))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, bars))
    volume = rng.integers(0, 10_000, bars).astype(float)
    # The API gives text with at most 5 decimals; compare on the numbers the transformer sees.
    return {
        "open": [float(f"{v:.5f}") for v in open_],
        "high": [float(f"{v:.5f}") for v in high],
        "low": [float(f"{v:.5f}") for v in low],
        "close": [float(f"{v:.5f}") for v in close],
        "volume": volume.tolist(),
    }


def api_values(times: list[str], path: PricePath, *, with_volume: bool) -> list[dict[str, Any]]:
    """The path as the API's ``values`` entries, oldest first."""
    rows = []
    for i, when in enumerate(times):
        row = {
            "datetime": when,
            **{k: f"{path[k][i]:.5f}" for k in ("open", "high", "low", "close")},
        }
        if with_volume:
            row["volume"] = str(int(path["volume"][i]))
        rows.append(row)
    return rows


def assert_close(actual: Any, expected: list[float], scale: float, name: str) -> None:
    """Equal NULL positions; values within 1e-9 relative (of the value or the series' scale)."""
    got = pd.Series(actual).to_numpy(dtype=float)
    want = np.array(expected, dtype=float)
    assert got.shape == want.shape, f"{name}: {got.shape} values, expected {want.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NULL positions differ"
    defined = ~np.isnan(want)
    tolerance = RTOL * np.maximum(np.abs(want[defined]), scale)
    error = np.abs(got[defined] - want[defined])
    assert (error <= tolerance).all(), f"{name}: max error {error.max()} over {tolerance.min()}"


def assert_indicators_match(columns: Any, path: PricePath, bars_per_year: float) -> None:
    """Every indicator column (a frame or a dict of arrays) equals the loop reference."""
    close, high, low = path["close"], path["high"], path["low"]
    level = max(close)
    prev = ref.previous(close)
    change = [c - p for c, p in zip(close, prev, strict=True)]
    assert_close(columns["previous_close"], prev, level, "previous_close")
    assert_close(columns["change"], change, level, "change")
    pct = [d / p * 100 for d, p in zip(change, prev, strict=True)]
    assert_close(columns["pct_change"], pct, 1e-4, "pct_change")  # 1e-13 percentage points
    log_return = [math.log(c / p) if p == p else math.nan for c, p in zip(close, prev, strict=True)]
    assert_close(columns["log_return"], log_return, 1e-9, "log_return")
    for n in (20, 50, 200):
        assert_close(columns[f"sma_{n}"], ref.sma(close, n), level, f"sma_{n}")
    assert_close(columns["ema_12"], ref.ema(close, 12), level, "ema_12")
    assert_close(columns["ema_26"], ref.ema(close, 26), level, "ema_26")
    line, signal, hist = ref.macd(close)
    assert_close(columns["macd"], line, level, "macd")
    assert_close(columns["macd_signal"], signal, level, "macd_signal")
    assert_close(columns["macd_hist"], hist, level, "macd_hist")
    assert_close(columns["rsi_14"], ref.rsi(close), 100.0, "rsi_14")
    middle, upper, lower = ref.bollinger(close)
    assert_close(columns["bb_middle"], middle, level, "bb_middle")
    assert_close(columns["bb_upper"], upper, level, "bb_upper")
    assert_close(columns["bb_lower"], lower, level, "bb_lower")
    assert_close(columns["atr_14"], ref.atr(high, low, close), level, "atr_14")
    volatility = ref.volatility(close, bars_per_year)
    assert_close(columns["volatility_20"], volatility, 1e-9, "volatility_20")


def assert_52_week_match(columns: Any, times: list[datetime], path: PricePath) -> None:
    highest, lowest = ref.fifty_two_week(times, path["high"], path["low"])
    level = max(path["high"])
    assert_close(columns["high_52w"], highest, level, "high_52w")
    assert_close(columns["low_52w"], lowest, level, "low_52w")
    from_high = [(c / h - 1) * 100 for c, h in zip(path["close"], highest, strict=True)]
    from_low = [(c / lo - 1) * 100 for c, lo in zip(path["close"], lowest, strict=True)]
    assert_close(columns["pct_from_52w_high"], from_high, 1e-6, "pct_from_52w_high")
    assert_close(columns["pct_from_52w_low"], from_low, 1e-6, "pct_from_52w_low")
