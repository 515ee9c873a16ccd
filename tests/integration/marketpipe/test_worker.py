"""Jobs run in the worker process: timeouts still stop them, a worker killed mid-job loses
nothing, and a worker starts afresh after WORKER_MAX_JOBS jobs, cleanly (real Redis, real
worker processes; the jobs are stdlib functions enqueued by dotted name)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.settings import Settings
from marketpipe.worker import MarketpipeWorker
from tests.integration.loader.conftest import wait_for
from tests.integration.reliability.conftest import Workers


def in_process_worker(redis: Redis, settings: Settings) -> MarketpipeWorker:
    queue = broker.queue(TRANSFORM_QUEUE, redis, settings)
    return MarketpipeWorker([queue], connection=redis, serializer=JSONSerializer, name="w")


def test_a_job_past_its_timeout_is_stopped_and_retried(
    redis: Redis, base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    job = queue.enqueue("time.sleep", args=(30,), job_timeout=1, retry=broker.default_retry())
    worker = in_process_worker(redis, base_settings)

    worker.work(burst=True)

    assert job.get_status() == JobStatus.SCHEDULED  # its first retry, RETRY_INTERVALS[0] away
    job.refresh()
    assert job.retries_left == len(broker.default_retry().intervals) - 1
    assert job.started_at is not None and job.ended_at is not None
    assert (job.ended_at - job.started_at).total_seconds() < 30  # cut short, not slept out
    assert JobTimeoutException.__name__ in caplog.text
    assert worker.recycle_reason is None


def test_the_work_loop_ends_after_max_jobs_with_a_reason(
    redis: Redis, base_settings: Settings
) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    for n in range(5):
        queue.enqueue("time.time", job_id=f"noop-{n}")
    worker = in_process_worker(redis, base_settings)
    worker.max_jobs = 2

    worker.work(burst=True)

    assert worker.recycle_reason == "2 jobs done"
    assert queue.finished_job_registry.count == 2 and queue.count == 3


def test_the_work_loop_ends_when_memory_grew(redis: Redis, base_settings: Settings) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    queue.enqueue("time.time", job_id="warm")  # the baseline is taken after the first job
    queue.enqueue("tests.support.jobs.hold_memory", args=(64,), job_id="grows")
    queue.enqueue("time.time", job_id="left")
    worker = in_process_worker(redis, base_settings)
    worker.max_rss_growth = 32 * 2**20

    worker.work(burst=True)

    assert worker.recycle_reason is not None and "resident memory grew" in worker.recycle_reason
    assert queue.get_job_ids() == ["left"]


def test_a_worker_starts_afresh_after_max_jobs_and_finishes_every_job(
    redis: Redis, base_settings: Settings, tmp_path: Path
) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    jobs = [queue.enqueue("time.time", job_id=f"noop-{n}") for n in range(5)]
    workers = Workers(tmp_path)
    try:
        process = workers.start(
            "services.transformer", base_settings, WORKER_MAX_JOBS=2, WORKER_IN_PROCESS=1
        )
        wait_for(lambda: queue.finished_job_registry.count == 5, 120, "five jobs finished")
        names = {
            Job.fetch(j.id, connection=redis, serializer=JSONSerializer).worker_name for j in jobs
        }
        # Three registrations (2 + 2 + 1 jobs) of one process that re-executed itself.
        assert len(names) == 3, names
        assert process.poll() is None
        assert all(f".{process.pid}." in str(name) for name in names)
        assert workers.logs().count("worker starting afresh: 2 jobs done") == 2
        assert "Traceback" not in workers.logs()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        workers.stop()


def test_a_worker_killed_mid_job_leaves_it_to_be_retried(
    redis: Redis, base_settings: Settings, tmp_path: Path
) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    job = queue.enqueue("time.sleep", args=(60,), job_id="long", retry=broker.default_retry())
    workers = Workers(tmp_path)
    try:
        doomed = workers.start("services.transformer", base_settings, WORKER_IN_PROCESS=1)
        wait_for(lambda: job.get_status() == JobStatus.STARTED, 120, "the job started")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        assert queue.started_job_registry.get_job_ids() == ["long"]

        workers.start("services.transformer", base_settings, WORKER_IN_PROCESS=1)
        # The new worker reaps the dead one's job at its start: a retry is scheduled.
        wait_for(lambda: job.get_status() == JobStatus.SCHEDULED, 120, "the job rescheduled")
        assert queue.started_job_registry.count == 0
        job.refresh()
        assert job.retries_left == len(broker.default_retry().intervals) - 1
    finally:
        workers.stop()


def test_a_job_that_ignores_its_timeout_restarts_the_worker_and_is_retried(
    redis: Redis, base_settings: Settings, tmp_path: Path
) -> None:
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    job = queue.enqueue(
        "tests.support.jobs.outlive_timeout",
        args=(600,),
        job_id="stuck",
        job_timeout=1,
        retry=broker.default_retry(),
    )
    workers = Workers(tmp_path)
    try:
        process = workers.start(
            "services.transformer",
            base_settings,
            WORKER_IN_PROCESS=1,
            WORKER_HARD_TIMEOUT_GRACE_SECONDS=2,
        )
        wait_for(lambda: job.get_status() == JobStatus.STARTED, 120, "the job started")
        # 1 s timeout + 2 s grace: the process re-executes itself (same pid), its new worker
        # reaps the old registration's job, and a retry is scheduled.
        wait_for(lambda: job.get_status() == JobStatus.SCHEDULED, 120, "the job rescheduled")
        assert process.poll() is None
        assert "job stuck outlived its timeout by 2 s; restarting the worker" in workers.logs()
        assert queue.started_job_registry.count == 0
        job.refresh()
        assert job.retries_left == len(broker.default_retry().intervals) - 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        workers.stop()
