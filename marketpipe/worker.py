"""Starts an RQ worker the way every marketpipe worker needs it.

By default jobs run in the worker process itself (:class:`MarketpipeWorker`); with
WORKER_IN_PROCESS=false RQ's way, a work horse forked per job (:class:`ForkingWorker`). The
in-process worker became the default once ``tests/chaos/test_crashes.py`` passed with it (it
runs both modes; its earlier failures were rounding compared too tightly, not lost work).
Measured 2026-12-03 on this machine, RQ's part of a job
(dequeue -> function called, returned -> next dequeue) was ~47 ms with a fork per job against
~5 ms without, in the 50-symbol tick of ``bench/bench_tick.py``; a no-op job costs 12.4 ms
forked against 3.9 ms in-process (``bench/bench_worker.py``). A 50-symbol tick is 100 jobs on
2 cores, so the fork was ~2.3 s of its wall time. In-process, what the fork gave is kept:

- **timeouts**: RQ's SIGALRM death penalty stops a job at its timeout (as it did inside the
  horse); a job that ignores it (stuck in C code) is ended as RQ's forking worker ends a horse,
  at timeout + 60 s, by restarting the worker process (its job is then reaped and retried);
- **nothing lost on a crash**: a worker killed mid-job leaves its job in RQ's StartedJobRegistry
  and the next worker start (or any worker's maintenance) reaps it at once (below);
- **bounded memory**: the worker starts afresh after WORKER_MAX_JOBS jobs or once its resident
  memory grew WORKER_MAX_RSS_GROWTH_MB since its first job (RQ's ``--max-jobs``, by re-executing
  its own command line: same pid, a new registration, the old one ended cleanly);
- **heavy imports before the fork, connections after it**: heavy modules are imported by the
  caller before this runs (so a job never imports pandas); no connection is ever inherited,
  because no fork runs jobs: the worker's Redis connection is made in its own process, jobs open
  theirs per job, and the only fork left, RQ's scheduler, makes its own connection.

A worker killed outright (SIGKILL, OOM, a container stopped hard) leaves its job in RQ's
StartedJobRegistry. RQ retries such a job (or fails it with AbandonedJobError) only once the
entry's heartbeat has expired (at least 60 s) *and* some worker runs maintenance (every 10 min
by default, and an idle worker checks only every 405 s). Our workers run maintenance every
minute, idle or not, and before RQ's own cleanup they reap at once the jobs of dead workers of
their own host (a restarted worker, a restarted container), through the same RQ code path
(retry while retries are left, else the failed-job registry).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final, NoReturn

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from marketpipe import broker
from marketpipe.db import adbc_database
from marketpipe.health import beat
from marketpipe.logs import setup_logging
from marketpipe.reach import Check, check_postgres, check_redis, wait_until_reachable
from marketpipe.settings import ServiceRole, Settings, load_settings

log = logging.getLogger("marketpipe.worker")

REDIS_LOST: Final = (RedisConnectionError, RedisTimeoutError)
# The scheduler's socket can also fail below redis-py's own errors while Redis restarts.
SCHEDULER_REDIS_LOST: Final = (*REDIS_LOST, OSError)
MAX_QUICK_RESTARTS: Final = 5

MAINTENANCE_INTERVAL_SECONDS: Final = 60
# An idle worker blocks on the queue for worker_ttl - 15 s between maintenance checks (RQ's
# default 420 s): scheduled retries, reaping and the scheduler's takeover after a killed worker
# would wait up to 7 min. 75 s keeps that wait at a minute.
WORKER_TTL_SECONDS: Final = 75


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process holds the pid
    return True


def worker_is_dead(redis: Redis, worker_name: str, hostname: str) -> bool:
    """True when the worker that started an execution can no longer finish it."""
    if not worker_name:
        return False  # unknown: leave it to RQ's heartbeat expiry
    fields: dict[bytes, bytes] = redis.hgetall(Worker.redis_worker_namespace_prefix + worker_name)  # type: ignore[assignment]
    if not fields or b"death" in fields:
        return True
    if fields.get(b"hostname", b"").decode() != hostname:
        return False  # another host's worker: its heartbeat expiry tells
    pid = int(fields.get(b"pid", b"0") or 0)
    # In a restarted container the dead worker had our pid (1): it is not us, we are starting.
    return pid == os.getpid() or not _pid_alive(pid)


def reap_abandoned(queue: Queue, *, hostname: str | None = None) -> list[str]:
    """Hand the jobs of dead workers to RQ's abandoned-job handling now; their ids."""
    redis = queue.connection
    registry = queue.started_job_registry
    hostname = hostname or socket.gethostname()
    reaped = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        try:
            worker_name = Execution.fetch(execution_id, job_id, redis).worker_name
        except ValueError:
            worker_name = ""  # the execution hash is gone: only the heartbeat can tell
        if not worker_is_dead(redis, worker_name, hostname):
            continue
        entry = f"{job_id}:{execution_id}"
        job = queue.fetch_job(job_id)
        if job is not None and job.get_status(refresh=False) == JobStatus.QUEUED:
            # The worker died between dequeueing the job and its horse starting it. RQ's
            # cleanup would only drop the entry (not STARTED: "not abandoned") and leave the
            # job in the intermediate list for minutes; it never ran, so it goes back as it was
            # (its hash still says QUEUED), in one transaction.
            with redis.pipeline() as pipe:
                pipe.zrem(registry.key, entry)
                pipe.lrem(queue.intermediate_queue_key, 0, job_id)
                queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                pipe.execute()
        else:
            # Score 0 = expired: RQ's own cleanup then retries it or records AbandonedJobError.
            redis.zadd(registry.key, {entry: 0}, xx=True)
        reaped.append(job_id)
    if reaped:
        log.warning("requeueing %d job(s) of dead workers: %s", len(reaped), ", ".join(reaped))
        registry.cleanup()
    return reaped


# RQ backs off up to 60 s between reconnection tries: after an outage the worker could sleep a
# minute with Redis back. A try every 5 s at most is cheap and logs a line per try, not more.
MAX_REDIS_WAIT_SECONDS: Final = 5.0


_PR_SET_PDEATHSIG: Final = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Linux: this process gets ``signum`` when its parent dies (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


class OutageTolerantScheduler(RQScheduler):
    """RQ's scheduler process, riding out a Redis outage instead of dying with a traceback.

    RQ's own loop ends at the first lost connection; the worker then starts a new scheduler
    only at its next maintenance (a minute later here), and every attempt in between logs a
    traceback. This loop logs the outage once, keeps ticking and moves due retries again
    within a second of Redis answering.
    """

    def _nap(self) -> None:
        """RQ's pause between rounds, in tenths: a stopping worker joins its scheduler, and a
        whole interval's nap made every worker's stop take a second longer."""
        for _ in range(10):
            if self._stop_requested:
                return
            time.sleep(self.interval / 10)

    def work(self) -> None:  # same loop as RQScheduler.work, with the outage handled
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        # A SIGKILLed worker's scheduler lived on, moving retries for a worker that was gone.
        parent = os.getppid()
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:  # the worker died before the line above
            return
        born = lost = False
        while not self._stop_requested:
            try:
                if not born:  # a scheduler may be started while Redis is still away
                    self.register_birth()
                    born = True
                if self.should_reacquire_locks:
                    self.acquire_locks()  # type: ignore[no-untyped-call]
                self.heartbeat()  # type: ignore[no-untyped-call]
                self.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
                if lost:
                    log.info("scheduler: Redis answers again")
                    lost = False
            except SCHEDULER_REDIS_LOST as exc:
                if not lost:
                    log.warning(
                        "scheduler: lost Redis (%s); retrying every %s s", exc, self.interval
                    )
                    lost = True
            self._nap()
        with contextlib.suppress(*SCHEDULER_REDIS_LOST):
            self.stop()  # type: ignore[no-untyped-call]


class _MarketpipeWorkerBase(BaseWorker):
    """What every marketpipe worker adds to RQ's, whichever way it executes a job."""

    max_connection_wait_time = MAX_REDIS_WAIT_SECONDS
    # Touched after every heartbeat RQ got into Redis: the container's healthcheck reads it.
    heartbeat_file: Path | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        if self.heartbeat_file is not None:
            beat(self.heartbeat_file)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        # As RQ's Worker._start_scheduler (rq 3.0), with the outage-tolerant scheduler.
        self.scheduler = OutageTolerantScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
                finally:
                    self.scheduler.release_locks()  # type: ignore[no-untyped-call]
                    self.scheduler.register_death()
            else:
                self.scheduler.start()  # type: ignore[no-untyped-call]

    def run_maintenance_tasks(self) -> None:
        # Also runs at start, before the first job is taken. The lock keeps two workers from
        # requeueing the same abandoned job twice.
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    reap_abandoned(queue, hostname=self.hostname)
                finally:
                    queue.release_maintenance_lock()  # type: ignore[no-untyped-call]
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]


class ForkingWorker(_MarketpipeWorkerBase, Worker):
    """RQ's default execution, a work horse forked per job (the services' default)."""


# RQ's forking worker kills a horse that outlived its job's timeout by this much (the default of
# WORKER_HARD_TIMEOUT_GRACE_SECONDS, which the in-process worker follows).
HARD_TIMEOUT_GRACE_SECONDS: Final = 60


def resident_bytes() -> int:
    """This process's resident set size (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def restart_process() -> NoReturn:
    """Replace this process by a fresh run of its own command line (same pid)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # Our own interpreter and command line, no shell: nothing from outside is interpreted.
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])  # noqa: S606


class MarketpipeWorker(_MarketpipeWorkerBase, SimpleWorker):
    """Runs each job in this process (RQ's SimpleWorker) and says when to start afresh.

    ``recycle_reason`` is set (and the work loop stopped) after ``max_jobs`` jobs or once the
    resident memory grew ``max_rss_growth`` bytes since the first job; the caller restarts.
    """

    max_jobs: int = 1000
    max_rss_growth: int = 256 * 2**20
    hard_timeout_grace: int = HARD_TIMEOUT_GRACE_SECONDS
    recycle_reason: str | None = None
    jobs_done: int = 0
    _rss_baseline: int | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        limit = job.timeout or queue.DEFAULT_TIMEOUT
        guard = None
        if limit > 0:
            guard = threading.Timer(limit + self.hard_timeout_grace, self._overran, (job.id,))
            guard.daemon = True
            guard.start()
        try:
            super().execute_job(job, queue)
        finally:
            if guard is not None:
                guard.cancel()
        self.jobs_done += 1
        rss = resident_bytes()
        if self._rss_baseline is None:
            self._rss_baseline = rss  # after the first job: its caches are warm
        if self.jobs_done >= self.max_jobs:
            self.recycle_reason = f"{self.jobs_done} jobs done"
        elif rss - self._rss_baseline > self.max_rss_growth:
            grown = (rss - self._rss_baseline) / 2**20
            self.recycle_reason = f"resident memory grew {grown:.0f} MB since the first job"
        if self.recycle_reason is not None:
            self._stop_requested = True  # the work loop ends before its next dequeue

    def _overran(self, job_id: str) -> None:
        """The job ignored its timeout's SIGALRM: end this process as RQ ends such a horse."""
        log.error(
            "job %s outlived its timeout by %d s; restarting the worker (the job is retried)",
            job_id,
            self.hard_timeout_grace,
        )
        scheduler = self.scheduler._process if self.scheduler is not None else None
        if scheduler is not None and scheduler.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(scheduler.pid, signal.SIGKILL)
        restart_process()


def start_checks(settings: Settings, database_role: ServiceRole | None) -> list[Check]:
    """What must answer before the worker registers (until then its healthcheck fails)."""
    checks: list[Check] = [lambda: check_redis(settings.redis_url)]
    if database_role is not None:
        checks.append(lambda: check_postgres(settings.role_url(database_role)))
    return checks


def prepare_database(settings: Settings, role: ServiceRole) -> None:
    """The role's ADBC database object, made before the fork so no job pays for it."""
    try:
        adbc_database(settings.role_url(role))
    except Exception as exc:  # the server may still be starting: each job then makes its own
        log.warning("ADBC database for %s not prepared (%s); jobs will each make one", role, exc)


def run_worker(
    queue_name: str, description: str, *, service: str, database_role: ServiceRole
) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, service)
    wait_until_reachable(start_checks(settings, database_role), log)
    prepare_database(settings, database_role)
    log.info("%s worker taking jobs from %s", service, queue_name)
    redis = broker.redis_from(settings)
    # Everything loaded so far lives as long as the process: out of the collector's reach, a
    # job's full collections no longer walk it (nor, in RQ's forked scheduler, copy its pages).
    gc.freeze()
    quick_failures = 0
    while True:
        started_at = time.monotonic()
        worker_class = MarketpipeWorker if settings.worker_in_process else ForkingWorker
        worker = worker_class(
            [broker.queue(queue_name, redis, settings)],
            connection=redis,
            serializer=JSONSerializer,
            # A restarted container has the same hostname and pid (1): without the random part
            # RQ refuses to start ("an active worker named ... already") until the old key
            # expires. A worker restarted after a Redis outage gets a new name the same way.
            name=f"{queue_name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}",
            maintenance_interval=MAINTENANCE_INTERVAL_SECONDS,
            worker_ttl=WORKER_TTL_SECONDS,
        )
        if isinstance(worker, MarketpipeWorker):
            worker.max_jobs = settings.worker_max_jobs
            worker.max_rss_growth = settings.worker_max_rss_growth_mb * 2**20
            worker.hard_timeout_grace = settings.worker_hard_timeout_grace_seconds
        if settings.heartbeat_file:
            worker.heartbeat_file = Path(settings.heartbeat_file)
        try:
            # The scheduler moves retried jobs back onto the queue when their backoff has passed.
            worker.work(burst=args.burst, with_scheduler=True, logging_level=settings.log_level)
        except REDIS_LOST as exc:
            log.warning("lost Redis (%s)", exc)
        # SIGTERM/SIGINT (warm or cold shutdown) is recorded by RQ as a shutdown request.
        if worker._shutdown_requested_date is not None:
            return
        if isinstance(worker, MarketpipeWorker) and worker.recycle_reason is not None:
            # Registered dead and its scheduler stopped by RQ's teardown: a clean start.
            log.info("worker starting afresh: %s", worker.recycle_reason)
            restart_process()
        if args.burst or worker._stop_requested:
            return
        # RQ retries a lost connection only around its dequeue; anywhere else (heartbeats,
        # registries) work() logs the error and returns. The process stays up and starts a new
        # worker once Redis answers (the old registration's jobs are reaped like a dead
        # worker's). Only a worker that keeps failing at once ends the process, for its
        # supervisor to see.
        quick_failures = quick_failures + 1 if time.monotonic() - started_at < 60 else 1
        if quick_failures > MAX_QUICK_RESTARTS:
            raise SystemExit(f"the worker stopped {quick_failures} times within a minute each")
        log.warning("the worker stopped on an error; starting over once Redis answers")
        wait_until_reachable(start_checks(settings, None), log)
        time.sleep(min(30.0, 0.5 * 2**quick_failures))
