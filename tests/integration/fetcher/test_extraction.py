"""Incremental, credit-aware cycles against the sandbox on a free plan (8 credits a minute)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import psycopg2
import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe import broker, raw
from marketpipe.contract import RawPayload
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.cycle import Fetcher, run_cycle
from services.fetcher.series import INDICATOR_WARMUP, view_series
from services.sandbox.app import SandboxServer
from tests.integration.conftest import run_service, settings_env
from tests.integration.fetcher.conftest import credits_used_today

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


def queued_payloads(redis: Redis, settings: Settings) -> list[RawPayload]:
    ids = broker.queue(TRANSFORM_QUEUE, redis, settings).get_job_ids()
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    return [raw.read_payload(settings.admin_url, job.args[0]) for job in jobs if job is not None]


def query(settings: Settings, statement: str, *params: object) -> list[tuple]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_twenty_symbols_on_eight_credits_wait_for_the_minute_and_are_never_refused(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer, redis: Redis
) -> None:
    fx = make_fetcher(symbols=TWENTY)
    start = free_sandbox.clock.now()
    report = run_cycle(fx)

    assert sorted(report.enqueued) == sorted(TWENTY)
    assert fx.client.refusals == 0  # type: ignore[attr-defined]
    # 20 reference look-ups (forex pairs try crypto first: +3) and 20 series = 63 credits: the
    # fetcher waited for 7 more API minutes instead of being refused.
    used = credits_used_today(free_sandbox)
    assert used == 20 + 3 + 20
    assert free_sandbox.clock.now() - start >= timedelta(minutes=(used - 1) // 8)
    assert fx.limiter.usage()[1] == used  # our shared counter agrees with the API's

    # Every payload carries its instrument attributes from the reference endpoints.
    payloads = {p.symbol: p for p in queued_payloads(redis, fx.settings)}
    assert payloads["AAPL"].instrument["mic_code"] == "XNGS"
    assert {"name", "exchange", "currency", "country", "type"} <= set(payloads["AAPL"].instrument)
    assert payloads["BTC/USD"].instrument["currency_base"] == "Bitcoin"
    assert payloads["EUR/USD"].instrument["type"] == "Physical Currency"


def test_reference_data_is_cached_for_a_day(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer
) -> None:
    fx = make_fetcher(symbols=["AAPL", "BTC/USD"])
    run_cycle(fx)
    first = credits_used_today(free_sandbox)
    free_sandbox.clock.advance(3600)
    run_cycle(fx)
    assert credits_used_today(free_sandbox) - first == 2  # time_series only
    free_sandbox.clock.advance(24 * 3600)
    before = credits_used_today(free_sandbox)
    run_cycle(fx)
    assert credits_used_today(free_sandbox) - before == 4  # refreshed: 2 reference + 2 series


def test_two_fetchers_share_one_budget(make_fetcher: Callable[..., Fetcher]) -> None:
    one, two = make_fetcher(), make_fetcher()
    assert one.limiter.acquire(5).credits == 5
    assert two.limiter.acquire(8, at_least=1).credits == 3
    assert one.limiter.usage()[0] == 8


def test_nothing_new_enqueues_nothing_and_a_new_hour_does(
    make_fetcher: Callable[..., Fetcher],
    free_sandbox: SandboxServer,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    symbols = ["AAPL", "BTC/USD"]
    fx = make_fetcher(symbols=symbols)
    transform = broker.queue(TRANSFORM_QUEUE, redis, fx.settings)
    assert sorted(run_cycle(fx).enqueued) == sorted(symbols)
    assert transform.count == 2

    caplog.set_level("INFO", logger="marketpipe.fetcher")
    again = run_cycle(fx)  # same API time: same bars, same open bar
    assert sorted(again.no_new_data) == sorted(symbols) and again.enqueued == []
    assert transform.count == 2
    assert "no new data for AAPL 1h" in caplog.text

    free_sandbox.clock.advance(3600)
    later = run_cycle(fx)
    assert sorted(later.enqueued) == sorted(symbols)
    assert transform.count == 4
    newest = [p for p in queued_payloads(redis, fx.settings) if p.symbol == "BTC/USD"][-1]
    # The request asked for the gap since the watermark plus the warm-up window.
    assert newest.request["outputsize"] >= INDICATOR_WARMUP + 1
    assert newest.request["since"] is not None


def test_a_still_open_bar_that_changed_is_new_data(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer
) -> None:
    fx = make_fetcher(symbols=["ETH/USD"])
    run_cycle(fx)
    free_sandbox.clock.advance(60)  # same hour: no new complete bar, the open bar moved
    assert run_cycle(fx).enqueued == ["ETH/USD"]


def test_after_losing_redis_the_watermark_comes_back_from_postgres(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer, redis: Redis
) -> None:
    fx = make_fetcher(symbols=["BTC/USD"])
    run_cycle(fx)
    env = settings_env(fx.settings)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    [(watermark,)] = query(
        fx.settings, "SELECT last_complete_bar FROM marketpipe.watermarks WHERE symbol = 'BTC/USD'"
    )

    redis.flushdb()  # Redis lost: queues, blobs, fetch state, credit counters, reference cache
    free_sandbox.clock.advance(2 * 3600)
    fx = make_fetcher(symbols=["BTC/USD"])
    report = run_cycle(fx)
    assert report.enqueued == ["BTC/USD"]
    [payload] = queued_payloads(redis, fx.settings)
    assert payload.request["since"] == watermark.isoformat()
    # The gap since the stored watermark plus the warm-up, not FETCH_OUTPUTSIZE.
    gap = math.ceil((payload.fetched_at - watermark) / timedelta(hours=1))
    assert payload.request["outputsize"] == gap + INDICATOR_WARMUP
    view = view_series(payload.body, "1h", payload.fetched_at)
    assert view.newest_complete is not None and view.newest_complete > watermark


def test_replicas_and_restarts_never_enqueue_the_same_window_twice(
    make_fetcher: Callable[..., Fetcher], redis: Redis
) -> None:
    symbols = ["AAPL", "SOL/USD"]
    first = make_fetcher(symbols=symbols)
    run_cycle(first)
    transform = broker.queue(TRANSFORM_QUEUE, redis, first.settings)
    ids = sorted(transform.get_job_ids())
    # A replica with no memory of the series (its state lost) fetches the same answers.
    for key in redis.scan_iter("marketpipe:fetch:series:*"):
        redis.delete(key)
    report = run_cycle(make_fetcher(symbols=symbols))
    assert sorted(report.already_queued) == sorted(symbols) and report.enqueued == []
    assert sorted(transform.get_job_ids()) == ids
    assert all(i.startswith(("transform-AAPL-1h-", "transform-SOL_sUSD-1h-")) for i in ids)


@pytest.mark.parametrize(
    "fault", ["server_error", "bad_gateway", "malformed_json", "rate_limit", "slow"]
)
def test_transient_faults_are_retried_and_nothing_is_lost(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer, fault: str
) -> None:
    fx = make_fetcher(symbols=["AAPL", "ETH/USD"])
    fx.instruments(["AAPL", "ETH/USD"])  # reference data first, so the fault hits the series
    free_sandbox.faults.script(fault, count=2)
    before = free_sandbox.clock.now()
    report = run_cycle(fx)
    assert sorted(report.enqueued) == ["AAPL", "ETH/USD"]
    assert report.deferred == {} and report.api_errors == {}
    waited = free_sandbox.clock.now() - before
    if fault == "rate_limit":
        assert fx.client.refusals == 2  # type: ignore[attr-defined]
        assert waited >= timedelta(minutes=1)  # waited for the next minutes, no failure
    else:
        assert waited > timedelta(0)  # backoff, on the injected clock


def test_transient_failures_beyond_the_retries_defer_to_the_next_tick(
    make_fetcher: Callable[..., Fetcher], free_sandbox: SandboxServer, redis: Redis
) -> None:
    fx = make_fetcher(symbols=["AAPL"], fetch_max_attempts=2)
    fx.instruments(["AAPL"])
    free_sandbox.faults.script("server_error", count=2)
    report = run_cycle(fx)
    assert list(report.deferred) == ["AAPL"] and report.enqueued == []
    assert broker.queue(TRANSFORM_QUEUE, redis, fx.settings).count == 0
    assert run_cycle(fx).enqueued == ["AAPL"]  # the next tick gets it


@pytest.mark.parametrize("transport", ["modern", "legacy"])
def test_a_bad_symbol_is_logged_with_the_api_message_and_never_sinks_the_batch(
    make_fetcher: Callable[..., Fetcher],
    free_sandbox: SandboxServer,
    redis: Redis,
    transport: str,
) -> None:
    free_sandbox.set_error_transport(transport)
    fx = make_fetcher(symbols=["AAPL", "NOSUCH", "BTC/USD"])
    report = run_cycle(fx)
    assert sorted(report.enqueued) == ["AAPL", "BTC/USD"]
    assert "not found" in report.api_errors["NOSUCH"]
    # A one-symbol request fails as a whole (HTTP 400 or HTTP 200 + error body): same outcome.
    single = run_cycle(make_fetcher(symbols=["ZZZZ"]))
    assert "not found" in single.api_errors["ZZZZ"]

    env = settings_env(fx.settings)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    runs = dict(
        query(fx.settings, "SELECT symbol, status FROM marketpipe.pipeline_runs ORDER BY 1")
    )
    assert runs == {"AAPL": "ok", "BTC/USD": "ok", "NOSUCH": "failed", "ZZZZ": "failed"}
    # The API's own message is kept with the failed run's payload.
    messages = query(
        fx.settings,
        "SELECT r.symbol, p.body->>'message' FROM marketpipe.pipeline_runs r"
        " JOIN marketpipe.raw_payloads p USING (payload_id) WHERE r.status = 'failed'",
    )
    assert all("not found" in message for _, message in messages)

    # Not retried: the next tick does not even ask for it (no credit spent on a known refusal).
    free_sandbox.clock.advance(3600)
    before = credits_used_today(free_sandbox)
    later = run_cycle(fx)
    assert later.skipped == ["NOSUCH"]
    assert credits_used_today(free_sandbox) - before == 2
