"""The fetcher's schedule state in Redis: written by the fetcher, read by the dashboard.

``LAST_TICK_KEY`` holds the newest FETCH_SCHEDULE tick a fetcher finished; a tick being run is
claimed under ``TICK_CLAIM_PREFIX:<tick>`` (the claim is dropped if the cycle fails, and kept
after it succeeds until its lease ends). So a claim newer than the last finished tick is a
fetch in progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

LAST_TICK_KEY: Final = "marketpipe:fetch:last-tick"
TICK_CLAIM_PREFIX: Final = "marketpipe:fetch:tick"
TICK_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def tick_text(tick: datetime) -> str:
    return tick.strftime(TICK_FORMAT)


def claim_key(tick: datetime) -> str:
    return f"{TICK_CLAIM_PREFIX}:{tick_text(tick)}"


def parse_tick(raw: str | bytes | None) -> datetime | None:
    """A tick as stored (``2026-03-11T13:00:00Z``), or None for a missing or foreign value."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return datetime.strptime(text, TICK_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
