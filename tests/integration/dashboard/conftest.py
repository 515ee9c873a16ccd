"""A database loaded once per module by the real pipeline, a quarantined row, a failed job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest
import streamlit as st
from psycopg2 import sql
from redis import Redis
from rq import Queue
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from streamlit.testing.v1 import AppTest

from marketpipe.queues import TRANSFORM_JOB, TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from tests.integration.conftest import OUR_TABLES, OUTPUTSIZE, run_pipeline
from tests.support.scratch import empty_claimed_redis

APP = Path(__file__).resolve().parents[3] / "services" / "dashboard" / "app.py"
QUARANTINE_REASON = "high below low"
FAILED_JOB_ERROR = "ValueError: payload is not JSON"


def empty_stores(settings: Settings) -> None:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        tables = sql.SQL(", ").join(sql.Identifier("marketpipe", t) for t in OUR_TABLES)
        cur.execute(sql.SQL("TRUNCATE {}").format(tables))
    conn.close()
    redis = Redis.from_url(settings.redis_url)
    empty_claimed_redis(redis)
    redis.close()


def add_quarantined_row(settings: Settings) -> None:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO marketpipe.quarantine (payload_id, symbol, interval, row_key, reason,"
            " raw, quarantined_at) VALUES ('p-test', 'AAPL', '1h', '2026-03-11 14:00', %s,"
            " '{}'::jsonb, %s)",
            (QUARANTINE_REASON, datetime.now(UTC)),
        )
    conn.close()


def add_failed_job(settings: Settings) -> str:
    redis = Redis.from_url(settings.redis_url)
    queue = Queue(TRANSFORM_QUEUE, connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(TRANSFORM_JOB, "missing-payload")
    queue.remove(job)
    # what a worker records when the job raises: FAILED status, registry entry, failure result
    with redis.pipeline() as pipe:
        record_job_failure(job, f"Traceback ...\n{FAILED_JOB_ERROR}\n", pipe)
        pipe.execute()
    redis.close()
    return job.id


@pytest.fixture(scope="module")
def loaded_settings(base_settings: Settings, sandbox: SandboxServer) -> Iterator[Settings]:
    """The session database filled by one real fetch cycle from the frozen sandbox."""
    settings = base_settings.model_copy(
        update={"twelve_data_base_url": sandbox.url, "fetch_outputsize": OUTPUTSIZE}
    )
    empty_stores(settings)
    run_pipeline(settings)
    add_quarantined_row(settings)
    yield settings
    empty_stores(settings)


@pytest.fixture
def empty_settings(base_settings: Settings) -> Settings:
    empty_stores(base_settings)
    return base_settings


@pytest.fixture
def open_app(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run the app as a fresh browser session would, optionally with URL query parameters."""
    st.cache_data.clear()
    st.cache_resource.clear()

    def run(settings: Settings, **query: str) -> AppTest:
        monkeypatch.setenv("DATABASE_URL", settings.database_url)
        monkeypatch.setenv("REDIS_URL", settings.redis_url)
        monkeypatch.setenv("SYMBOLS", ",".join(settings.symbols))
        monkeypatch.delenv("TWELVE_DATA_API_KEY", raising=False)
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.query_params.update(query)
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        return app

    yield run
    st.cache_data.clear()
    st.cache_resource.clear()
