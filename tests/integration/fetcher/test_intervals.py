"""Two intervals side by side: hourly bars every tick, daily bars once after each bar ends, a
simulated day on the free plan's 8 credits a minute, counted by the sandbox (0 refused)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis

from marketpipe.settings import DEFAULT_SYMBOLS, Settings
from services.fetcher.__main__ import build_context
from services.fetcher.schedule import run_schedule, tick_run_id
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.integration.fetcher.conftest import FREE_PLAN, query, queued_payloads
from tests.support.clock import InProcessClock
from tests.support.credits import RecordingLedger

DAY_START = datetime(2026, 3, 11, 0, 5, tzinfo=UTC)  # a Wednesday, at its first tick
NYSE_CLOSE = datetime(2026, 3, 11, 20, 0, tzinfo=UTC)  # 16:00 New York (EDT)
STOCKS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL")
PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD")


@pytest.fixture
def day_sandbox() -> Iterator[tuple[SandboxServer, RecordingLedger]]:
    settings = SandboxSettings(
        port=0,
        clock_start=DAY_START.isoformat(),
        clock_speed=0,
        credits_per_minute=FREE_PLAN[0],
        credits_per_day=FREE_PLAN[1],
    )
    with SandboxServer(settings) as server:
        ledger = RecordingLedger(server.api.settings.plan_for)
        server.api.credits = ledger
        yield server, ledger


def test_two_intervals_run_side_by_side_for_a_day_within_the_free_plan(
    clean_db: Settings, redis: Redis, day_sandbox: tuple[SandboxServer, RecordingLedger]
) -> None:
    sandbox, ledger = day_sandbox
    assert set(DEFAULT_SYMBOLS) == {*STOCKS, *PAIRS}
    settings = clean_db.model_copy(
        update={
            "twelve_data_base_url": sandbox.url,
            "intervals": ("1h", "1day"),
            "fetch_outputsize": 60,
            "api_credits_per_minute": FREE_PLAN[0],
            "api_credits_per_day": FREE_PLAN[1],
            "restatement_poll_seconds": 3600,
        }
    )
    clock = InProcessClock(sandbox.clock)
    ctx = build_context(settings, clock=clock, redis=redis)
    # Through the next midnight's tick: the coins' daily bar of the day ends then.
    day_end = DAY_START + timedelta(days=1, minutes=1)
    ticks = run_schedule(ctx, until=lambda: clock.now() >= day_end)

    assert ticks == 25
    assert ledger.refused == 0
    assert max(ledger.per_minute().values()) <= FREE_PLAN[0]
    assert sum(ledger.per_minute().values()) == ctx.limiter.taken
    runs = query(
        settings,
        "SELECT interval, run_id, symbols_asked, credits FROM marketpipe.pipeline_runs"
        " WHERE component = 'fetcher' ORDER BY interval, run_id",
    )
    hourly = [r for r in runs if r[0] == "1h"]
    daily = [(r[1], r[2]) for r in runs if r[0] == "1day"]  # named by their tick
    assert len(hourly) == 25 and all(r[2] == len(DEFAULT_SYMBOLS) for r in hourly)
    # Daily bars cost their credit once per bar: every series at the first tick (nothing was
    # asked yet), the stocks at the first tick after the New York close, the coins after
    # midnight UTC; no other tick asks for a daily bar.
    assert daily == [
        (tick_run_id("1day", DAY_START), len(DEFAULT_SYMBOLS)),
        (tick_run_id("1day", NYSE_CLOSE + timedelta(minutes=5)), len(STOCKS)),
        (tick_run_id("1day", DAY_START + timedelta(days=1)), len(PAIRS)),
    ]
    daily_payloads = [p for p in queued_payloads(redis, settings) if p.interval == "1day"]
    after_close = {
        p.symbol: p for p in daily_payloads if p.fetched_at >= NYSE_CLOSE and p.symbol in STOCKS
    }
    assert sorted(after_close) == sorted(STOCKS)
    # ... and that answer holds the day that just closed (the API's newest bar comes first).
    assert all(p.body["values"][0]["datetime"] == "2026-03-11" for p in after_close.values())
