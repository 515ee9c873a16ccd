"""The one request loop: transient faults retried with backoff, refusals waited out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.reference import instruments
from services.sandbox.app import SandboxServer


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
