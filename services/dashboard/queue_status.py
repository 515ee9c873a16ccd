"""Queue depths, failed jobs and the fetcher's tick state, read from Redis (never written)."""

from __future__ import annotations

import pandas as pd
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import (
    BaseRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.ticks import LAST_TICK_KEY, TICK_CLAIM_PREFIX, parse_tick
from services.dashboard.metrics import FetcherState

QUEUES = (TRANSFORM_QUEUE, LOAD_QUEUE)
REGISTRIES: tuple[tuple[str, type[BaseRegistry]], ...] = (
    ("running", StartedJobRegistry),
    ("scheduled", ScheduledJobRegistry),
    ("deferred", DeferredJobRegistry),
    ("failed", FailedJobRegistry),
)


def connect(redis_url: str) -> Redis:
    # Short timeouts: an unreachable Redis must degrade the health page, not hang the dashboard.
    return Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)


def _queue(name: str, redis: Redis) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def queue_depths(redis: Redis) -> pd.DataFrame:
    """Per queue: jobs waiting, running, scheduled for retry, deferred and failed."""
    rows = []
    for name in QUEUES:
        queue = _queue(name, redis)
        row: dict[str, object] = {"queue": name, "waiting": queue.count}
        for label, registry_class in REGISTRIES:
            registry = registry_class(queue=queue, serializer=JSONSerializer)
            row[label] = registry.get_job_count(cleanup=False)
        rows.append(row)
    return pd.DataFrame(rows, columns=["queue", "waiting", *(label for label, _ in REGISTRIES)])


def _error_of(job: Job) -> str:
    # RQ keeps the traceback in the job's latest result (the failure the worker recorded).
    result = job.latest_result()
    return _last_line(getattr(result, "exc_string", None))


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failed_jobs(redis: Redis, limit: int = 20) -> pd.DataFrame:
    """The newest failed jobs of each queue with their function, time and error."""
    rows = []
    for name in QUEUES:
        queue = _queue(name, redis)
        registry = FailedJobRegistry(queue=queue, serializer=JSONSerializer)
        ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
        for job in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer):
            if job is None:  # expired between the two reads
                continue
            rows.append(
                {
                    "queue": name,
                    "job_id": job.id,
                    "function": job.func_name,
                    "failed_at": job.ended_at,
                    "error": _error_of(job),
                }
            )
    return pd.DataFrame(rows, columns=["queue", "job_id", "function", "failed_at", "error"])


def fetcher_state(redis: Redis) -> FetcherState:
    """The newest finished tick and a claimed newer one (a fetch in progress), if any."""
    last = parse_tick(redis.get(LAST_TICK_KEY))
    prefix = f"{TICK_CLAIM_PREFIX}:"
    claimed = [
        parse_tick(key.decode().removeprefix(prefix))
        for key in redis.scan_iter(match=f"{prefix}*", count=100)
    ]
    newer = [t for t in claimed if t is not None and (last is None or t > last)]
    return FetcherState(last_tick=last, running_tick=max(newer) if newer else None)
