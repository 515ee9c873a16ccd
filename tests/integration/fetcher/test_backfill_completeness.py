"""A backfill stores every bar the API has since the date asked, end to end on real processes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from services.sandbox.market import model_bars
from tests.integration.conftest import FROZEN_AT, run_service, settings_env

SINCE = date(2025, 6, 1)


def stored_bar_times(settings: Settings, symbol: str) -> list[datetime]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT bar_time FROM marketpipe.bars WHERE symbol = %s AND interval = '1h'"
            " ORDER BY bar_time",
            (symbol,),
        )
        times = [bar_time for (bar_time,) in cur.fetchall()]
    conn.close()
    return times


def model_bar_times(symbol: str) -> list[datetime]:
    start = datetime(SINCE.year, SINCE.month, SINCE.day, tzinfo=UTC)
    bars = model_bars(symbol, "1h", FROZEN_AT, start=start, outputsize=1_000_000)
    return [datetime.fromtimestamp(int(t), UTC) for t in bars.open_time]


@pytest.mark.parametrize(
    "until",
    [
        None,  # today on the fetcher's clock, months after the frozen API's now
        FROZEN_AT.date() + timedelta(days=400),  # newest windows beyond the API's last bar
    ],
)
def test_a_backfill_stores_every_bar_since_the_date(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer, until: date | None
) -> None:
    symbols = ("AAPL", "BTC/USD")
    settings = pipeline_settings.model_copy(update={"symbols": symbols})
    env = settings_env(settings)
    command = ["backfill", "--since", SINCE.isoformat()]
    run_service(
        "services.fetcher", *command, *(["--until", until.isoformat()] if until else []), env=env
    )
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    for symbol in symbols:
        expected = model_bar_times(symbol)
        assert len(expected) > 1000  # more than one window's worth for the coin
        assert stored_bar_times(settings, symbol) == expected, symbol
