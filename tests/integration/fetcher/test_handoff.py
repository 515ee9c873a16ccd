"""The hand-off: one transform job per window, whoever fetched it."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from services.fetcher.context import FetchContext
from services.fetcher.cycle import run_cycle


def test_replicas_and_restarts_never_enqueue_the_same_window_twice(
    make_context: Callable[..., FetchContext], redis: Redis
) -> None:
    symbols = ["AAPL", "SOL/USD"]
    first = make_context(symbols=symbols)
    run_cycle(first)
    transform = broker.queue(TRANSFORM_QUEUE, redis, first.settings)
    ids = sorted(transform.get_job_ids())
    # A replica with no memory of the series (its state lost) fetches the same answers.
    for key in redis.scan_iter("marketpipe:fetch:series:*"):
        redis.delete(key)
    report = run_cycle(make_context(symbols=symbols))
    assert sorted(report.already_queued) == sorted(symbols) and report.enqueued == []
    assert sorted(transform.get_job_ids()) == ids
    assert all(i.startswith(("transform-AAPL-1h-", "transform-SOL_sUSD-1h-")) for i in ids)
