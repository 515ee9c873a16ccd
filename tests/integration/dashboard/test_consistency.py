"""One truth: the overview, Compare and marketpipe.period_return give the same return."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from redis import Redis
from sqlalchemy import text

from marketpipe import broker
from marketpipe.db import reader_engine
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.dashboard import metrics, queries
from services.loader import jobs
from services.transformer.transform import transform_series
from tests.integration.dashboard.conftest import empty_stores
from tests.integration.dashboard.test_pages import OpenApp
from tests.unit.transformer.payloads import (
    CRYPTO_META,
    STOCK_META,
    bar,
    hourly_times,
    payload,
    stock_session_times,
)

FIRST_DAY = datetime(2025, 1, 6)  # a Monday
DAYS = 400
WINDOWS = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
WINDOWS["1y"] = timedelta(days=365)
SYMBOLS = ("AAPL", "BTC/USD")


def load(settings: Settings, redis: Redis, symbol: str, times: list[str], meta: dict) -> None:
    values = [
        bar(t, 100.0 + 20 * math.sin(i / 97.0) + i / 300.0, volume=1000 + i)
        for i, t in enumerate(times)
    ]
    fetched = datetime(2026, 6, 1, tzinfo=UTC)
    raw = payload(symbol, meta, values, fetched_at=fetched)
    result = transform_series(raw, now=fetched)
    land_payload(settings.role_url("fetcher"), raw)
    frames = {"bars": result.bars, "quarantine": result.quarantine}
    broker.put_batch(redis, raw.payload_id, frames, settings.blob_ttl_seconds)
    jobs.load(settings, raw.payload_id)


@pytest.fixture(scope="module")
def year_settings(base_settings: Settings) -> Iterator[Settings]:
    """More than a year of hourly bars of a NYSE stock and a coin, loaded by the loader."""
    settings = base_settings.model_copy(update={"symbols": list(SYMBOLS)})
    empty_stores(settings)
    redis = Redis.from_url(settings.redis_url)
    load(settings, redis, "AAPL", stock_session_times(FIRST_DAY, DAYS * 5 // 7), STOCK_META)
    load(settings, redis, "BTC/USD", hourly_times(FIRST_DAY, 24 * DAYS), CRYPTO_META)
    redis.close()
    yield settings
    empty_stores(settings)


def trace_values(values: Any) -> list[float]:
    """A trace's numbers, whether Plotly shipped a list or a typed base64 buffer."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), values["dtype"]).tolist()
    return [math.nan if v is None else float(v) for v in values]


def sql_returns(settings: Settings, window: timedelta) -> dict[str, float]:
    conn = psycopg2.connect(settings.role_url("reader").render_as_string(hide_password=False))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT max(bar_time) FROM marketpipe.latest_quotes WHERE interval = '1h'")
            (newest,) = cur.fetchone()  # type: ignore[misc]
            out = {}
            for symbol in SYMBOLS:
                cur.execute(
                    "SELECT marketpipe.period_return(%s, %s, %s, '1h')",
                    (symbol, newest - window, newest),
                )
                (value,) = cur.fetchone()  # type: ignore[misc]
                out[symbol] = value
            return out
    finally:
        conn.close()


@pytest.mark.parametrize("window", WINDOWS)
def test_overview_compare_and_sql_agree(
    year_settings: Settings, open_app: OpenApp, window: str
) -> None:
    expected = sql_returns(year_settings, WINDOWS[window])
    assert all(value is not None for value in expected.values()), expected

    overview = open_app(year_settings, view="overview", window=window).dataframe[0].value
    from_overview = dict(zip(overview["symbol"], overview["change_window"], strict=True))

    compare = open_app(year_settings, view="compare", window=window, symbols=",".join(SYMBOLS))
    summary = compare.dataframe[0].value
    from_compare = dict(zip(summary["symbol"], summary["return_pct"], strict=True))

    for symbol in SYMBOLS:
        assert from_overview[symbol] == pytest.approx(expected[symbol], rel=0, abs=1e-9)
        assert from_compare[symbol] == pytest.approx(expected[symbol], rel=0, abs=1e-9)


def test_the_rebased_chart_ends_at_100_plus_the_return(
    year_settings: Settings, open_app: OpenApp
) -> None:
    expected = sql_returns(year_settings, WINDOWS["30d"])
    app = open_app(year_settings, view="compare", window="30d", symbols=",".join(SYMBOLS))
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert {trace["name"] for trace in spec["data"]} == set(SYMBOLS)
    for trace in spec["data"]:
        values = trace_values(trace["y"])
        assert values[0] == pytest.approx(100.0)
        assert values[-1] - 100 == pytest.approx(expected[trace["name"]], abs=1e-9)


def test_daily_charts_draw_the_stored_indicators(
    year_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(year_settings, view="instrument", symbol="BTC/USD", window="1y")
    assert app.segmented_control(key="interval").value == "1day"
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    (sma,) = [t for t in spec["data"] if t.get("name") == "SMA 50"]
    conn = psycopg2.connect(year_settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT max(bar_time) FROM marketpipe.bars WHERE symbol = 'BTC/USD'")
        (newest,) = cur.fetchone()  # type: ignore[misc]
        cur.execute(
            "SELECT sma_50 FROM marketpipe.daily_bars WHERE symbol = 'BTC/USD'"
            " AND trading_date >= %s ORDER BY trading_date",
            ((newest - timedelta(days=365)).date(),),
        )
        stored = [math.nan if v is None else v for (v,) in cur.fetchall()]
    conn.close()
    # The whole drawn series is the stored one, NULLs included: nothing is recomputed.
    np.testing.assert_array_equal(trace_values(sma["y"]), stored)
    assert not math.isnan(stored[-1])


def test_multi_year_comparisons_step_by_weeks_and_end_at_the_return(
    year_settings: Settings,
) -> None:
    engine = reader_engine(year_settings)
    try:
        with engine.connect() as conn:
            newest = conn.execute(
                text("SELECT max(bar_time) FROM marketpipe.latest_quotes WHERE interval = '1h'")
            ).scalar_one()
        since = newest - timedelta(days=300)
        expected = sql_returns(year_settings, timedelta(days=300))
        rebased = queries.rebased(
            engine, list(SYMBOLS), "1h", since, newest, daily=True, weekly=True
        )
        closes = queries.compare_closes(
            engine, list(SYMBOLS), "1h", since, newest, daily=True, weekly=True
        )
    finally:
        engine.dispose()
    for symbol, series in rebased.groupby("symbol"):
        weeks = series["bar_time"].iloc[1:].dt.to_period("W")
        assert weeks.is_unique and len(weeks) > 40  # one point per week after the reference
        assert series["rebased"].iloc[0] == pytest.approx(100.0)
        assert series["rebased"].iloc[-1] - 100 == pytest.approx(expected[symbol], abs=1e-9)
    assert (closes["trading_date"].dt.dayofweek == 0).all()  # keyed by the week's Monday
    assert not closes.duplicated(["symbol", "trading_date"]).any()
    grid = metrics.common_grid(closes, "1h", daily=True, weekly=True)
    assert grid.per_year == pytest.approx(52.18, abs=0.01)
    assert grid.closes.notna().all().all()  # a stock and a coin share every week


def test_weekly_points_are_the_last_trading_day_of_each_week(year_settings: Settings) -> None:
    """rebased_weekly and the weekly closes keep exactly the daily points whose next trading
    day starts another week (plus the reference), with the daily values."""
    engine = reader_engine(year_settings)
    try:
        with engine.connect() as conn:
            newest = conn.execute(
                text("SELECT max(bar_time) FROM marketpipe.latest_quotes WHERE interval = '1h'")
            ).scalar_one()
        since = newest - timedelta(days=300)
        args = (engine, list(SYMBOLS), "1h", since, newest)
        daily = queries.rebased(*args, daily=True)
        weekly = queries.rebased(*args, daily=True, weekly=True)
        daily_closes = queries.compare_closes(*args, daily=True)
        weekly_closes = queries.compare_closes(*args, daily=True, weekly=True)
    finally:
        engine.dispose()

    def last_of_weeks(frame: pd.DataFrame, day: str) -> pd.DataFrame:
        week = frame[day].dt.to_period("W")
        return frame[week != week.groupby(frame["symbol"]).shift(-1)]

    references = daily.groupby("symbol").head(1)
    expected = pd.concat([references, last_of_weeks(daily.drop(references.index), "bar_time")])
    key = ["symbol", "bar_time"]
    pd.testing.assert_frame_equal(
        weekly.reset_index(drop=True), expected.sort_values(key).reset_index(drop=True)
    )
    last = last_of_weeks(daily_closes, "trading_date")
    assert weekly_closes["close"].tolist() == last["close"].tolist()
    mondays = last["trading_date"] - pd.to_timedelta(last["trading_date"].dt.dayofweek, "D")
    assert weekly_closes["trading_date"].tolist() == mondays.tolist()
