"""flatten.py: one payload's JSON -> typed rows with their findings, or the payload's rejection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from marketpipe.contract import RawPayload
from services.transformer.flatten import FlatSeries, PayloadRejection, flatten
from tests.unit.transformer.payloads import CRYPTO_META, FOREX_META, STOCK_META, bar, payload

NOW = datetime(2027, 1, 1, tzinfo=UTC)
GOOD = bar("2026-08-20 10:30:00", 100, volume=10)


def flat_of(values: list[Any], meta: dict[str, Any] = STOCK_META, **kwargs: Any) -> FlatSeries:
    flat = flatten(payload("AAPL", meta, values, fetched_at=NOW, newest_first=False, **kwargs))
    assert isinstance(flat, FlatSeries)
    return flat


def rejection_of(body: Any, symbol: str = "AAPL") -> PayloadRejection:
    raw = RawPayload.build(source="demo", symbol=symbol, interval="1h", body=body)
    rejection = flatten(raw)
    assert isinstance(rejection, PayloadRejection)
    assert json.loads(rejection.raw) == body  # kept as it came, nothing lost
    return rejection


def test_rows_are_typed_in_the_api_order() -> None:
    values = [bar("2026-08-20 10:30:00", 101, volume=7), bar("2026-08-20 09:30:00", 100)]
    flat = flat_of(values)
    rows = flat.rows
    assert rows.index.tolist() == [0, 1]  # the position in the API's list
    assert rows["datetime_text"].tolist() == ["2026-08-20 10:30:00", "2026-08-20 09:30:00"]
    assert rows["local"].tolist() == [datetime(2026, 8, 20, 10, 30), datetime(2026, 8, 20, 9, 30)]
    assert rows["close"].tolist() == [101.0, 100.0]
    assert rows["volume"].iloc[0] == 7.0
    assert np.isnan(rows["volume"].iloc[1])  # missing volume: NULL, not 0, not an error
    assert rows["issue"].isna().all()
    assert flat.raw_values == values


@pytest.mark.parametrize(
    ("change", "issue"),
    [
        ({"close": "abc"}, "non_numeric: close"),
        ({"open": "NaN"}, "non_numeric: open"),
        ({"high": "inf"}, "non_numeric: high"),
        ({"volume": "lots"}, "non_numeric: volume"),
        ({"close": True}, "non_numeric: close"),
        ({"low": ""}, "missing_value: low"),
        ({"low": None}, "missing_value: low"),
        ({"datetime": "yesterday"}, "bad_datetime"),
        ({"datetime": None}, "bad_datetime"),
        ({"datetime": 20260820}, "bad_datetime"),
        # The first finding wins: the datetime is checked before the numbers.
        ({"datetime": "?", "close": "abc"}, "bad_datetime"),
        ({"open": "x", "close": "y"}, "non_numeric: open"),
    ],
)
def test_row_findings(change: dict[str, Any], issue: str) -> None:
    rows = flat_of([GOOD, {**GOOD, **change}]).rows
    assert rows["issue"].tolist() == [None, issue]


def test_missing_field_and_malformed_row() -> None:
    without_high = {k: v for k, v in GOOD.items() if k != "high"}
    rows = flat_of([without_high, ["not", "an", "object"], GOOD]).rows
    assert rows["issue"].tolist() == ["missing_value: high", "malformed_row: not an object", None]


def test_json_numbers_and_padded_text_parse() -> None:
    rows = flat_of([{**GOOD, "close": 100, "open": " 100.0 ", "volume": 12.5}]).rows
    assert rows["issue"].tolist() == [None]
    assert (rows["open"].iloc[0], rows["close"].iloc[0], rows["volume"].iloc[0]) == (
        100.0,
        100.0,
        12.5,
    )


@pytest.mark.parametrize(
    ("meta", "asset_class"),
    [
        (STOCK_META, "stock"),
        (CRYPTO_META, "crypto"),
        (FOREX_META, "forex"),
        ({**CRYPTO_META, "type": None}, "crypto"),  # a base/quote pair with an exchange
        ({**FOREX_META, "type": None}, "forex"),  # the same without: forex
    ],
)
def test_asset_class_from_the_meta(meta: dict[str, Any], asset_class: str) -> None:
    assert flat_of([GOOD], meta).attributes["asset_class"] == asset_class


def test_attributes_instrument_wins_over_meta() -> None:
    flat = flat_of([GOOD], instrument={"name": "Apple Inc", "exchange": "  ", "mic_code": "XNAS"})
    attributes = flat.attributes
    assert attributes["instrument_name"] == "Apple Inc"
    assert attributes["mic_code"] == "XNAS"
    assert attributes["exchange"] == "NASDAQ"  # blank in the instrument: the meta's
    assert attributes["exchange_timezone"] == "America/New_York"
    assert attributes["country"] is None
    assert flat.exchange_timezone == "America/New_York"


def test_crypto_prices_are_in_the_quote_currency() -> None:
    raw = payload("BTC/EUR", CRYPTO_META, [GOOD], fetched_at=NOW)
    flat = flatten(raw)
    assert isinstance(flat, FlatSeries)
    assert flat.attributes["currency"] == "EUR"
    assert flat.attributes["currency_base"] == "Bitcoin"


def test_requested_order_and_fetched_at() -> None:
    body = {"meta": STOCK_META, "values": [GOOD], "status": "ok"}
    raw = RawPayload.build(
        source="demo",
        symbol="AAPL",
        interval="1h",
        body=body,
        request={"ORDER": "ASC"},
        fetched_at=datetime(2026, 8, 20, 15),  # naive: read as UTC
    )
    flat = flatten(raw)
    assert isinstance(flat, FlatSeries)
    assert flat.requested_order == "asc"
    assert flat.fetched_at.isoformat() == "2026-08-20T15:00:00+00:00"
    no_order = flatten(raw.model_copy(update={"request": {"order": "sideways"}}))
    assert isinstance(no_order, FlatSeries)
    assert no_order.requested_order is None


@pytest.mark.parametrize(
    ("body", "reason_start"),
    [
        ({"code": 429, "message": "out of credits", "status": "error"}, "error_body: code 429"),
        ({"code": 400, "message": "bad", "status": "error", "meta": {}}, "error_body"),
        ([1, 2, 3], "unknown_shape: body is list"),
        ("<html>502</html>", "unknown_shape: body is str"),
        ({"values": [], "status": "ok"}, "unknown_shape: meta"),
        ({"meta": STOCK_META, "values": {"a": 1}, "status": "ok"}, "unknown_shape: values"),
        (
            {"meta": {**STOCK_META, "interval": "1day"}, "values": []},
            "unknown_shape: meta interval",
        ),
        ({"meta": {**STOCK_META, "symbol": "MSFT"}, "values": []}, "unknown_shape: meta symbol"),
        ({"meta": {"symbol": "AAPL", "interval": "1h"}, "values": [GOOD]}, "unknown_meta_shape"),
        (
            {"meta": {**STOCK_META, "exchange_timezone": "Mars/Olympus"}, "values": [GOOD]},
            "unknown_meta_shape: unknown exchange_timezone",
        ),
        # A batch answer keyed by symbol: the fetcher splits those; one that slips through is
        # recorded, not guessed at.
        ({"AAPL": {"meta": STOCK_META, "values": [GOOD]}}, "unknown_shape: meta"),
    ],
)
def test_whole_payload_rejections(body: Any, reason_start: str) -> None:
    assert rejection_of(body).reason.startswith(reason_start)


def test_error_message_is_kept_short() -> None:
    rejection = rejection_of({"code": 500, "message": "x" * 1000, "status": "error"})
    assert len(rejection.reason) < 330


@pytest.mark.parametrize("symbol", ["aapl", "AAPL;DROP TABLE", " AAPL"])
def test_non_canonical_symbol_is_rejected(symbol: str) -> None:
    body = {"meta": {**STOCK_META, "symbol": symbol}, "values": [GOOD], "status": "ok"}
    assert rejection_of(body, symbol=symbol).reason.startswith("invalid_symbol")


def test_empty_values_flatten_to_no_rows() -> None:
    flat = flat_of([])
    assert flat.rows.empty
    assert list(flat.rows.columns) == [
        "datetime_text",
        "local",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "issue",
    ]
