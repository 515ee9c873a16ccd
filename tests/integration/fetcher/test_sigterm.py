"""`docker compose stop` sends SIGTERM: the fetcher ends at once and hands its tick back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.schedule import LAST_TICK_KEY, TICK_CLAIM_PREFIX
from tests.integration.conftest import REPO_ROOT, settings_env


def test_sigterm_mid_tick_ends_the_fetcher_and_releases_the_tick(
    pipeline_settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "heartbeat"
    # One credit a minute on a frozen API clock: the tick's cycle waits for credits for ever.
    env = settings_env(pipeline_settings, API_CREDITS_PER_MINUTE=1, HEARTBEAT_FILE=heartbeat)
    log = tmp_path / "fetcher.log"
    with log.open("w") as out:
        fetcher = subprocess.Popen(
            [sys.executable, "-m", "services.fetcher"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        give_up = time.monotonic() + 60
        while not redis.keys(f"{TICK_CLAIM_PREFIX}:*") or "tick " not in log.read_text():
            assert fetcher.poll() is None, log.read_text()
            if time.monotonic() > give_up:
                pytest.fail(f"the fetcher claimed no tick:\n{log.read_text()}")
            time.sleep(0.1)  # polling interval, not synchronisation: the deadline decides
        fetcher.send_signal(signal.SIGTERM)
        assert fetcher.wait(timeout=10) == 0, log.read_text()
    finally:
        if fetcher.poll() is None:
            fetcher.kill()
            fetcher.wait()
    output = log.read_text()
    assert "stopping on SIGTERM" in output
    assert "cycle done" not in output  # it was stopped mid-cycle
    assert redis.keys(f"{TICK_CLAIM_PREFIX}:*") == []  # the tick runs again at the next start
    assert redis.get(LAST_TICK_KEY) is None
    assert heartbeat.exists()  # the loop beat for the healthcheck
