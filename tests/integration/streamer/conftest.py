"""A sandbox streaming from two hours ago (frozen: tests move its clock) and streamer processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from redis import Redis

from marketpipe.live import LATEST_KEY, STATUS_KEY, LatestTick
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from services.sandbox.settings import SandboxSettings
from tests.integration.conftest import REPO_ROOT, settings_env
from tests.integration.loader.conftest import wait_for
from tests.support.processes import die_with_test_run

__all__ = ["wait_for"]

SECRET_KEY = "sk-live-7f3a9c-DO-NOT-LEAK"
# Two hours back, so ticks replayed from the frozen sandbox are never dated in our future.
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
START = HOUR - timedelta(seconds=5)
HEARTBEAT_SECONDS = 0.5


@pytest.fixture
def stream_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        port=0,
        api_keys=(SECRET_KEY,),
        clock_start=START.isoformat(),
        clock_speed=0,
        credits_per_minute=10_000,
        credits_per_day=1_000_000,
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.fixture
def live_settings(
    clean_db: Settings, redis: Redis, stream_sandbox: SandboxServer
) -> Iterator[Settings]:
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE marketpipe.live_minute_bars")
    conn.close()
    yield clean_db.model_copy(
        update={
            "symbols": ("BTC/USD", "ETH/USD"),
            "twelve_data_base_url": stream_sandbox.url,
            "twelve_data_stream_url": stream_sandbox.stream_url,
        }
    )


class StreamerProcess:
    def __init__(self, settings: Settings, log_path: Path, **extra: Any) -> None:
        env = settings_env(
            settings,
            TWELVE_DATA_STREAM_URL=settings.twelve_data_stream_url,
            SANDBOX_API_KEY=SECRET_KEY,
            LIVE_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS,
            **extra,
        )
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.streamer"],
            preexec_fn=die_with_test_run,
            env=env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> float:
        """SIGTERM; the seconds until the process was gone."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return time.monotonic() - started


@pytest.fixture
def start_streamer(tmp_path: Path) -> Iterator[Callable[..., StreamerProcess]]:
    started: list[StreamerProcess] = []

    def start(settings: Settings, **extra: Any) -> StreamerProcess:
        streamer = StreamerProcess(settings, tmp_path / f"streamer-{len(started)}.log", **extra)
        started.append(streamer)
        return streamer

    yield start
    for streamer in started:
        streamer.stop()


def status(redis: Redis) -> dict[str, Any]:
    raw = {k.decode(): v.decode() for k, v in redis.hgetall(STATUS_KEY).items()}
    for field in ("subscribed", "failed", "counters"):
        if field in raw:
            raw[field] = json.loads(raw[field])
    return raw


def counter(redis: Redis, name: str) -> int:
    return int(status(redis).get("counters", {}).get(name, 0))


def latest(redis: Redis, symbol: str) -> LatestTick | None:
    raw = redis.hget(LATEST_KEY, symbol)
    return None if raw is None else LatestTick.from_json(raw)


def wait_for_tick_at(redis: Redis, symbol: str, timestamp: float, timeout: float = 30) -> None:
    def reached() -> bool:
        tick = latest(redis, symbol)
        return tick is not None and tick.timestamp >= timestamp

    wait_for(reached, timeout, f"a {symbol} tick at {timestamp:.0f}")


def wait_subscribed(redis: Redis, timeout: float = 30) -> None:
    wait_for(lambda: status(redis).get("state") == "subscribed", timeout, "a subscribed streamer")
