"""The request loop's backoff: full jitter under an exponential ceiling, capped."""

from __future__ import annotations

import random

from services.fetcher.request import BACKOFF_CAP_SECONDS, backoff_seconds


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (10, BACKOFF_CAP_SECONDS)]:
        delays = [backoff_seconds(0.5, attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # Spread over the whole range, so replicas that failed together do not retry together.
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
