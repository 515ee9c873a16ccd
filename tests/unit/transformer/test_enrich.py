"""enrich.py: the OLAP rows of a whole payload, every column against the loop reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.transformer.transform import transform_series
from tests.unit.transformer import reference as ref
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)
from tests.unit.transformer.strategies import (
    PricePath,
    api_values,
    assert_52_week_match,
    assert_close,
    assert_indicators_match,
    price_paths,
)

NOW = datetime(2031, 1, 1, tzinfo=UTC)
HOURS_PER_CRYPTO_YEAR = 365 * 24
NYSE_1H_BARS_PER_YEAR = 252 * 7


def assert_bars_are_the_path(bars: pd.DataFrame, path: PricePath, *, with_volume: bool) -> None:
    for name in ("open", "high", "low", "close"):
        assert bars[name].tolist() == path[name], name
    if with_volume:
        assert bars["volume"].tolist() == path["volume"]
    else:
        assert bars["volume"].isna().all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(), newest_first=st.booleans())
def test_crypto_payload_matches_the_reference(path: PricePath, newest_first: bool) -> None:
    times = hourly_times(datetime(2026, 1, 1), len(path["close"]))
    raw = payload(
        "ETH/USD",
        CRYPTO_META,
        api_values(times, path, with_volume=False),
        fetched_at=NOW,
        newest_first=newest_first,
    )
    result = transform_series(raw, now=NOW)
    assert result.quarantine.empty
    bars = result.bars
    assert bars["bar_time"].tolist() == [pd.Timestamp(t, tz="UTC") for t in times]
    assert (bars["bar_time_local"] == bars["bar_time"].dt.tz_localize(None)).all()
    assert (bars["trading_date"] == bars["bar_time_local"].dt.normalize()).all()
    assert_bars_are_the_path(bars, path, with_volume=False)
    assert_indicators_match(bars, path, HOURS_PER_CRYPTO_YEAR)
    assert bars["vwap_session"].isna().all()
    assert bars["high_52w"].isna().all()  # under a year of history
    constant = {"symbol": "ETH/USD", "interval": "1h", "asset_class": "crypto"}
    constant |= {"payload_id": raw.payload_id, "exchange_timezone": None, "currency": "USD"}
    for column, value in constant.items():
        assert bars[column].tolist() == [value] * len(bars), column
    assert bars["is_complete"].all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths())
def test_stock_payload_matches_the_reference(path: PricePath) -> None:
    count = len(path["close"])
    times = stock_session_times(datetime(2026, 4, 6), count // 7 + 1)[:count]
    raw = payload("MSFT", STOCK_META, api_values(times, path, with_volume=True), fetched_at=NOW)
    result = transform_series(raw, now=NOW)
    assert result.quarantine.empty
    bars = result.bars
    assert bars["bar_time_local"].tolist() == [pd.Timestamp(t) for t in times]
    # April to May 2026: New York is on EDT, UTC-4.
    offset = bars["bar_time"].dt.tz_localize(None) - bars["bar_time_local"]
    assert offset.eq(pd.Timedelta(hours=4)).all()
    assert_bars_are_the_path(bars, path, with_volume=True)
    assert_indicators_match(bars, path, NYSE_1H_BARS_PER_YEAR)
    days = bars["trading_date"].tolist()
    vwap = ref.session_vwap(days, path["high"], path["low"], path["close"], path["volume"])
    assert_close(bars["vwap_session"], vwap, max(path["close"]), "vwap_session")
    assert bars["exchange_timezone"].unique().tolist() == ["America/New_York"]
    assert bars["mic_code"].unique().tolist() == ["XNGS"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(max_bars=700), gap_seed=st.integers(0, 2**32 - 1))
def test_daily_crypto_payload_52_weeks_and_annualisation(path: PricePath, gap_seed: int) -> None:
    gaps = np.random.default_rng(gap_seed).integers(1, 5, len(path["close"]))
    times = [datetime(2024, 1, 1) + timedelta(days=int(d)) for d in np.cumsum(gaps) - gaps[0]]
    values = api_values([t.strftime("%Y-%m-%d") for t in times], path, with_volume=False)
    raw = payload("BTC/USD", CRYPTO_META, values, fetched_at=NOW, interval="1day")
    bars = transform_series(raw, now=NOW).bars
    assert_52_week_match(bars, times, path)
    # Daily crypto bars annualise with 365 bars a year.
    assert_close(bars["volatility_20"], ref.volatility(path["close"], 365), 1e-9, "volatility")


def test_instrument_attributes_are_joined_in() -> None:
    times = stock_session_times(datetime(2026, 8, 3), 1)
    raw = payload(
        "AAPL",
        STOCK_META,
        [bar(t, 100 + i, volume=1000 + i) for i, t in enumerate(times)],
        fetched_at=NOW,
        instrument={"name": "Apple Inc", "country": "United States", "mic_code": "XNAS"},
    )
    first = transform_series(raw, now=NOW).bars.iloc[0]
    assert first["instrument_name"] == "Apple Inc"
    assert first["country"] == "United States"
    assert first["mic_code"] == "XNAS"  # the instrument wins over the meta (XNGS)
    assert first["exchange"] == "NASDAQ"  # from the meta
    assert first["currency_base"] is None
    assert first["bar_time"] == pd.Timestamp("2026-08-03 13:30", tz="UTC")  # EDT = UTC-4


def test_newest_bar_is_incomplete_until_it_ends() -> None:
    # 60 hourly bars from 08-01 00:00: the last opens 08-03 11:00; fetched at 11:30.
    times = hourly_times(datetime(2026, 8, 1), 60)
    values = [bar(t, 70000 + i) for i, t in enumerate(times)]
    fetched = datetime(2026, 8, 3, 11, 30, tzinfo=UTC)
    bars = transform_series(payload("BTC/USD", CRYPTO_META, values, fetched_at=fetched), now=NOW)
    assert bars.bars["is_complete"].tolist() == [True] * 59 + [False]
    ended = datetime(2026, 8, 3, 12, tzinfo=UTC)
    done = transform_series(payload("BTC/USD", CRYPTO_META, values, fetched_at=ended), now=NOW)
    assert done.bars["is_complete"].all()


def test_last_stock_bar_of_the_day_ends_at_the_close() -> None:
    values = [bar("2026-08-20 14:30:00", 100, volume=5), bar("2026-08-20 15:30:00", 101, volume=5)]
    # The 15:30 bar ends at 16:00 EDT = 20:00Z, not 16:30.
    before = payload(
        "AAPL", STOCK_META, values, fetched_at=datetime(2026, 8, 20, 19, 59, tzinfo=UTC)
    )
    after = payload("AAPL", STOCK_META, values, fetched_at=datetime(2026, 8, 20, 20, 0, tzinfo=UTC))
    assert transform_series(before, now=NOW).bars["is_complete"].tolist() == [True, False]
    assert transform_series(after, now=NOW).bars["is_complete"].tolist() == [True, True]
