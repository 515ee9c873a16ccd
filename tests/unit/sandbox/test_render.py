from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from services.sandbox.market import get_instrument, model_bars, round_prices
from services.sandbox.render import (
    bar_rows,
    csv_text,
    field_names,
    format_prices,
    price_formatter,
    rows_to_json_objects,
    time_series_json,
    time_series_meta,
)


def instrument(symbol: str):  # type: ignore[no-untyped-def]
    found = get_instrument(symbol)
    assert found is not None
    return found


def test_ragged_default_decimals_match_the_real_api() -> None:
    apple, bitcoin = instrument("AAPL"), instrument("BTC/USD")
    stock_prices = round_prices(apple, np.array([235.03, 237.0, 317.46]))
    crypto_prices = round_prices(bitcoin, np.array([73027.02, 79500.0]))
    assert format_prices(stock_prices, price_formatter(apple, None)) == [
        "235.029999",
        "237",
        "317.459991",
    ]
    assert format_prices(crypto_prices, price_formatter(bitcoin, None)) == ["73027.02", "79500"]
    assert format_prices(stock_prices, price_formatter(apple, 5)) == [
        "235.03000",
        "237.00000",
        "317.45999",
    ]
    assert format_prices(stock_prices, price_formatter(apple, 0)) == ["235", "237", "317"]


def test_meta_key_order_per_asset_class() -> None:
    assert list(time_series_meta(instrument("AAPL"), "1h")) == [
        "symbol", "interval", "currency", "exchange_timezone", "exchange", "mic_code", "type",
    ]  # fmt: skip
    assert list(time_series_meta(instrument("BTC/USD"), "1h")) == [
        "symbol", "interval", "currency_base", "currency_quote", "exchange", "type",
    ]  # fmt: skip
    assert list(time_series_meta(instrument("EUR/USD"), "1h")) == [
        "symbol", "interval", "currency_base", "currency_quote", "type",
    ]  # fmt: skip


def test_json_body_is_compact_ordered_and_string_typed() -> None:
    bars = model_bars("AAPL", "1h", datetime(2026, 3, 10, 19, tzinfo=UTC), outputsize=3)
    names = field_names(bars, with_previous_close=False)
    rows = bar_rows(bars, dp=None, timezone=None)
    text = time_series_json(
        time_series_meta(bars.instrument, "1h"), rows_to_json_objects(names, rows)
    )
    body = json.loads(text)
    assert list(body) == ["meta", "values", "status"]
    assert list(body["values"][0]) == ["datetime", "open", "high", "low", "close", "volume"]
    assert all(isinstance(v, str) for row in body["values"] for v in row.values())
    assert text == json.dumps(body, separators=(",", ":"))


def test_crypto_rows_have_no_volume_and_previous_close_is_last() -> None:
    bars = model_bars("ETH/USD", "1h", datetime(2026, 3, 10, 19, tzinfo=UTC), outputsize=2)
    previous = bars.close - 1
    names = field_names(bars, with_previous_close=True)
    rows = bar_rows(bars, dp=2, timezone=None, previous_close=previous)
    assert names == ["datetime", "open", "high", "low", "close", "previous_close"]
    assert [len(r) for r in rows] == [6, 6]
    assert rows[0][0] == "2026-03-10 17:00:00"


def test_csv_is_semicolon_delimited_with_header() -> None:
    text = csv_text(["datetime", "close"], [["2026-03-10", "1.5"], ["2026-03-11", "2"]])
    assert text == "datetime;close\n2026-03-10;1.5\n2026-03-11;2\n"
