"""Loader jobs on real Redis, RQ and PostgreSQL: one batch, one transaction, idempotent."""

from __future__ import annotations

import adbc_driver_manager
import pandas as pd
import psycopg2
import pytest
from redis import Redis
from rq import Retry
from rq.job import JobStatus

from marketpipe import broker
from marketpipe.raw import PayloadNotLandedError
from marketpipe.settings import Settings
from services.loader.jobs import MixedBatchError, load
from services.transformer.jobs import load_job_id
from tests.integration.conftest import run_service, settings_env
from tests.integration.loader.conftest import count_rows, enqueue_load, job_result, put_batch

BARS = 48  # two days of hourly crypto bars per batch
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD")


def bars_snapshot(settings: Settings) -> list[tuple]:
    """Every bar with its row version (xmin changes whenever a row is rewritten)."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT symbol, bar_time, close, transformed_at, loaded_at, xmin::text"
            " FROM marketpipe.bars ORDER BY 1, 2"
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_one_batch_lands_everything_in_one_transaction(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    assert load(clean_db, batch_id) == {"bars": BARS, "bars_changed": BARS}
    counts = count_rows(clean_db)
    assert counts["bars"] == BARS and counts["raw_payloads"] == 1
    assert counts["daily_bars"] >= 2 and counts["pipeline_runs"] == 1
    assert counts["watermarks"] == 1
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        # One transaction: every row it wrote carries the same xmin.
        cur.execute(
            "SELECT count(DISTINCT x) FROM (SELECT xmin::text AS x FROM marketpipe.bars"
            " UNION SELECT xmin::text FROM marketpipe.daily_bars"
            " UNION SELECT xmin::text FROM marketpipe.pipeline_runs"
            " UNION SELECT xmin::text FROM marketpipe.watermarks) v"
        )
        assert cur.fetchone() == (1,)
        cur.execute("SELECT status, rows_in, rows_loaded FROM marketpipe.pipeline_runs")
        assert cur.fetchall() == [("ok", BARS, BARS)]
    conn.close()


def test_a_replayed_job_changes_no_row(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    enqueue_load(redis, clean_db, batch_id)
    run_service("services.loader", "--burst", env=settings_env(clean_db))
    assert job_result(redis, batch_id)["bars_changed"] == BARS
    before = bars_snapshot(clean_db)
    runs_before = count_rows(clean_db)

    # The same deterministic job again, through RQ and a worker process.
    job = enqueue_load(redis, clean_db, batch_id)
    assert job.id == load_job_id(batch_id)
    run_service("services.loader", "--burst", env=settings_env(clean_db))
    assert job_result(redis, batch_id)["bars_changed"] == 0
    assert bars_snapshot(clean_db) == before  # same loaded_at, same xmin: not even rewritten
    assert count_rows(clean_db) == runs_before


def test_a_failure_mid_way_leaves_nothing(clean_db: Settings, redis: Redis) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    good = broker.get_batch(redis, batch_id)
    # The raw payload is landed before; the bars now break a CHECK.
    bad = {**good, "bars": good["bars"].assign(asset_class="bond")}
    broker.put_batch(redis, batch_id, bad, clean_db.blob_ttl_seconds)
    with pytest.raises(adbc_driver_manager.IntegrityError, match="check constraint"):
        load(clean_db, batch_id)
    assert count_rows(clean_db) == {**dict.fromkeys(count_rows(clean_db), 0), "raw_payloads": 1}
    # Once the batch is fixed, the same job loads it.
    broker.put_batch(redis, batch_id, good, clean_db.blob_ttl_seconds)
    assert load(clean_db, batch_id)["bars_changed"] == BARS


def test_a_batch_whose_payload_was_never_landed_is_refused(
    clean_db: Settings, redis: Redis
) -> None:
    batch_id = put_batch(redis, clean_db, "BTC/USD", BARS)
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE marketpipe.raw_payloads")
    conn.close()
    with pytest.raises(PayloadNotLandedError):
        load(clean_db, batch_id)
    assert set(count_rows(clean_db).values()) == {0}


def test_a_batch_of_several_series_is_refused_and_writes_nothing(
    clean_db: Settings, redis: Redis
) -> None:
    """One payload is one series (marketpipe/contract.py): a batch mixing two is refused whole."""
    batch_id, other = (put_batch(redis, clean_db, s, BARS) for s in SYMBOLS[:2])
    frames = broker.get_batch(redis, batch_id)
    mixed = pd.concat([frames["bars"], broker.get_batch(redis, other)["bars"]], ignore_index=True)
    broker.put_batch(redis, batch_id, {**frames, "bars": mixed}, clean_db.blob_ttl_seconds)
    with pytest.raises(MixedBatchError, match="holds 2: BTC/USD 1h, ETH/USD 1h"):
        load(clean_db, batch_id)
    assert count_rows(clean_db) == {**dict.fromkeys(count_rows(clean_db), 0), "raw_payloads": 2}
    # The other series' own batch loads as usual.
    assert load(clean_db, other) == {"bars": BARS, "bars_changed": BARS}


def test_a_bad_batch_does_not_hold_back_the_others(clean_db: Settings, redis: Redis) -> None:
    batch_ids = [put_batch(redis, clean_db, s, BARS) for s in SYMBOLS]
    frames = broker.get_batch(redis, batch_ids[1])
    frames["bars"] = frames["bars"].assign(asset_class="bond")
    broker.put_batch(redis, batch_ids[1], frames, clean_db.blob_ttl_seconds)
    jobs = [
        enqueue_load(redis, clean_db, batch_id, retry=Retry(max=1, interval=600))
        for batch_id in batch_ids
    ]
    run_service("services.loader", "--burst", env=settings_env(clean_db))
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT payload_id FROM marketpipe.bars")
        loaded = {p for (p,) in cur.fetchall()}
    conn.close()
    assert loaded == {batch_ids[0], batch_ids[2]}
    assert jobs[1].get_status() in (JobStatus.SCHEDULED, JobStatus.FAILED)
