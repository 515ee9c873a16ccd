"""Every derived column against the plain-loop reference, on hypothesis-generated series.

Several series of different lengths go through ``transform_payloads`` together, so the grouped
vectorised code is also checked for leaks between series and for padding effects.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.transformer.transform import transform_payloads
from tests.unit.transformer import reference as ref
from tests.unit.transformer.payloads import CRYPTO_META, STOCK_META, payload, stock_session_times

NOW = datetime(2031, 1, 1, tzinfo=UTC)
RTOL = 1e-9
HOURS_PER_CRYPTO_YEAR = 365 * 24
NYSE_1H_BARS_PER_YEAR = 252 * 7


@st.composite
def price_paths(draw: st.DrawFn, max_bars: int = 260) -> dict[str, list[float]]:
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


def _values(times: list[str], path: dict[str, list[float]], with_volume: bool) -> list[dict]:
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


def assert_close(actual: pd.Series, expected: list[float], scale: float, name: str) -> None:
    """Equal NULL positions; values within 1e-9 relative (of the value or the series' scale)."""
    got = actual.to_numpy(dtype=float)
    want = np.array(expected, dtype=float)
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{name}: NULL positions differ"
    defined = ~np.isnan(want)
    tolerance = RTOL * np.maximum(np.abs(want[defined]), scale)
    error = np.abs(got[defined] - want[defined])
    assert (error <= tolerance).all(), f"{name}: max error {error.max()} over {tolerance.min()}"


def check_series(bars: pd.DataFrame, path: dict[str, list[float]], bars_per_year: float) -> None:
    close, high, low = path["close"], path["high"], path["low"]
    level = max(close)
    prev = ref.previous(close)
    assert_close(bars["previous_close"], prev, level, "previous_close")
    assert_close(bars["change"], [c - p for c, p in zip(close, prev, strict=True)], level, "change")
    assert_close(
        bars["pct_change"],
        [(c - p) / p * 100 for c, p in zip(close, prev, strict=True)],
        1e-4,  # 1e-13 percentage points: far below the API's 5 decimals
        "pct",
    )
    assert_close(
        bars["log_return"],
        [
            math.log(c / p) if not math.isnan(p) else math.nan
            for c, p in zip(close, prev, strict=True)
        ],
        1e-9,
        "log_return",
    )
    for n in (20, 50, 200):
        assert_close(bars[f"sma_{n}"], ref.sma(close, n), level, f"sma_{n}")
    assert_close(bars["ema_12"], ref.ema(close, 12), level, "ema_12")
    assert_close(bars["ema_26"], ref.ema(close, 26), level, "ema_26")
    line, signal, hist = ref.macd(close)
    assert_close(bars["macd"], line, level, "macd")
    assert_close(bars["macd_signal"], signal, level, "macd_signal")
    assert_close(bars["macd_hist"], hist, level, "macd_hist")
    assert_close(bars["rsi_14"], ref.rsi(close), 100.0, "rsi_14")
    middle, upper, lower = ref.bollinger(close)
    assert_close(bars["bb_middle"], middle, level, "bb_middle")
    assert_close(bars["bb_upper"], upper, level, "bb_upper")
    assert_close(bars["bb_lower"], lower, level, "bb_lower")
    assert_close(bars["atr_14"], ref.atr(high, low, close), level, "atr_14")
    assert_close(bars["volatility_20"], ref.volatility(close, bars_per_year), 1e-9, "volatility_20")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paths=st.lists(price_paths(), min_size=1, max_size=3))
def test_crypto_indicators_match_reference(paths: list[dict[str, list[float]]]) -> None:
    start = datetime(2026, 1, 1)
    payloads = []
    for k, path in enumerate(paths):
        times = [
            (start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S")
            for i in range(len(path["close"]))
        ]
        payloads.append(
            payload(
                f"C{k}/USD", CRYPTO_META, _values(times, path, with_volume=False), fetched_at=NOW
            )
        )
    result = transform_payloads(payloads, now=NOW)
    assert result.quarantine.empty
    for k, path in enumerate(paths):
        bars = result.bars[result.bars["symbol"] == f"C{k}/USD"].reset_index(drop=True)
        assert len(bars) == len(path["close"])
        check_series(bars, path, HOURS_PER_CRYPTO_YEAR)
        assert bars["vwap_session"].isna().all()
        assert bars["volume"].isna().all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paths=st.lists(price_paths(), min_size=1, max_size=2))
def test_stock_indicators_and_session_vwap_match_reference(
    paths: list[dict[str, list[float]]],
) -> None:
    payloads = []
    for k, path in enumerate(paths):
        days = len(path["close"]) // 7 + 1
        times = stock_session_times(datetime(2026, 4, 6), days)[: len(path["close"])]
        payloads.append(
            payload(f"S{k}", STOCK_META, _values(times, path, with_volume=True), fetched_at=NOW)
        )
    result = transform_payloads(payloads, now=NOW)
    assert result.quarantine.empty
    for k, path in enumerate(paths):
        bars = result.bars[result.bars["symbol"] == f"S{k}"].reset_index(drop=True)
        check_series(bars, path, NYSE_1H_BARS_PER_YEAR)
        days = bars["trading_date"].tolist()
        expected = ref.session_vwap(days, path["high"], path["low"], path["close"], path["volume"])
        assert_close(bars["vwap_session"], expected, max(path["close"]), "vwap_session")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=price_paths(max_bars=700),
    gap_seed=st.integers(0, 2**32 - 1),
)
def test_52_week_extremes_match_reference(path: dict[str, list[float]], gap_seed: int) -> None:
    bars_count = len(path["close"])
    gaps = np.random.default_rng(gap_seed).integers(1, 5, bars_count).tolist()
    times: list[datetime] = []
    when = datetime(2024, 1, 1)
    for gap in gaps:
        times.append(when)
        when += timedelta(days=int(gap))
    values = _values([t.strftime("%Y-%m-%d") for t in times], path, with_volume=False)
    series = payload("BTC/USD", CRYPTO_META, values, fetched_at=NOW, interval="1day")
    bars = transform_payloads([series], now=NOW).bars
    highest, lowest = ref.fifty_two_week(times, path["high"], path["low"])
    level = max(path["high"])
    assert_close(bars["high_52w"], highest, level, "high_52w")
    assert_close(bars["low_52w"], lowest, level, "low_52w")
    expected_pct = [(c / h - 1) * 100 for c, h in zip(path["close"], highest, strict=True)]
    assert_close(bars["pct_from_52w_high"], expected_pct, 1e-6, "pct_from_52w_high")
    # Daily crypto bars annualise with 365 bars a year.
    assert_close(bars["volatility_20"], ref.volatility(path["close"], 365), 1e-9, "vol_daily")


def test_warm_up_lengths_are_exact() -> None:
    """First defined index of each column on a long smooth series (no partial windows)."""
    closes = [100 + math.sin(i / 5) for i in range(300)]
    path = {
        "open": closes,
        "high": [c + 1 for c in closes],
        "low": [c - 1 for c in closes],
        "close": closes,
        "volume": [1.0] * 300,
    }
    times = [
        (datetime(2026, 1, 1) + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S")
        for i in range(300)
    ]
    result = transform_payloads(
        [payload("ETH/USD", CRYPTO_META, _values(times, path, False), fetched_at=NOW)], now=NOW
    )
    first_defined = {
        name: int(result.bars[name].notna().to_numpy().argmax())
        for name in (
            "previous_close",
            "sma_20",
            "sma_50",
            "sma_200",
            "ema_12",
            "ema_26",
            "macd",
            "macd_signal",
            "rsi_14",
            "bb_upper",
            "atr_14",
            "volatility_20",
        )
    }
    assert first_defined == {
        "previous_close": 1,
        "sma_20": 19,
        "sma_50": 49,
        "sma_200": 199,
        "ema_12": 11,
        "ema_26": 25,
        "macd": 25,
        "macd_signal": 33,
        "rsi_14": 14,
        "bb_upper": 19,
        "atr_14": 14,
        "volatility_20": 20,
    }


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=400),
    lookback_seed=st.integers(0, 2**32 - 1),
    longest=st.integers(0, 300),
)
def test_trailing_extremes_match_brute_force(
    values: list[float], lookback_seed: int, longest: int
) -> None:
    """Block-decomposed window extremes, windows of mixed lengths (series of mixed intervals)."""
    from services.transformer.indicators import TrailingWindows

    size = len(values)
    rng = np.random.default_rng(lookback_seed)
    left = np.maximum(np.arange(size) - rng.integers(0, longest + 1, size), 0)
    eligible = rng.random(size) < 0.7
    windows = TrailingWindows.build(left, eligible)
    array = np.array(values)
    for reducer, pick in ((np.maximum, max), (np.minimum, min)):
        got = windows.extreme(array, reducer)
        want = [pick(values[left[i] : i + 1]) if eligible[i] else math.nan for i in range(size)]
        assert np.array_equal(got, np.array(want), equal_nan=True)


@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=80),
    window=st.integers(1, 40),
)
def test_window_sums_match_direct_sums(values: list[float], window: int) -> None:
    from services.transformer.indicators import rolling_sum

    got = rolling_sum(np.array([values]), window)[0]
    want = [
        math.fsum(values[i - window + 1 : i + 1]) if i >= window - 1 else math.nan
        for i in range(len(values))
    ]
    assert_close(pd.Series(got), want, max(map(abs, values), default=1.0) or 1.0, "window_sum")
