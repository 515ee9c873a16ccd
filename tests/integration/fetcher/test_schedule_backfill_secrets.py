"""Ticks across replicas and restarts, the resumable backfill, and the API key never leaking."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.backfill import ProgressBar, run_backfill
from services.fetcher.context import FetchContext
from services.fetcher.schedule import LAST_TICK_KEY, run_due_tick, run_schedule
from services.fetcher.series import backfill_windows
from services.sandbox.app import SandboxServer
from tests.integration.conftest import run_service, settings_env
from tests.integration.fetcher.conftest import SECRET_KEY
from tests.integration.fetcher.test_extraction import queued_payloads


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
    assert report is not None and report.enqueued == ["BTC/USD"]
    assert run_due_tick(ctx) == (None, None)
    # The one catch-up fetched every missed hour: the gap since nothing was stored is the
    # initial history, which spans them.
    [payload] = queued_payloads(redis, ctx.settings)
    assert len(payload.body["values"]) == ctx.settings.fetch_outputsize


def test_the_schedule_runs_at_the_configured_minute_of_each_hour(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=["ETH/USD"], fetch_schedule="17 * * * *")
    end = free_sandbox.clock.now() + timedelta(hours=3)
    ran = run_schedule(ctx, until=lambda: free_sandbox.clock.now() >= end)
    assert ran == 4  # the due 18:17 at start, then 19:17, 20:17, 21:17
    ticks = sorted(p.fetched_at for p in queued_payloads(redis, ctx.settings))
    assert [t.strftime("%H:%M") for t in ticks[1:]] == ["19:17", "20:17", "21:17"]


class StopAfter(ProgressBar):
    """A progress bar that stops the backfill like Ctrl-C after some updates."""

    updates = 0
    stop_after: int | None = None

    def update(self, done: int, note: str = "") -> None:
        super().update(done, note)
        StopAfter.updates += 1
        if self.stop_after is not None and StopAfter.updates > self.stop_after:
            raise KeyboardInterrupt


def test_backfill_pages_windows_within_budget_and_resumes_after_an_interruption(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    symbols = ["BTC/USD", "ETH/USD", "AAPL"]
    ctx = make_context(symbols=symbols, interval="15min")
    since, until = date(2025, 11, 1), date(2026, 3, 12)
    crypto_windows = backfill_windows(since, until, "15min", "crypto")
    stock_windows = backfill_windows(since, until, "15min", "stock")
    assert len(crypto_windows) >= 3 and len(stock_windows) >= 1
    total = 2 * len(crypto_windows) + len(stock_windows)

    stream = io.StringIO()
    StopAfter.stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        run_backfill(ctx, since, until=until, progress=lambda n: StopAfter(n, stream=stream))
    first = len(queued_payloads(redis, ctx.settings))
    assert 0 < first < total

    StopAfter.stop_after = None
    report = run_backfill(ctx, since, progress=lambda n: StopAfter(n, stream=stream))
    payloads = queued_payloads(redis, ctx.settings)
    assert len(payloads) == total  # the resumed run did only what was left
    assert report.windows_done == report.windows_total == total
    assert "resuming" in stream.getvalue() and "ETA" in stream.getvalue()
    assert ctx.client.refusals == 0  # type: ignore[attr-defined]

    # Every 15-minute bar of BTC/USD since `since` is in some payload: no window was skipped.
    seen = {v["datetime"] for p in payloads if p.symbol == "BTC/USD" for v in p.body["values"]}
    expected = (datetime(2026, 3, 11, 18, 45) - datetime(2025, 11, 1)) // timedelta(minutes=15)
    assert sum(1 for d in seen if d >= "2025-11-01") >= expected
    assert all(p.request["outputsize"] == 5000 for p in payloads)
    assert all(len(p.body["values"]) <= 5000 for p in payloads)


def _everything_in_redis(redis: Redis) -> bytes:
    dump = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        dump.append(key)
        if kind == b"string":
            dump.append(redis.get(key) or b"")
        elif kind == b"hash":
            dump.extend(b"%s=%s" % kv for kv in redis.hgetall(key).items())
        elif kind == b"list":
            dump.extend(redis.lrange(key, 0, -1))
        elif kind == b"set":
            dump.extend(redis.smembers(key))
        elif kind == b"zset":
            dump.extend(m for m, _ in redis.zrange(key, 0, -1, withscores=True))
    return b"\n".join(dump)


def test_the_api_key_never_reaches_logs_jobs_redis_or_the_database(
    fetch_settings: Settings, free_sandbox: SandboxServer, redis: Redis
) -> None:
    settings = fetch_settings.model_copy(update={"symbols": ("AAPL", "NOSUCH", "BTC/USD")})
    env = settings_env(settings, SANDBOX_API_KEY=SECRET_KEY, LOG_LEVEL="DEBUG")
    logs = run_service("services.fetcher", "--once", env=env)
    logs += run_service("services.transformer", "--burst", env=env)
    logs += run_service("services.loader", "--burst", env=env)
    # The run used the key and did real work, so the greps below are meaningful.
    assert free_sandbox.credits.snapshot(SECRET_KEY, free_sandbox.clock.now()).day_used > 0
    assert "GET /time_series?symbol=AAPL" in logs  # urllib3 logs request URLs at DEBUG

    assert SECRET_KEY not in logs
    assert SECRET_KEY.encode() not in _everything_in_redis(redis)
    jobs = broker.queue(TRANSFORM_QUEUE, redis, settings)
    assert jobs.finished_job_registry.count + jobs.count > 0
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marketpipe'"
        )
        tables = [name for (name,) in cur.fetchall()]
        total_rows = 0
        for table in tables:
            cur.execute(f"SELECT t::text FROM marketpipe.{table} t")
            rows = [text for (text,) in cur.fetchall()]
            total_rows += len(rows)
            assert not any(SECRET_KEY in text for text in rows), table
    conn.close()
    assert total_rows > 0
