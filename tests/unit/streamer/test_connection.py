from __future__ import annotations

import random

from marketpipe.settings import Settings
from services.streamer.connection import (
    BACKOFF_CAP_SECONDS,
    backoff_delay,
    stream_host,
    stream_url,
)


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, rng) for attempt in range(12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[3] <= 8.0
    assert all(BACKOFF_CAP_SECONDS / 2 <= d <= BACKOFF_CAP_SECONDS for d in delays[7:])
    again = [backoff_delay(3, random.Random(seed)) for seed in range(20)]
    assert len(set(again)) > 1  # jittered, so reconnecting clients do not move in lockstep


def test_demo_mode_streams_from_the_sandbox_with_its_key() -> None:
    settings = Settings(twelve_data_api_key="")
    assert settings.stream_base_url == "ws://127.0.0.1:8091/v1/quotes/price"
    assert stream_url(settings).endswith("?apikey=marketpipe-sandbox")


def test_a_real_key_streams_from_twelve_data_and_the_host_hides_the_key() -> None:
    settings = Settings(twelve_data_api_key="s3cret-key")
    assert stream_url(settings) == "wss://ws.twelvedata.com/v1/quotes/price?apikey=s3cret-key"
    assert "s3cret" not in stream_host(settings)
    assert stream_host(settings) == "wss://ws.twelvedata.com"
