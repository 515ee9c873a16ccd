"""Fetch state: after losing Redis, the watermark comes back from Postgres."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

from redis import Redis

from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle
from services.fetcher.series import view_series
from services.sandbox.app import SandboxServer
from tests.integration.conftest import run_service, settings_env
from tests.integration.fetcher.conftest import (
    query,
    queued_payloads,
)


def test_after_losing_redis_the_watermark_comes_back_from_postgres(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["BTC/USD"])
    run_cycle(ctx)
    env = settings_env(ctx.settings)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    [(watermark,)] = query(
        ctx.settings, "SELECT last_complete_bar FROM marketpipe.watermarks WHERE symbol = 'BTC/USD'"
    )

    redis.flushdb()  # Redis lost: queues, blobs, fetch state, credit counters, reference cache
    free_sandbox.clock.advance(2 * 3600)
    ctx = make_context(symbols=["BTC/USD"])
    report = run_cycle(ctx)
    assert report.enqueued == ["BTC/USD"]
    [payload] = queued_payloads(redis, ctx.settings)
    assert payload.request["watermark"] == watermark.isoformat()
    # The gap since the stored watermark plus the overlap, not FETCH_OUTPUTSIZE.
    gap = math.ceil((payload.fetched_at - watermark) / timedelta(hours=1))
    assert payload.request["outputsize"] == gap + ctx.settings.fetch_overlap_bars
    view = view_series(payload.body, "1h", payload.fetched_at)
    assert view.newest_complete is not None and view.newest_complete > watermark
