"""RQ's cost per job through our worker: a no-op job, forked per job or run in the worker.

Run: .venv/bin/python -m bench.bench_worker [--jobs 200]

The bench process first imports what the transformer worker imports before it forks (pandas,
pyarrow, the exchange calendar), so a fork copies the page tables a real worker's does. Per
mode, on a scratch Redis db: ``--jobs`` no-op jobs (``time.time``, JSON serializer, the
production retry policy) are enqueued, then one worker drains them in burst mode; the figure is
the drain's wall time per job (dequeue, fork or not, status writes, result, heartbeat). The
baseline is the forking worker as the services ran it before (``ForkingWorker``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

# Loaded before any fork, as services/transformer/__main__.py does.
import pandas  # noqa: F401
import pyarrow  # noqa: F401
from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from marketpipe import broker
from marketpipe.market import preload
from marketpipe.settings import Settings
from marketpipe.worker import ForkingWorker, MarketpipeWorker
from tests.support.scratch import scratch_redis

NOOP_JOB = "time.time"


def drain(
    worker_class: type[BaseWorker], redis_url: str, *, jobs: int, result_ttl: int | None
) -> float:
    """Seconds per job for one worker of ``worker_class`` draining ``jobs`` no-op jobs."""
    redis = broker.redis_from(Settings(redis_url=redis_url))
    redis.flushdb()
    queue = Queue("bench-worker", connection=redis, serializer=JSONSerializer)
    for n in range(jobs):
        queue.enqueue(
            NOOP_JOB, job_id=f"noop-{n}", retry=broker.default_retry(), result_ttl=result_ttl
        )
    worker = worker_class(
        [queue], connection=redis, serializer=JSONSerializer, name=f"bench.{os.getpid()}"
    )
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - started
    assert queue.finished_job_registry.count == (jobs if result_ttl != 0 else 0)
    assert queue.count == 0 and queue.failed_job_registry.count == 0
    redis.close()
    return seconds / jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    preload()
    gc.freeze()
    redis_base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    modes: dict[str, Callable[..., float]] = {
        "fork per job (baseline)": partial(drain, ForkingWorker, result_ttl=None),
        "fork per job, result_ttl=0": partial(drain, ForkingWorker, result_ttl=0),
        "in the worker process": partial(drain, MarketpipeWorker, result_ttl=None),
        "in the worker process, result_ttl=0": partial(drain, MarketpipeWorker, result_ttl=0),
    }
    figures: dict[str, float] = {}
    with scratch_redis(redis_base) as url:
        for name, run in modes.items():
            figures[name] = statistics.median(run(url, jobs=args.jobs) for _ in range(args.rounds))
    baseline = figures["fork per job (baseline)"]
    print(f"RQ cost of a no-op job, {args.jobs} jobs, median of {args.rounds} drains:")
    for name, seconds in figures.items():
        print(f"  {name}: {seconds * 1e3:.2f} ms a job ({seconds / baseline:.2f}x the baseline)")
    ok = figures["in the worker process"] < baseline / 2
    print("goal met" if ok else "GOAL MISSED: in-process under half the fork's cost")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
