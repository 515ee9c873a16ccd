"""latest_quotes' day change, 52-week range and average volume; the quoted-precision view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.loader import jobs
from services.transformer.transform import transform_series
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)

FETCHED = datetime(2026, 6, 1, tzinfo=UTC)


def load(settings: Settings, redis: Redis, symbol: str, times: list[str], meta: dict) -> None:
    values = [bar(t, 100.0 + i * 0.37, volume=1000 + i) for i, t in enumerate(times)]
    raw = payload(symbol, meta, values, fetched_at=FETCHED)
    result = transform_series(raw, now=FETCHED)
    land_payload(settings.role_url("fetcher"), raw)
    broker.put_batch(
        redis,
        raw.payload_id,
        {"bars": result.bars, "quarantine": result.quarantine},
        settings.blob_ttl_seconds,
    )
    jobs.load(settings, raw.payload_id)


def as_reader(settings: Settings, statement: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.role_url("reader").render_as_string(hide_password=False))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture
def quotes(clean_db: Settings, redis: Redis) -> Settings:
    load(clean_db, redis, "AAPL", stock_session_times(datetime(2026, 3, 2), 30), STOCK_META)
    load(clean_db, redis, "BTC/USD", hourly_times(datetime(2026, 3, 1), 24 * 30), CRYPTO_META)
    return clean_db


def test_day_change_is_vs_the_previous_session_close_for_stocks(quotes: Settings) -> None:
    ((close, reference, kind, change, pct),) = as_reader(
        quotes,
        "SELECT close, reference_close, reference, day_change, day_pct_change"
        " FROM marketpipe.latest_quotes WHERE symbol = 'AAPL'",
    )
    ((previous_session_close,),) = as_reader(
        quotes,
        "SELECT close FROM marketpipe.daily_bars WHERE symbol = 'AAPL'"
        " ORDER BY trading_date DESC OFFSET 1 LIMIT 1",
    )
    assert kind == "previous session close"
    assert reference == previous_session_close  # the 15:30 bar of the session before
    assert change == pytest.approx(close - reference)
    assert pct == pytest.approx(100 * (close / reference - 1))


def test_crypto_day_change_is_vs_24_hours_before(quotes: Settings) -> None:
    ((bar_time, reference, kind),) = as_reader(
        quotes,
        "SELECT bar_time, reference_close, reference FROM marketpipe.latest_quotes"
        " WHERE symbol = 'BTC/USD'",
    )
    ((day_before,),) = as_reader(
        quotes,
        "SELECT close FROM marketpipe.bars WHERE symbol = 'BTC/USD'"
        f" AND bar_time = '{(bar_time - timedelta(hours=24)).isoformat()}'",
    )
    assert kind == "24 hours" and reference == day_before


def test_average_volume_and_quoted_precision(quotes: Settings) -> None:
    ((average,),) = as_reader(
        quotes, "SELECT avg_volume_20d FROM marketpipe.latest_quotes WHERE symbol = 'AAPL'"
    )
    volumes = [
        v
        for (v,) in as_reader(
            quotes,
            "SELECT volume FROM marketpipe.daily_bars WHERE symbol = 'AAPL'"
            " ORDER BY trading_date DESC OFFSET 1 LIMIT 20",
        )
    ]
    assert average == pytest.approx(sum(volumes) / 20)
    shown = dict(as_reader(quotes, "SELECT symbol, close FROM marketpipe.quotes_display"))
    full = dict(as_reader(quotes, "SELECT symbol, close FROM marketpipe.latest_quotes"))
    assert float(shown["AAPL"]) == round(full["AAPL"], 2)
    assert shown["AAPL"].as_tuple().exponent == -2  # numeric with the quoted 2 decimals
    assert as_reader(
        quotes,
        "SELECT marketpipe.price_decimals('crypto', 65000), marketpipe.price_decimals('crypto',"
        " 0.5), marketpipe.price_decimals('forex', 1.1), marketpipe.price_decimals('stock', 3)",
    ) == [(2, 6, 5, 2)]


# 0007's definition of crypto's quoted precision (6 significant digits), which 0014 answers
# without the numeric log for prices of 0.0001 and up.
LOG_DEFINITION = "greatest(2, 6 - 1 - floor(log(abs(p)::numeric))::integer)"


def test_quoted_precision_keeps_the_log_definition_at_every_boundary(clean_db: Settings) -> None:
    # each power of ten from 1e-7 to 1e6, the doubles just below and above it, and spread values
    edges = [
        f"{m}e{k}" for k in range(-7, 7) for m in ("1", "0.9999999999999999", "1.000000000000001")
    ]
    rows = as_reader(
        clean_db,
        "SELECT count(*), count(*) FILTER (WHERE marketpipe.price_decimals('crypto', p)"
        f" <> {LOG_DEFINITION}) FROM (SELECT unnest(ARRAY[{', '.join(edges)}]::float8[]) AS p"
        " UNION ALL SELECT sign * 10 ^ (g / 997.0 - 7) FROM generate_series(0, 13958) AS g,"
        " unnest(ARRAY[-1, 1]) AS sign) v",
    )
    assert rows == [(len(edges) + 2 * 13959, 0)]
