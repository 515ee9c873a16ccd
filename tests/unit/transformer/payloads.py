"""Builders of realistic Twelve Data payloads for the transformer's tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from marketpipe.contract import RawPayload

STOCK_META = {
    "symbol": "AAPL",
    "interval": "1h",
    "currency": "USD",
    "exchange_timezone": "America/New_York",
    "exchange": "NASDAQ",
    "mic_code": "XNGS",
    "type": "Common Stock",
}
CRYPTO_META = {
    "symbol": "BTC/USD",
    "interval": "1h",
    "currency_base": "Bitcoin",
    "currency_quote": "US Dollar",
    "exchange": "Binance",
    "type": "Digital Currency",
}
FOREX_META = {
    "symbol": "EUR/USD",
    "interval": "1h",
    "currency_base": "Euro",
    "currency_quote": "US Dollar",
    "type": "Physical Currency",
}


def bar(
    when: str, close: float, *, volume: float | None = None, spread: float = 1.0
) -> dict[str, str]:
    """One API bar as text, consistent OHLC around ``close``."""
    row = {
        "datetime": when,
        "open": f"{close:.5f}",
        "high": f"{close + spread:.5f}",
        "low": f"{close - spread:.5f}",
        "close": f"{close:.5f}",
    }
    if volume is not None:
        row["volume"] = str(int(volume))
    return row


def hourly_times(start: datetime, count: int) -> list[str]:
    return [(start + timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(count)]


def stock_session_times(first_day: datetime, days: int) -> list[str]:
    """NYSE 1h bar open times (09:30 .. 15:30) on consecutive weekdays."""
    times: list[str] = []
    day = first_day
    while len(times) < days * 7:
        if day.weekday() < 5:
            times.extend(
                (day.replace(hour=9, minute=30) + timedelta(hours=h)).strftime("%Y-%m-%d %H:%M:%S")
                for h in range(7)
            )
        day += timedelta(days=1)
    return times


def payload(
    symbol: str,
    meta: dict[str, Any],
    values: Sequence[dict[str, Any]] | Iterable[dict[str, Any]],
    *,
    fetched_at: datetime,
    newest_first: bool = True,
    interval: str = "1h",
    instrument: dict[str, Any] | None = None,
) -> RawPayload:
    rows = list(values)
    if newest_first:
        rows = rows[::-1]
    body = {
        "meta": {**meta, "symbol": symbol, "interval": interval},
        "values": rows,
        "status": "ok",
    }
    return RawPayload.build(
        source="demo",
        symbol=symbol,
        interval=interval,
        body=body,
        instrument=instrument,
        fetched_at=fetched_at,
    )


FAR_FUTURE = datetime(2030, 1, 1, tzinfo=UTC)
