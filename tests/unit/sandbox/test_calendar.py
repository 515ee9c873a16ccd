from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from services.sandbox.calendar import (
    easter_sunday,
    is_us_trading_day,
    session_table,
    us_early_closes,
    us_market_holidays,
    us_session,
    utc_offsets,
)


def test_easter_matches_known_dates() -> None:
    assert easter_sunday(2024) == date(2024, 3, 31)
    assert easter_sunday(2025) == date(2025, 4, 20)
    assert easter_sunday(2026) == date(2026, 4, 5)
    assert easter_sunday(2038) == date(2038, 4, 25)


def test_2026_holidays_follow_the_nyse_rules() -> None:
    assert sorted(us_market_holidays(2026)) == [
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 2, 16),
        date(2026, 4, 3),
        date(2026, 5, 25),
        date(2026, 6, 19),
        date(2026, 7, 3),  # July 4 is a Saturday: observed on Friday
        date(2026, 9, 7),
        date(2026, 11, 26),
        date(2026, 12, 25),
    ]


def test_weekend_observance_and_the_saturday_new_year_exception() -> None:
    assert date(2027, 12, 24) in us_market_holidays(2027)  # Christmas on Saturday
    assert date(2023, 1, 2) in us_market_holidays(2023)  # New Year on Sunday
    assert date(2021, 12, 31) not in us_market_holidays(2021)  # 2022-01-01 is a Saturday
    assert date(2022, 1, 1) not in us_market_holidays(2022)
    assert date(2021, 6, 18) not in us_market_holidays(2021)  # Juneteenth starts in 2022
    assert date(2022, 6, 20) in us_market_holidays(2022)  # Sunday -> Monday


def test_trading_days_exclude_weekends_and_holidays() -> None:
    assert is_us_trading_day(date(2026, 3, 9))
    assert not is_us_trading_day(date(2026, 3, 7))  # Saturday
    assert not is_us_trading_day(date(2026, 3, 8))  # Sunday
    assert not is_us_trading_day(date(2026, 11, 26))  # Thanksgiving
    assert us_session(date(2026, 4, 3)) is None  # Good Friday


def test_early_closes() -> None:
    assert us_early_closes(2026) == {date(2026, 11, 27), date(2026, 12, 24)}
    assert date(2025, 7, 3) in us_early_closes(2025)
    session = us_session(date(2026, 11, 27))
    assert session is not None
    assert session[1] == datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # 13:00 EST


def test_sessions_honour_dst_in_march_and_november() -> None:
    before_march = us_session(date(2026, 3, 6))
    after_march = us_session(date(2026, 3, 9))  # DST began on Sunday 2026-03-08
    before_november = us_session(date(2026, 10, 30))
    after_november = us_session(date(2026, 11, 2))  # DST ended on Sunday 2026-11-01
    assert before_march == (
        datetime(2026, 3, 6, 14, 30, tzinfo=UTC),
        datetime(2026, 3, 6, 21, 0, tzinfo=UTC),
    )
    assert after_march == (
        datetime(2026, 3, 9, 13, 30, tzinfo=UTC),
        datetime(2026, 3, 9, 20, 0, tzinfo=UTC),
    )
    assert before_november is not None and before_november[0].hour == 13
    assert after_november is not None and after_november[0].hour == 14


def test_session_tables() -> None:
    stocks = session_table("XNYS")
    crypto = session_table("CRYPTO")
    forex = session_table("FOREX")
    assert np.all(np.diff(stocks.open_s) > 0)
    assert np.all(stocks.close_s - stocks.open_s <= 390 * 60)
    assert len(crypto) > len(forex) > len(stocks)
    weekdays = (forex.day + 3) % 7
    assert weekdays.max() == 4  # Monday..Friday only
    assert set(np.unique(crypto.close_s - crypto.open_s).tolist()) == {86400}


def test_utc_offsets_match_zoneinfo_across_transitions() -> None:
    zone = ZoneInfo("America/New_York")
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    instants = np.arange(start, start + 280 * 86400, 3600 * 7, dtype=np.int64)
    expected = [
        int(datetime.fromtimestamp(int(t), zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        for t in instants
    ]
    assert utc_offsets(instants, zone).tolist() == expected
    assert set(expected) == {-4 * 3600, -5 * 3600}
