"""Instrument attributes from the reference endpoints, cached in Redis."""

from __future__ import annotations

from collections.abc import Callable

from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.sandbox.app import SandboxServer
from tests.integration.fetcher.conftest import (
    credits_used_today,
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
    assert credits_used_today(free_sandbox) - before == 4  # refreshed: 2 reference + 2 series
