"""What the fetcher remembers per series, and where it comes back from when Redis is lost.

Redis holds, per (symbol, interval), the newest complete bar the fetcher has enqueued and a digest
of the still-open bar it last saw. Postgres holds the truth: ``marketpipe.watermarks``, the last
complete bar stored, written by the loader and read here through the fetcher's role. Losing Redis
only costs a re-fetch: the watermark comes back from Postgres, an unknown open bar counts as
changed, and the loads are idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg2
from redis import Redis

from marketpipe.db import connect
from marketpipe.settings import Settings
from services.fetcher.series import parse_utc

log = logging.getLogger("marketpipe.fetcher.state")

SERIES_PREFIX = "marketpipe:fetch:series"
# A fetcher that stays down this long re-reads everything from Postgres anyway.
SERIES_TTL_SECONDS = 30 * 86_400


@dataclass(frozen=True)
class SeriesState:
    stored: datetime | None  # Postgres watermark: the last complete bar loaded
    enqueued: datetime | None  # Redis: the newest complete bar handed to the transformer
    open_signature: str | None  # Redis: digest of the open bar last enqueued
    # Redis, calendar intervals: the bar end (session close, UTC midnight) last fetched after.
    asked_after: datetime | None = None

    @property
    def seen(self) -> datetime | None:
        """The watermark deciding "new data?": what we handed on, else what is stored."""
        candidates = [m for m in (self.stored, self.enqueued) if m is not None]
        return max(candidates) if candidates else None

    @property
    def fetch_from(self) -> datetime | None:
        """Where the request's gap starts: stored data first, so a failed load is redone."""
        return self.stored or self.enqueued


def _series_key(symbol: str, interval: str) -> str:
    return f"{SERIES_PREFIX}:{interval}:{symbol}"


def stored_watermarks(
    settings: Settings, symbols: Sequence[str], interval: str
) -> dict[str, datetime]:
    """marketpipe.watermarks for these series; empty (and logged) when Postgres does not answer."""
    try:
        conn = connect(
            settings.role_url("fetcher"),
            connect_timeout=5,
            options="-c default_transaction_read_only=on",
        )
    except psycopg2.Error as exc:
        log.warning("watermarks unavailable (%s); deciding from Redis state only", exc)
        return {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT symbol, last_complete_bar FROM marketpipe.watermarks"
                " WHERE interval = %s AND symbol = ANY(%s)",
                (interval, list(symbols)),
            )
            return {str(symbol): moment for symbol, moment in cur.fetchall()}
    except psycopg2.Error as exc:
        log.warning("watermarks unavailable (%s); deciding from Redis state only", exc)
        return {}
    finally:
        conn.close()


def load_states(
    settings: Settings, redis: Redis, symbols: Sequence[str], interval: str
) -> dict[str, SeriesState]:
    stored = stored_watermarks(settings, symbols, interval)
    with redis.pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hmget(_series_key(symbol, interval), ["enqueued", "open_signature", "asked"])
        rows = pipe.execute()
    states = {}
    for symbol, (enqueued, signature, asked) in zip(symbols, rows, strict=True):
        states[symbol] = SeriesState(
            stored=stored.get(symbol),
            enqueued=parse_utc(enqueued),
            open_signature=signature.decode() if signature else None,
            asked_after=parse_utc(asked),
        )
    return states


def save_asked(redis: Redis, symbol: str, interval: str, bar_end: datetime) -> None:
    """A calendar series was fetched after the bar that ended at ``bar_end``."""
    key = _series_key(symbol, interval)
    with redis.pipeline() as pipe:
        pipe.hset(key, "asked", bar_end.isoformat())
        pipe.expire(key, SERIES_TTL_SECONDS)
        pipe.execute()


def save_state(
    redis: Redis,
    symbol: str,
    interval: str,
    newest_complete: datetime | None,
    open_signature: str,
) -> None:
    key = _series_key(symbol, interval)
    with redis.pipeline() as pipe:
        if newest_complete is not None:
            pipe.hset(key, "enqueued", newest_complete.isoformat())
        pipe.hset(key, "open_signature", open_signature)
        pipe.expire(key, SERIES_TTL_SECONDS)
        pipe.execute()
