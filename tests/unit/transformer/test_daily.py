"""daily.py: one aggregate per trading day of the series, against the loop reference."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
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
from tests.unit.transformer.strategies import PricePath, api_values, assert_close, price_paths

NOW = datetime(2031, 1, 1, tzinfo=UTC)


def test_stock_days_are_sessions() -> None:
    values = [
        bar("2026-08-20 09:30:00", 10, volume=100, spread=1),
        bar("2026-08-20 10:30:00", 12, volume=300, spread=2),
        bar("2026-08-21 09:30:00", 11, volume=200, spread=1),
    ]
    raw = payload("AAPL", STOCK_META, values, fetched_at=NOW)
    daily = transform_series(raw, now=NOW).daily
    assert daily["trading_date"].tolist() == [
        pd.Timestamp("2026-08-20"),
        pd.Timestamp("2026-08-21"),
    ]
    first = daily.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 14.0, 9.0, 12.0)
    assert first["volume"] == 400.0
    assert first["vwap"] == pytest.approx((10 * 100 + 12 * 300) / 400)
    assert first["range"] == 5.0
    assert first["bar_count"] == 2
    assert pd.isna(first["change"])
    assert daily.iloc[1]["change"] == -1.0
    assert daily.iloc[1]["pct_change"] == pytest.approx(-100 / 12)
    assert daily["symbol"].tolist() == ["AAPL", "AAPL"]
    assert daily["asset_class"].tolist() == ["stock", "stock"]
    assert daily["payload_id"].tolist() == [raw.payload_id] * 2
    assert daily["is_complete"].all()


def test_crypto_days_are_utc_days_without_volume() -> None:
    times = ["2026-08-20 22:00:00", "2026-08-20 23:00:00", "2026-08-21 00:00:00"]
    crypto = payload("BTC/USD", CRYPTO_META, [bar(t, 5) for t in times], fetched_at=NOW)
    daily = transform_series(crypto, now=NOW).daily
    assert daily["bar_count"].tolist() == [2, 1]
    assert daily["volume"].isna().all()
    assert daily["vwap"].isna().all()


def test_a_day_with_a_bar_without_volume_has_no_volume() -> None:
    values = [bar("2026-08-20 09:30:00", 10, volume=100), bar("2026-08-20 10:30:00", 11)]
    daily = transform_series(payload("AAPL", STOCK_META, values, fetched_at=NOW), now=NOW).daily
    assert daily["volume"].isna().all() and daily["vwap"].isna().all()


def test_a_day_without_trades_has_no_vwap() -> None:
    values = [bar("2026-08-20 09:30:00", 10, volume=0), bar("2026-08-20 10:30:00", 11, volume=0)]
    daily = transform_series(payload("AAPL", STOCK_META, values, fetched_at=NOW), now=NOW).daily
    assert daily["volume"].tolist() == [0.0]
    assert daily["vwap"].isna().all()


def test_an_incomplete_bar_makes_its_day_incomplete() -> None:
    times = hourly_times(datetime(2026, 8, 20, 20), 6)  # to 01:00 on the 21st
    fetched = datetime(2026, 8, 21, 1, 30, tzinfo=UTC)
    raw = payload("BTC/USD", CRYPTO_META, [bar(t, 5) for t in times], fetched_at=fetched)
    assert transform_series(raw, now=NOW).daily["is_complete"].tolist() == [True, False]


@pytest.mark.parametrize("interval", ["1week", "1month"])
def test_weekly_and_monthly_bars_never_feed_days(interval: str) -> None:
    dates = ["2026-06-01", "2026-07-01", "2026-08-03"]
    raw = payload(
        "BTC/USD", CRYPTO_META, [bar(d, 5) for d in dates], fetched_at=NOW, interval=interval
    )
    result = transform_series(raw, now=NOW)
    assert len(result.bars) == 3
    assert result.daily.empty


def test_daily_bars_make_one_day_each() -> None:
    dates = ["2026-08-19", "2026-08-20", "2026-08-21"]
    values = [bar(d, 10 + i, volume=5) for i, d in enumerate(dates)]
    raw = payload("AAPL", STOCK_META, values, fetched_at=NOW, interval="1day")
    daily = transform_series(raw, now=NOW).daily
    assert daily["bar_count"].tolist() == [1, 1, 1]
    assert daily["change"].tolist()[1:] == [1.0, 1.0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=price_paths(max_bars=150), with_volume=st.booleans())
def test_days_match_the_reference(path: PricePath, with_volume: bool) -> None:
    count = len(path["close"])
    times = stock_session_times(datetime(2026, 4, 6), count // 7 + 1)[:count]
    raw = payload(
        "MSFT", STOCK_META, api_values(times, path, with_volume=with_volume), fetched_at=NOW
    )
    result = transform_series(raw, now=NOW)
    volume = path["volume"] if with_volume else [float("nan")] * count
    days = [t[:10] for t in times]
    expected = ref.daily(days, path["open"], path["high"], path["low"], path["close"], volume)
    daily = result.daily
    assert daily["trading_date"].tolist() == [pd.Timestamp(d) for d in dict.fromkeys(days)]
    level = max(path["close"])
    for column in ("open", "high", "low", "close", "range", "change", "volume", "vwap"):
        assert_close(daily[column], [row[column] for row in expected], level, column)
    assert_close(daily["pct_change"], [row["pct_change"] for row in expected], 1e-4, "pct")
    assert daily["bar_count"].tolist() == [row["bar_count"] for row in expected]
