"""Ticks that fetch only the gap still store exactly what one pass over the whole series gives.

Random sequences of hourly ticks (gaps of hours to days, re-sent open bars within the hour,
over DST changes, holidays and early closes) run through the real fetcher cycle (sandbox over
HTTP), the transform and the load jobs (their own code, in this process) into PostgreSQL. Then
every derived column of every stored bar is compared with the plain-loop reference computed
over the whole stored series, to 1e-9; the stored series must hold every bar the API has over
its span, and every request after the first asks for at most the gap plus the overlap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import adbc_driver_postgresql.dbapi as adbc
import psycopg2
import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from redis import Redis

from marketpipe.history import read_history
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.cycle import run_cycle
from services.sandbox.app import SandboxServer
from tests.integration.conftest import empty_our_tables, unlimited_sandbox
from tests.support.clock import InProcessClock
from tests.support.pipeline import drain
from tests.support.series import assert_matches_one_pass, stored_series

SYMBOLS = ("AAPL", "BTC/USD")
# More than a year of stock hours (~300 sessions), so later ticks continue stored state rather
# than re-reading the series from its start; the crypto series (87 days) takes the other path.
FIRST_BARS = 2100
OVERLAP = 24
# Ticks start a few days before: the DST starts and ends in New York, Thanksgiving (and its
# early close), Christmas, and an ordinary week.
EVENTS = (
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 11, 26, 12, tzinfo=UTC),
    datetime(2026, 12, 25, 12, tzinfo=UTC),
    datetime(2026, 6, 10, 15, tzinfo=UTC),
)
STATE_COLUMNS = ("rsi_avg_gain", "rsi_avg_loss")


@pytest.fixture(scope="module")
def tick_sandbox() -> Iterator[SandboxServer]:
    with unlimited_sandbox(EVENTS[0]) as server:
        yield server


def watermarks(settings: Settings) -> dict[str, datetime]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT symbol, last_complete_bar FROM marketpipe.watermarks")
        rows = dict(cur.fetchall())
    conn.close()
    return rows


def continues_stored_state(settings: Settings, symbol: str) -> bool:
    """Whether new bars after the series' newest continue stored state (vs. re-reading it)."""
    with adbc.connect(settings.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(bar_time) FROM marketpipe.bars WHERE symbol = $1", (symbol,))
        (newest,) = cur.fetchone()
        history, _ = read_history(cur, symbol, "1h", newest)
    return not history.from_start


def api_closes(sandbox: SandboxServer, settings: Settings, symbol: str, first: datetime) -> dict:
    """Every bar the API has from ``first`` on, at its current clock: UTC open -> close."""
    answer = requests.get(
        f"{sandbox.url}/time_series",
        params={
            "symbol": symbol,
            "interval": "1h",
            "start_date": first.strftime("%Y-%m-%d %H:%M:%S"),
            "outputsize": 5000,
            "timezone": "UTC",
        },
        headers={"Authorization": f"apikey {settings.api_key.get_secret_value()}"},
        timeout=10,
    ).json()
    return {
        datetime.fromisoformat(v["datetime"]).replace(tzinfo=UTC): float(v["close"])
        for v in answer["values"]
    }


@settings(
    max_examples=6,
    deadline=None,
    # Each example is a whole pipeline run: shrinking one would take many minutes.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    event=st.sampled_from(EVENTS),
    lead_hours=st.integers(0, 96),
    # Minutes between ticks: within the hour (the open bar re-sent), hours, days (outages).
    steps=st.lists(
        st.one_of(st.integers(5, 59), st.integers(60, 6 * 60), st.integers(6 * 60, 4 * 1440)),
        min_size=2,
        max_size=7,
    ),
)
def test_gap_ticks_store_what_one_pass_over_the_series_gives(
    base_settings: Settings,
    redis: Redis,
    tick_sandbox: SandboxServer,
    event: datetime,
    lead_hours: int,
    steps: list[int],
) -> None:
    empty_our_tables(base_settings, redis)
    settings_ = base_settings.model_copy(
        update={
            "twelve_data_base_url": tick_sandbox.url,
            "symbols": SYMBOLS,
            "fetch_outputsize": FIRST_BARS,
            "fetch_overlap_bars": OVERLAP,
        }
    )
    tick_sandbox.clock.set(event - timedelta(hours=lead_hours) + timedelta(minutes=5))
    ctx = build_context(settings_, clock=InProcessClock(tick_sandbox.clock), redis=redis)
    run_cycle(ctx)
    drain(settings_, redis)
    for minutes in steps:
        tick_sandbox.clock.advance(minutes * 60)
        stored_until = watermarks(settings_)
        asked_from = len(tick_sandbox.api.requests_seen())
        run_cycle(ctx)
        drain(settings_, redis)
        # Each series asked for exactly the bars after its watermark plus the overlap.
        for request in tick_sandbox.api.requests_seen()[asked_from:]:
            at = datetime.fromisoformat(request["at"])
            for symbol in request["symbols"]:
                gap = math.ceil((at - stored_until[symbol]) / timedelta(hours=1))
                assert request["outputsize"] == gap + OVERLAP, (symbol, request)

    for symbol in SYMBOLS:
        bars = stored_series(settings_, symbol)
        first = bars["bar_time"].iloc[0].to_pydatetime()
        api = api_closes(tick_sandbox, settings_, symbol, first)
        stored = dict(
            zip((t.to_pydatetime() for t in bars["bar_time"]), bars["close"], strict=True)
        )
        assert stored == api, f"{symbol}: the stored series is not the API's over its span"
        assert_matches_one_pass(bars)
        assert bars[list(STATE_COLUMNS)].iloc[14:].notna().all().all()
    # The stock's ticks continued stored state; the crypto series is read from its start.
    paths = {s: continues_stored_state(settings_, s) for s in SYMBOLS}
    assert paths == {"AAPL": True, "BTC/USD": False}
