"""The API's clock as the fetcher sees it: only through the Date header of every answer.

The sandbox shows its clock the way the real API does; an accelerated one is followed from the
headers alone, so credit minutes and schedule ticks hold on the API's time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
import requests
from redis import Redis

from marketpipe.settings import Settings
from marketpipe.ticks import LAST_TICK_KEY
from services.fetcher.__main__ import build_context
from services.fetcher.client import SeriesQuery, TwelveDataClient
from services.fetcher.clock import ApiDateClock
from services.fetcher.schedule import run_schedule
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import FROZEN_AT
from tests.integration.fetcher.conftest import queued_payloads

SPEED = 300.0  # API seconds per real second
KEY = "marketpipe-sandbox"
AAPL_HOURS = {"symbol": "AAPL", "interval": "1h"}


@pytest.fixture
def fast_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        port=0,
        clock_start=FROZEN_AT.isoformat(),
        clock_speed=SPEED,
        credits_per_minute=1000,
        credits_per_day=100_000,
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "params", "key", "fault", "status"),
    [
        ("/time_series", AAPL_HOURS, KEY, None, 200),
        ("/time_series", {"symbol": "NOSUCH", "interval": "1h"}, KEY, None, 400),
        ("/time_series", AAPL_HOURS, "wrong", None, 401),
        ("/time_series", AAPL_HOURS, KEY, "rate_limit", 429),
        ("/time_series", AAPL_HOURS, KEY, "server_error", 500),
        ("/time_series", AAPL_HOURS, KEY, "bad_gateway", 502),
        ("/stocks", {"symbol": "AAPL"}, KEY, None, 200),
        ("/no_such_endpoint", {}, KEY, None, 404),
    ],
)
def test_every_answer_carries_the_sandbox_clock_in_its_date_header(
    free_sandbox: SandboxServer,
    path: str,
    params: dict[str, str],
    key: str,
    fault: str | None,
    status: int,
) -> None:
    if fault:
        free_sandbox.faults.script(fault, count=1)
    free_sandbox.clock.advance(3 * 3600 + 17)
    auth = {"Authorization": f"apikey {key}"}
    answer = requests.get(f"{free_sandbox.url}{path}", params=params, headers=auth, timeout=10)
    assert answer.status_code == status
    assert parsedate_to_datetime(answer.headers["Date"]) == free_sandbox.clock.now()


def test_an_accelerated_api_clock_is_followed_from_date_headers_alone(
    fetch_settings: Settings, redis: Redis, fast_sandbox: SandboxServer
) -> None:
    clock = ApiDateClock()
    ctx = build_context(
        fetch_settings.model_copy(update={"twelve_data_base_url": fast_sandbox.url}),
        clock=clock,
        redis=redis,
    )
    client = ctx.client
    assert isinstance(client, TwelveDataClient)
    for _ in range(3):
        client.reference("stocks", "AAPL")
        clock.sleep(30)  # 30 API seconds, a tenth of a real second at this speed
    client.time_series(["BTC/USD"], SeriesQuery("1min", 5))
    # The headers' pace, at its slowest value they allow: faster than ours, never faster than
    # the API's, so a wait for the API's next minute never ends before that minute begins.
    assert 1.0 < clock.rate <= SPEED
    assert clock.now() <= fast_sandbox.clock.now()
    target = clock.now() + timedelta(minutes=1)
    clock.sleep(60)
    assert fast_sandbox.clock.now() >= target


def every_ten_minutes(settings: Settings, sandbox: SandboxServer) -> Settings:
    """ETH/USD from ``sandbox``, a tick every ten API minutes."""
    return settings.model_copy(
        update={
            "twelve_data_base_url": sandbox.url,
            "symbols": ("ETH/USD",),
            "fetch_schedule": "*/10 * * * *",
        }
    )


def test_the_schedule_ticks_on_an_accelerated_api_clock(
    fetch_settings: Settings, redis: Redis, fast_sandbox: SandboxServer
) -> None:
    settings = every_ten_minutes(fetch_settings, fast_sandbox)
    ctx = build_context(settings, redis=redis)  # the production clock: Date headers only
    ctx.client.reference("cryptocurrencies", "ETH/USD")  # a first answer, as a fetcher has seen
    end = fast_sandbox.clock.now() + timedelta(minutes=25)
    ran = run_schedule(ctx, until=lambda: fast_sandbox.clock.now() >= end)
    assert ran >= 3  # the due tick at start, then every 10 API minutes
    fetched = sorted(p.fetched_at for p in queued_payloads(redis, settings))
    assert len(fetched) == ran
    slots = [t.replace(minute=t.minute - t.minute % 10, second=0) for t in fetched]
    # One answer per ten-minute slot: no tick ran before its time, none ran twice.
    assert len(set(slots)) == len(slots)
    assert all(b - a == timedelta(minutes=10) for a, b in itertools.pairwise(slots))


def test_a_fresh_fetcher_names_its_first_tick_on_the_api_clock_for_no_credit(
    fetch_settings: Settings, redis: Redis, fast_sandbox: SandboxServer
) -> None:
    settings = every_ten_minutes(fetch_settings, fast_sandbox)
    # No answer seen yet: the clock reads our wall time (December), the API's is in March.
    ctx = build_context(settings, redis=redis)
    assert abs(ctx.clock.now() - fast_sandbox.clock.now()) > timedelta(days=30)
    ctx.client.sync_clock()
    assert fast_sandbox.credits.snapshot(KEY, fast_sandbox.clock.now()).day_used == 0
    assert abs(ctx.clock.now() - fast_sandbox.clock.now()) < timedelta(minutes=1)

    ctx = build_context(settings, redis=redis)  # a restarted fetcher, its clock unsynced again
    end = fast_sandbox.clock.now() + timedelta(minutes=15)
    assert run_schedule(ctx, until=lambda: fast_sandbox.clock.now() >= end) >= 2
    last_tick = redis.get(LAST_TICK_KEY)
    assert last_tick is not None and last_tick.decode().startswith(FROZEN_AT.date().isoformat())
