"""Helpers of the reliability tests: long-running worker processes that can be killed, a
drained pipeline, and the tables as comparable row sets (lineage columns left out)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.contract import RawPayload
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from tests.integration.conftest import OUR_TABLES, REPO_ROOT, run_service, settings_env
from tests.integration.loader.conftest import wait_for
from tests.support.processes import die_with_test_run
from tests.support.sql import query as run_query

QUEUES = (TRANSFORM_QUEUE, LOAD_QUEUE)
# Columns that record *when* or *from which answer* a row was written: a replay or a retry
# legitimately changes them, the data must not change.
LINEAGE = {"transformed_at", "payload_id", "quarantined_at", "updated_at", "loaded_at"}


def queue_state(redis: Redis, settings: Settings) -> dict[str, int]:
    """Jobs waiting, running, waiting for a retry and failed, over both queues."""
    state = {"queued": 0, "started": 0, "scheduled": 0, "failed": 0}
    for name in QUEUES:
        queue = broker.queue(name, redis, settings)
        state["queued"] += queue.count
        # A dequeued job sits in the intermediate list until its horse starts it; a worker
        # killed in between leaves it there, neither queued nor in any registry.
        state["started"] += queue.started_job_registry.count + len(
            queue.intermediate_queue.get_job_ids()
        )
        state["scheduled"] += queue.scheduled_job_registry.count
        state["failed"] += queue.failed_job_registry.count
    return state


def failed_jobs(redis: Redis) -> dict[str, str]:
    """job id -> the failure RQ recorded for it, over both queues' failed-job registries."""
    out = {}
    for name in QUEUES:
        registry = FailedJobRegistry(name, connection=redis, serializer=JSONSerializer)
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
            result = job.latest_result()
            out[job_id] = (result.exc_string if result is not None else None) or ""
    return out


def drained(redis: Redis, settings: Settings) -> bool:
    state = queue_state(redis, settings)
    return state["queued"] == state["started"] == state["scheduled"] == 0


def query(settings: Settings, statement: str, *params: object) -> list[tuple[Any, ...]]:
    return run_query(settings.database_url, statement, *params)


def table_rows(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    """Every row of a marketpipe table without its lineage columns, sorted."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'marketpipe' AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        columns = [c for (c,) in cur.fetchall() if c not in LINEAGE]
        cur.execute(f"SELECT {', '.join(columns)} FROM marketpipe.{table}")
        rows = cur.fetchall()
    conn.close()
    return sorted(rows, key=repr)


@dataclass
class Workers:
    """Long-running worker processes of this test; logs in files (a pipe nobody reads fills)."""

    tmp_path: Path
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, module: str, settings: Settings, **env: Any) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{module.rsplit('.', 1)[-1]}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            preexec_fn=die_with_test_run,
            env=settings_env(settings, **env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append((module, process))
        return process

    def alive(self, module: str) -> list[subprocess.Popen[bytes]]:
        return [p for m, p in self.processes if m == module and p.poll() is None]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_pids(pid: int) -> list[int]:
    """A process's children: a worker's horse and its scheduler process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def horse_pids(worker_pid: int) -> list[int]:
    """The work horses a worker forked: RQ puts each in its own process group, which tells
    them from the worker's other child, its scheduler (killing that interrupts no job)."""
    horses = []
    for pid in child_pids(worker_pid):
        try:
            if os.getpgid(pid) == pid:
                horses.append(pid)
        except ProcessLookupError:
            continue
    return horses


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop()


def wait_drained(redis: Redis, settings: Settings, timeout: float, workers: Workers) -> None:
    """Until no job is queued, running or waiting for its retry; fail with the workers' logs."""
    try:
        wait_for(lambda: drained(redis, settings), timeout, "the queues to drain")
    except pytest.fail.Exception:
        print(workers.logs()[-20000:])
        raise


def push_transform(redis: Redis, settings: Settings, payload: RawPayload) -> str:
    """Land a payload and enqueue its transform job the way the fetcher does, minus the
    retries: a poison job fails once, straight to the registry."""
    land_payload(settings.role_url("fetcher"), payload)
    broker.queue(TRANSFORM_QUEUE, redis, settings).enqueue(
        TRANSFORM_JOB, args=(payload.payload_id,), job_id=f"transform-{payload.payload_id}"
    )
    return payload.payload_id


def drain_bursts(settings: Settings, rounds: int = 1) -> str:
    """Transformer then loader in burst mode (each exits when its queue is empty); their logs."""
    env = settings_env(settings)
    logs = ""
    for _ in range(rounds):
        logs += run_service("services.transformer", "--burst", env=env)
        logs += run_service("services.loader", "--burst", env=env)
    return logs


def clean_tables(settings: Settings) -> None:
    """Empty our tables between two runs of one test (the clean_db fixture does it per test)."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE " + ", ".join(f"marketpipe.{t}" for t in OUR_TABLES))
    conn.close()
