"""The fetcher process end to end: the API key never leaks, the sandbox is just an API."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
from redis import Redis

from marketpipe import broker
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from tests.integration.conftest import REPO_ROOT, run_service, settings_env
from tests.integration.fetcher.conftest import (
    SECRET_KEY,
)


def _everything_in_redis(redis: Redis) -> bytes:
    dump = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        dump.append(key)
        if kind == b"string":
            dump.append(redis.get(key) or b"")
        elif kind == b"hash":
            dump.extend(b"%s=%s" % kv for kv in redis.hgetall(key).items())
        elif kind == b"list":
            dump.extend(redis.lrange(key, 0, -1))
        elif kind == b"set":
            dump.extend(redis.smembers(key))
        elif kind == b"zset":
            dump.extend(m for m, _ in redis.zrange(key, 0, -1, withscores=True))
    return b"\n".join(dump)


def test_the_api_key_never_reaches_logs_jobs_redis_or_the_database(
    fetch_settings: Settings, free_sandbox: SandboxServer, redis: Redis
) -> None:
    settings = fetch_settings.model_copy(update={"symbols": ("AAPL", "NOSUCH", "BTC/USD")})
    env = settings_env(settings, SANDBOX_API_KEY=SECRET_KEY, LOG_LEVEL="DEBUG")
    logs = run_service("services.fetcher", "--once", env=env)
    logs += run_service("services.transformer", "--burst", env=env)
    logs += run_service("services.loader", "--burst", env=env)
    # The run used the key and did real work, so the greps below are meaningful.
    assert free_sandbox.credits.snapshot(SECRET_KEY, free_sandbox.clock.now()).day_used > 0
    assert "GET /time_series?symbol=AAPL" in logs  # urllib3 logs request URLs at DEBUG
    assert "/__sandbox/" not in logs  # it reads the API's clock as from the real API: Date

    assert SECRET_KEY not in logs
    assert SECRET_KEY.encode() not in _everything_in_redis(redis)
    jobs = broker.queue(TRANSFORM_QUEUE, redis, settings)
    assert jobs.finished_job_registry.count + jobs.count > 0
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'marketpipe'"
        )
        tables = [name for (name,) in cur.fetchall()]
        total_rows = 0
        for table in tables:
            cur.execute(f"SELECT t::text FROM marketpipe.{table} t")
            rows = [text for (text,) in cur.fetchall()]
            total_rows += len(rows)
            assert not any(SECRET_KEY in text for text in rows), table
    conn.close()
    assert total_rows > 0


def test_a_backfill_of_a_symbol_not_configured_says_so_and_fetches_nothing(
    fetch_settings: Settings, free_sandbox: SandboxServer
) -> None:
    settings = fetch_settings.model_copy(update={"symbols": ("AAPL",)})
    done = subprocess.run(
        [sys.executable, "-m", "services.fetcher", "backfill", "--since", "2026-01-01",
         "--symbols", "AAPL,META"],
        env=settings_env(settings),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not in SYMBOLS: META" in done.stderr
    assert (
        free_sandbox.credits.snapshot("marketpipe-sandbox", free_sandbox.clock.now()).day_used == 0
    )
