from __future__ import annotations

import requests

from services.sandbox.app import SandboxServer
from tests.integration.sandbox.conftest import API_KEY


def get(
    http: requests.Session, sandbox: SandboxServer, path: str, **params: object
) -> requests.Response:
    return http.get(f"{sandbox.url}/{path}", params={"apikey": API_KEY, **params}, timeout=10)


def test_stocks_exact_text(sandbox: SandboxServer, http: requests.Session) -> None:
    response = get(http, sandbox, "stocks", symbol="AAPL")
    assert response.text == (
        '{"count":1,"data":[{"symbol":"AAPL","name":"Apple Inc","currency":"USD",'
        '"exchange":"NASDAQ","mic_code":"XNGS","country":"United States","type":"Common Stock",'
        '"figi_code":"BBG000B9Y5X2","isin":"US0378331005","cusip":"037833100"}],"status":"ok"}'
    )
    assert response.headers["Api-Credits-Request"] == "1"
    everything = get(http, sandbox, "stocks").json()
    assert everything["count"] == 5008


def test_cryptocurrencies_and_forex_pairs(sandbox: SandboxServer, http: requests.Session) -> None:
    assert get(http, sandbox, "cryptocurrencies", symbol="BTC/USD").text == (
        '{"data":[{"symbol":"BTC/USD","available_exchanges":["Binance","Coinbase Pro"],'
        '"currency_base":"Bitcoin","currency_quote":"US Dollar"}],"status":"ok"}'
    )
    pairs = get(http, sandbox, "forex_pairs").json()["data"]
    assert {p["symbol"] for p in pairs} == {"EUR/USD", "GBP/USD", "USD/JPY"}


def test_quote_shape(sandbox: SandboxServer, http: requests.Session) -> None:
    quote = get(http, sandbox, "quote", symbol="AAPL").json()
    assert list(quote)[:8] == [
        "symbol", "name", "exchange", "mic_code", "currency", "datetime", "timestamp",
        "last_quote_at",
    ]  # fmt: skip
    assert isinstance(quote["timestamp"], int) and isinstance(quote["last_quote_at"], int)
    assert isinstance(quote["is_market_open"], bool) and quote["is_market_open"]
    assert isinstance(quote["close"], str) and isinstance(quote["volume"], str)
    assert set(quote["fifty_two_week"]) == {
        "low", "high", "low_change", "high_change", "low_change_percent",
        "high_change_percent", "range",
    }  # fmt: skip
    daily = get(http, sandbox, "time_series", symbol="AAPL", interval="1day", outputsize=2, dp=5)
    values = daily.json()["values"]
    assert quote["close"] == values[0]["close"] and quote["previous_close"] == values[1]["close"]
    batch = get(http, sandbox, "quote", symbol="AAPL,BTC/USD")
    assert batch.headers["Is_batch"] == "true"
    assert batch.json()["BTC/USD"]["is_market_open"] is True
    assert "volume" not in batch.json()["BTC/USD"]


def test_technical_indicators_needs_no_key(sandbox: SandboxServer, http: requests.Session) -> None:
    response = http.get(f"{sandbox.url}/technical_indicators", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and isinstance(body["data"], dict)


def test_api_usage(sandbox: SandboxServer, http: requests.Session) -> None:
    get(http, sandbox, "time_series", symbol="AAPL,MSFT", interval="1h")
    usage = get(http, sandbox, "api_usage").json()
    assert list(usage) == ["timestamp", "current_usage", "plan_limit", "plan_category"]
    assert usage["current_usage"] == 3 and usage["timestamp"] == "2026-03-10 19:47:00"
