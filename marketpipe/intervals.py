"""Twelve Data's intervals and request limits, as the API defines them."""

from __future__ import annotations

from typing import Final

# Minutes per bar of the intraday intervals ("5h" exists only in an older spec; still accepted).
INTRADAY_MINUTES: Final[dict[str, int]] = {
    "1min": 1,
    "5min": 5,
    "15min": 15,
    "30min": 30,
    "45min": 45,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "5h": 300,
    "8h": 480,
}
CALENDAR_INTERVALS: Final = ("1day", "1week", "1month")
KNOWN_INTERVALS: Final = frozenset(INTRADAY_MINUTES) | frozenset(CALENDAR_INTERVALS)

MAX_OUTPUTSIZE: Final = 5000
MAX_BATCH_SYMBOLS: Final = 120
