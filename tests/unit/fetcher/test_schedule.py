"""Ticks of FETCH_SCHEDULE: the latest due one, caught up once."""

from __future__ import annotations

from datetime import UTC, datetime

from services.fetcher.schedule import due_tick, latest_tick

NOW = datetime(2026, 3, 11, 18, 45, 30, tzinfo=UTC)


def test_ticks_catch_up_once() -> None:
    assert latest_tick("5 * * * *", NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", None, NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    five_missed = datetime(2026, 3, 11, 13, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", five_missed, NOW) == datetime(2026, 3, 11, 18, 5, tzinfo=UTC)
    assert due_tick("5 * * * *", datetime(2026, 3, 11, 18, 5, tzinfo=UTC), NOW) is None
