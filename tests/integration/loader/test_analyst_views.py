"""The analyst views and the rebasing function return the right numbers, read as the reader."""

from __future__ import annotations

from datetime import timedelta

import psycopg2
import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.loader.jobs import load
from tests.integration.loader.conftest import FIRST_BAR, put_batch

SERIES = {"BTC/USD": 100.0, "ETH/USD": 10.0}
BARS = 24 * 30


def as_reader(settings: Settings, statement: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(settings.role_url("reader").render_as_string(hide_password=False))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def loaded(clean_db: Settings, redis: Redis) -> Settings:
    for symbol, level in SERIES.items():
        load(clean_db, put_batch(redis, clean_db, symbol, BARS, level=level))
    return clean_db


def test_latest_quotes_has_the_newest_bar_of_each_series(loaded: Settings) -> None:
    expected = as_reader(
        loaded,
        "SELECT DISTINCT ON (symbol) symbol, interval, bar_time, close FROM marketpipe.bars"
        " ORDER BY symbol, bar_time DESC",
    )
    assert len(expected) == len(SERIES)
    assert (
        as_reader(
            loaded,
            "SELECT symbol, interval, bar_time, close FROM marketpipe.latest_quotes ORDER BY 1",
        )
        == expected
    )


def test_rebased_is_100_at_the_period_returns_reference(loaded: Settings) -> None:
    """Rebased to the last close at or before the start: its last point is 100 + the return."""
    start, end = FIRST_BAR + timedelta(days=3, hours=5, minutes=30), FIRST_BAR + timedelta(days=10)
    rows = as_reader(
        loaded,
        "SELECT symbol, bar_time, close, rebased FROM marketpipe.rebased(%s, %s, '1h')",
        (start, end),
    )
    assert {r[0] for r in rows} == set(SERIES)
    for symbol in SERIES:
        series = [r for r in rows if r[0] == symbol]
        reference = series[0]
        assert reference[1] == start - timedelta(minutes=30) and reference[3] == 100.0
        assert all(start < r[1] <= end for r in series[1:])
        assert all(r[3] == pytest.approx(100 * r[2] / reference[2], rel=1e-12) for r in series)
        (period_return,) = as_reader(
            loaded, "SELECT marketpipe.period_return(%s, %s, %s, '1h')", (symbol, start, end)
        )[0]
        assert series[-1][3] - 100 == pytest.approx(period_return, rel=1e-12)


def test_a_window_before_the_history_has_no_return(loaded: Settings) -> None:
    before = FIRST_BAR - timedelta(days=1)
    rows = as_reader(
        loaded,
        "SELECT symbol, start_close, return_pct FROM marketpipe.period_returns(%s, %s, '1h')",
        (before, FIRST_BAR + timedelta(days=5)),
    )
    assert rows == [(symbol, None, None) for symbol in sorted(SERIES)]


def test_daily_performance_matches_the_daily_bars(loaded: Settings) -> None:
    rows = as_reader(
        loaded,
        "SELECT symbol, trading_date, close, pct_change_5d, range_pct, open, range"
        " FROM marketpipe.daily_performance WHERE symbol = 'BTC/USD' ORDER BY trading_date",
    )
    assert (
        len(rows)
        == as_reader(loaded, "SELECT count(*) FROM marketpipe.daily_bars WHERE symbol = 'BTC/USD'")[
            0
        ][0]
    )
    assert rows[4][3] is None and rows[5][3] is not None
    for today, five_before in zip(rows[5:], rows, strict=False):
        assert today[3] == pytest.approx(100 * (today[2] / five_before[2] - 1))
    assert all(r[4] == pytest.approx(100 * r[6] / r[5]) for r in rows)
