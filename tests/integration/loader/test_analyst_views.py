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


def test_rebased_starts_every_symbol_at_100_within_the_window(loaded: Settings) -> None:
    start, end = FIRST_BAR + timedelta(days=3, hours=5), FIRST_BAR + timedelta(days=10)
    rows = as_reader(
        loaded,
        "SELECT symbol, bar_time, close, rebased FROM marketpipe.rebased(%s, %s, '1h')",
        (start, end),
    )
    assert {r[0] for r in rows} == set(SERIES)
    assert all(start <= r[1] < end for r in rows)
    for symbol in SERIES:
        series = [r for r in rows if r[0] == symbol]
        assert series[0][1] == start and series[0][3] == pytest.approx(100)
        first_close = series[0][2]
        assert all(r[3] == pytest.approx(100 * r[2] / first_close) for r in series)


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
