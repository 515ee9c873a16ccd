"""A worker killed between dequeueing a job and its horse starting it: the deterministic half of
the crash test. RQ's worker takes the job exactly as here (dequeue into the intermediate list,
execution in the StartedJobRegistry), then the worker is dead; reaping puts the job back."""

from __future__ import annotations

import subprocess
from pathlib import Path

from redis import Redis
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from marketpipe.worker import MarketpipeWorker, reap_abandoned
from tests.integration.loader.conftest import wait_for
from tests.integration.reliability.conftest import Workers, child_pids, horse_pids


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def take_and_die(redis: Redis, settings: Settings, *, start: bool) -> str:
    """A worker dequeues one job (and its horse starts it, if ``start``), then dies."""
    queue = broker.queue(TRANSFORM_QUEUE, redis, settings)
    queue.enqueue(TRANSFORM_JOB, args=("p",), job_id="transform-p", retry=broker.default_retry())
    worker = MarketpipeWorker([queue], connection=redis, serializer=JSONSerializer, name="doomed")
    worker.register_birth()
    taken = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None
    job, _ = taken
    worker.prepare_execution(job)
    if start:
        worker.prepare_job_execution(job)  # what the horse does first
    redis.hset(worker.key, "pid", dead_pid())
    return job.id


def test_a_job_taken_but_never_started_goes_back_to_its_queue(
    redis: Redis, base_settings: Settings
) -> None:
    job_id = take_and_die(redis, base_settings, start=False)
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)
    assert queue.count == 0 and queue.intermediate_queue.get_job_ids() == [job_id]

    assert reap_abandoned(queue) == [job_id]
    assert queue.get_job_ids() == [job_id]
    assert queue.intermediate_queue.get_job_ids() == []
    assert queue.started_job_registry.count == 0
    job = queue.fetch_job(job_id)
    assert job is not None and job.get_status() == JobStatus.QUEUED
    assert job.retries_left == len(broker.default_retry().intervals)  # it never ran: no retry used


def test_a_started_job_of_a_dead_worker_is_retried(redis: Redis, base_settings: Settings) -> None:
    job_id = take_and_die(redis, base_settings, start=True)
    queue = broker.queue(TRANSFORM_QUEUE, redis, base_settings)

    assert reap_abandoned(queue) == [job_id]
    assert queue.started_job_registry.count == 0
    assert queue.scheduled_job_registry.get_job_ids() == [job_id]
    job = queue.fetch_job(job_id)
    assert job is not None and job.get_status() == JobStatus.SCHEDULED


def test_a_sigkilled_workers_scheduler_stops_with_it(
    clean_db: Settings, redis: Redis, workers: Workers
) -> None:
    """RQ's scheduler is a child of its worker: it dies with it instead of moving the retries
    of a worker that is gone (it took later tests' jobs in the same Redis db)."""
    worker = workers.start("services.transformer", clean_db)
    wait_for(lambda: bool(child_pids(worker.pid)), 60, "the worker's scheduler process")
    [scheduler] = [p for p in child_pids(worker.pid) if p not in horse_pids(worker.pid)]
    worker.kill()
    worker.wait()
    wait_for(lambda: not Path(f"/proc/{scheduler}").exists(), 30, "the scheduler to stop")
