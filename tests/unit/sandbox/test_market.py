from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from services.sandbox.market import factor_loadings, get_instrument, model_bars
from services.sandbox.render import bar_labels

NY_AFTERNOON = datetime(2026, 3, 10, 19, 45, tzinfo=UTC)  # Tuesday 15:45 EDT


def labels(symbol: str, interval: str, now: datetime, **kwargs: object) -> list[str]:
    return bar_labels(model_bars(symbol, interval, now, **kwargs), None)  # type: ignore[arg-type]


def test_stock_hourly_bars_open_at_half_past_and_the_last_is_half_an_hour() -> None:
    day = labels("AAPL", "1h", datetime(2026, 3, 6, 22, tzinfo=UTC), outputsize=7)
    assert day == [f"2026-03-06 {h:02d}:30:00" for h in range(9, 16)]


def test_march_dst_keeps_exchange_local_labels_and_shifts_utc() -> None:
    friday = model_bars("AAPL", "1h", datetime(2026, 3, 6, 22, tzinfo=UTC), outputsize=7)
    monday = model_bars("AAPL", "1h", datetime(2026, 3, 9, 22, tzinfo=UTC), outputsize=7)
    assert bar_labels(monday, None)[0] == "2026-03-09 09:30:00"
    assert datetime.fromtimestamp(int(friday.open_time[0]), UTC).hour == 14
    assert datetime.fromtimestamp(int(monday.open_time[0]), UTC).hour == 13
    assert bar_labels(monday, "UTC")[0] == "2026-03-09 13:30:00"


def test_november_dst_day() -> None:
    now = datetime(2026, 11, 2, 22, tzinfo=UTC)
    bars = model_bars("MSFT", "1h", now, outputsize=14)
    assert bar_labels(bars, None)[0] == "2026-10-30 09:30:00"
    assert bar_labels(bars, None)[7] == "2026-11-02 09:30:00"
    assert bar_labels(bars, "UTC")[0] == "2026-10-30 13:30:00"
    assert bar_labels(bars, "UTC")[7] == "2026-11-02 14:30:00"
    # Crypto in New York time across the fall-back night: 01:00 appears twice.
    crypto = model_bars("BTC/USD", "1h", datetime(2026, 11, 1, 8, tzinfo=UTC), outputsize=4)
    assert bar_labels(crypto, "America/New_York") == [
        "2026-11-01 00:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 01:00:00",
        "2026-11-01 02:00:00",
    ]


def test_weekends_have_no_stock_bars_but_crypto_trades_around_the_clock() -> None:
    sunday_night = datetime(2026, 3, 9, 0, 0, tzinfo=UTC)
    saturday = datetime(2026, 3, 7, tzinfo=UTC)
    stock = labels("AAPL", "1h", sunday_night, start=saturday, outputsize=100)
    crypto = model_bars("BTC/USD", "1h", sunday_night, start=saturday, outputsize=100)
    assert stock == []
    assert len(crypto) == 48
    assert crypto.volume is None
    forex = labels("EUR/USD", "1day", sunday_night, start=saturday, outputsize=10)
    assert forex == []


def test_holiday_has_no_bars() -> None:
    daily = labels("AAPL", "1day", datetime(2026, 4, 8, tzinfo=UTC), outputsize=5)
    assert daily == ["2026-03-31", "2026-04-01", "2026-04-02", "2026-04-06", "2026-04-07"]
    assert "2026-04-03" not in daily  # Good Friday


def test_early_close_day_has_four_hourly_bars() -> None:
    now = datetime(2026, 11, 28, tzinfo=UTC)
    day = labels("AAPL", "1h", now, start=datetime(2026, 11, 27, tzinfo=UTC), outputsize=50)
    assert day == [
        "2026-11-27 09:30:00",
        "2026-11-27 10:30:00",
        "2026-11-27 11:30:00",
        "2026-11-27 12:30:00",
    ]


def test_incomplete_newest_bar_moves_then_becomes_final() -> None:
    early = model_bars("AAPL", "1h", NY_AFTERNOON - timedelta(minutes=10), outputsize=2)
    later = model_bars("AAPL", "1h", NY_AFTERNOON, outputsize=2)
    after = model_bars("AAPL", "1h", NY_AFTERNOON + timedelta(hours=2), outputsize=2)
    much_after = model_bars(
        "AAPL",
        "1h",
        NY_AFTERNOON + timedelta(days=3),
        start=None,
        end=NY_AFTERNOON + timedelta(hours=1),
        outputsize=1,
    )
    assert not early.is_complete[-1] and not later.is_complete[-1]
    assert early.open_time[-1] == later.open_time[-1]
    assert early.open[-1] == later.open[-1]
    assert early.close[-1] != later.close[-1]
    assert early.volume is not None and later.volume is not None
    assert early.volume[-1] < later.volume[-1]
    # 15:30 bar: once 16:00 passed it is complete and never changes again.
    assert after.is_complete[-1]
    assert after.open_time[-1] == later.open_time[-1]
    assert after.close[-1] == much_after.close[-1]
    assert after.high[-1] == much_after.high[-1]
    assert early.is_complete[0] and early.close[0] == after.close[0]


def test_a_bar_in_the_future_never_appears() -> None:
    at_open = datetime(2026, 3, 10, 13, 30, tzinfo=UTC)
    bars = model_bars("AAPL", "1h", at_open, outputsize=1)
    assert bar_labels(bars, None) == ["2026-03-09 15:30:00"]
    one_minute_in = model_bars("AAPL", "1h", at_open + timedelta(minutes=1), outputsize=1)
    assert bar_labels(one_minute_in, None) == ["2026-03-10 09:30:00"]
    assert not one_minute_in.is_complete[0]


def test_same_inputs_same_bars_and_symbols_differ() -> None:
    first = model_bars("NVDA", "15min", NY_AFTERNOON, outputsize=300)
    second = model_bars("NVDA", "15min", NY_AFTERNOON, outputsize=300)
    other = model_bars("AMZN", "15min", NY_AFTERNOON, outputsize=300)
    for name in ("open_time", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(first.close, other.close)


def test_ohlc_is_consistent_and_bars_chain() -> None:
    bars = model_bars("TSLA", "5min", NY_AFTERNOON, outputsize=2000)
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.low > 0)
    same_session = np.diff(bars.label_day) == 0
    assert np.array_equal(bars.open[1:][same_session], bars.close[:-1][same_session])
    assert not np.array_equal(bars.open[1:][~same_session], bars.close[:-1][~same_session])


def test_closes_agree_across_intervals() -> None:
    now = datetime(2026, 3, 11, 3, tzinfo=UTC)
    hourly = model_bars("JPM", "1h", now, outputsize=1)
    five = model_bars("JPM", "5min", now, outputsize=1)
    daily = model_bars("JPM", "1day", now, outputsize=1)
    eight = model_bars("JPM", "8h", now, outputsize=1)
    assert hourly.close[0] == five.close[0] == daily.close[0] == eight.close[0]
    first_hour = model_bars("JPM", "1h", now, outputsize=7)
    assert first_hour.open[0] == daily.open[0]


def test_calendar_intervals_are_dated_monday_and_first_of_month() -> None:
    weekly = labels("AAPL", "1week", NY_AFTERNOON, outputsize=10)
    monthly = labels("BTC/USD", "1month", NY_AFTERNOON, outputsize=6)
    assert all(datetime.fromisoformat(d).weekday() == 0 for d in weekly)
    assert weekly[-1] == "2026-03-09"
    assert monthly == [
        "2025-10-01",
        "2025-11-01",
        "2025-12-01",
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
    ]
    week = model_bars("AAPL", "1week", NY_AFTERNOON, outputsize=2)
    assert week.is_complete.tolist() == [True, False]


def test_week_bar_aggregates_its_days() -> None:
    now = datetime(2026, 3, 14, tzinfo=UTC)
    week = model_bars("META", "1week", now, outputsize=1)
    days = model_bars("META", "1day", now, outputsize=5)
    assert week.open[0] == days.open[0]
    assert week.close[0] == days.close[-1]
    assert week.high[0] == days.high.max()
    assert week.low[0] == days.low.min()
    assert week.volume is not None and days.volume is not None
    assert abs(int(week.volume[0]) - int(days.volume.sum())) <= 5


def test_window_bounds() -> None:
    start = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)
    end = datetime(2026, 3, 9, 17, 30, tzinfo=UTC)
    bars = model_bars("AAPL", "1h", NY_AFTERNOON, start=start, end=end, outputsize=5000)
    assert bar_labels(bars, None) == [
        "2026-03-09 10:30:00",
        "2026-03-09 11:30:00",
        "2026-03-09 12:30:00",
    ]
    newest_two = model_bars("AAPL", "1h", NY_AFTERNOON, start=start, end=end, outputsize=2)
    assert bar_labels(newest_two, None) == ["2026-03-09 11:30:00", "2026-03-09 12:30:00"]


def test_realistic_levels() -> None:
    for symbol, low, high in [
        ("AAPL", 120, 600),
        ("BTC/USD", 30_000, 300_000),
        ("EUR/USD", 0.7, 1.8),
        ("SOL/USD", 40, 600),
    ]:
        bars = model_bars(symbol, "1day", NY_AFTERNOON, outputsize=400)
        assert low < bars.low.min() and bars.high.max() < high, symbol


def test_synthetic_universe() -> None:
    assert get_instrument("SYN0001") is not None
    assert get_instrument("SYN5000") is not None
    assert get_instrument("SYN5001") is None
    assert get_instrument("SYN0000") is None
    assert get_instrument("NOPE") is None
    with pytest.raises(KeyError):
        model_bars("NOPE", "1h", NY_AFTERNOON)


def test_five_thousand_bars_are_cheap() -> None:
    started = time.perf_counter()
    bars = model_bars("SYN4242", "1h", NY_AFTERNOON, outputsize=5000)
    elapsed = time.perf_counter() - started
    assert len(bars) == 5000
    assert elapsed < 0.5


def daily_log_returns(symbols: list[str]) -> pd.DataFrame:
    now = datetime(2026, 3, 11, 18, 45, tzinfo=UTC)
    closes = {}
    for symbol in symbols:
        bars = model_bars(symbol, "1day", now, outputsize=500)
        closes[symbol] = pd.Series(bars.close, index=bars.label_day)
    return np.log(pd.DataFrame(closes)).diff()


def test_the_demo_market_has_a_common_factor_sectors_and_co_moving_crypto() -> None:
    corr = daily_log_returns(
        ["AAPL", "MSFT", "NVDA", "JPM", "BTC/USD", "ETH/USD", "EUR/USD", "USD/JPY"]
    ).corr()
    assert corr.loc["AAPL", "MSFT"] > 0.4  # market and sector
    assert 0.15 < corr.loc["AAPL", "JPM"] < corr.loc["AAPL", "MSFT"]  # market only
    assert corr.loc["BTC/USD", "ETH/USD"] > 0.6  # crypto moves together
    assert abs(corr.loc["AAPL", "BTC/USD"]) < 0.25  # no factor shared across classes
    assert corr.loc["EUR/USD", "USD/JPY"] < -0.2  # the dollar quoted the other way round


def test_factor_weights_keep_each_instruments_variance() -> None:
    for symbol in ("AAPL", "JPM", "BTC/USD", "USD/JPY", "SYN0042"):
        weights = [weight for _, weight in factor_loadings(symbol)]
        assert sum(w**2 for w in weights) == pytest.approx(1.0)
        assert weights[0] > 0  # its own share comes first
