"""daily_bars: rebuilt from stored 1h bars only, with indicators over the stored daily series."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql
from redis import Redis

from marketpipe import broker
from marketpipe.contract import DAILY_COLUMNS, DAILY_INDICATORS
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.loader import daily, jobs
from services.transformer.transform import transform_series
from tests.integration.conftest import OUR_TABLES
from tests.integration.loader.conftest import FIRST_BAR
from tests.support.scratch import empty_claimed_redis
from tests.unit.transformer import reference as ref
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)
from tests.unit.transformer.strategies import assert_close

AGGREGATES = ("trading_date", "open", "high", "low", "close", "volume", "vwap", "bar_count")
DAY_COLUMNS = (
    "symbol, trading_date, asset_class, open, high, low, close, volume, vwap, change,"
    " pct_change, range, bar_count, is_complete, source_interval, previous_close, "
    + ", ".join(DAILY_INDICATORS)
)


def price(hour: int, step: int) -> float:
    return 100.0 + 15 * math.sin(hour / (37.0 * step)) + hour / (50.0 * step)


def load_series(
    redis: Redis,
    settings: Settings,
    interval: str,
    first_hour: int,
    hours: int,
    *,
    since: datetime | None = None,
) -> None:
    """Transform and load BTC/USD bars of ``interval`` (1h or 2h) over the given hours."""
    step = 2 if interval == "2h" else 1
    values = []
    for hour in range(first_hour, first_hour + hours, step):
        when = (FIRST_BAR + timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M:%S")
        # 2h bars deliberately disagree with the 1h ones (another vendor aggregation).
        values.append(bar(when, price(hour, step), volume=1000 + hour * step))
    fetched = FIRST_BAR + timedelta(hours=first_hour + hours + 1)
    raw = payload("BTC/USD", CRYPTO_META, values, fetched_at=fetched, interval=interval)
    if since is not None:
        raw = raw.model_copy(update={"request": {"since": since.isoformat()}})
    result = transform_series(raw, now=fetched)
    land_payload(settings.role_url("fetcher"), raw)
    frames = {"bars": result.bars, "quarantine": result.quarantine}
    broker.put_batch(redis, raw.payload_id, frames, settings.blob_ttl_seconds)
    jobs.load(settings, raw.payload_id)


def query(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


def daily_rows(settings: Settings) -> list[tuple[Any, ...]]:
    return query(settings, f"SELECT {DAY_COLUMNS} FROM marketpipe.daily_bars ORDER BY trading_date")


def truncate(settings: Settings) -> None:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        tables = sql.SQL(", ").join(sql.Identifier("marketpipe", t) for t in OUR_TABLES)
        cur.execute(sql.SQL("TRUNCATE {}").format(tables))
    conn.close()


def test_a_second_interval_never_rebuilds_a_day(clean_db: Settings, redis: Redis) -> None:
    load_series(redis, clean_db, "1h", 0, 24 * 40)
    one_interval = daily_rows(clean_db)
    assert len(one_interval) == 40 and {r[14] for r in one_interval} == {"1h"}

    truncate(clean_db)
    empty_claimed_redis(redis)  # forget that the first payload was loaded
    load_series(redis, clean_db, "2h", 0, 24 * 40)
    assert daily_rows(clean_db) == []  # 2h bars alone make no day
    load_series(redis, clean_db, "1h", 0, 24 * 40)
    load_series(redis, clean_db, "2h", 24 * 10, 24 * 20)  # a later 2h run as well
    assert daily_rows(clean_db) == one_interval


def test_days_come_only_from_stored_bars(clean_db: Settings, redis: Redis) -> None:
    since = FIRST_BAR + timedelta(days=5, hours=13)
    load_series(redis, clean_db, "1h", 0, 24 * 12, since=since)
    stored = query(
        clean_db,
        "SELECT trading_date, count(*) FROM marketpipe.bars GROUP BY 1 ORDER BY 1",
    )
    days = query(clean_db, "SELECT trading_date, bar_count FROM marketpipe.daily_bars ORDER BY 1")
    assert days == stored
    assert days[0] == (since.date(), 24 - 13)  # the warm-up hours of that day were dropped


def test_daily_indicators_follow_the_stored_series(clean_db: Settings, redis: Redis) -> None:
    """Three payloads of 130 days: SMA 200 and the 52-week range need several, from daily_bars."""
    for part in range(3):
        load_series(redis, clean_db, "1h", 24 * 130 * part, 24 * 130)
    rows = query(
        clean_db,
        f"SELECT {', '.join(AGGREGATES)}, previous_close, "
        + ", ".join(DAILY_INDICATORS)
        + " FROM marketpipe.daily_bars ORDER BY trading_date",
    )
    assert len(rows) == 390
    columns = dict(
        zip(
            [*AGGREGATES, "previous_close", *DAILY_INDICATORS],
            zip(*rows, strict=True),
            strict=True,
        )
    )
    hourly = query(
        clean_db,
        "SELECT trading_date, open, high, low, close, volume FROM marketpipe.bars"
        " ORDER BY bar_time",
    )
    days, opens, highs, lows, closes, volumes = (list(c) for c in zip(*hourly, strict=True))
    aggregates = ref.daily(days, opens, highs, lows, closes, volumes)
    for name in ("open", "high", "low", "close", "volume", "vwap", "bar_count"):
        want = [day[name] for day in aggregates]
        assert_close([float(v) for v in columns[name]], want, max(want), name)

    def as_float(name: str) -> list[float]:
        return [math.nan if v is None else float(v) for v in columns[name]]

    close, high, low = as_float("close"), as_float("high"), as_float("low")
    level = max(close)
    assert_close(as_float("previous_close"), ref.previous(close), level, "previous_close")
    for n in (20, 50, 200):
        assert_close(as_float(f"sma_{n}"), ref.sma(close, n), level, f"sma_{n}")
    assert as_float("sma_200")[-1] == pytest.approx(sum(close[-200:]) / 200, rel=1e-12)
    for n in (12, 26):
        assert_close(as_float(f"ema_{n}"), ref.ema(close, n), level, f"ema_{n}")
    line, signal, hist = ref.macd(close)
    assert_close(as_float("macd"), line, level, "macd")
    assert_close(as_float("macd_signal"), signal, level, "macd_signal")
    assert_close(as_float("macd_hist"), hist, level, "macd_hist")
    assert_close(as_float("rsi_14"), ref.rsi(close), 100.0, "rsi_14")
    middle, upper, lower = ref.bollinger(close)
    assert_close(as_float("bb_middle"), middle, level, "bb_middle")
    assert_close(as_float("bb_upper"), upper, level, "bb_upper")
    assert_close(as_float("bb_lower"), lower, level, "bb_lower")
    assert_close(as_float("atr_14"), ref.atr(high, low, close), level, "atr_14")
    times = [datetime.combine(day, datetime.min.time()) for day in columns["trading_date"]]
    highest, lowest = ref.fifty_two_week(times, high, low)
    assert_close(as_float("high_52w"), highest, level, "high_52w")
    assert_close(as_float("low_52w"), lowest, level, "low_52w")


# The plain reference of the loader's daily rebuild: every day aggregated in SQL from all stored
# 1h bars (as the loader did before it aggregated in pandas), then the indicators computed over
# each symbol's whole series from scratch.
REFERENCE_DAYS_SQL = (
    "SELECT b.symbol, b.trading_date, min(b.asset_class) AS asset_class,"
    " (array_agg(b.open ORDER BY b.bar_time))[1] AS open, max(b.high) AS high,"
    " min(b.low) AS low, (array_agg(b.close ORDER BY b.bar_time DESC))[1] AS close,"
    " CASE WHEN count(b.volume) = count(*) THEN sum(b.volume ORDER BY b.bar_time) END AS volume,"
    " CASE WHEN count(b.volume) = count(*) AND sum(b.volume) > 0"
    " THEN sum((b.high + b.low + b.close) / 3 * b.volume ORDER BY b.bar_time)"
    " / sum(b.volume ORDER BY b.bar_time) END AS vwap,"
    " max(b.high) - min(b.low) AS range, count(*)::integer AS bar_count,"
    " bool_and(b.is_complete) AS is_complete,"
    " (array_agg(b.payload_id ORDER BY b.bar_time DESC))[1] AS payload_id,"
    " max(b.transformed_at) AS transformed_at, b.interval AS source_interval"
    " FROM marketpipe.bars b WHERE b.interval = '1h'"
    " GROUP BY b.symbol, b.interval, b.trading_date ORDER BY b.symbol, b.trading_date"
)


def load_values(
    redis: Redis, settings: Settings, meta: dict[str, Any], values: list[dict[str, str]]
) -> None:
    """Transform and load one payload of ``meta``'s symbol holding ``values`` (1h bars)."""
    last = datetime.fromisoformat(values[-1]["datetime"]).replace(tzinfo=UTC)
    fetched = last + timedelta(days=2)
    raw = payload(str(meta["symbol"]), meta, values, fetched_at=fetched)
    result = transform_series(raw, now=fetched)
    land_payload(settings.role_url("fetcher"), raw)
    frames = {"bars": result.bars, "quarantine": result.quarantine}
    broker.put_batch(redis, raw.payload_id, frames, settings.blob_ttl_seconds)
    jobs.load(settings, raw.payload_id)


def reference_days(settings: Settings) -> pd.DataFrame:
    conn = psycopg2.connect(settings.database_url)
    try:
        days = pd.read_sql_query(REFERENCE_DAYS_SQL, conn)
    finally:
        conn.close()
    parts = []
    for _, series in days.groupby("symbol", sort=True):
        ohlcv = {c: series[c].to_numpy(float) for c in ("open", "high", "low", "close", "volume")}
        dates = pd.to_datetime(series["trading_date"]).to_numpy()
        derived = daily.daily_derived(dates, ohlcv, str(series["asset_class"].iloc[0]))
        parts.append(series.assign(**derived))
    return pd.concat(parts, ignore_index=True)


def stored_days(settings: Settings) -> pd.DataFrame:
    conn = psycopg2.connect(settings.database_url)
    try:
        columns = ", ".join(name for name, _ in DAILY_COLUMNS)
        return pd.read_sql_query(
            f"SELECT {columns} FROM marketpipe.daily_bars ORDER BY symbol, trading_date", conn
        )
    finally:
        conn.close()


def test_the_rebuild_equals_a_plain_aggregate_and_a_full_recompute(
    clean_db: Settings, redis: Redis
) -> None:
    """Payloads out of order, overlapping, starting and ending mid-day, for a 24/7 symbol and a
    stock (exchange days in New York): every daily row equals the plain reference."""
    crypto = [
        bar(when, price(hour, 1), volume=1000 + hour)
        for hour, when in enumerate(hourly_times(FIRST_BAR, 24 * 300))
    ]
    stock = [
        bar(when, price(i, 1), volume=5000 + i)
        for i, when in enumerate(stock_session_times(datetime(2025, 6, 2), 260))
    ]
    windows = [(24 * 200, 24 * 300), (0, 24 * 90), (24 * 85 + 7, 24 * 210 - 5), (24 * 90, 24 * 91)]
    for start, end in windows:
        load_values(redis, clean_db, CRYPTO_META, crypto[start:end])
        load_values(redis, clean_db, STOCK_META, stock[start // 24 * 7 + 3 : end // 24 * 7])
    got, want = stored_days(clean_db), reference_days(clean_db)
    assert len(got) == len(want) == 300 + 260
    for name, sql_type in DAILY_COLUMNS:
        if name in daily.DAILY_LINEAGE:
            continue  # rewritten only with a changed row (the loader's rule): an older payload's
        if sql_type == "double precision":
            a, b = got[name].to_numpy(float), want[name].to_numpy(float)
            assert np.array_equal(np.isnan(a), np.isnan(b)), name
            both = ~np.isnan(a)
            assert (np.abs(a[both] - b[both]) <= 1e-12 * np.abs(b[both])).all(), name
        else:
            assert got[name].tolist() == want[name].tolist(), name

    # A replay of any of them rewrites no daily row.
    versions = query(clean_db, "SELECT symbol, trading_date, xmin::text FROM marketpipe.daily_bars")
    load_values(redis, clean_db, CRYPTO_META, crypto[24 * 85 + 7 : 24 * 210 - 5])
    assert sorted(
        query(clean_db, "SELECT symbol, trading_date, xmin::text FROM marketpipe.daily_bars")
    ) == sorted(versions)
