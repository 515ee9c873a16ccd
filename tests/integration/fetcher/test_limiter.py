"""The shared credit limiter on real Redis, with the sandbox's clock injected (no real waits)."""

from __future__ import annotations

from datetime import datetime, timedelta

from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.cycle import run_cycle
from services.fetcher.limiter import CreditLimiter
from services.sandbox.app import SandboxServer
from services.sandbox.clock import SandboxClock
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import FROZEN_AT
from tests.support.clock import InProcessClock


def limiter_at(redis: Redis, at: datetime) -> tuple[CreditLimiter, InProcessClock]:
    clock = InProcessClock(SandboxClock(at, speed=0))
    return CreditLimiter(redis, clock, per_minute=8, per_day=800), clock


def test_a_minute_refusal_closes_the_minute_not_the_day(redis: Redis) -> None:
    limiter, clock = limiter_at(redis, FROZEN_AT + timedelta(seconds=10))
    # The API shows a plan above the day's budget (used + left = 1000 a minute).
    limiter.observe(1, 999, clock.now(), refused=False)
    assert limiter.per_minute == 1000
    assert limiter.acquire(5).credits == 5
    limiter.spent("minute", clock.now())  # that request was refused for this minute

    grant = limiter.acquire(5)
    assert grant.waited <= 61  # the next minute, not the next day
    # The day holds what the API counted: the refused request and its retry, nothing more.
    assert limiter.usage()[1] == 1 + 5 + 5


def test_a_refusal_early_in_a_minute_books_no_phantom_credits(redis: Redis) -> None:
    limiter, clock = limiter_at(redis, FROZEN_AT + timedelta(seconds=5))
    for _ in range(3):
        assert limiter.acquire(2).credits == 2
        limiter.spent("minute", clock.now())
    assert limiter.usage()[1] == 6
    assert clock.slept < 3 * 62


def test_the_apis_bigger_plan_wins_over_the_configured_one(
    fetch_settings: Settings, redis: Redis
) -> None:
    plan = SandboxSettings(
        port=0,
        clock_start=FROZEN_AT.isoformat(),
        clock_speed=0,
        credits_per_minute=50,
        credits_per_day=800,
    )
    symbols = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "BTC/USD", "ETH/USD", "SOL/USD")
    with SandboxServer(plan) as sandbox:
        settings = fetch_settings.model_copy(
            update={
                "twelve_data_base_url": sandbox.url,
                "symbols": symbols,
                "api_credits_per_minute": 4,
            }
        )
        clock = InProcessClock(sandbox.clock)
        ctx = build_context(settings, clock=clock, redis=redis)
        report = run_cycle(ctx)
    assert sorted(report.enqueued) == sorted(symbols) and not report.deferred
    # Twice the configured minute's credits without waiting: the API's 50 a minute counted.
    assert clock.slept == 0 and ctx.limiter.per_minute == 50
