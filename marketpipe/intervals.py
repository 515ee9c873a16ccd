"""Twelve Data's intervals and request limits: re-exported from their home, marketpipe.market."""

from __future__ import annotations

from marketpipe.market import (
    CALENDAR_INTERVALS,
    INTRADAY_MINUTES,
    KNOWN_INTERVALS,
    MAX_BATCH_SYMBOLS,
    MAX_OUTPUTSIZE,
)

__all__ = [
    "CALENDAR_INTERVALS",
    "INTRADAY_MINUTES",
    "KNOWN_INTERVALS",
    "MAX_BATCH_SYMBOLS",
    "MAX_OUTPUTSIZE",
]
