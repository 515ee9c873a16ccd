from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.sandbox.market import model_bars
from services.sandbox.ticks import TickSource

# Wednesday 2026-03-11: New York on daylight time, the session is 13:30-20:00 UTC.
SESSION_OPEN = int(datetime(2026, 3, 11, 13, 30, tzinfo=UTC).timestamp())
SATURDAY = int(datetime(2026, 3, 14, 12, 0, tzinfo=UTC).timestamp())


def hourly(symbol: str, start: int, end: int) -> tuple[list[int], np.ndarray]:
    bars = model_bars(
        symbol, "1h", datetime.fromtimestamp(end, UTC), start=datetime.fromtimestamp(start, UTC),
        outputsize=100,
    )  # fmt: skip
    ohlc = np.column_stack([bars.open, bars.high, bars.low, bars.close])
    return [int(t) for t in bars.open_time], ohlc


@pytest.mark.parametrize(
    ("symbol", "tick_seconds"), [("AAPL", 1), ("BTC/USD", 1), ("EUR/USD", 5), ("SYN0042", 15)]
)
def test_the_ticks_of_each_hour_reproduce_its_ohlc(symbol: str, tick_seconds: int) -> None:
    # whole hours: the stock session's (the last one half an hour), UTC hours for the others
    stock = symbol in ("AAPL", "SYN0042")
    start = SESSION_OPEN if stock else SESSION_OPEN - 1800
    end = SESSION_OPEN + 6.5 * 3600 if stock else start + 7 * 3600
    start, end = int(start), int(end)
    ticks = TickSource(symbol, tick_seconds).between(start - 1, end)
    opens, ohlc = hourly(symbol, start, end)
    assert len(opens) >= 6
    for bar_open, (o, h, low, c) in zip(opens, ohlc, strict=True):
        following = [t for t in opens if t > bar_open]
        bar_end = min(following[0] if following else end, bar_open + 3600)
        prices = [p for t, p, _ in ticks if bar_open <= t < bar_end]
        assert prices, f"no ticks in the hour at {bar_open}"
        assert (prices[0], max(prices), min(prices), prices[-1]) == pytest.approx((o, h, low, c))


def test_stock_ticks_only_in_session_crypto_around_the_clock() -> None:
    day = SESSION_OPEN - 13 * 3600 - 1800  # midnight UTC of the session day
    stock = TickSource("AAPL", 1).between(day, day + 86400)
    times = np.array([t for t, _, _ in stock])
    assert times.min() == SESSION_OPEN and times.max() == SESSION_OPEN + 6.5 * 3600 - 1
    assert len(times) == int(6.5 * 3600)
    assert TickSource("AAPL", 1).between(SATURDAY, SATURDAY + 3600) == []
    assert len(TickSource("BTC/USD", 1).between(SATURDAY, SATURDAY + 3600)) == 3600


def test_windows_of_any_size_read_the_same_ticks() -> None:
    whole = TickSource("AAPL", 1).between(SESSION_OPEN + 3000, SESSION_OPEN + 4000)
    source = TickSource("AAPL", 1)
    pieces = []
    for after in range(SESSION_OPEN + 3000, SESSION_OPEN + 4000, 7):
        pieces += source.between(after, min(after + 7, SESSION_OPEN + 4000))
    assert pieces == whole
    assert [t for t, _, _ in whole] == list(range(SESSION_OPEN + 3001, SESSION_OPEN + 4001))


def test_stock_day_volume_never_falls_within_a_session() -> None:
    ticks = TickSource("AAPL", 1).between(SESSION_OPEN - 1, SESSION_OPEN + 6 * 3600)
    volumes = np.array([v for _, _, v in ticks])
    assert volumes[0] == 0 and volumes[-1] > 1_000_000
    assert (np.diff(volumes) >= 0).all()
    assert all(v is None for _, _, v in TickSource("BTC/USD", 1).between(SATURDAY, SATURDAY + 60))
