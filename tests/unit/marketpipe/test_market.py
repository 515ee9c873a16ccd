"""marketpipe.market: the one bar-end rule, bars per year, classification and the warm-up."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pytest

from marketpipe.market import (
    INDICATORS,
    asset_class_of,
    bar_end,
    bars_per_year,
    latest_bar_end,
    market_open,
    settle_bars,
    venue,
)
from services.fetcher.series import view_series, warmup_bars
from services.transformer.transform import transform_series
from tests.unit.transformer.payloads import STOCK_META, bar, payload

NEW_YORK = "America/New_York"
NYSE = venue("stock", NEW_YORK)


@pytest.mark.parametrize(
    ("local_open", "interval", "asset_class", "end_utc"),
    [
        # Regular day, summer time (UTC-4): the 15:30 bar is capped at the 16:00 close.
        ("2026-08-20 14:30", "1h", "stock", "2026-08-20 19:30"),
        ("2026-08-20 15:30", "1h", "stock", "2026-08-20 20:00"),
        # DST changes: the last bar ends at 16:00 local, 21:00 UTC before and 20:00 after the
        # spring change (2026-03-08), and back to 21:00 after the autumn one (2026-11-01).
        ("2026-03-06 15:30", "1h", "stock", "2026-03-06 21:00"),
        ("2026-03-09 15:30", "1h", "stock", "2026-03-09 20:00"),
        ("2026-10-30 15:30", "1h", "stock", "2026-10-30 20:00"),
        ("2026-11-02 15:30", "1h", "stock", "2026-11-02 21:00"),
        # NYSE early close 2026-11-27 (13:00 ET): the 12:30 bar ends at 13:00, and so does the day.
        ("2026-11-27 12:30", "1h", "stock", "2026-11-27 18:00"),
        ("2026-11-27 00:00", "1day", "stock", "2026-11-27 18:00"),
        # Holidays: Good Friday 2026-04-03 closes the week on Thursday; 2026-08 ends on Monday 31.
        ("2026-03-30 00:00", "1week", "stock", "2026-04-02 20:00"),
        ("2026-08-17 00:00", "1week", "stock", "2026-08-21 20:00"),
        ("2026-08-01 00:00", "1month", "stock", "2026-08-31 20:00"),
        # Crypto and forex: open + interval in UTC, days are UTC days, across DST untouched.
        ("2026-03-08 06:00", "1h", "crypto", "2026-03-08 07:00"),
        ("2026-08-20 23:00", "1h", "crypto", "2026-08-21 00:00"),
        ("2026-08-20 00:00", "1day", "forex", "2026-08-21 00:00"),
        ("2026-08-17 00:00", "1week", "crypto", "2026-08-24 00:00"),
        ("2026-12-01 00:00", "1month", "crypto", "2027-01-01 00:00"),
    ],
)
def test_bar_end(local_open: str, interval: str, asset_class: str, end_utc: str) -> None:
    place = venue(asset_class, NEW_YORK if asset_class == "stock" else None)
    assert bar_end(pd.Timestamp(local_open), interval, place) == pd.Timestamp(end_utc, tz="UTC")


def test_fetcher_and_transformer_share_the_bar_end_on_an_early_close() -> None:
    """13:05 ET on 2026-11-27: the 12:30 bar ended at the 13:00 close for both services."""
    times = [f"2026-11-27 {h}:30:00" for h in ("09", "10", "11", "12")]
    fetched_at = datetime(2026, 11, 27, 18, 5, tzinfo=UTC)
    answer = payload(
        "AAPL",
        STOCK_META,
        [bar(t, 100.0 + i, volume=1000) for i, t in enumerate(times)],
        fetched_at=fetched_at,
    )
    view = view_series(answer.body, "1h", fetched_at)
    assert view.open_bar is None
    assert view.newest_complete == datetime(2026, 11, 27, 17, 30, tzinfo=UTC)
    bars = transform_series(answer, now=fetched_at).bars
    assert bars["is_complete"].tolist() == [True, True, True, True]
    # A minute before the close both see the last bar still running.
    early = datetime(2026, 11, 27, 17, 59, tzinfo=UTC)
    assert view_series(answer.body, "1h", early).open_bar is not None
    running = transform_series(answer.model_copy(update={"fetched_at": early}), now=early).bars
    assert not running["is_complete"].iloc[-1]


@pytest.mark.parametrize(
    ("asset_class", "interval", "zone", "expected"),
    [
        ("stock", "1h", NEW_YORK, 252 * 7),  # 390 minutes: 6.5 bars, the 15:30 bar counts
        ("stock", "30min", NEW_YORK, 252 * 13),
        ("stock", "1h", "Europe/London", 252 * 9),  # 08:00-16:30
        ("stock", "1h", "Mars/Olympus", 252 * 7),  # unknown zone: the NYSE's session
        ("crypto", "1h", None, 365 * 24),
        ("forex", "15min", None, 260 * 96),
        ("stock", "1day", NEW_YORK, 252),
        ("crypto", "1day", None, 365),
        ("crypto", "1week", None, 52),
        ("stock", "1month", NEW_YORK, 12),
    ],
)
def test_bars_per_year(asset_class: str, interval: str, zone: str | None, expected: float) -> None:
    assert bars_per_year(interval, venue(asset_class, zone)) == expected


def test_one_classification_for_meta_and_reference_data() -> None:
    assert asset_class_of("AAPL", meta=STOCK_META) == "stock"
    pair = {"currency_base": "Bitcoin", "currency_quote": "US Dollar"}
    assert asset_class_of("BTC/USD", meta={**pair, "exchange": "Binance"}) == "crypto"
    assert asset_class_of("EUR/USD", meta=pair) == "forex"
    assert asset_class_of("X", meta={"symbol": "X"}) is None
    assert asset_class_of("ETH/USD", instrument={"type": "Digital Currency"}) == "crypto"
    assert asset_class_of("EUR/USD", instrument={"type": "Physical Currency"}) == "forex"
    assert asset_class_of("MSFT", instrument={"type": "Common Stock"}) == "stock"
    assert asset_class_of("MSFT") == "stock"
    assert asset_class_of("ETH/BTC") is None


def test_the_warmup_follows_the_indicator_set() -> None:
    base = INDICATORS.warmup_bars()
    assert base >= max(INDICATORS.sma)
    longer = replace(INDICATORS, sma=(*INDICATORS.sma, 400))
    assert longer.warmup_bars() == 400 > base
    # The fetcher sizes its requests from the set it is given (crypto 1h: no year fits).
    assert warmup_bars("1h", "crypto") == base
    assert warmup_bars("1h", "crypto", longer) == 400
    slower = replace(INDICATORS, macd=(12, 52, 9))
    assert slower.warmup_bars() > base


def test_look_back_and_settle_horizon_follow_the_periods() -> None:
    assert INDICATORS.lookback_bars() == 199  # SMA 200 needs 199 earlier closes
    longer = replace(INDICATORS, sma=(20, 50, 400))
    assert longer.lookback_bars() == 399
    # Every recurrence fades below 1e-15 within the horizon; a longer window moves it.
    assert INDICATORS.settle_horizon_bars() == settle_bars(2 / 27, 1e-15) + settle_bars(0.2, 1e-15)
    assert replace(INDICATORS, sma=(20, 50, 800)).settle_horizon_bars() == 800


@pytest.mark.parametrize(
    ("at", "is_open", "change"),
    [
        # a Wednesday mid-session: open until the 16:00 ET close
        (datetime(2026, 3, 11, 18, 45, tzinfo=UTC), True, "2026-03-11 20:00"),
        # a Saturday: closed until Monday's 09:30 ET open
        (datetime(2026, 3, 14, 12, 0, tzinfo=UTC), False, "2026-03-16 13:30"),
        # Thanksgiving: closed; the next day is the 13:00 ET early close
        (datetime(2026, 11, 26, 16, 0, tzinfo=UTC), False, "2026-11-27 14:30"),
        (datetime(2026, 11, 27, 15, 0, tzinfo=UTC), True, "2026-11-27 18:00"),
    ],
)
def test_market_open_follows_the_exchange_calendar(
    at: datetime, is_open: bool, change: str
) -> None:
    assert market_open(NYSE, at) == (is_open, pd.Timestamp(change, tz="UTC"))


@pytest.mark.parametrize(
    ("at", "is_open", "change"),
    [
        # Tokyo, a Wednesday morning: open until the 11:30 JST lunch break
        (datetime(2026, 3, 11, 1, 0, tzinfo=UTC), True, "2026-03-11 02:30"),
        # in the break: closed until 12:30 JST, not until the next day's open
        (datetime(2026, 3, 11, 3, 0, tzinfo=UTC), False, "2026-03-11 03:30"),
        # after the 15:30 JST close: closed until Thursday's 09:00 JST open
        (datetime(2026, 3, 11, 7, 0, tzinfo=UTC), False, "2026-03-12 00:00"),
    ],
)
def test_market_open_knows_a_lunch_break(at: datetime, is_open: bool, change: str) -> None:
    assert market_open(venue("stock", "Asia/Tokyo"), at) == (
        is_open,
        pd.Timestamp(change, tz="UTC"),
    )


def test_crypto_never_closes_and_forex_rests_at_the_weekend() -> None:
    saturday = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    assert market_open(venue("crypto", None), saturday) == (True, None)
    assert market_open(venue("forex", None), saturday) == (
        False,
        pd.Timestamp("2026-03-16", tz="UTC"),
    )


@pytest.mark.parametrize(
    ("at", "interval", "zone", "ended"),
    [
        # Mid-session Wednesday: the stock's newest daily bar is Tuesday's, ended at its close.
        ("2026-03-11T18:45", "1day", "America/New_York", "2026-03-10T20:00"),
        ("2026-03-11T20:00", "1day", "America/New_York", "2026-03-11T20:00"),
        # Saturday: Friday's close; the week's bar ended then too.
        ("2026-03-14T12:00", "1day", "America/New_York", "2026-03-13T20:00"),
        ("2026-03-14T12:00", "1week", "America/New_York", "2026-03-13T20:00"),
        # The day after Thanksgiving closes early (13:00 New York).
        ("2026-11-27T19:00", "1day", "America/New_York", "2026-11-27T18:00"),
        # Thanksgiving itself holds no session: Wednesday's close.
        ("2026-11-26T23:00", "1day", "America/New_York", "2026-11-25T21:00"),
        # A coin's day and month end at UTC midnight.
        ("2026-03-11T18:45", "1day", None, "2026-03-11T00:00"),
        ("2026-03-11T18:45", "1month", None, "2026-03-01T00:00"),
    ],
)
def test_latest_bar_end_of_calendar_intervals(
    at: str, interval: str, zone: str | None, ended: str
) -> None:
    place = venue("stock" if zone else "crypto", zone)
    moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
    assert latest_bar_end(interval, place, moment) == pd.Timestamp(ended, tz="UTC")


def test_intraday_intervals_have_no_calendar_bar_end() -> None:
    assert latest_bar_end("1h", venue("crypto", None), datetime(2026, 3, 11, tzinfo=UTC)) is None
