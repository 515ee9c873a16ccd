"""Instrument attributes from the reference endpoints, cached in Redis."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from marketpipe.settings import DEFAULT_SYMBOLS
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.sandbox.app import SandboxServer
from tests.integration.fetcher.conftest import (
    credits_used_today,
    queued_payloads,
)


def test_reference_data_is_cached_for_a_day(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer
) -> None:
    ctx = make_context(symbols=["AAPL", "BTC/USD"])
    run_cycle(ctx)
    first = credits_used_today(free_sandbox)
    free_sandbox.clock.advance(3600)
    run_cycle(ctx)
    assert credits_used_today(free_sandbox) - first == 2  # time_series only
    free_sandbox.clock.advance(24 * 3600)
    before = credits_used_today(free_sandbox)
    run_cycle(ctx)
    # Refreshed: one /stocks list + 2 series (the pair's attributes come with its series).
    assert credits_used_today(free_sandbox) - before == 3


def test_the_first_tick_on_the_free_plan_costs_at_most_one_credit_more_than_its_symbols(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=list(DEFAULT_SYMBOLS))  # stocks and crypto pairs
    report = run_cycle(ctx)
    assert sorted(report.enqueued) == sorted(DEFAULT_SYMBOLS)
    # The sandbox's own credit counter: one /stocks list, then one credit per series.
    assert credits_used_today(free_sandbox) <= len(DEFAULT_SYMBOLS) + 1
    assert report.credits == credits_used_today(free_sandbox)  # what the run log records
    # ... and the payloads still carry every attribute the per-symbol look-ups gave.
    payloads = {p.symbol: p for p in queued_payloads(redis, ctx.settings)}
    assert {"name", "exchange", "mic_code", "currency", "country", "type"} <= set(
        payloads["AAPL"].instrument
    )
    assert payloads["BTC/USD"].instrument["currency_base"] == "Bitcoin"
    assert payloads["BTC/USD"].instrument["name"] == "Bitcoin / US Dollar"
