"""The one request loop: transient faults retried with backoff, refusals waited out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

import pytest
from pydantic import SecretStr
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from services.fetcher.backfill import run_backfill
from services.fetcher.client import SeriesQuery
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.reference import instruments
from services.fetcher.request import MAX_REFUSALS, fetch_series
from services.sandbox.app import SandboxServer
from tests.integration.fetcher.conftest import credits_used_today


@pytest.mark.parametrize(
    "fault", ["server_error", "bad_gateway", "malformed_json", "rate_limit", "slow"]
)
def test_transient_faults_are_retried_and_nothing_is_lost(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, fault: str
) -> None:
    ctx = make_context(symbols=["AAPL", "ETH/USD"])
    instruments(ctx, ["AAPL", "ETH/USD"])  # reference data first, so the fault hits the series
    free_sandbox.faults.script(fault, count=2)
    before = free_sandbox.clock.now()
    report = run_cycle(ctx)
    assert sorted(report.enqueued) == ["AAPL", "ETH/USD"]
    assert report.deferred == {} and report.api_errors == {}
    waited = free_sandbox.clock.now() - before
    if fault == "rate_limit":
        assert ctx.client.refusals == 2  # type: ignore[attr-defined]
        assert waited >= timedelta(minutes=1)  # waited for the next minutes, no failure
    else:
        assert waited > timedelta(0)  # backoff, on the injected clock


def test_transient_failures_beyond_the_retries_defer_to_the_next_tick(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["AAPL"], fetch_max_attempts=2)
    instruments(ctx, ["AAPL"])
    free_sandbox.faults.script("server_error", count=2)
    report = run_cycle(ctx)
    assert list(report.deferred) == ["AAPL"] and report.enqueued == []
    assert broker.queue(TRANSFORM_QUEUE, redis, ctx.settings).count == 0
    assert run_cycle(ctx).enqueued == ["AAPL"]  # the next tick gets it


def test_refusals_beyond_the_limit_defer_to_the_next_tick(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["AAPL"])
    instruments(ctx, ["AAPL"])
    free_sandbox.faults.script("rate_limit", count=MAX_REFUSALS + 1)
    report = run_cycle(ctx)
    assert list(report.deferred) == ["AAPL"] and "credits" in report.deferred["AAPL"]
    assert ctx.client.refusals == MAX_REFUSALS + 1  # type: ignore[attr-defined]
    assert run_cycle(ctx).enqueued == ["AAPL"]


def test_a_wrong_key_is_every_symbols_answer_and_never_retried(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["AAPL", "BTC/USD"], sandbox_api_key=SecretStr("wrong"))
    before = free_sandbox.clock.now()
    report = run_cycle(ctx)
    assert sorted(report.api_errors) == ["AAPL", "BTC/USD"]
    assert all("api" in message.lower() for message in report.api_errors.values())
    assert report.deferred == {} and report.enqueued == []
    assert free_sandbox.clock.now() == before  # no backoff: asking again cannot help


def test_reference_look_ups_share_the_loop(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["AAPL"])
    free_sandbox.faults.script("server_error", count=2, endpoint="stocks")
    before = free_sandbox.clock.now()
    attrs = instruments(ctx, ["AAPL"])
    assert attrs["AAPL"]["mic_code"] == "XNGS"  # the third try answered
    assert free_sandbox.clock.now() > before  # after a backoff
    assert credits_used_today(free_sandbox) == 1  # a refused try is not charged


def test_the_backfill_shares_the_loop(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["BTC/USD"], interval="1day")
    instruments(ctx, ["BTC/USD"])
    free_sandbox.faults.script("bad_gateway", count=2)
    report = run_backfill(ctx, date(2025, 1, 1), until=date(2026, 3, 1))
    assert report.windows_done == report.windows_total and report.enqueued == 1
    assert broker.queue(TRANSFORM_QUEUE, redis, ctx.settings).count == 1


def test_a_batch_holds_only_symbols_of_one_depth(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    # A series with no history batched with a deep one would be stored at the deep one's depth.
    depths = {"AAPL": 40, "MSFT": 120, "ETH/USD": 40, "BTC/USD": 120, "NVDA": 75}
    ctx = make_context(symbols=list(depths))
    instruments(ctx, list(depths))
    credits_before = credits_used_today(free_sandbox)
    got = {
        answer.symbol: (asked.outputsize, len(answer.body["values"]))
        for answer, asked in fetch_series(
            ctx, list(depths), SeriesQuery("1h", outputsize=300), outputsizes=depths
        )
    }
    assert got == {symbol: (depth, depth) for symbol, depth in depths.items()}
    spent = credits_used_today(free_sandbox) - credits_before
    assert spent == len(depths)  # one credit per symbol, however the batches are cut
