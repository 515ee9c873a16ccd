"""A sandbox per test (faults, credits and clock start clean) on a free plan, and fetchers on it.

The sandbox clock is frozen; the fetcher's injected clock advances it whenever the fetcher
waits (for credits, backoff or the next tick), so no test sleeps and every wait is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from marketpipe import broker, raw
from marketpipe.contract import RawPayload
from marketpipe.queues import TRANSFORM_QUEUE
from marketpipe.settings import Settings
from services.fetcher.__main__ import build_context
from services.fetcher.context import FetchContext
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import FROZEN_AT
from tests.support.clock import InProcessClock
from tests.support.sql import query as run_query

SECRET_KEY = "td-secret-7f3a9c2e51b84d60"
FREE_PLAN = (8, 800)


@pytest.fixture
def free_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        port=0,
        clock_start=FROZEN_AT.isoformat(),
        clock_speed=0,
        credits_per_minute=FREE_PLAN[0],
        credits_per_day=FREE_PLAN[1],
        api_keys=("marketpipe-sandbox", SECRET_KEY),
        slow_seconds=2,
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.fixture
def fetch_settings(clean_db: Settings, redis: Redis, free_sandbox: SandboxServer) -> Settings:
    return clean_db.model_copy(
        update={
            "twelve_data_base_url": free_sandbox.url,
            "fetch_outputsize": 60,
            "fetch_backoff_seconds": 0.5,
            "http_timeout_seconds": 1.0,
        }
    )


@pytest.fixture
def make_context(
    fetch_settings: Settings, redis: Redis, free_sandbox: SandboxServer
) -> Callable[..., FetchContext]:
    def make(**overrides: Any) -> FetchContext:
        settings = fetch_settings.model_copy(update=overrides)
        return build_context(settings, clock=InProcessClock(free_sandbox.clock), redis=redis)

    return make


def credits_used_today(sandbox: SandboxServer, key: str = "marketpipe-sandbox") -> int:
    return sandbox.credits.snapshot(key, sandbox.clock.now()).day_used


def queued_payloads(redis: Redis, settings: Settings) -> list[RawPayload]:
    ids = broker.queue(TRANSFORM_QUEUE, redis, settings).get_job_ids()
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    return [raw.read_payload(settings.admin_url, job.args[0]) for job in jobs if job is not None]


def query(settings: Settings, statement: str, *params: object) -> list[tuple]:
    return run_query(settings.database_url, statement, *params)
