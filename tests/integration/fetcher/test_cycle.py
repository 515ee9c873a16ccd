"""Incremental, credit-aware cycles against the sandbox on a free plan (8 credits a minute)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.series import parse_utc
from services.sandbox.app import SandboxServer
from tests.integration.conftest import run_service, settings_env
from tests.integration.fetcher.conftest import (
    credits_used_today,
    query,
    queued_payloads,
)

TWENTY = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "JPM",
    "BTC/USD",
    "ETH/USD",
    "SOL/USD",
    "EUR/USD",
    "GBP/USD",
    "USD/JPY",
    "SYN0001",
    "SYN0002",
    "SYN0003",
    "SYN0004",
    "SYN0005",
    "SYN0006",
]


def test_twenty_symbols_on_eight_credits_wait_for_the_minute_and_are_never_refused(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=TWENTY)
    start = free_sandbox.clock.now()
    report = run_cycle(ctx)

    assert sorted(report.enqueued) == sorted(TWENTY)
    assert ctx.client.refusals == 0  # type: ignore[attr-defined]
    # One /stocks list for the 14 stocks (pairs take theirs from the series' meta) and 20
    # series = 21 credits: the fetcher waited for 2 more API minutes instead of being refused.
    used = credits_used_today(free_sandbox)
    assert used == 1 + 20
    assert free_sandbox.clock.now() - start >= timedelta(minutes=(used - 1) // 8)
    assert ctx.limiter.usage()[1] == used  # our shared counter agrees with the API's

    # Every payload carries its instrument attributes from the reference endpoints.
    payloads = {p.symbol: p for p in queued_payloads(redis, ctx.settings)}
    assert payloads["AAPL"].instrument["mic_code"] == "XNGS"
    assert {"name", "exchange", "currency", "country", "type"} <= set(payloads["AAPL"].instrument)
    assert payloads["BTC/USD"].instrument["currency_base"] == "Bitcoin"
    assert payloads["EUR/USD"].instrument["type"] == "Physical Currency"


def test_nothing_new_enqueues_nothing_and_a_new_hour_does(
    make_context: Callable[..., FetchContext],
    free_sandbox: SandboxServer,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    symbols = ["AAPL", "BTC/USD"]
    ctx = make_context(symbols=symbols)
    transform = broker.queue(TRANSFORM_QUEUE, redis, ctx.settings)
    assert sorted(run_cycle(ctx).enqueued) == sorted(symbols)
    assert transform.count == 2

    caplog.set_level("INFO", logger="marketpipe.fetcher")
    again = run_cycle(ctx)  # same API time: same bars, same open bar
    assert sorted(again.no_new_data) == sorted(symbols) and again.enqueued == []
    assert transform.count == 2
    # One line for the cycle, not one per symbol.
    assert "2 symbols asked, 0 new, 2 no new data" in caplog.text
    assert "no new data for AAPL" not in caplog.text

    free_sandbox.clock.advance(3600)
    later = run_cycle(ctx)
    assert sorted(later.enqueued) == sorted(symbols)
    assert transform.count == 4
    newest = [p for p in queued_payloads(redis, ctx.settings) if p.symbol == "BTC/USD"][-1]
    # The request asked for the gap since the watermark plus the overlap, no warm-up.
    gap = math.ceil(
        (newest.fetched_at - parse_utc(newest.request["watermark"])) / timedelta(hours=1)
    )
    assert newest.request["outputsize"] == gap + ctx.settings.fetch_overlap_bars
    assert len(newest.body["values"]) == newest.request["outputsize"]


def test_a_still_open_bar_that_changed_is_new_data(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["ETH/USD"])
    run_cycle(ctx)
    free_sandbox.clock.advance(60)  # same hour: no new complete bar, the open bar moved
    assert run_cycle(ctx).enqueued == ["ETH/USD"]


def test_a_served_symbol_refused_twice_in_a_row_takes_the_day_off(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["AAPL", "MSFT"])
    assert sorted(run_cycle(ctx).enqueued) == ["AAPL", "MSFT"]  # served: MSFT has bars
    outcomes = []
    for refusals in (1, 0, 1, 1, 0):  # "not found" for MSFT (the request's last symbol) or not
        free_sandbox.clock.advance(3600)
        if refusals:
            free_sandbox.faults.script("unknown_symbol")
        report = run_cycle(ctx)
        outcomes.append(("refused" if report.api_errors else "") + ",".join(report.skipped))
    # Refused once: asked again and served, which forgives it; refused twice in a row: skipped.
    assert outcomes == ["refused", "", "refused", "refused", "MSFT"]


@pytest.mark.parametrize("transport", ["modern", "legacy"])
def test_a_bad_symbol_is_logged_with_the_api_message_and_never_sinks_the_batch(
    make_context: Callable[..., FetchContext],
    free_sandbox: SandboxServer,
    redis: Redis,
    transport: str,
) -> None:
    free_sandbox.set_error_transport(transport)
    ctx = make_context(symbols=["AAPL", "NOSUCH", "BTC/USD"])
    report = run_cycle(ctx)
    assert sorted(report.enqueued) == ["AAPL", "BTC/USD"]
    assert "not found" in report.api_errors["NOSUCH"]
    # A one-symbol request fails as a whole (HTTP 400 or HTTP 200 + error body): same outcome.
    single = run_cycle(make_context(symbols=["ZZZZ"]))
    assert "not found" in single.api_errors["ZZZZ"]

    env = settings_env(ctx.settings)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    runs = dict(
        query(
            ctx.settings,
            "SELECT symbol, status FROM marketpipe.pipeline_runs WHERE component = 'loader'",
        )
    )
    assert runs == {"AAPL": "ok", "BTC/USD": "ok", "NOSUCH": "failed", "ZZZZ": "failed"}
    # The cycles' own rows: what was asked, what failed and why (the API's message).
    cycles = query(
        ctx.settings,
        "SELECT status, symbols_asked, symbols_new, api_errors, message"
        " FROM marketpipe.pipeline_runs WHERE component = 'fetcher' ORDER BY symbols_asked",
    )
    assert [c[:4] for c in cycles] == [("failed", 1, 0, 1), ("partial", 3, 2, 1)]
    assert all("not found" in c[4] for c in cycles)
    # The API's own message is kept with the failed run's payload.
    messages = query(
        ctx.settings,
        "SELECT r.symbol, p.body->>'message' FROM marketpipe.pipeline_runs r"
        " JOIN marketpipe.raw_payloads p USING (payload_id) WHERE r.status = 'failed'",
    )
    assert all("not found" in message for _, message in messages)

    # Not retried: the next tick does not even ask for it (no credit spent on a known refusal).
    free_sandbox.clock.advance(3600)
    before = credits_used_today(free_sandbox)
    later = run_cycle(ctx)
    assert later.skipped == ["NOSUCH"]
    assert credits_used_today(free_sandbox) - before == 2
