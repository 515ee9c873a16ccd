"""Credit budget math: when the next API minute and day begin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.fetcher.limiter import seconds_to_next_minute, wait_seconds

NOW = datetime(2026, 3, 11, 18, 45, 30, tzinfo=UTC)


def test_waits_for_the_next_minute_or_the_next_day() -> None:
    assert seconds_to_next_minute(NOW) == pytest.approx(30.0)
    assert wait_seconds(NOW, 10, 800, 1, slack=1.0) == pytest.approx(31.0)
    day_left = (datetime(2026, 3, 12, tzinfo=UTC) - NOW).total_seconds()
    assert wait_seconds(NOW, 800, 800, 1, slack=1.0) == pytest.approx(day_left + 1)
