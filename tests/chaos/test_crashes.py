"""SIGKILL transformers and loaders mid-job during a backfill, 20 times at seeded random moments:
the final tables equal a clean run's, row for row, and no job is left stuck. Both worker modes:
a work horse forked per job (the horse or the whole worker killed), and jobs run in the worker
process (WORKER_IN_PROCESS; the worker killed mid-job)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from redis import Redis
from rq import Worker
from rq.worker import WorkerStatus

from marketpipe.settings import Settings
from tests.chaos.conftest import compare, differences, jobs_run, lost_by_series, snapshot
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.integration.reliability.conftest import (
    Workers,
    child_pids,
    clean_tables,
    failed_jobs,
    horse_pids,
    kill,
    queue_state,
    wait_drained,
)
from tests.support.processes import die_with_test_run
from tests.support.scratch import empty_claimed_redis

KILLS = 20
SEED = 20260311
SINCE = "2023-01-01"  # enough windows (jobs) for 20 kills mid-job
SERVICES = ("services.transformer", "services.loader")
# Short job timeouts: the started-job entries of killed workers expire sooner.
WORKER_ENV = {"JOB_TIMEOUT_SECONDS": 30}
MODES = {"forked": {"WORKER_IN_PROCESS": 0}, "in-process": {"WORKER_IN_PROCESS": 1}}


def running_jobs(redis: Redis, worker_pid: int, in_process: bool) -> list[int]:
    """The PIDs running a job of this worker: its horses, or the worker itself when busy."""
    if not in_process:
        return horse_pids(worker_pid)
    busy = any(
        w.pid == worker_pid and w.get_state() == WorkerStatus.BUSY
        for w in Worker.all(connection=redis)
    )
    return [worker_pid] if busy else []


def backfill(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.fetcher", "backfill", "--since", SINCE],
        preexec_fn=die_with_test_run,
        env=settings_env(settings),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def reset(settings: Settings, redis: Redis) -> None:
    clean_tables(settings)
    empty_claimed_redis(redis)


def kill_mid_jobs(
    redis: Redis,
    settings: Settings,
    workers: Workers,
    fetch: subprocess.Popen[bytes],
    env: dict[str, int],
    rng: random.Random,
) -> list[str]:
    """Up to KILLS SIGKILLs of a busy worker's job at random moments while the backfill runs."""
    in_process = bool(env["WORKER_IN_PROCESS"])
    kills: list[str] = []
    deadline = time.monotonic() + 900
    while len(kills) < KILLS and time.monotonic() < deadline:
        module = rng.choice(SERVICES)
        busy = [
            (p, h) for p in workers.alive(module) for h in running_jobs(redis, p.pid, in_process)
        ]
        if not busy:
            # Nothing left to interrupt: the backfill is done and every worker idle.
            if (
                fetch.poll() is not None
                and queue_state(redis, settings)["queued"] == 0
                and not any(
                    running_jobs(redis, p.pid, in_process)
                    for m in SERVICES
                    for p in workers.alive(m)
                )
            ):
                break
            time.sleep(0.02)  # polling for a busy worker, not synchronising on one
            continue
        worker, horse = rng.choice(busy)
        time.sleep(rng.uniform(0, 0.3))  # the random moment inside the job
        if in_process and not running_jobs(redis, worker.pid, in_process):
            continue  # its job ended meanwhile: this kill would not be mid-job
        if rng.random() < 0.5 and horse != worker.pid:
            if kill(horse):
                kills.append(f"{module} horse")
        else:
            # The whole worker dies (OOM, kill -9 of the container): a new one replaces it.
            # Its scheduler too, as a container kill would: else it lives on as an orphan.
            tree = child_pids(worker.pid)
            kill(worker.pid)
            for pid in tree:
                kill(pid)
            worker.wait()
            workers.start(module, settings, **env)
            kills.append(f"{module} worker")
    return kills


@pytest.mark.parametrize("mode", MODES)
def test_killed_workers_lose_and_duplicate_nothing(
    pipeline_settings: Settings,
    redis: Redis,
    workers: Workers,
    chaos_record: Callable[..., None],
    mode: str,
) -> None:
    settings = pipeline_settings
    env = {**WORKER_ENV, **MODES[mode]}
    # The clean run: same sandbox instant, same backfill, nobody killed.
    for module in SERVICES:
        workers.start(module, settings, **env)
    assert backfill(settings).wait(timeout=600) == 0
    wait_drained(redis, settings, 600, workers)
    clean = snapshot(settings)
    assert len(clean["bars"]) > 5_000
    workers.stop()
    reset(settings, redis)

    rng = random.Random(SEED)
    for module in SERVICES:
        for _ in range(2):
            workers.start(module, settings, **env)
    fetch = backfill(settings)
    kills = kill_mid_jobs(redis, settings, workers, fetch, env, rng)
    assert fetch.wait(timeout=600) == 0
    # Retries wait 5 s, 15 s ...; a killed job's started entry is reaped by the next worker.
    wait_drained(redis, settings, 900, workers)

    state = queue_state(redis, settings)
    assert state == {"queued": 0, "started": 0, "scheduled": 0, "failed": 0}, failed_jobs(redis)
    found = snapshot(settings)
    result = compare(clean, found)
    chaos_record(
        f"SIGKILL x{len(kills)} during backfill ({mode})",
        faults=len(kills),
        jobs=jobs_run(redis, settings),
        **result,
    )
    assert len(kills) == KILLS, kills
    assert result["lost"] == 0 and result["duplicated"] == 0, (
        result,
        lost_by_series(clean, found),
        differences(clean, found),
    )
