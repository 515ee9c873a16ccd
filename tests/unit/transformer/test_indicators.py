"""indicators.py: every derived column of one series against the plain-loop reference."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketpipe import indicators as ind
from tests.unit.transformer import reference as ref
from tests.unit.transformer.strategies import (
    PricePath,
    assert_52_week_match,
    assert_close,
    assert_indicators_match,
    price_paths,
)

HOURLY_CRYPTO_BARS_PER_YEAR = 365 * 24


def hourly(count: int, start: datetime = datetime(2026, 1, 1)) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(count)]


def bars_frame(path: PricePath, times: list[datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bar_time": np.array(times, dtype="datetime64[us]"),
            **{name: np.array(path[name]) for name in ("open", "high", "low", "close", "volume")},
        }
    )


def columns_of(path: PricePath, times: list[datetime], bars_per_year: float = 1.0) -> dict:
    frame = bars_frame(path, times)
    trading_date = frame["bar_time"].to_numpy().astype("datetime64[D]").astype("datetime64[us]")
    return ind.indicator_columns(frame, trading_date, bars_per_year)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths())
def test_every_indicator_matches_the_reference(path: PricePath) -> None:
    columns = columns_of(path, hourly(len(path["close"])), HOURLY_CRYPTO_BARS_PER_YEAR)
    assert_indicators_match(columns, path, HOURLY_CRYPTO_BARS_PER_YEAR)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(max_bars=700), gap_seed=st.integers(0, 2**32 - 1))
def test_52_week_extremes_match_the_reference(path: PricePath, gap_seed: int) -> None:
    """Daily bars with gaps of 1-4 days, so windows hold varying numbers of bars."""
    gaps = np.random.default_rng(gap_seed).integers(1, 5, len(path["close"]))
    times = [datetime(2024, 1, 1) + timedelta(days=int(d)) for d in np.cumsum(gaps) - gaps[0]]
    assert_52_week_match(columns_of(path, times), times, path)


@settings(max_examples=30, deadline=None)
@given(
    path=price_paths(max_bars=120),
    day_lengths=st.lists(st.integers(1, 9), min_size=1, max_size=40),
    missing=st.lists(st.integers(0, 119), max_size=3),
)
def test_session_vwap_matches_the_reference(
    path: PricePath, day_lengths: list[int], missing: list[int]
) -> None:
    """Cumulative within each day; NULL from a bar without volume to the end of its day."""
    size = len(path["close"])
    days = np.repeat(np.arange(len(day_lengths)), day_lengths)[:size]
    days = np.r_[days, np.full(size - days.size, days[-1])]
    volume = np.array(path["volume"])
    volume[[m for m in missing if m < size]] = np.nan
    got = ind.session_vwap(days, *(np.array(path[k]) for k in ("high", "low", "close")), volume)
    want = ref.session_vwap(
        days.tolist(), path["high"], path["low"], path["close"], volume.tolist()
    )
    assert_close(got, want, max(path["close"]), "vwap_session")


def test_each_window_is_null_until_it_is_full() -> None:
    """First defined bar of each column on a long smooth series: no partial windows."""
    closes = [100 + math.sin(i / 5) for i in range(300)]
    path = {
        "open": closes,
        "high": [c + 1 for c in closes],
        "low": [c - 1 for c in closes],
        "close": closes,
        "volume": [1.0] * 300,
    }
    columns = columns_of(path, hourly(300))
    first_defined = {
        name: int(np.flatnonzero(~np.isnan(columns[name]))[0])
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


def test_series_shorter_than_every_window() -> None:
    path = {name: [10.0, 11.0] for name in ("open", "high", "low", "close", "volume")}
    columns = columns_of(path, hourly(2))
    assert columns["change"].tolist()[1] == 1.0
    for name in ("sma_20", "ema_12", "rsi_14", "atr_14", "bb_upper", "high_52w"):
        assert np.isnan(columns[name]).all(), name
    empty = columns_of({name: [] for name in path}, [])
    assert all(len(values) == 0 for values in empty.values())


def test_rsi_conventions() -> None:
    """Only gains: 100; only losses: 0; no movement at all: 50 (neither side)."""
    rising = np.arange(1.0, 31.0)
    assert ind.rsi(rising)[14:].tolist() == [100.0] * 16
    assert ind.rsi(rising[::-1].copy())[14:].tolist() == [0.0] * 16
    assert ind.rsi(np.full(30, 5.0))[14:].tolist() == [50.0] * 16


def test_bollinger_uses_the_population_and_volatility_the_sample_std() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert ind.rolling_std(values, 4, ddof=0)[-1] == np.std(values)  # sqrt(1.25)
    assert ind.rolling_std(values, 4, ddof=1)[-1] == np.std(values, ddof=1)  # sqrt(5/3)
    assert ind.rolling_std(np.full(20, 0.1), 20, ddof=0)[-1] == 0.0  # flat: exactly 0


def test_ema_is_seeded_with_the_sma_of_its_first_period() -> None:
    values = np.array([2.0, 4.0, 6.0, 10.0])
    got = ind.ema(values, 3)
    alpha = 2 / 4
    assert np.isnan(got[:2]).all()
    assert got[2] == 4.0  # mean of 2, 4, 6
    assert got[3] == 4.0 + alpha * (10.0 - 4.0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(max_bars=400), cut=st.integers(1, 399))
def test_window_columns_do_not_depend_on_older_history(path: PricePath, cut: int) -> None:
    """A bar re-sent in a shorter request gets bit-identical window columns (no rewrite)."""
    size = len(path["close"])
    cut = min(cut, size - 1)
    times = hourly(size)
    full = columns_of(path, times)
    part = columns_of({k: v[cut:] for k, v in path.items()}, times[cut:])
    windows = {"sma_20": 20, "sma_50": 50, "sma_200": 200, "bb_upper": 20, "bb_lower": 20}
    windows |= {"volatility_20": 21, "change": 2, "log_return": 2}
    for name, window in windows.items():
        assert np.array_equal(
            full[name][cut + window - 1 :], part[name][window - 1 :], equal_nan=True
        ), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(max_bars=500), cut=st.integers(0, 499), reach=st.integers(0, 60))
def test_continuing_stored_state_equals_one_pass(path: PricePath, cut: int, reach: int) -> None:
    """New bars after stored ones, given the stored bars their windows reach back to and the
    recurrences' stored state, get exactly the columns of one pass over the whole series."""
    times = [datetime(2025, 1, 1) + timedelta(days=i) for i in range(len(path["close"]))]
    frame = bars_frame(path, times)
    days = frame["bar_time"].to_numpy().astype("datetime64[D]").astype("datetime64[us]")
    cut = min(cut, len(frame))
    whole = ind.indicator_columns(frame, days, 365.0)
    # The windows need 199 stored bars and 52 weeks (364 daily bars); ``reach`` more are given.
    first = max(0, cut - 364 - reach)
    history = ind.StoredHistory(
        bars=frame.iloc[first:cut].reset_index(drop=True),
        trading_date=days[first:cut],
        from_start=first == 0,
        series_start=frame["bar_time"].to_numpy()[0],
        state={c: whole[c][cut - 1] for c in ind.STATE_COLUMNS} if cut else ind.EMPTY_STATE,
    )
    new = frame.iloc[cut:].reset_index(drop=True)
    continued = ind.indicator_columns(new, days[cut:], 365.0, history=history)
    for name, values in continued.items():
        np.testing.assert_array_equal(values, whole[name][cut:], err_msg=name)


def test_a_known_value_continues_the_average_instead_of_seeding_it() -> None:
    values = np.arange(1.0, 41.0)
    full = ind.ema(values, 12)
    resumed = ind.ema(values, 12, known=(20, full[20]))
    assert np.isnan(resumed[:20]).all()
    np.testing.assert_array_equal(resumed[20:], full[20:])


@pytest.mark.parametrize("start", [0, 3, 19, 20, 57, 60, 61, 90])
def test_windows_from_a_start_are_the_whole_series_windows(start: int) -> None:
    """A continuation computes only its new bars' windows: exactly the values a pass over the
    whole series gives there, NaN before ``start``."""
    values = 100 + np.cumsum(np.random.default_rng(start).normal(0, 1, 60))
    for window in (2, 4, 20):
        mean, whole_mean = ind.rolling_mean(values, window, start), ind.rolling_mean(values, window)
        std = ind.rolling_std(values, window, ddof=1, start=start)
        whole_std = ind.rolling_std(values, window, ddof=1)
        for got, whole in ((mean, whole_mean), (std, whole_std)):
            assert len(got) == len(values)
            assert np.isnan(got[:start]).all()
            np.testing.assert_array_equal(got[start:], whole[start:])
