"""SIGKILL transformers and loaders mid-job during a backfill, 20 times at seeded random moments:
the final tables equal a clean run's, row for row, and no job is left stuck."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable

from redis import Redis

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


def test_killed_workers_lose_and_duplicate_nothing(
    pipeline_settings: Settings,
    redis: Redis,
    workers: Workers,
    chaos_record: Callable[..., None],
) -> None:
    settings = pipeline_settings
    # The clean run: same sandbox instant, same backfill, nobody killed.
    for module in SERVICES:
        workers.start(module, settings, **WORKER_ENV)
    assert backfill(settings).wait(timeout=600) == 0
    wait_drained(redis, settings, 600, workers)
    clean = snapshot(settings)
    assert len(clean["bars"]) > 5_000
    workers.stop()
    reset(settings, redis)

    rng = random.Random(SEED)
    for module in SERVICES:
        for _ in range(2):
            workers.start(module, settings, **WORKER_ENV)
    fetch = backfill(settings)
    kills: list[str] = []
    deadline = time.monotonic() + 900
    while len(kills) < KILLS and time.monotonic() < deadline:
        module = rng.choice(SERVICES)
        busy = [(p, h) for p in workers.alive(module) for h in horse_pids(p.pid)]
        if not busy:
            # Nothing left to interrupt: the backfill is done and every worker idle.
            if (
                fetch.poll() is not None
                and queue_state(redis, settings)["queued"] == 0
                and not any(horse_pids(p.pid) for m in SERVICES for p in workers.alive(m))
            ):
                break
            time.sleep(0.02)  # polling for a busy worker, not synchronising on one
            continue
        worker, horse = rng.choice(busy)
        time.sleep(rng.uniform(0, 0.3))  # the random moment inside the job
        if rng.random() < 0.5:
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
            workers.start(module, settings, **WORKER_ENV)
            kills.append(f"{module} worker")
    assert fetch.wait(timeout=600) == 0
    # Retries wait 5 s, 15 s ... and the lease of a killed coalescing loader is 30 s.
    wait_drained(redis, settings, 900, workers)

    state = queue_state(redis, settings)
    assert state == {"queued": 0, "started": 0, "scheduled": 0, "failed": 0}, failed_jobs(redis)
    found = snapshot(settings)
    result = compare(clean, found)
    chaos_record(
        f"SIGKILL x{len(kills)} during backfill",
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
