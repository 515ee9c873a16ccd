"""The streamer process: one connection, tick validation, Redis and Postgres sinks, status.

Tasks on one event loop: the connection (connection.py), a Redis writer woken by each batch of
accepted ticks, a Postgres writer flushing pending minute bars every FLUSH_SECONDS, and a
status publisher. A store that is down never stops the connection: Redis gets the newest price
of each symbol once it is back, Postgres every pending bar (bounded, see bars.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
from redis.exceptions import RedisError

from marketpipe.health import beat
from marketpipe.live import LatestTick
from marketpipe.settings import Settings
from services.streamer.bars import MinuteBars
from services.streamer.connection import PriceStream, stream_host, stream_url
from services.streamer.sinks import PostgresSink, RedisSink
from services.streamer.ticks import Control, Drop, Tick, classify

log = logging.getLogger("services.streamer")

T = TypeVar("T")
FLUSH_SECONDS = 2.0
STATUS_SECONDS = 2.0
RETRY_SECONDS = 1.0
RETENTION_EVERY_SECONDS = 3600.0
SHUTDOWN_FLUSH_SECONDS = 0.8
DROP_LOG_FIRST = 5  # drops of one reason logged one by one; after that every DROP_LOG_EVERY-th
DROP_LOG_EVERY = 1000
OVER_CAP = "over LIVE_MAX_SYMBOLS (the plan's WebSocket credits)"


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """Run blocking I/O off the loop in a daemon thread: a hung socket cannot delay exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="streamer-db", daemon=True).start()
    return await future


class Streamer:
    """Everything the process holds; :meth:`run` until :meth:`stop` (SIGTERM / SIGINT)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        wanted = settings.live_symbol_list
        self.symbols = wanted[: settings.live_max_symbols]
        self.over_cap = wanted[settings.live_max_symbols :]
        self.clock = clock
        self.heartbeat_file = settings.heartbeat_file
        self.host = stream_host(settings)
        self.counters: Counter[str] = Counter()
        self.bars = MinuteBars(settings.live_buffer_max_bars)
        self.redis = RedisSink(settings.redis_url, settings.live_ring_size)
        self.postgres = PostgresSink(settings)
        self.ring_limit = settings.live_ring_size * max(1, len(self.symbols))
        self.stream = PriceStream(
            stream_url(settings),
            settings.live_heartbeat_seconds,
            self._subscribable,
            self.on_frame,
            self._set_state,
        )
        self.state = "starting"
        self.last_error = ""
        self.subscribed: set[str] = set()
        self.failed: dict[str, str] = {}
        self.last_timestamp: dict[str, int] = {}
        self._latest: dict[str, LatestTick] = {}
        self._ring: list[tuple[str, int, float]] = []
        self._per_second: deque[list[int]] = deque()
        self._redis_down = False
        self._db_down = False
        self._stopping: asyncio.Event | None = None
        self._redis_wake: asyncio.Event | None = None

    # -- the connection's callbacks --

    def _subscribable(self) -> list[str]:
        return [s for s in self.symbols if s not in self.failed]

    def _set_state(self, state: str, error: str) -> None:
        self.state = state
        if error:
            self.last_error = error
        if state in ("connecting", "reconnecting"):
            self.subscribed.clear()

    def on_frame(self, raw: str | bytes) -> None:
        known = set(self.symbols) - self.failed.keys()
        result = classify(raw, known, self.last_timestamp, self.clock())
        if isinstance(result, Tick):
            self._accept(result)
        elif isinstance(result, Drop):
            self._drop(result)
        else:
            self._control(result)

    def _accept(self, tick: Tick) -> None:
        now = self.clock()
        self.counters["accepted"] += 1
        self.last_timestamp[tick.symbol] = tick.timestamp
        self.bars.add(tick)
        self._latest[tick.symbol] = LatestTick(tick.price, tick.timestamp, now, tick.day_volume)
        self._ring.append((tick.symbol, tick.timestamp, tick.price))
        if len(self._ring) > self.ring_limit:  # only while Redis is down: older ticks go first
            excess = len(self._ring) - self.ring_limit
            del self._ring[:excess]
            self.counters["ring_ticks_dropped"] += excess
        second = int(time.monotonic())
        if self._per_second and self._per_second[-1][0] == second:
            self._per_second[-1][1] += 1
        else:
            self._per_second.append([second, 1])
        if self._redis_wake is not None:
            self._redis_wake.set()

    def _drop(self, drop: Drop) -> None:
        key = f"dropped_{drop.reason}"
        self.counters[key] += 1
        count = self.counters[key]
        if count <= DROP_LOG_FIRST or count % DROP_LOG_EVERY == 0:
            log.warning("dropped a %s event (%s); %d so far", drop.reason, drop.detail, count)

    def _control(self, control: Control) -> None:
        if control.event == "heartbeat":
            self.stream.heartbeat_answered()
            return
        if control.event != "subscribe-status":
            log.debug("stream event %s: %s", control.event, json.dumps(control.body)[:200])
            return
        for item in control.body.get("success") or []:
            symbol = item.get("symbol") if isinstance(item, dict) else None
            if isinstance(symbol, str) and symbol in self.symbols:
                self.subscribed.add(symbol)
        for item in control.body.get("fails") or []:
            symbol = item.get("symbol") if isinstance(item, dict) else str(item)
            if isinstance(symbol, str) and symbol not in self.failed:
                reason = "subscription refused by the stream (no WebSocket access to it?)"
                self.failed[symbol] = reason
                log.warning("%s: %s; carrying on without it", symbol, reason)
        if self.subscribed:
            self.state = "subscribed"
            log.info("subscribed to %s", ", ".join(sorted(self.subscribed)))

    # -- status --

    def ticks_per_minute(self) -> int:
        horizon = int(time.monotonic()) - 60
        while self._per_second and self._per_second[0][0] <= horizon:
            self._per_second.popleft()
        return sum(count for _, count in self._per_second)

    def status(self) -> dict[str, str]:
        counters = dict(self.counters)
        counters |= {
            "connections": self.stream.connections,
            "reconnects": self.stream.reconnects,
            "stalls": self.stream.stalls,
            "bars_pending": self.bars.pending,
            "bars_dropped": self.bars.bars_dropped,
            "ticks_lost": self.bars.ticks_lost,
        }
        return {
            "state": self.state,
            "subscribed": json.dumps(sorted(self.subscribed)),
            "failed": json.dumps(self.failed | dict.fromkeys(self.over_cap, OVER_CAP)),
            "ticks_per_minute": str(self.ticks_per_minute()),
            "counters": json.dumps(counters, sort_keys=True),
            "last_error": self.last_error,
            "stream": self.host,
            "updated_at": f"{self.clock():.3f}",
        }

    # -- writers --

    async def _write_redis(self) -> None:
        latest, ring = self._latest, self._ring
        self._latest, self._ring = {}, []
        try:
            await self.redis.write_ticks(latest, ring)
        except (RedisError, OSError) as exc:
            # keep the newest price per symbol and the recent ring for when Redis is back
            self._latest = latest | self._latest
            self._ring = ring + self._ring
            if not self._redis_down:
                self._redis_down = True
                self.last_error = f"Redis unavailable: {exc}"
                log.warning("Redis unavailable (%s): keeping the newest ticks for later", exc)
            raise
        if self._redis_down:
            self._redis_down = False
            log.info("Redis is back: latest prices written again")

    async def _redis_writer(self, stopping: asyncio.Event, wake: asyncio.Event) -> None:
        while not stopping.is_set():
            await wake.wait()
            wake.clear()
            try:
                await self._write_redis()
            except (RedisError, OSError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), RETRY_SECONDS)
                wake.set()

    async def _flush_bars(self) -> None:
        bars = self.bars.take()
        if not bars:
            return
        try:
            await in_daemon_thread(self.postgres.write_bars, bars)
        except psycopg2.Error as exc:
            self.counters["db_errors"] += 1
            if not self._db_down:
                self._db_down = True
                self.last_error = f"Postgres unavailable: {str(exc).strip()}"
                log.warning(
                    "Postgres unavailable (%s): buffering minute bars (%d pending, at most %d)",
                    str(exc).strip(),
                    self.bars.pending,
                    self.bars.max_pending,
                )
            return
        self.bars.written(bars)
        self.counters["bars_written"] += len(bars)
        if self._db_down:
            self._db_down = False
            log.info("Postgres is back: caught up %d minute bar(s)", len(bars))

    async def _db_writer(self, stopping: asyncio.Event) -> None:
        next_retention = 0.0
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), FLUSH_SECONDS)
            await self._flush_bars()
            if not self._db_down and time.monotonic() >= next_retention:
                try:
                    deleted = await in_daemon_thread(self.postgres.apply_retention)
                except psycopg2.Error:
                    continue
                next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
                if deleted:
                    log.info("retention: deleted %d minute bar(s)", deleted)

    async def _status_publisher(self, stopping: asyncio.Event) -> None:
        heartbeat = Path(self.heartbeat_file) if self.heartbeat_file else None
        while not stopping.is_set():
            if heartbeat is not None:  # the event loop is alive (compose's healthcheck)
                beat(heartbeat)
            with contextlib.suppress(RedisError, OSError):
                await self.redis.write_status(self.status())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), STATUS_SECONDS)

    # -- lifecycle --

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        self._stopping = stopping = asyncio.Event()
        self._redis_wake = wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(stop_signal, self.stop)
        if self.over_cap:
            log.warning(
                "LIVE_MAX_SYMBOLS=%d: not streaming %s",
                len(self.symbols),
                ", ".join(self.over_cap),
            )
        log.info("streaming %d symbol(s) from %s", len(self.symbols), self.host)
        tasks = [
            asyncio.create_task(self.stream.run(stopping), name="connection"),
            asyncio.create_task(self._redis_writer(stopping, wake), name="redis"),
            asyncio.create_task(self._db_writer(stopping), name="postgres"),
            asyncio.create_task(self._status_publisher(stopping), name="status"),
        ]
        await stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.state = "stopped"
        # Whatever is still in memory, written within the shutdown budget (SIGTERM: < 2 s).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush_bars(), SHUTDOWN_FLUSH_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._write_redis(), 0.3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.redis.write_status(self.status()), 0.3)
        with contextlib.suppress(Exception):
            await self.redis.close()
        log.info("streamer stopped (%s)", json.dumps(dict(self.counters), sort_keys=True))
