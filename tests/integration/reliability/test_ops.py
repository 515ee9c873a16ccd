"""The recovery commands, run as an operator would: `python -m services.ops ...`."""

from __future__ import annotations

from redis import Redis

from marketpipe import broker
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from services.transformer.jobs import load_job_id
from tests.integration.conftest import FROZEN_AT, run_pipeline, run_service, settings_env
from tests.integration.loader.conftest import put_batch
from tests.integration.reliability.conftest import (
    drain_bursts,
    failed_jobs,
    query,
    table_rows,
)
from tests.support.scratch import empty_claimed_redis


def test_requeue_failed_gives_failed_jobs_another_run(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "SOL/USD", 24)
    hidden = "hidden-batch"
    redis.rename(broker._batch_key(batch_id), hidden)  # as if the blob had expired
    # No retries: the job fails once and stays in the failed-job registry.
    broker.queue(LOAD_QUEUE, redis, clean_db).enqueue(
        LOAD_JOB, args=(batch_id,), job_id=load_job_id(batch_id)
    )
    env = settings_env(clean_db)
    run_service("services.loader", "--burst", env=env)
    assert "MissingBlobError" in failed_jobs(redis)[f"load-{batch_id}"]

    redis.rename(hidden, broker._batch_key(batch_id))  # the cause is fixed
    out = run_service("services.ops", "requeue-failed", "--queue", "marketpipe-load", env=env)
    assert "marketpipe-load: 1 failed job(s) requeued" in out
    run_service("services.loader", "--burst", env=env)

    assert failed_jobs(redis) == {}
    assert query(clean_db, "SELECT count(*) FROM marketpipe.bars") == [(24,)]


def test_replay_rebuilds_a_window_from_raw_payloads_without_the_api(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer
) -> None:
    settings = pipeline_settings
    run_pipeline(settings)
    before = {t: table_rows(settings, t) for t in ("bars", "daily_bars", "watermarks")}
    assert before["bars"]

    # Damage: a bad deploy zeroed one symbol's closes, and Redis lost every blob.
    conn_rows = query(
        settings,
        "WITH d AS (UPDATE marketpipe.bars SET close = 0, sma_20 = NULL"
        " WHERE symbol = 'AAPL' RETURNING 1) SELECT count(*) FROM d",
    )
    assert conn_rows[0][0] > 0
    empty_claimed_redis(redis)
    credits = sandbox.credits.snapshot("marketpipe-sandbox", sandbox.clock.now()).day_used

    env = settings_env(settings)
    window = ("--since", FROZEN_AT.date().isoformat(), "--until", "2026-03-12T00:00:00")
    dry = run_service("services.ops", "replay", *window, "--symbols", "aapl", "--dry-run", env=env)
    assert "would replay 1 payload(s)" in dry and "AAPL: 1" in dry
    assert broker.queue("marketpipe-transform", redis, settings).count == 0
    out = run_service("services.ops", "replay", *window, "--symbols", "AAPL", env=env)
    assert "replaying 1 payload(s)" in out
    drain_bursts(settings)

    assert {t: table_rows(settings, t) for t in before} == before
    assert failed_jobs(redis) == {}
    assert sandbox.credits.snapshot("marketpipe-sandbox", sandbox.clock.now()).day_used == credits
