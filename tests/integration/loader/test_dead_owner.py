"""A loader killed while it holds claims on coalesced batches must not stall their own jobs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
from redis import Redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from marketpipe.settings import Settings
from services.loader.jobs import CLAIM_PREFIX, owner_is_dead
from services.transformer.jobs import load_job_id
from tests.integration.loader.conftest import (
    count_rows,
    enqueue_load,
    job_result,
    put_batch,
    wait_for,
)

BARS = 48
LEASE_SECONDS = 300  # the default JOB_TIMEOUT_SECONDS, set explicitly: the wait we must not pay


def _finished(redis: Redis, batch_id: str) -> bool:
    job = Job.fetch(load_job_id(batch_id), connection=redis, serializer=JSONSerializer)
    return job.get_status() == JobStatus.FINISHED


def _waiting_on_a_lock(settings: Settings) -> bool:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        (waiting,) = cur.fetchone()
    conn.close()
    return bool(waiting)


def kill_with_children(pid: int) -> None:
    """SIGKILL a process and its descendants (the work horse leads its own process group)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    os.kill(pid, signal.SIGKILL)
    for child in children:
        kill_with_children(int(child))


def test_a_claim_of_a_job_whose_worker_is_gone_is_taken_over_at_once(
    clean_db: Settings, redis: Redis, start_loader: Callable[..., Any]
) -> None:
    first, second = (put_batch(redis, clean_db, s, BARS) for s in ("BTC/USD", "ETH/USD"))
    # The killed job's retry waits long enough that the second batch's own job runs first (a
    # retry of the owner itself would re-take its claims, hiding the wait this test is about).
    enqueue_load(redis, clean_db, first, retry=Retry(max=1, interval=600))
    enqueue_load(redis, clean_db, second)
    env = {"JOB_TIMEOUT_SECONDS": LEASE_SECONDS, "LOAD_BATCH_MAX_WAIT_SECONDS": 0}

    # The first worker runs the first job, coalesces the second batch, and hangs in its
    # transaction behind a lock we hold: it owns both claims when it is killed.
    locker = psycopg2.connect(clean_db.database_url)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE marketpipe.raw_payloads IN ACCESS EXCLUSIVE MODE")
    doomed = start_loader(clean_db, **env)
    owner = load_job_id(first)
    wait_for(
        lambda: (redis.get(CLAIM_PREFIX + second) or b"").decode().startswith(owner + " "),
        60,
        "the first job to claim the second batch",
    )
    wait_for(lambda: _waiting_on_a_lock(clean_db), 60, "the first job's transaction to block")
    kill_with_children(doomed.pid)  # worker and work horse, as when a container dies
    doomed.wait()
    locker.rollback()
    locker.close()
    holder = (redis.get(CLAIM_PREFIX + second) or b"").decode()
    assert holder.startswith(owner + " ") and owner_is_dead(redis, holder)
    assert redis.ttl(CLAIM_PREFIX + second) > LEASE_SECONDS - 60  # the lease is far from over

    started = time.monotonic()
    start_loader(clean_db, **env)
    wait_for(lambda: _finished(redis, second), 60, "the second batch's own job")
    assert time.monotonic() - started < LEASE_SECONDS / 5
    assert job_result(redis, second)["loaded"] == [second]
    assert count_rows(clean_db)["bars"] == BARS
    # The killed job itself was reaped by the new worker and waits for its retry.
    killed = Job.fetch(load_job_id(first), connection=redis, serializer=JSONSerializer)
    assert killed.get_status() == JobStatus.SCHEDULED


def test_a_claim_without_a_known_worker_is_left_to_its_lease(redis: Redis) -> None:
    assert not owner_is_dead(redis, "direct-0123456789abcdef")
    assert owner_is_dead(redis, "load-unknown rq-worker-that-never-registered")
