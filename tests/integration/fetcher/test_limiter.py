"""The shared credit limiter: its Lua rule on real Redis, on a frozen clock that waits advance."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.cycle import run_cycle
from services.fetcher.limiter import CreditLimiter, seconds_to_next_day, seconds_to_next_minute
from services.sandbox.app import SandboxServer
from services.sandbox.clock import SandboxClock
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import FROZEN_AT
from tests.support.clock import InProcessClock

PER_MINUTE, PER_DAY = 8, 800
# Early in a minute, so the guard before the minute's end does not come into play.
EARLY = FROZEN_AT + timedelta(seconds=10)


def limiter_at(redis: Redis, at: datetime) -> tuple[CreditLimiter, InProcessClock]:
    clock = InProcessClock(SandboxClock(at, speed=0))
    return CreditLimiter(redis, clock, per_minute=PER_MINUTE, per_day=PER_DAY), clock


def spend(limiter: CreditLimiter, clock: InProcessClock, minute: int, day: int) -> None:
    """Bring the budget to ``minute`` used this minute and ``day`` today, early in a minute."""
    for _ in range(day - minute):
        limiter.acquire(1)  # waits for the next minute whenever this one is full
    if limiter.usage()[0]:
        clock.sleep(seconds_to_next_minute(clock.now()) + 10)
    for _ in range(minute):
        limiter.acquire(1)
    assert limiter.usage() == (minute, day)


@pytest.mark.parametrize(
    ("want", "at_least", "used_minute", "used_day", "granted"),
    [
        (20, 1, 0, 0, 8),  # a batch sized to the minute's budget
        (20, 1, 5, 5, 3),  # what is left of the minute
        (3, 1, 0, 0, 3),
        (3, None, 4, 4, 3),  # all of want, when it is there
        (20, None, 0, 0, 8),  # more than the plan can ever give: the whole minute
        (20, 0, 6, 6, 2),  # 'at least nothing' is at least one
        (20, 1, 0, 798, 2),  # the day's end bounds it too
    ],
)
def test_the_lua_rule_grants_what_the_budgets_leave_without_waiting(
    redis: Redis, want: int, at_least: int | None, used_minute: int, used_day: int, granted: int
) -> None:
    limiter, clock = limiter_at(redis, EARLY)
    spend(limiter, clock, used_minute, used_day)
    slept = clock.slept
    grant = limiter.acquire(want, at_least=at_least)
    assert grant.credits == granted and grant.waited == 0 and clock.slept == slept
    assert limiter.usage() == (used_minute + granted, used_day + granted)
    assert (grant.minute_used, grant.day_used) == limiter.usage()


@pytest.mark.parametrize(
    ("want", "at_least", "used_minute", "granted"),
    [
        (20, 1, 8, 8),  # minute spent: the next minute's whole budget
        (8, 8, 1, 8),  # a retry needs its whole batch: it waits rather than take 7
        (5, None, 6, 5),
    ],
)
def test_too_little_left_waits_for_the_next_minute(
    redis: Redis, want: int, at_least: int | None, used_minute: int, granted: int
) -> None:
    limiter, clock = limiter_at(redis, EARLY)
    spend(limiter, clock, used_minute, used_minute)
    to_next_minute = seconds_to_next_minute(clock.now())
    grant = limiter.acquire(want, at_least=at_least)
    assert grant.credits == granted
    assert to_next_minute <= grant.waited <= to_next_minute + limiter.slack
    assert limiter.usage() == (granted, used_minute + granted)


def test_a_spent_day_waits_for_the_next_api_day(redis: Redis) -> None:
    limiter, clock = limiter_at(redis, EARLY)
    spend(limiter, clock, 0, PER_DAY)
    to_next_day = seconds_to_next_day(clock.now())
    grant = limiter.acquire(3, at_least=1)
    assert grant.credits == 3 and grant.waited >= to_next_day
    assert limiter.usage() == (3, 3)  # a new day's counters


def test_no_credits_are_handed_out_just_before_a_minute_ends(redis: Redis) -> None:
    limiter, clock = limiter_at(redis, FROZEN_AT + timedelta(seconds=59))
    grant = limiter.acquire(2)
    assert grant.waited > 0 and clock.now() >= FROZEN_AT + timedelta(seconds=60)


def test_nothing_wanted_is_a_mistake(redis: Redis) -> None:
    limiter, _ = limiter_at(redis, EARLY)
    with pytest.raises(ValueError, match="at least 1"):
        limiter.acquire(0)


def test_two_limiters_share_one_budget(redis: Redis) -> None:
    one, clock = limiter_at(redis, EARLY)
    two = CreditLimiter(redis, clock, per_minute=PER_MINUTE, per_day=PER_DAY)
    assert one.acquire(5).credits == 5
    assert two.acquire(8, at_least=1).credits == 3
    assert one.usage() == two.usage() == (8, 8)


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


def test_every_wait_is_one_line_with_its_reason_and_length(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="marketpipe.fetcher.limiter")
    limiter, clock = limiter_at(redis, EARLY)
    spend(limiter, clock, PER_MINUTE, PER_MINUTE)
    caplog.clear()
    limiter.acquire(1)  # the minute is spent: 50 s to its end, plus the slack
    assert [r.getMessage() for r in caplog.records] == [
        f"waiting 51 s for credits: minute budget spent ({PER_MINUTE} of {PER_MINUTE}, 1 needed)"
    ]
    assert limiter.waited == pytest.approx(51.0)  # what the cycle's run row records
    limiter, clock = limiter_at(redis, EARLY + timedelta(days=3))  # a fresh API day
    spend(limiter, clock, 0, PER_DAY)
    caplog.clear()
    limiter.acquire(1)
    (day,) = caplog.records
    assert day.levelname == "WARNING"
    assert day.getMessage().startswith("waiting ") and day.getMessage().endswith(
        f"for credits: daily budget spent ({PER_DAY} of {PER_DAY} credits)"
    )
