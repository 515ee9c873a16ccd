"""Loader jobs on real Redis, RQ and PostgreSQL: transactions, idempotence and coalescing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import psycopg2
import pytest
from psycopg2 import errors
from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.settings import Settings
from services.loader.jobs import claim, read_batch, release, run_load
from services.transformer.jobs import load_job_id
from tests.integration.conftest import run_service, settings_env
from tests.integration.loader.conftest import (
    count_rows,
    enqueue_load,
    job_result,
    put_batch,
    wait_for,
)

BARS = 48  # two days of hourly crypto bars per batch
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD", "ADA/USD", "XRP/USD", "DOT/USD")


def bars_snapshot(settings: Settings) -> list[tuple]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, bar_time, close, transformed_at, loaded_at, xmin::text"
            " FROM marketpipe.bars ORDER BY 1, 2"
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_one_batch_lands_everything(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    result = run_load(clean_db, redis, batch_id, "test")
    assert result["loaded"] == [batch_id] and result["bars_changed"] == BARS
    counts = count_rows(clean_db)
    assert counts["bars"] == BARS and counts["raw_payloads"] == 1
    assert counts["daily_bars"] >= 2 and counts["pipeline_runs"] == 1
    assert counts["watermarks"] == 1


def test_replays_leave_unchanged_rows_untouched(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    run_load(clean_db, redis, batch_id, "first")
    before = bars_snapshot(clean_db)
    # The same content again: the claim says it is loaded, the job is a no-op.
    assert run_load(clean_db, redis, batch_id, "second")["already_loaded"] is True
    # Re-transformed later (new transformed_at, so other bytes): loaded again, nothing written.
    frames = broker.get_batch(redis, batch_id)
    later = frames["bars"]["transformed_at"] + pd.Timedelta(hours=1)
    frames["bars"] = frames["bars"].assign(transformed_at=later)
    broker.put_batch(redis, batch_id, frames, clean_db.blob_ttl_seconds)
    replay = run_load(clean_db, redis, batch_id, "third")
    assert replay["already_loaded"] is False and replay["bars_changed"] == 0
    assert bars_snapshot(clean_db) == before  # same xmin: not even rewritten


def test_a_failure_mid_way_leaves_nothing(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    good = broker.get_batch(redis, batch_id)
    # The raw payload is written before the bars, which now break a CHECK.
    bad = {**good, "bars": good["bars"].assign(asset_class="bond")}
    broker.put_batch(redis, batch_id, bad, clean_db.blob_ttl_seconds)
    with pytest.raises(errors.CheckViolation):
        run_load(clean_db, redis, batch_id, "failing")
    assert set(count_rows(clean_db).values()) == {0}
    # The claim was released: once the batch is fixed, the same job loads it.
    broker.put_batch(redis, batch_id, good, clean_db.blob_ttl_seconds)
    assert run_load(clean_db, redis, batch_id, "failing")["bars_changed"] == BARS


def test_a_claim_has_one_owner(clean_db: Settings, redis: Redis) -> None:
    batch = read_batch(redis, put_batch(redis, clean_db, "BTC/USD", BARS))
    assert claim(redis, batch, "worker-a", 60) == "claimed"
    assert claim(redis, batch, "worker-b", 60) == "busy"
    assert claim(redis, batch, "worker-a", 60) == "claimed"  # a retry of the same job
    release(redis, [batch.batch_id], "worker-b")  # not the owner: no effect
    assert claim(redis, batch, "worker-b", 60) == "busy"
    release(redis, [batch.batch_id], "worker-a")
    assert claim(redis, batch, "worker-b", 60) == "claimed"


def transactions(settings: Settings) -> int:
    """Loader transactions so far: every run log entry of one transaction shares now()."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT finished_at) FROM marketpipe.pipeline_runs")
        (count,) = cur.fetchone()
    conn.close()
    return int(count)


def loaded_by_job(redis: Redis, batch_ids: list[str]) -> list[list[str]]:
    results = [job_result(redis, b) for b in batch_ids]
    assert all(r is not None for r in results), results
    return [r["loaded"] for r in results if r["loaded"]]


@pytest.mark.parametrize(("max_rows", "groups"), [(50_000, [6]), (2 * BARS, [2, 2, 2])])
def test_queued_batches_are_coalesced(
    clean_db: Settings, redis: Redis, max_rows: int, groups: list[int]
) -> None:
    batch_ids = [put_batch(redis, clean_db, s, BARS) for s in SYMBOLS]
    for batch_id in batch_ids:
        enqueue_load(redis, clean_db, batch_id)
    env = settings_env(clean_db, LOAD_BATCH_MAX_ROWS=max_rows, LOAD_BATCH_MAX_WAIT_SECONDS=0)
    run_service("services.loader", "--burst", env=env)
    loads = loaded_by_job(redis, batch_ids)
    assert [len(group) for group in loads] == groups
    assert sorted(b for group in loads for b in group) == sorted(batch_ids)
    assert transactions(clean_db) == len(groups)
    assert count_rows(clean_db)["bars"] == BARS * len(SYMBOLS)


def test_two_workers_never_load_a_batch_twice(
    clean_db: Settings, redis: Redis, start_loader: Callable[..., Any]
) -> None:
    batch_ids = [
        put_batch(redis, clean_db, symbol, BARS, offset=day * BARS)
        for day in range(4)
        for symbol in SYMBOLS
    ]
    for _ in range(2):
        start_loader(clean_db, LOAD_BATCH_MAX_ROWS=3 * BARS, LOAD_BATCH_MAX_WAIT_SECONDS=0.2)
    for batch_id in batch_ids:
        enqueue_load(redis, clean_db, batch_id)

    def all_finished() -> bool:
        jobs = Job.fetch_many(
            [load_job_id(b) for b in batch_ids], connection=redis, serializer=JSONSerializer
        )
        return all(j is not None and j.get_status() == JobStatus.FINISHED for j in jobs)

    wait_for(all_finished, 120, "every load job to finish")
    loaded = [b for group in loaded_by_job(redis, batch_ids) for b in group]
    assert sorted(loaded) == sorted(batch_ids)  # each exactly once
    assert count_rows(clean_db)["bars"] == BARS * len(batch_ids)


def test_a_bad_batch_does_not_hold_back_its_neighbours(clean_db: Settings, redis: Redis) -> None:
    batch_ids = [put_batch(redis, clean_db, s, BARS) for s in SYMBOLS[:3]]
    frames = broker.get_batch(redis, batch_ids[1])
    frames["bars"] = frames["bars"].assign(asset_class="bond")
    broker.put_batch(redis, batch_ids[1], frames, clean_db.blob_ttl_seconds)
    for batch_id in batch_ids:
        enqueue_load(redis, clean_db, batch_id, retry=Retry(max=1, interval=600))
    run_service(
        "services.loader", "--burst", env=settings_env(clean_db, LOAD_BATCH_MAX_WAIT_SECONDS=0)
    )
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT payload_id FROM marketpipe.bars")
        loaded = {p for (p,) in cur.fetchall()}
    conn.close()
    assert loaded == {batch_ids[0], batch_ids[2]}
    bad = Job.fetch(load_job_id(batch_ids[1]), connection=redis, serializer=JSONSerializer)
    assert bad.get_status() in (JobStatus.SCHEDULED, JobStatus.FAILED)
