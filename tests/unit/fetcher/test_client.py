"""What an API answer means: data, or the error of its meaning, in either transport."""

from __future__ import annotations

import pytest

from services.fetcher.client import (
    ApiError,
    AuthError,
    BadRequest,
    CreditsRefused,
    SeriesQuery,
    SymbolRefused,
    TransientError,
    classify,
    error_for,
    is_transient,
    series_error,
)

MINUTE = "You have run out of API credits for the current minute. 9 API credits were used"
NOT_FOUND = "**symbol** not found: XXX. Please specify it correctly according to API Documentation."
NO_DATA = "No data is available on the specified dates. Try setting different start/end dates."


@pytest.mark.parametrize(
    ("code", "message", "meaning", "transient"),
    [
        (429, MINUTE, CreditsRefused, True),
        (429, "Too many requests", TransientError, True),
        (500, "Internal error", TransientError, True),
        (502, "HTTP 502", TransientError, True),
        (524, "HTTP 524", TransientError, True),
        (401, "**apikey** parameter is incorrect", AuthError, False),
        (400, NOT_FOUND, SymbolRefused, False),
        (404, "**symbol** or **figi** parameter is missing or invalid.", SymbolRefused, False),
        (403, "available exclusively with pro plan", SymbolRefused, False),
        (400, NO_DATA, BadRequest, False),
        (414, "**symbol** parameter list is too long", BadRequest, False),
    ],
)
def test_each_error_code_has_one_meaning(
    code: int, message: str, meaning: type[ApiError], transient: bool
) -> None:
    error = error_for(code, message)
    assert type(error) is meaning
    assert is_transient(error) is transient
    assert error.as_body() == {"code": code, "message": message, "status": "error"}


def test_errors_in_both_transports() -> None:
    body = {"code": 404, "message": "**symbol** not found", "status": "error"}
    for status in (404, 200):
        error = classify(status, body)
        assert isinstance(error, SymbolRefused) and error.code == 404
    minute = classify(429, {"code": 429, "message": MINUTE, "status": "error"})
    day = classify(
        200, {"code": 429, "message": "run out of API credits for the day", "status": "error"}
    )
    assert isinstance(minute, CreditsRefused) and minute.scope == "minute"
    assert isinstance(day, CreditsRefused) and day.scope == "day"
    assert isinstance(classify(502, None), TransientError)  # a gateway's HTML page
    assert classify(200, {"values": [], "status": "ok"}) is None
    assert not is_transient(None)


def test_a_symbols_part_of_a_batch_is_data_an_error_or_missing() -> None:
    assert series_error({"meta": {}, "values": [], "status": "ok"}) is None
    assert isinstance(
        series_error({"code": 400, "message": NOT_FOUND, "status": "error"}), SymbolRefused
    )
    # Nothing to go by: ask again later rather than record a permanent failure.
    assert isinstance(series_error(None), TransientError)
    assert isinstance(series_error({"status": "error", "message": "?"}), TransientError)
    assert isinstance(series_error({"meta": {}}), TransientError)


def test_a_query_names_dates_only_when_given() -> None:
    assert SeriesQuery("1h", 300).params(["AAPL", "BTC/USD"]) == {
        "symbol": "AAPL,BTC/USD",
        "interval": "1h",
        "outputsize": 300,
    }
    windowed = SeriesQuery("15min", 5000, "2025-01-01", "2025-02-01").params(["AAPL"])
    assert windowed["start_date"] == "2025-01-01" and windowed["end_date"] == "2025-02-01"
