"""Migration 0006: the live_minute_bars table, its roles' privileges and the idempotent upsert."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest

from marketpipe.db import connect
from marketpipe.migrate import MIGRATIONS_DIR
from marketpipe.settings import Settings
from services.streamer.bars import MinuteBar
from services.streamer.sinks import PostgresSink

MINUTE = 1_700_000_000 - 1_700_000_000 % 60  # November 2023


@pytest.fixture
def live_db(clean_db: Settings) -> Iterator[Settings]:
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE marketpipe.live_minute_bars")
    conn.close()
    yield clean_db


def bar(first: int, last: int, prices: tuple[float, float, float, float], ticks: int) -> MinuteBar:
    o, h, low, c = prices
    return MinuteBar("BTC/USD", MINUTE, o, h, low, c, ticks, None, MINUTE + first, MINUTE + last)


def rows(settings: Settings) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT open, high, low, close, ticks, source FROM marketpipe.live_minute_bars")
        found = cur.fetchall()
    conn.close()
    return found


def test_the_upsert_is_idempotent_and_merges_partial_minutes_by_tick_time(
    live_db: Settings,
) -> None:
    sink = PostgresSink(live_db)
    late = bar(30, 59, (12.0, 13.0, 11.0, 12.5), 30)
    sink.write_bars([late])
    sink.write_bars([late])  # a retry
    assert rows(live_db) == [(12.0, 13.0, 11.0, 12.5, 30, "stream")]
    # an earlier part of the minute (a restart mid-minute): its open, the widest range
    sink.write_bars([bar(0, 29, (10.0, 12.0, 9.0, 12.0), 30)])
    assert rows(live_db) == [(10.0, 13.0, 9.0, 12.5, 30, "stream")]
    sink.close()


def test_the_streamer_role_touches_live_minute_bars_only(live_db: Settings) -> None:
    sink = PostgresSink(live_db)
    sink.write_bars([bar(0, 1, (1.0, 1.0, 1.0, 1.0), 2)])
    assert sink.apply_retention() == 1  # 2023 is long gone at any LIVE_RETENTION_DAYS
    sink.close()
    streamer = connect(live_db.role_url("streamer"))
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), streamer, streamer.cursor() as cur:
        cur.execute("SELECT 1 FROM marketpipe.bars LIMIT 1")
    streamer.close()


@pytest.mark.parametrize(
    ("role", "statement", "allowed"),
    [
        ("reader", "SELECT count(*) FROM marketpipe.live_minute_bars", True),
        ("reader", "DELETE FROM marketpipe.live_minute_bars", False),
        ("loader", "DELETE FROM marketpipe.live_minute_bars", False),
        ("loader", "SELECT count(*) FROM marketpipe.live_minute_bars", False),
    ],
)
def test_readers_select_and_the_loader_gets_nothing(
    live_db: Settings, role: str, statement: str, allowed: bool
) -> None:
    conn = connect(live_db.role_url(role))  # type: ignore[arg-type]
    try:
        with conn, conn.cursor() as cur:
            if allowed:
                cur.execute(statement)
            else:
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
    finally:
        conn.close()


def test_the_migration_runs_again_without_changing_anything(live_db: Settings) -> None:
    conn = psycopg2.connect(live_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute((MIGRATIONS_DIR / "0006_live_minute_bars.sql").read_text())
        cur.execute("SELECT name FROM marketpipe.schema_migrations WHERE version = 6")
        assert cur.fetchone() == ("live_minute_bars",)
    conn.close()
