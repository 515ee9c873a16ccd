from __future__ import annotations

from datetime import timedelta

import requests

from services.sandbox.app import SandboxServer
from services.sandbox.market import model_bars
from tests.integration.sandbox.conftest import API_KEY, MARKET_OPEN_NOW


def get(
    http: requests.Session, sandbox: SandboxServer, path: str, **params: object
) -> requests.Response:
    params.setdefault("apikey", API_KEY)
    return http.get(f"{sandbox.url}/{path}", params=params, timeout=10)


def test_single_symbol_shape_headers_and_values(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    response = get(http, sandbox, "time_series", symbol="AAPL", interval="1h", outputsize=3)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.headers["Api-Credits-Used"] == "1"
    assert response.headers["Api-Credits-Left"] == "9999"
    assert response.headers["Api-Credits-Request"] == "1"
    assert "Is_batch" not in response.headers
    assert response.headers["Date"] == "Tue, 10 Mar 2026 19:47:00 GMT"  # the sandbox clock
    body = response.json()
    assert list(body) == ["meta", "values", "status"]
    assert body["meta"] == {
        "symbol": "AAPL",
        "interval": "1h",
        "currency": "USD",
        "exchange_timezone": "America/New_York",
        "exchange": "NASDAQ",
        "mic_code": "XNGS",
        "type": "Common Stock",
    }
    assert [v["datetime"] for v in body["values"]] == [
        "2026-03-10 15:30:00",
        "2026-03-10 14:30:00",
        "2026-03-10 13:30:00",
    ]
    model = model_bars("AAPL", "1h", MARKET_OPEN_NOW, outputsize=3)
    assert float(body["values"][0]["close"]) == float(f"{model.close[-1]:.6f}")
    assert body["values"][0]["volume"] == str(model.volume[-1])  # type: ignore[index]


def test_answers_are_byte_identical_for_the_same_now(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    first = get(http, sandbox, "time_series", symbol="MSFT,BTC/USD", interval="5min", outputsize=50)
    second = get(
        http, sandbox, "time_series", symbol="MSFT,BTC/USD", interval="5min", outputsize=50
    )
    assert first.content == second.content
    sandbox.clock.advance(120)
    third = get(http, sandbox, "time_series", symbol="MSFT,BTC/USD", interval="5min", outputsize=50)
    assert third.content != first.content


def test_batch_shape_with_an_unknown_symbol(sandbox: SandboxServer, http: requests.Session) -> None:
    response = get(
        http, sandbox, "time_series", symbol="AAPL,btc/usd,XXX", interval="1h", outputsize=2
    )
    assert response.status_code == 200
    assert response.headers["Is_batch"] == "true"
    assert response.headers["Api-Credits-Request"] == "3"
    body = response.json()
    assert list(body) == ["AAPL", "btc/usd", "XXX"]
    assert body["AAPL"]["status"] == "ok" and len(body["AAPL"]["values"]) == 2
    assert body["btc/usd"]["meta"]["symbol"] == "BTC/USD"
    assert "volume" not in body["btc/usd"]["values"][0]
    assert body["XXX"] == {
        "code": 400,
        "message": "**symbol** not found: XXX. Please specify it correctly according to API "
        "Documentation.",
        "status": "error",
    }


def test_forex_meta_and_daily_dates(sandbox: SandboxServer, http: requests.Session) -> None:
    body = get(http, sandbox, "time_series", symbol="EUR/USD", interval="1day", outputsize=3).json()
    assert body["meta"] == {
        "symbol": "EUR/USD",
        "interval": "1day",
        "currency_base": "Euro",
        "currency_quote": "US Dollar",
        "type": "Physical Currency",
    }
    assert [v["datetime"] for v in body["values"]] == ["2026-03-10", "2026-03-09", "2026-03-06"]


def test_parameters_timezone_order_dp_previous_close(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    body = get(
        http, sandbox, "time_series", symbol="AAPL", interval="1h", outputsize=3,
        timezone="UTC", order="ASC", dp=2, previous_close="true",
    ).json()  # fmt: skip
    values = body["values"]
    assert [v["datetime"] for v in values] == [
        "2026-03-10 17:30:00",
        "2026-03-10 18:30:00",
        "2026-03-10 19:30:00",
    ]
    assert list(values[0]) == [
        "datetime",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "previous_close",
    ]
    assert all(len(v["close"].split(".")[1]) == 2 for v in values)
    assert values[1]["previous_close"] == values[0]["close"]
    earlier = get(http, sandbox, "time_series", symbol="AAPL", interval="1h", outputsize=4,
                  timezone="UTC", order="asc", dp=2).json()["values"]  # fmt: skip
    assert values[0]["previous_close"] == earlier[0]["close"]
    tokyo = get(http, sandbox, "time_series", symbol="AAPL", interval="1h", outputsize=1,
                timezone="Asia/Tokyo").json()  # fmt: skip
    assert tokyo["values"][0]["datetime"] == "2026-03-11 04:30:00"


def test_date_window_and_empty_window(sandbox: SandboxServer, http: requests.Session) -> None:
    body = get(http, sandbox, "time_series", symbol="AAPL", interval="1h",
               start_date="2026-03-09 10:30:00", end_date="2026-03-09 13:30:00").json()  # fmt: skip
    assert [v["datetime"] for v in body["values"]] == [
        "2026-03-09 12:30:00",
        "2026-03-09 11:30:00",
        "2026-03-09 10:30:00",
    ]
    empty = get(http, sandbox, "time_series", symbol="AAPL", interval="1h",
                start_date="2026-03-07", end_date="2026-03-08")  # fmt: skip
    assert empty.status_code == 400
    error = empty.json()
    assert error["code"] == 400 and error["status"] == "error"
    assert error["message"] == (
        "No data is available on the specified dates. Try setting different start/end dates."
    )


def test_csv_format(sandbox: SandboxServer, http: requests.Session) -> None:
    response = get(
        http, sandbox, "time_series", symbol="AAPL", interval="1day", outputsize=2, format="CSV"
    )
    assert response.headers["Content-Type"] == "text/csv"
    lines = response.text.strip().split("\n")
    assert lines[0] == "datetime;open;high;low;close;volume"
    assert lines[1].startswith("2026-03-10;")
    assert len(lines) == 3


def test_five_thousand_bars(sandbox: SandboxServer, http: requests.Session) -> None:
    body = get(
        http, sandbox, "time_series", symbol="SYN0042", interval="1min", outputsize=5000
    ).json()
    assert len(body["values"]) == 5000
    assert len({v["datetime"] for v in body["values"]}) == 5000


def test_bad_parameters(sandbox: SandboxServer, http: requests.Session) -> None:
    no_interval = get(http, sandbox, "time_series", symbol="AAPL")
    assert no_interval.status_code == 400
    assert no_interval.json()["message"].startswith("**interval** parameter is missing or invalid")
    no_symbol = get(http, sandbox, "time_series", interval="1h")
    assert no_symbol.status_code == 400
    assert no_symbol.json()["message"].startswith("**symbol** or **figi** parameter")
    too_many = get(http, sandbox, "time_series", interval="1h",
                   symbol=",".join(f"SYN{i:04d}" for i in range(1, 122)))  # fmt: skip
    assert too_many.status_code == 414
    assert (
        get(http, sandbox, "time_series", symbol="AAPL", interval="1h", outputsize=0).status_code
        == 400
    )


def test_unknown_path_is_a_json_404(sandbox: SandboxServer, http: requests.Session) -> None:
    response = get(http, sandbox, "does_not_exist")
    assert response.status_code == 404
    assert response.json()["code"] == 404 and response.json()["status"] == "error"


def test_auth_query_header_demo_and_failures(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    url = f"{sandbox.url}/time_series"
    params = {"symbol": "AAPL", "interval": "1h"}
    assert http.get(url, params=params, timeout=10).status_code == 401
    wrong = http.get(url, params={**params, "apikey": "nope"}, timeout=10)
    assert wrong.status_code == 401
    assert wrong.json()["message"].startswith("**apikey** parameter is incorrect")
    assert "Api-Credits-Used" in wrong.headers
    header = http.get(
        url, params=params, headers={"Authorization": f"apikey {API_KEY}"}, timeout=10
    )
    assert header.status_code == 200
    assert http.get(url, params={**params, "apikey": "demo"}, timeout=10).status_code == 200
    demo_other = http.get(
        url, params={"symbol": "MSFT", "interval": "1h", "apikey": "demo"}, timeout=10
    )
    assert demo_other.status_code == 401


def test_legacy_transport_answers_errors_with_http_200(
    start_sandbox, http: requests.Session
) -> None:  # type: ignore[no-untyped-def]
    sandbox = start_sandbox(error_transport="legacy")
    params = {"symbol": "AAPL", "interval": "1h", "apikey": "wrong"}
    response = http.get(f"{sandbox.url}/time_series", params=params, timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "error" and response.json()["code"] == 401
    sandbox.set_error_transport("modern")
    again = http.get(f"{sandbox.url}/time_series", params=params, timeout=10)
    assert again.status_code == 401


def test_incomplete_bar_changes_as_the_clock_moves(
    sandbox: SandboxServer, http: requests.Session
) -> None:
    def newest() -> dict[str, str]:
        return get(http, sandbox, "time_series", symbol="NVDA", interval="1h", outputsize=1).json()[
            "values"
        ][0]

    first = newest()
    sandbox.clock.advance(300)
    second = newest()
    assert first["datetime"] == second["datetime"] == "2026-03-10 15:30:00"
    assert first["close"] != second["close"]
    assert int(second["volume"]) > int(first["volume"])
    sandbox.clock.advance(timedelta(hours=1).total_seconds())
    final = newest()
    sandbox.clock.advance(timedelta(days=1).total_seconds())
    next_day = get(
        http, sandbox, "time_series", symbol="NVDA", interval="1h", outputsize=20
    ).json()["values"]
    assert final in next_day
