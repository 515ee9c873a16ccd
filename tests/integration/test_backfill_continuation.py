"""An operator's one-day backfill, then gap ticks: the stored tables equal a clean backfill.

The soak's check (tests/soak/test_soak.py) on a simulated day, in this process: the real
fetcher (backfill and cycle, sandbox over HTTP), the transform and load jobs' own code and
PostgreSQL. A tick asks for the gap since the watermark plus FETCH_OVERLAP_BARS, counted as if
the market never closed, so right after a short backfill its answer reaches back before the
backfill's first bar (the coin by a bar, a stock by days over a night); those bars must not
extend the stored series, or every bar's recurrences (EMA, MACD, RSI, ATR seeds) shift.
A symbol the API refuses once ("not found", the sandbox's ``unknown_symbol`` fault) after
serving it is asked again at the next tick, not skipped for the day: the soak's March phase
lost a Monday of MSFT to such a day off.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.backfill import run_backfill
from services.fetcher.cycle import run_cycle
from services.sandbox.app import SandboxServer
from tests.integration.conftest import empty_our_tables, unlimited_sandbox
from tests.support.clock import InProcessClock
from tests.support.compare import compare_snapshots, snapshot
from tests.support.pipeline import drain
from tests.support.series import assert_matches_one_pass, stored_series

SYMBOLS = ("AAPL", "BTC/USD")
START = datetime(2026, 10, 29, 0, 30, tzinfo=UTC)  # as the soak's November phase starts
SINCE = date(2026, 10, 28)  # a Wednesday: one session of AAPL, a day of the coin
# Minutes between ticks: a night hour, to Thursday's open, within the session.
STEPS = (60, 14 * 60, 120, 60)


@pytest.fixture
def day_sandbox() -> Iterator[SandboxServer]:
    with unlimited_sandbox(START) as server:
        yield server


def test_ticks_after_a_one_day_backfill_store_what_a_clean_backfill_does(
    clean_db: Settings, redis: Redis, day_sandbox: SandboxServer
) -> None:
    settings = clean_db.model_copy(
        update={"twelve_data_base_url": day_sandbox.url, "symbols": SYMBOLS}
    )
    ctx = build_context(settings, clock=InProcessClock(day_sandbox.clock), redis=redis)
    run_backfill(ctx, SINCE, until=(START + timedelta(days=1)).date())
    drain(settings, redis)
    for minutes in STEPS:
        day_sandbox.clock.advance(minutes * 60)
        run_cycle(ctx)
        drain(settings, redis)
    for symbol in SYMBOLS:
        bars = stored_series(settings, symbol)
        assert_matches_one_pass(bars)  # exact over what it stored, either way
        first = bars["bar_time"].iloc[0].to_pydatetime()
        assert first.date() >= SINCE, f"{symbol}: a tick stored bars from before the backfill"
    soaked = snapshot(settings.database_url)
    assert soaked["bars"], "nothing stored"

    # The clean reference, as the soak takes it: the same span backfilled into empty tables.
    empty_our_tables(settings, redis)
    until = (day_sandbox.clock.now() + timedelta(days=1)).date()
    run_backfill(ctx, SINCE, until=until)
    drain(settings, redis)
    counts, examples = compare_snapshots(soaked, snapshot(settings.database_url))
    assert (counts["lost"], counts["duplicated"], counts["different"]) == (0, 0, 0), (
        counts,
        examples,
    )


def test_a_held_symbol_refused_at_one_tick_is_caught_up_by_the_next(
    clean_db: Settings, redis: Redis, day_sandbox: SandboxServer
) -> None:
    settings = clean_db.model_copy(
        update={"twelve_data_base_url": day_sandbox.url, "symbols": ("AAPL", "MSFT")}
    )
    ctx = build_context(settings, clock=InProcessClock(day_sandbox.clock), redis=redis)
    run_backfill(ctx, SINCE, until=(START + timedelta(days=1)).date())
    drain(settings, redis)
    day_sandbox.clock.advance(15 * 3600)  # Thursday 15:30 UTC, in the session
    day_sandbox.faults.script("unknown_symbol")  # the request's last symbol: "not found"
    refused = run_cycle(ctx)
    assert list(refused.api_errors) == ["MSFT"], refused
    drain(settings, redis)
    day_sandbox.clock.advance(2 * 3600)
    later = run_cycle(ctx)
    assert later.skipped == [] and sorted(later.enqueued) == ["AAPL", "MSFT"], later
    drain(settings, redis)
    soaked = snapshot(settings.database_url)

    empty_our_tables(settings, redis)
    run_backfill(ctx, SINCE, until=(day_sandbox.clock.now() + timedelta(days=1)).date())
    drain(settings, redis)
    counts, examples = compare_snapshots(soaked, snapshot(settings.database_url))
    assert (counts["lost"], counts["duplicated"], counts["different"]) == (0, 0, 0), (
        counts,
        examples,
    )
