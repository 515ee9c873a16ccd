"""Where accepted ticks go: Redis (latest price, recent-tick ring, status) and Postgres bars.

Both sinks raise on an unreachable store; the service keeps the connection, keeps the bars
pending (bars.py) and retries. Postgres is written through the streamer's own role, which may
touch ``marketpipe.live_minute_bars`` and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import psycopg2
import psycopg2.extensions
from psycopg2.extras import execute_values
from redis.asyncio import Redis

from marketpipe.db import connect
from marketpipe.live import LATEST_KEY, STATUS_KEY, LatestTick, ring_key
from marketpipe.settings import Settings
from services.streamer.bars import MinuteBar

REDIS_TIMEOUT_SECONDS = 2.0
DB_TIMEOUT_SECONDS = 5

UPSERT = """
INSERT INTO marketpipe.live_minute_bars AS t
    (symbol, minute, open, high, low, close, ticks, day_volume, first_tick_at, last_tick_at)
VALUES %s
ON CONFLICT (symbol, minute) DO UPDATE SET
    open = CASE WHEN EXCLUDED.first_tick_at < t.first_tick_at THEN EXCLUDED.open ELSE t.open END,
    high = GREATEST(t.high, EXCLUDED.high),
    low = LEAST(t.low, EXCLUDED.low),
    close = CASE WHEN EXCLUDED.last_tick_at >= t.last_tick_at
                 THEN EXCLUDED.close ELSE t.close END,
    day_volume = CASE WHEN EXCLUDED.last_tick_at >= t.last_tick_at
                      THEN EXCLUDED.day_volume ELSE t.day_volume END,
    ticks = GREATEST(t.ticks, EXCLUDED.ticks),
    first_tick_at = LEAST(t.first_tick_at, EXCLUDED.first_tick_at),
    last_tick_at = GREATEST(t.last_tick_at, EXCLUDED.last_tick_at),
    updated_at = now()
"""
# One upsert merges by tick time, so rewriting a bar (a retry, the still-open minute again, a
# restart in mid-minute) is idempotent; ticks is the larger count seen, not a sum.


def _at(epoch_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class RedisSink:
    """Latest price per symbol, the recent-tick ring and the status hash."""

    def __init__(self, redis_url: str, ring_size: int) -> None:
        self.redis = Redis.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self.ring_size = ring_size

    async def write_ticks(
        self, latest: Mapping[str, LatestTick], ring: Sequence[tuple[str, int, float]]
    ) -> None:
        """One round trip: the newest tick per symbol and every tick into its ring."""
        async with self.redis.pipeline(transaction=False) as pipe:
            if latest:
                pipe.hset(LATEST_KEY, mapping={s: t.to_json() for s, t in latest.items()})
            symbols = set()
            for symbol, timestamp, price in ring:
                pipe.lpush(ring_key(symbol), json.dumps([timestamp, price]))
                symbols.add(symbol)
            for symbol in symbols:
                pipe.ltrim(ring_key(symbol), 0, self.ring_size - 1)
            await pipe.execute()

    async def write_status(self, status: Mapping[str, str]) -> None:
        await self.redis.hset(STATUS_KEY, mapping=dict(status))  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.redis.aclose()


class PostgresSink:
    """Upserts minute bars and applies the retention, on one lazily (re)opened connection."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.role_url("streamer")
        self.retention_days = settings.live_retention_days
        self._conn: psycopg2.extensions.connection | None = None

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.url,
                connect_timeout=DB_TIMEOUT_SECONDS,
                options=f"-c statement_timeout={DB_TIMEOUT_SECONDS * 1000}",
                application_name="marketpipe-streamer",
            )
        return self._conn

    def write_bars(self, bars: Sequence[MinuteBar]) -> None:
        """Upsert ``bars`` in one transaction (blocking: run it in a thread)."""
        if not bars:
            return
        rows = [
            (b.symbol, _at(b.minute), b.open, b.high, b.low, b.close, b.ticks, b.day_volume,
             _at(b.first_tick), _at(b.last_tick))
            for b in bars
        ]  # fmt: skip
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                execute_values(cur, UPSERT, rows, page_size=1000)
        except psycopg2.Error:
            self.close()
            raise

    def apply_retention(self) -> int:
        """Delete minute bars older than LIVE_RETENTION_DAYS; the number deleted."""
        try:
            conn = self._connection()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "DELETE FROM marketpipe.live_minute_bars"
                    " WHERE minute < now() - make_interval(days => %s)",
                    (self.retention_days,),
                )
                return int(cur.rowcount)
        except psycopg2.Error:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
