"""The fetcher's tick keys: what the fetcher writes is what the dashboard reads back."""

from __future__ import annotations

from datetime import UTC, datetime

from marketpipe.ticks import TICK_CLAIM_PREFIX, claim_key, parse_tick, tick_text


def test_a_tick_round_trips_through_its_text_and_claim_key() -> None:
    tick = datetime(2026, 3, 11, 13, 5, tzinfo=UTC)
    assert tick_text(tick) == "2026-03-11T13:05:00Z"
    assert parse_tick(tick_text(tick).encode()) == tick
    assert claim_key(tick) == f"{TICK_CLAIM_PREFIX}:2026-03-11T13:05:00Z"
    assert parse_tick(claim_key(tick).removeprefix(f"{TICK_CLAIM_PREFIX}:")) == tick


def test_missing_or_foreign_values_are_no_tick() -> None:
    assert parse_tick(None) is None
    assert parse_tick(b"not a time") is None
