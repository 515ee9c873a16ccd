"""The entry point's contract: columns, order, dtypes, attributes and basic values."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from marketpipe.contract import DAILY_COLUMNS, OLAP_COLUMNS, QUARANTINE_COLUMNS, column_names
from services.transformer.transform import TransformResult, transform_payloads
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)

NOW = datetime(2026, 9, 1, tzinfo=UTC)


def _batch() -> TransformResult:
    stock_times = stock_session_times(datetime(2026, 8, 3), 5)
    stock = payload(
        "AAPL",
        STOCK_META,
        [bar(t, 100 + i, volume=1000 + i) for i, t in enumerate(stock_times)],
        fetched_at=datetime(2026, 8, 10, tzinfo=UTC),
        instrument={"name": "Apple Inc", "country": "United States"},
    )
    crypto_times = hourly_times(datetime(2026, 8, 1), 60)
    crypto = payload(
        "BTC/USD",
        CRYPTO_META,
        [bar(t, 70000 + i) for i, t in enumerate(crypto_times)],
        fetched_at=datetime(2026, 8, 3, 11, 30, tzinfo=UTC),
    )
    return transform_payloads([stock, crypto], now=NOW)


def test_columns_are_the_contract_in_order() -> None:
    result = _batch()
    assert list(result.bars.columns) == column_names(OLAP_COLUMNS)
    assert list(result.daily.columns) == column_names(DAILY_COLUMNS)
    assert list(result.quarantine.columns) == column_names(QUARANTINE_COLUMNS)


def test_dtypes() -> None:
    bars = _batch().bars
    assert str(bars["bar_time"].dtype) == "datetime64[us, UTC]"
    assert str(bars["transformed_at"].dtype) == "datetime64[us, UTC]"
    assert str(bars["bar_time_local"].dtype) == "datetime64[us]"
    assert str(bars["trading_date"].dtype) == "datetime64[us]"
    assert bars["is_complete"].dtype == bool
    for name, sql in OLAP_COLUMNS:
        if sql == "double precision":
            assert bars[name].dtype == np.float64, name
        if sql == "text":
            assert bars[name].dtype == object, name


def test_stock_attributes_and_utc_times() -> None:
    bars = _batch().bars
    aapl = bars[bars["symbol"] == "AAPL"]
    first = aapl.iloc[0]
    assert first["bar_time"] == pd.Timestamp("2026-08-03 13:30", tz="UTC")  # EDT = UTC-4
    assert first["bar_time_local"] == pd.Timestamp("2026-08-03 09:30")
    assert first["instrument_name"] == "Apple Inc"
    assert first["country"] == "United States"
    assert first["mic_code"] == "XNGS"
    assert first["asset_class"] == "stock"
    assert first["currency_base"] is None
    assert aapl["volume"].iloc[1] == 1001.0


def test_crypto_has_no_volume_and_utc_times() -> None:
    bars = _batch().bars
    btc = bars[bars["symbol"] == "BTC/USD"]
    assert btc["asset_class"].iloc[0] == "crypto"
    assert btc["volume"].isna().all()
    assert btc["vwap_session"].isna().all()
    assert btc["currency_base"].iloc[0] == "Bitcoin"
    assert (btc["bar_time"].dt.tz_localize(None) == btc["bar_time_local"]).all()
    assert btc["exchange_timezone"].iloc[0] is None


def test_change_and_sma_values() -> None:
    bars = _batch().bars
    btc = bars[bars["symbol"] == "BTC/USD"].reset_index(drop=True)
    assert np.isnan(btc.loc[0, "previous_close"])
    assert btc.loc[1, "change"] == 1.0
    assert btc.loc[1, "pct_change"] == 100.0 / 70000
    assert btc["sma_20"].iloc[:19].isna().all()
    assert btc.loc[19, "sma_20"] == np.mean(70000 + np.arange(20))
    assert btc.loc[49, "sma_50"] == np.mean(70000 + np.arange(50))
    assert btc["sma_200"].isna().all()


def test_newest_bar_is_incomplete() -> None:
    bars = _batch().bars
    btc = bars[bars["symbol"] == "BTC/USD"]
    # 60 hourly bars from 08-01 00:00: the last opens 08-03 11:00, fetched at 11:30.
    assert not btc["is_complete"].iloc[-1]
    assert btc["is_complete"].iloc[:-1].all()
    assert bars[bars["symbol"] == "AAPL"]["is_complete"].all()
