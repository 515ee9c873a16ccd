"""`docker compose stop` sends SIGTERM: the fetcher ends at once and hands its tick back."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from marketpipe.settings import Settings
from marketpipe.ticks import LAST_TICK_KEY, TICK_CLAIM_PREFIX
from tests.integration.conftest import settings_env
from tests.support.processes import service_process, stop_with_sigterm, wait_while_running


def test_sigterm_mid_tick_ends_the_fetcher_and_releases_the_tick(
    pipeline_settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "heartbeat"
    # One credit a minute on a frozen API clock: the tick's cycle waits for credits for ever.
    env = settings_env(pipeline_settings, API_CREDITS_PER_MINUTE=1, HEARTBEAT_FILE=heartbeat)
    log = tmp_path / "fetcher.log"
    with service_process("services.fetcher", env, log) as fetcher:
        wait_while_running(
            fetcher,
            log,
            lambda: bool(redis.keys(f"{TICK_CLAIM_PREFIX}:*")) and "tick " in log.read_text(),
            "a tick claim",
        )
        stop_with_sigterm(fetcher, log)
    output = log.read_text()
    assert "stopping on SIGTERM" in output
    assert "cycle fetch:" not in output  # it was stopped mid-cycle (no cycle line)
    assert redis.keys(f"{TICK_CLAIM_PREFIX}:*") == []  # the tick runs again at the next start
    assert redis.get(LAST_TICK_KEY) is None
    assert heartbeat.exists()  # the loop beat for the healthcheck
