"""Helpers of the loader's tests: landed payloads with their transformed batches in Redis, load
jobs as the transformer enqueues them, and a loader worker process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from redis import Redis
from rq import Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.queues import LOAD_JOB, LOAD_QUEUE
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.transformer.jobs import load_job_id
from services.transformer.transform import transform_series
from tests.integration.conftest import OUR_TABLES, REPO_ROOT, settings_env
from tests.support.processes import die_with_test_run
from tests.unit.transformer.payloads import CRYPTO_META, bar, hourly_times, payload

FIRST_BAR = datetime(2026, 3, 1, tzinfo=UTC)


def put_batch(
    redis: Redis,
    settings: Settings,
    symbol: str,
    count: int,
    *,
    offset: int = 0,
    fetched_at: datetime | None = None,
    level: float = 100.0,
) -> str:
    """Land ``count`` hourly bars of ``symbol`` as the fetcher does, transform them and store the
    batch as the transformer does; return the batch id."""
    start = FIRST_BAR + timedelta(hours=offset)
    values = [
        bar(when, level + i % 7, volume=1000 + i)
        for i, when in enumerate(hourly_times(start, count))
    ]
    fetched = fetched_at or start + timedelta(hours=count)
    raw = payload(symbol, CRYPTO_META, values, fetched_at=fetched)
    result = transform_series(raw, now=fetched)
    land_payload(settings.role_url("fetcher"), raw)
    frames = {"bars": result.bars, "quarantine": result.quarantine}
    broker.put_batch(redis, raw.payload_id, frames, settings.blob_ttl_seconds)
    return raw.payload_id


def enqueue_load(
    redis: Redis, settings: Settings, batch_id: str, retry: Retry | None = None
) -> Job:
    """The load job exactly as the transformer enqueues it (dotted name, deterministic id)."""
    return broker.queue(LOAD_QUEUE, redis, settings).enqueue(
        LOAD_JOB,
        args=(batch_id,),
        job_id=load_job_id(batch_id),
        retry=retry or broker.default_retry(),
    )


def job_result(redis: Redis, batch_id: str) -> Any:
    job = Job.fetch(load_job_id(batch_id), connection=redis, serializer=JSONSerializer)
    return job.return_value()


def count_rows(settings: Settings) -> dict[str, int]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        counts = {}
        for table in OUR_TABLES:
            cur.execute(f"SELECT count(*) FROM marketpipe.{table}")
            counts[table] = cur.fetchone()[0]
    conn.close()
    return counts


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a real condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def start_loader(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start long-running loader worker processes; each is stopped at the end of the test.

    Their logs go to files in tmp_path (a pipe nobody reads would block a chatty worker)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, **env: Any) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"loader-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.loader"],
            preexec_fn=die_with_test_run,
            env=settings_env(settings, **env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
