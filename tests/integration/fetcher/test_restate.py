"""The fetcher's side of a restatement: the series' whole stored history re-fetched through the
backfill machinery (windows, credits, resume), landed raw, one swap job enqueued."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import psycopg2
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe import raw
from marketpipe.queues import RESTATE_TRANSFORM_JOB, RESTATEMENT_PENDING_KEY, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.context import FetchContext
from services.fetcher.restate import open_restatements, run_open_restatements, run_restatement
from services.fetcher.series import backfill_windows
from services.sandbox.app import SandboxServer
from tests.integration.fetcher.conftest import credits_used_today

HISTORY_FROM = datetime(2024, 6, 1, 19, tzinfo=UTC)


def record(settings: Settings, symbol: str) -> int:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO marketpipe.restatements (symbol, interval, kind, history_from)"
            " VALUES (%s, '1h', 'split', %s) RETURNING restatement_id",
            (symbol, HISTORY_FROM),
        )
        (restatement_id,) = cur.fetchone()
    conn.close()
    return int(restatement_id)


def swap_job(redis: Redis, restatement_id: int) -> Job | None:
    job_id = f"transform-restatement-{restatement_id}"
    if not redis.exists(f"rq:job:{job_id}"):
        return None
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def test_a_restatement_refetches_the_stored_span_and_enqueues_one_swap(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=("BTC/USD",))
    restatement_id = record(ctx.settings, "BTC/USD")
    [restatement] = open_restatements(ctx)
    assert (restatement.symbol, restatement.interval) == ("BTC/USD", "1h")
    # The span's end is the day after the fetcher's "today" (the frozen API's, once it answered).
    windows = backfill_windows(date(2024, 6, 1), date(2026, 3, 12), "1h", "crypto")
    assert len(windows) >= 3

    # The API fails on every try: nothing is enqueued, the restatement stays open.
    free_sandbox.faults.script("server_error", count=ctx.settings.fetch_max_attempts * 2)
    assert run_restatement(ctx, restatement) is False
    assert swap_job(redis, restatement_id) is None
    free_sandbox.faults.clear()

    before = credits_used_today(free_sandbox)
    assert run_restatement(ctx, restatement) is True
    spent = credits_used_today(free_sandbox) - before
    assert len(windows) <= spent <= len(windows) + 1  # a window each (+ a reference lookup)
    job = swap_job(redis, restatement_id)
    assert job is not None and job.func_name == RESTATE_TRANSFORM_JOB
    # Its run log row: still running (the loader's swap closes it), with windows and credits.
    conn = psycopg2.connect(ctx.settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT component, status, symbol, interval, windows, credits FROM"
            " marketpipe.pipeline_runs WHERE run_id = %s",
            (f"restatement:{restatement_id}",),
        )
        run = cur.fetchone()
    conn.close()
    assert run is not None and run[:5] == ("restatement", "running", "BTC/USD", "1h", len(windows))
    assert len(windows) <= run[5] <= spent
    assert job.origin == TRANSFORM_QUEUE
    job_restatement, payload_ids = job.args
    assert job_restatement == restatement_id and len(payload_ids) == len(windows)
    payloads = [raw.read_payload(ctx.settings.admin_url, p) for p in payload_ids]
    starts = [p.request["since"] for p in payloads]
    assert starts == sorted(starts, reverse=True)  # newest window first
    assert starts[-1] == "2024-06-01" and all(p.symbol == "BTC/USD" for p in payloads)

    # Done once: a second call (another poll) costs nothing and enqueues nothing new.
    job.delete()
    before = credits_used_today(free_sandbox)
    assert run_restatement(ctx, restatement) is False
    assert credits_used_today(free_sandbox) == before and swap_job(redis, restatement_id) is None


def test_the_flag_or_a_tick_makes_the_loop_run_open_restatements(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    ctx = make_context(symbols=("ETH/USD",))
    restatement_id = record(ctx.settings, "ETH/USD")
    assert run_open_restatements(ctx) == 0  # no flag, no tick: no database read, nothing run
    redis.set(RESTATEMENT_PENDING_KEY, restatement_id)
    assert run_open_restatements(ctx) == 1
    assert not redis.exists(RESTATEMENT_PENDING_KEY)
    assert swap_job(redis, restatement_id) is not None
    assert run_open_restatements(ctx, check_database=True) == 0  # its swap is already enqueued
