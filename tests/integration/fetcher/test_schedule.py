"""Ticks across replicas and restarts, on the API's clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis import Redis

from marketpipe.ticks import LAST_TICK_KEY
from services.fetcher.context import FetchContext
from services.fetcher.schedule import run_due_tick, run_schedule
from services.sandbox.app import SandboxServer
from tests.integration.fetcher.conftest import (
    query,
    queued_payloads,
)


def test_of_two_replicas_exactly_one_runs_a_tick(make_context: Callable[..., FetchContext]) -> None:
    replicas = [make_context(symbols=["AAPL"]) for _ in range(2)]
    results: list[object] = []
    gate = threading.Barrier(2)

    def tick(ctx: FetchContext) -> None:
        gate.wait()
        results.append(run_due_tick(ctx)[1])

    threads = [threading.Thread(target=tick, args=(ctx,)) for ctx in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    assert sum(report is not None for report in results) == 1
    assert run_due_tick(replicas[0]) == (None, None)  # done: nobody runs it again


def test_missed_ticks_are_caught_up_once(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["BTC/USD"], fetch_schedule="5 * * * *")
    # The fetcher was last seen five ticks ago.
    redis.set(LAST_TICK_KEY, "2026-03-11T13:05:00Z")
    tick, report = run_due_tick(ctx)
    assert tick == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)  # the latest due tick, once
    assert report is not None and report["1h"].enqueued == ["BTC/USD"]
    assert run_due_tick(ctx) == (None, None)
    # The one catch-up fetched every missed hour: the gap since nothing was stored is the
    # initial history, which spans them.
    [payload] = queued_payloads(redis, ctx.settings)
    assert len(payload.body["values"]) == ctx.settings.fetch_outputsize
    # The run log has every tick: the four missed ones as skipped, the catch-up's cycle.
    runs = query(
        ctx.settings,
        "SELECT run_id, status, symbols_asked, symbols_new, credits FROM marketpipe.pipeline_runs"
        " WHERE component = 'fetcher' ORDER BY run_id",
    )
    assert runs == [
        *((f"fetch:1h:2026-03-11T{h}:05:00Z", "skipped", 0, 0, 0) for h in (14, 15, 16, 17)),
        ("fetch:1h:2026-03-11T18:05:00Z", "ok", 1, 1, 1),
    ]


def test_the_schedule_runs_at_the_configured_minute_of_each_hour(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["ETH/USD"], fetch_schedule="17 * * * *")
    end = free_sandbox.clock.now() + timedelta(hours=3)
    ran = run_schedule(ctx, until=lambda: free_sandbox.clock.now() >= end)
    assert ran == 4  # the due 18:17 at start, then 19:17, 20:17, 21:17
    ticks = sorted(p.fetched_at for p in queued_payloads(redis, ctx.settings))
    assert [t.strftime("%H:%M") for t in ticks[1:]] == ["19:17", "20:17", "21:17"]
