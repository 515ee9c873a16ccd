"""Outages: Postgres restarted while loading, Redis restarted mid-run (with and without its
append-only file), the API down for an hour of sandbox time. Each ends with every row there."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Worker
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from marketpipe import broker
from marketpipe.queues import LOAD_QUEUE, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.cycle import CycleReport, run_cycle
from services.sandbox.app import SandboxServer
from tests.chaos.conftest import compare, jobs_run, snapshot
from tests.integration.conftest import run_pipeline
from tests.integration.loader.test_outage import TcpProxy
from tests.integration.reliability.conftest import (
    Workers,
    clean_tables,
    failed_jobs,
    query,
    wait_drained,
    wait_for,
)
from tests.support.clock import InProcessClock
from tests.support.compare import Rows
from tests.support.processes import die_with_test_run
from tests.support.scratch import empty_claimed_redis


def expected_after_one_cycle(settings: Settings, redis: Redis) -> dict[str, Rows]:
    """The clean run's tables: one cycle, burst workers, nothing broken."""
    run_pipeline(settings)
    clean = snapshot(settings)
    clean_tables(settings)
    flush(redis)
    return clean


def flush(redis: Redis) -> None:
    empty_claimed_redis(redis)


def awaiting_retry(client: Redis, settings: Settings) -> int:
    """Jobs that failed and wait for their retry, over both queues."""
    return sum(
        broker.queue(name, client, settings).scheduled_job_registry.count
        for name in (TRANSFORM_QUEUE, LOAD_QUEUE)
    )


def test_postgres_restarted_while_loading(
    pipeline_settings: Settings, redis: Redis, workers: Workers, chaos_record: Callable[..., None]
) -> None:
    settings = pipeline_settings
    clean = expected_after_one_cycle(settings, redis)
    url = settings.admin_url
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    through = settings.model_copy(
        update={"database_url": url.set(port=proxy.port).render_as_string(hide_password=False)}
    )
    try:
        workers.start("services.transformer", through)
        workers.start("services.loader", through)
        # Workers wait at start until the database answers (issue 17): cut only once both are
        # past that check and take jobs, so the outage hits the jobs, not the start.
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, 60, "both workers to take jobs")
        proxy.cut()  # the server goes down before the loads
        ctx = build_context(settings, redis=redis)
        run_cycle(ctx)
        # The jobs fail against the dead server (transforms read the stored history, loads
        # write) and wait for their retry.
        wait_for(lambda: awaiting_retry(redis, settings) > 0, 60, "a job to fail on the outage")
        assert query(settings, "SELECT count(*) FROM marketpipe.bars") == [(0,)]
        proxy.restore()  # the server is back
        wait_drained(redis, settings, 300, workers)
    finally:
        proxy.cut()
    result = compare(clean, snapshot(settings))
    chaos_record("Postgres down while loading", faults=1, jobs=jobs_run(redis, settings), **result)
    assert result["lost"] == result["duplicated"] == 0, result
    assert failed_jobs(redis) == {}
    runs = query(
        settings,
        "SELECT status, count(*) FROM marketpipe.pipeline_runs"
        " WHERE component = 'loader' GROUP BY 1",
    )
    assert runs == [("ok", len(settings.symbols))]
    assert len(workers.alive("services.loader")) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """Our own redis-server (never the shared one) in a temp dir, killable and restartable."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.dir, self.appendonly, self.port = directory, appendonly, _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--save", ""]
        if self.appendonly:
            # compose uses everysec; `always` makes the test exact about what survives.
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", *args],
            preexec_fn=die_with_test_run,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)

        def answers() -> bool:
            with contextlib.suppress(RedisConnectionError):
                return bool(client.ping())
            return False

        wait_for(answers, 20, "the private Redis to answer")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, appendonly=request.param)
    server.start()
    yield server
    with contextlib.suppress(AssertionError):
        server.kill()


@pytest.mark.parametrize(
    "private_redis", [True, False], ids=["aof", "no-persistence"], indirect=True
)
def test_redis_restarted_mid_run(
    pipeline_settings: Settings,
    redis: Redis,
    private_redis: PrivateRedis,
    workers: Workers,
    chaos_record: Callable[..., None],
) -> None:
    clean = expected_after_one_cycle(pipeline_settings, redis)
    settings = pipeline_settings.model_copy(update={"redis_url": private_redis.url})
    own = Redis.from_url(private_redis.url)
    transformer = workers.start("services.transformer", settings)
    loader = workers.start("services.loader", settings)
    # A share lock on bars holds the loader inside its first transaction, so the outage
    # surely lands mid-run: a load job started, the other batches still queued.
    blocker = psycopg2.connect(settings.database_url)
    blocker.cursor().execute("LOCK TABLE marketpipe.bars IN SHARE MODE")
    ctx = build_context(settings, redis=own)
    assert sorted(run_cycle(ctx).enqueued) == sorted(settings.symbols)
    started = StartedJobRegistry(LOAD_QUEUE, connection=own, serializer=JSONSerializer)
    wait_for(lambda: started.count > 0, 120, "a load job to start")

    private_redis.kill()
    private_redis.start()
    blocker.close()  # the blocked load commits now, with its Redis connection gone
    ctx = build_context(settings, redis=Redis.from_url(private_redis.url))
    if not private_redis.appendonly:
        # make run: the local Redis kept nothing; the watermarks in Postgres say what is
        # already stored, and the next tick fetches the rest again.
        run_cycle(ctx)
    # compose: the append-only file brought the queues, blobs and registries back.
    wait_drained(Redis.from_url(private_redis.url), settings, 300, workers)
    # The worker processes rode out the outage (reconnected), not restarted by anyone.
    assert transformer.poll() is None and loader.poll() is None, workers.logs()
    result = compare(clean, snapshot(settings))
    mode = "AOF" if private_redis.appendonly else "no persistence, re-fetch"
    chaos_record(
        f"Redis restarted ({mode})",
        faults=1,
        jobs=jobs_run(Redis.from_url(private_redis.url), settings),
        **result,
    )
    assert result["lost"] == result["duplicated"] == 0, result


def test_api_down_for_an_hour_of_sandbox_time(
    pipeline_settings: Settings,
    redis: Redis,
    sandbox: SandboxServer,
    workers: Workers,
    chaos_record: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = pipeline_settings.model_copy(
        update={"fetch_backoff_seconds": 0.05, "symbols": ("AAPL", "BTC/USD", "ETH/USD")}
    )
    start = sandbox.clock.now()
    ctx = build_context(settings, clock=InProcessClock(sandbox.clock), redis=redis)
    workers.start("services.transformer", settings)
    workers.start("services.loader", settings)

    def tick() -> CycleReport:
        report = run_cycle(ctx)
        wait_drained(redis, settings, 120, workers)
        return report

    try:
        # The clean run: a tick now and one 100 min later, the API up throughout.
        tick()
        sandbox.clock.advance(100 * 60)
        tick()
        clean = snapshot(settings)
        clean_tables(settings)
        flush(redis)
        sandbox.clock.set(start)

        tick()
        # The API goes down: every call of every endpoint fails, for an hour and a bit.
        sandbox.faults.set_probability("server_error", 1.0, endpoint="*")
        down = []
        for _ in range(2):
            sandbox.clock.advance(40 * 60)
            down.append(tick())
        sandbox.faults.clear()
        sandbox.clock.advance(20 * 60)
        tick()  # the first tick after the outage catches up from the watermarks
    finally:
        sandbox.faults.clear()
        sandbox.clock.set(start, speed=0)
    assert all(sorted(r.deferred) == sorted(settings.symbols) for r in down)
    assert "next tick retries" in caplog.text  # the fetcher's log says what happened
    result = compare(clean, snapshot(settings))
    chaos_record("API down for an hour", faults=2, jobs=jobs_run(redis, settings), **result)
    assert result["lost"] == result["duplicated"] == 0, result
    assert failed_jobs(redis) == {}
