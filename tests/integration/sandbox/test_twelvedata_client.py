"""The official twelvedata client (1.4.0) pointed at the sandbox behaves as against the real API."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
import requests
from twelvedata import TDClient
from twelvedata.exceptions import (
    BadRequestError,
    InternalServerError,
    InvalidApiKeyError,
    TwelveDataError,
)

from services.sandbox.app import SandboxServer
from tests.integration.sandbox.conftest import API_KEY

Start = Callable[..., SandboxServer]


def client(sandbox: SandboxServer, key: str = API_KEY) -> TDClient:
    return TDClient(key, base_url=sandbox.url)


def test_as_json_single_symbol(sandbox: SandboxServer) -> None:
    values = client(sandbox).time_series(symbol="AAPL", interval="1h").as_json()
    assert isinstance(values, tuple) and len(values) == 30  # the client's default outputsize
    assert values[0]["datetime"] == "2026-03-10 15:30:00"
    assert values[0]["open"].count(".") == 1 and len(values[0]["open"].split(".")[1]) == 5
    assert list(values[0]) == ["datetime", "open", "high", "low", "close", "volume"]


def test_as_pandas_single_symbol(sandbox: SandboxServer) -> None:
    frame = (
        client(sandbox).time_series(symbol="BTC/USD", interval="15min", outputsize=8).as_pandas()
    )
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index[0] == pd.Timestamp("2026-03-10 19:45:00")
    assert list(frame.columns) == ["open", "high", "low", "close"]
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in frame.columns)
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()


def test_batch_as_json_and_as_pandas(sandbox: SandboxServer) -> None:
    td = client(sandbox)
    batch = td.time_series(symbol="AAPL,MSFT,ETH/USD", interval="1h", outputsize=3).as_json()
    assert set(batch) == {"AAPL", "MSFT", "ETH/USD"}
    assert len(batch["MSFT"]) == 3 and "volume" not in batch["ETH/USD"][0]
    frame = td.time_series(symbol="AAPL,MSFT", interval="1h", outputsize=3).as_pandas()
    assert isinstance(frame.index, pd.MultiIndex)
    assert len(frame) == 6 and set(frame.index.get_level_values(0)) == {"AAPL", "MSFT"}


def test_batch_with_a_bad_symbol(sandbox: SandboxServer) -> None:
    td = client(sandbox)
    kept = td.time_series(symbol="AAPL,NOPE", interval="1h", outputsize=2).as_json()
    assert list(kept) == ["AAPL"]  # the client drops symbols whose status is error
    with pytest.raises(BadRequestError, match="NOPE"):
        td.time_series(symbol="AAPL,NOPE", interval="1h", outputsize=2).as_pandas()


def test_csv(sandbox: SandboxServer) -> None:
    rows = client(sandbox).time_series(symbol="AAPL", interval="1day", outputsize=2).as_csv()
    assert list(rows[0]) == ["datetime", "open", "high", "low", "close", "volume"]
    assert rows[1][0] == "2026-03-10" and len(rows) == 3


@pytest.mark.parametrize("transport", ["modern", "legacy"])
def test_error_classes(start_sandbox: Start, transport: str) -> None:
    sandbox = start_sandbox(error_transport=transport, credits_per_minute=3)
    with pytest.raises(InvalidApiKeyError):
        client(sandbox, "wrong-key").time_series(symbol="AAPL", interval="1h").as_json()
    td = client(sandbox)
    with pytest.raises(BadRequestError, match=r"\*\*symbol\*\* not found: NOPE"):
        td.time_series(symbol="NOPE", interval="1h").as_json()
    with pytest.raises(BadRequestError, match="interval"):
        td.time_series(symbol="AAPL", interval="3h").as_json()
    sandbox.faults.script("server_error")
    with pytest.raises(InternalServerError):
        td.time_series(symbol="AAPL", interval="1h").as_json()
    sandbox.faults.script("bad_gateway")
    with pytest.raises(InternalServerError, match="502 Bad Gateway"):
        td.time_series(symbol="AAPL", interval="1h").as_json()
    td.time_series(symbol="AAPL", interval="1h").as_json()  # third credit of this minute
    with pytest.raises(TwelveDataError, match="run out of API credits") as out_of_credits:
        td.time_series(symbol="AAPL", interval="1h").as_json()
    assert type(out_of_credits.value) is TwelveDataError
    sandbox.clock.advance(60)
    with pytest.raises(TwelveDataError, match="run out of API credits"):
        td.time_series(symbol="AAPL,MSFT,NVDA,JPM", interval="1h").as_json()  # batch over budget


def test_not_found_in_the_2026_wording_is_a_plain_twelvedata_error(start_sandbox: Start) -> None:
    sandbox = start_sandbox(symbol_error_style="invalid_404")
    with pytest.raises(TwelveDataError, match="parameter is missing or invalid") as raised:
        client(sandbox).time_series(symbol="NOPE", interval="1h").as_json()
    assert type(raised.value) is TwelveDataError


def test_malformed_json_reaches_the_client_as_a_decode_error(sandbox: SandboxServer) -> None:
    sandbox.faults.script("malformed_json")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        client(sandbox).time_series(symbol="AAPL", interval="1h").as_json()


def test_demo_key_works_for_aapl_only(sandbox: SandboxServer) -> None:
    td = client(sandbox, "demo")
    assert len(td.time_series(symbol="AAPL", interval="1day", outputsize=5).as_json()) == 5
    with pytest.raises(InvalidApiKeyError):
        td.time_series(symbol="MSFT", interval="1day").as_json()


def test_reference_endpoints_through_the_client(sandbox: SandboxServer) -> None:
    td = client(sandbox)
    usage = td.api_usage().as_json()
    assert usage["plan_category"] == "enterprise" and usage["current_usage"] == 1
    stocks = td.get_stocks_list(symbol="AAPL").as_json()
    assert stocks == [
        {
            "symbol": "AAPL",
            "name": "Apple Inc",
            "currency": "USD",
            "exchange": "NASDAQ",
            "mic_code": "XNGS",
            "country": "United States",
            "type": "Common Stock",
            "figi_code": "BBG000B9Y5X2",
            "isin": "US0378331005",
            "cusip": "037833100",
        }
    ]
    quote = td.quote(symbol="AAPL").as_json()
    assert quote["symbol"] == "AAPL" and quote["is_market_open"] is True
