"""Real servers for integration tests, never the user's data.

PostgreSQL and Redis come from TEST_DATABASE_URL / TEST_REDIS_URL (``make test`` points them at
the local servers); without them, testcontainers starts both when a Docker engine answers; with
neither, the session fails with a message saying what to set. Each session creates its own
database and claims an empty Redis db index, and drops / flushes them at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from redis import Redis

from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.support.scratch import empty_claimed_redis, scratch_database, scratch_redis

REPO_ROOT = Path(__file__).resolve().parents[2]
OUR_TABLES = (
    "bars",
    "daily_bars",
    "quarantine",
    "pipeline_runs",
    "watermarks",
    "raw_payloads",
    "restatements",
    "configured_series",
)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def server_urls() -> Iterator[tuple[str, str]]:
    pg_url, redis_url = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    if pg_url and redis_url:
        yield pg_url, redis_url
        return
    if not _docker_available():
        pytest.fail(
            "integration tests need PostgreSQL and Redis: set TEST_DATABASE_URL (e.g."
            " postgresql://postgres@127.0.0.1:5432/postgres) and TEST_REDIS_URL (e.g."
            " redis://127.0.0.1:6379/0), or run where a Docker engine answers so"
            " testcontainers can start them (`make test` sets the local defaults)",
            pytrace=False,
        )
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    with PostgresContainer("postgres:15", driver=None) as pg, RedisContainer("redis:7") as rd:
        host, port = rd.get_container_host_ip(), rd.get_exposed_port(6379)
        yield pg_url or pg.get_connection_url(), redis_url or f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def database_url(server_urls: tuple[str, str]) -> Iterator[str]:
    """A fresh database for this session, dropped afterwards."""
    with scratch_database(server_urls[0], prefix="marketpipe_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> Iterator[str]:
    """An empty Redis db index claimed for this session, flushed afterwards."""
    try:
        with scratch_redis(server_urls[1]) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(f"{exc}: the tests need one", pytrace=False)


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_url: str) -> Settings:
    # No automatic two-year backfill of every configured symbol unless a test asks for one.
    settings = Settings(database_url=database_url, redis_url=redis_url, backfill_since="none")
    migrate(settings)
    return settings


@pytest.fixture
def redis(base_settings: Settings) -> Iterator[Redis]:
    """The session's Redis db, emptied before each test (the claim key is kept)."""
    client = Redis.from_url(base_settings.redis_url)
    empty_claimed_redis(client)
    yield client
    client.close()


def unlimited_sandbox(clock_start: datetime) -> SandboxServer:
    """A sandbox on a frozen clock at ``clock_start`` with credits no test runs out of."""
    plan = SandboxSettings(
        port=0,
        clock_start=clock_start.isoformat(),
        clock_speed=0,
        credits_per_minute=100_000,
        credits_per_day=10_000_000,
    )
    return SandboxServer(plan)


def empty_our_tables(settings: Settings, redis: Redis) -> None:
    """Our tables and the series versions emptied, and the claimed Redis db (within a test)."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        tables = [sql.Identifier("marketpipe", t) for t in (*OUR_TABLES, "series_versions")]
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tables)))
    conn.close()
    empty_claimed_redis(redis)


@pytest.fixture
def clean_db(base_settings: Settings) -> Settings:
    """Our tables emptied before the test (the schema and roles stay)."""
    conn = psycopg2.connect(base_settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("TRUNCATE {}").format(
                sql.SQL(", ").join(sql.Identifier("marketpipe", t) for t in OUR_TABLES)
            )
        )
    conn.close()
    return base_settings


def settings_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment a service process needs to run with ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWELVE_DATA_", "SANDBOX_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SYMBOLS=",".join(settings.symbols),
        INTERVALS=",".join(settings.intervals),
        BACKFILL_SINCE=settings.backfill_since,
        FETCH_OUTPUTSIZE=str(settings.fetch_outputsize),
        TWELVE_DATA_BASE_URL=settings.twelve_data_base_url,
        LOG_LEVEL="INFO",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


# A Wednesday afternoon in New York: stocks mid-session, crypto around the clock.
FROZEN_AT = datetime(2026, 3, 11, 18, 45, tzinfo=UTC)
OUTPUTSIZE = 120


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    """Our Twelve Data sandbox on an ephemeral port, its clock frozen at FROZEN_AT.

    A frozen clock never reaches the next minute, so the plan is generous here; the credit
    limits themselves are tested with the sandbox's moving clock.
    """
    settings = SandboxSettings(
        port=0,
        clock_start=FROZEN_AT.isoformat(),
        clock_speed=0,
        credits_per_minute=10_000,
        credits_per_day=1_000_000,
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.fixture
def pipeline_settings(clean_db: Settings, redis: Redis, sandbox: SandboxServer) -> Settings:
    """Settings of a pipeline fetching from the sandbox into the empty test database."""
    return clean_db.model_copy(
        update={"twelve_data_base_url": sandbox.url, "fetch_outputsize": OUTPUTSIZE}
    )


def run_pipeline(settings: Settings) -> None:
    """One fetch cycle, then the transformer and loader workers until their queues are empty."""
    env = settings_env(settings)
    run_service("services.fetcher", "--once", env=env)
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)


def run_service(module: str, *args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run ``python -m module args`` to completion; fail the test with its output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{module} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout + done.stderr
