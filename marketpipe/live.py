"""The live-price contract between the streamer (writer) and the dashboard (reader) in Redis.

* ``LATEST_KEY``: a hash, field = symbol, value = JSON :class:`LatestTick` (price, tick time,
  day volume where the instrument has one, and when the streamer received it).
* ``ring_key(symbol)``: a list of the symbol's recent ticks as JSON ``[timestamp, price]``,
  newest first, trimmed to ``LIVE_RING_SIZE``.
* ``STATUS_KEY``: a hash of the streamer's state (:data:`STATUS_FIELDS`), rewritten every few
  seconds; ``updated_at`` older than :data:`STATUS_STALE_SECONDS` means the streamer is gone.

Nothing here holds the API key or the stream URL: the streamer never writes either.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Literal

LATEST_KEY = "marketpipe:live:latest"
STATUS_KEY = "marketpipe:live:status"
RING_PREFIX = "marketpipe:live:ticks:"
STATUS_FIELDS = (
    "state",  # connecting | subscribed | reconnecting | stopped
    "subscribed",  # JSON list of symbols
    "failed",  # JSON object symbol -> reason
    "ticks_per_minute",
    "counters",  # JSON object: accepted, dropped_<reason>, reconnects, bars_* ...
    "last_error",
    "stream",  # the stream's host, never its URL (the URL carries the key)
    "updated_at",  # epoch seconds
)
# A price is "live" while its tick is at most this old; older, it is "delayed".
LIVE_SECONDS = 15.0
STATUS_STALE_SECONDS = 15.0
# Ticks dated further ahead than this are a known quirk of the real stream: dropped.
FUTURE_TOLERANCE_SECONDS = 60.0

Badge = Literal["live", "delayed", "off"]
_SECRET = re.compile(r"(apikey=)[^&\s\"']*", re.IGNORECASE)


def ring_key(symbol: str) -> str:
    return RING_PREFIX + symbol


def redact(text: str) -> str:
    """Hide API keys (``apikey=...``) in anything about to be logged or stored."""
    return _SECRET.sub(r"\1***", text)


@dataclass(frozen=True)
class LatestTick:
    """The newest accepted tick of one symbol."""

    price: float
    timestamp: float  # the tick's own time (epoch seconds, as the stream dates it)
    received_at: float  # when the streamer read it (epoch seconds)
    day_volume: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> LatestTick:
        data = json.loads(raw)
        return cls(
            price=float(data["price"]),
            timestamp=float(data["timestamp"]),
            received_at=float(data["received_at"]),
            day_volume=None if data.get("day_volume") is None else float(data["day_volume"]),
        )


def badge(tick_age_seconds: float | None, streamer_connected: bool) -> Badge:
    """live: a fresh tick from a connected streamer; delayed: an older one; off: none."""
    if tick_age_seconds is None or not streamer_connected:
        return "off"
    return "live" if tick_age_seconds <= LIVE_SECONDS else "delayed"
