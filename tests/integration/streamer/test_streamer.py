"""The streamer process against the sandbox's real WebSocket, real Redis and real Postgres."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import psycopg2
import pytest
import requests
from redis import Redis

from marketpipe.live import LATEST_KEY, ring_key
from marketpipe.settings import Settings
from services.sandbox.app import SandboxServer
from tests.integration.loader.test_outage import TcpProxy
from tests.integration.streamer.conftest import (
    HOUR,
    SECRET_KEY,
    START,
    StreamerProcess,
    counter,
    latest,
    status,
    wait_for,
    wait_for_tick_at,
    wait_subscribed,
)

T0 = int(START.timestamp())
Start = Callable[..., StreamerProcess]


def minute_bars(settings: Settings, symbol: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM minute)::bigint, open, high, low, close, ticks, source"
            " FROM marketpipe.live_minute_bars WHERE symbol = %s ORDER BY minute",
            (symbol,),
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_ticks_reach_redis_and_postgres_and_sigterm_stops_within_2_s(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    streamer = start_streamer(live_settings, LIVE_RING_SIZE=10)
    wait_subscribed(redis)
    assert status(redis)["subscribed"] == ["BTC/USD", "ETH/USD"]
    stream_sandbox.clock.advance(30)
    for symbol in ("BTC/USD", "ETH/USD"):
        wait_for_tick_at(redis, symbol, T0 + 30)
        assert redis.llen(ring_key(symbol)) == 10  # bounded ring, newest first
        newest = json.loads(redis.lindex(ring_key(symbol), 0))
        assert newest[0] == T0 + 30
    wait_for(lambda: counter(redis, "accepted") == 60, 10, "60 accepted ticks in the status")
    wait_for(
        lambda: sum(r[5] for r in minute_bars(live_settings, "BTC/USD")) == 30,
        10,
        "30 BTC ticks in minute bars",
    )
    assert {r[6] for r in minute_bars(live_settings, "BTC/USD")} == {"stream"}
    assert streamer.stop() < 2.0
    assert streamer.process.returncode == 0
    assert status(redis)["state"] == "stopped"


def test_the_minute_bars_of_a_simulated_hour_match_the_sandbox_hourly_bar(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    start_streamer(live_settings.model_copy(update={"symbols": ("BTC/USD",)}))
    wait_subscribed(redis)
    hour = int(HOUR.timestamp())
    for step in range(1, 7):
        stream_sandbox.clock.advance(600 if step > 1 else 605)
        wait_for_tick_at(redis, "BTC/USD", hour + 600 * step)

    def hour_written() -> bool:
        rows = [r for r in minute_bars(live_settings, "BTC/USD") if hour <= r[0] < hour + 3600]
        return len(rows) == 60 and sum(r[5] for r in rows) == 3600

    wait_for(hour_written, 15, "60 minute bars holding the hour's 3600 ticks")
    rows = [r for r in minute_bars(live_settings, "BTC/USD") if hour <= r[0] < hour + 3600]
    from_stream = (rows[0][1], max(r[2] for r in rows), min(r[3] for r in rows), rows[-1][4])
    answer = requests.get(
        f"{stream_sandbox.url}/time_series",
        params={"symbol": "BTC/USD", "interval": "1h", "timezone": "UTC", "apikey": SECRET_KEY,
                "start_date": f"{HOUR:%Y-%m-%d %H:%M:%S}",
                "end_date": f"{HOUR + timedelta(minutes=59):%Y-%m-%d %H:%M:%S}"},
        timeout=10,
    ).json()  # fmt: skip
    (bar,) = answer["values"]
    api = tuple(float(bar[k]) for k in ("open", "high", "low", "close"))
    assert from_stream == pytest.approx(api, abs=0.01)  # crypto ticks are in cents


def test_bad_events_are_counted_dropped_and_never_written(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    streamer = start_streamer(live_settings)
    wait_subscribed(redis)
    stream_sandbox.clock.advance(5)
    wait_for_tick_at(redis, "BTC/USD", T0 + 5)
    for fault in ("stream_malformed", "stream_out_of_order", "stream_future",
                  "stream_unknown_symbol"):  # fmt: skip
        stream_sandbox.faults.script(fault)
        reason = fault.removeprefix("stream_")
        wait_for(
            lambda r=reason: counter(redis, f"dropped_{r}") == 1,  # type: ignore[misc]
            10,
            f"one {reason} drop",
        )
    stream_sandbox.clock.advance(5)
    wait_for_tick_at(redis, "BTC/USD", T0 + 10)  # the rest flows on
    wait_for(lambda: counter(redis, "accepted") == 20, 10, "20 accepted ticks")
    assert redis.hget(LATEST_KEY, "ZZZZ") is None
    for symbol in ("BTC/USD", "ETH/USD"):
        ring = [json.loads(x)[0] for x in redis.lrange(ring_key(symbol), 0, -1)]
        assert ring == sorted(ring, reverse=True)  # nothing out of order got in
        assert max(ring) == T0 + 10  # nothing from the future got in
    wait_for(
        lambda: sum(r[5] for r in minute_bars(live_settings, "BTC/USD")) == 10, 10, "10 BTC ticks"
    )
    assert all(r[0] <= T0 + 10 for r in minute_bars(live_settings, "BTC/USD"))
    assert streamer.log().count("dropped a malformed event") == 1
    assert status(redis)["counters"]["reconnects"] == 0


def test_a_dropped_connection_is_replaced_and_resubscribed(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    start_streamer(live_settings)
    wait_subscribed(redis)
    stream_sandbox.faults.script("stream_drop")
    wait_for(lambda: counter(redis, "connections") == 2, 20, "a second connection")
    wait_subscribed(redis)
    assert status(redis)["subscribed"] == ["BTC/USD", "ETH/USD"]
    assert stream_sandbox.stream.connections_opened == 2
    stream_sandbox.clock.advance(3)
    wait_for_tick_at(redis, "ETH/USD", T0 + 3)
    assert counter(redis, "reconnects") == 1
    assert "ConnectionClosed" in status(redis)["last_error"]


def test_a_stalled_connection_is_detected_by_missing_heartbeats_and_replaced(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    start_streamer(live_settings)
    wait_subscribed(redis)
    stream_sandbox.faults.script("stream_stall")
    wait_for(lambda: counter(redis, "stalls") == 1, 20, "a detected stall")
    wait_for(lambda: counter(redis, "connections") == 2, 20, "a replacing connection")
    assert "no heartbeat reply" in status(redis)["last_error"]
    wait_subscribed(redis)
    stream_sandbox.clock.advance(3)
    wait_for_tick_at(redis, "BTC/USD", T0 + 3)


def test_a_refused_symbol_is_reported_once_and_the_others_stream_on(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    stream_sandbox.stream.refuse("ETH/USD")
    streamer = start_streamer(live_settings)
    wait_subscribed(redis)
    assert status(redis)["subscribed"] == ["BTC/USD"]
    assert list(status(redis)["failed"]) == ["ETH/USD"]
    stream_sandbox.faults.script("stream_drop")  # a reconnect must not report it again
    wait_for(lambda: counter(redis, "connections") == 2, 20, "a second connection")
    stream_sandbox.clock.advance(3)
    wait_for_tick_at(redis, "BTC/USD", T0 + 3)
    assert latest(redis, "ETH/USD") is None
    assert streamer.log().count("ETH/USD: subscription refused") == 1


def test_the_api_key_is_in_no_log_and_no_redis_key_or_value(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    streamer = start_streamer(live_settings, LOG_LEVEL="DEBUG")
    wait_subscribed(redis)
    stream_sandbox.faults.script("stream_drop")
    wait_for(lambda: counter(redis, "connections") == 2, 20, "a reconnect")
    stream_sandbox.clock.advance(3)
    wait_for_tick_at(redis, "BTC/USD", T0 + 3)
    streamer.stop()
    log = streamer.log()
    assert "apikey=***" in log  # the URL is logged, redacted
    assert SECRET_KEY not in log
    for key in redis.scan_iter():
        assert SECRET_KEY.encode() not in key
        kind = redis.type(key)
        dump = (
            redis.hgetall(key) if kind == b"hash"
            else redis.lrange(key, 0, -1) if kind == b"list"
            else [redis.get(key)] if kind == b"string" else []
        )  # fmt: skip
        assert SECRET_KEY not in repr(dump)


def test_postgres_down_keeps_the_connection_buffers_bars_and_catches_up(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    url = live_settings.admin_url
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    through_proxy = live_settings.model_copy(
        update={"database_url": url.set(port=proxy.port).render_as_string(hide_password=False)}
    )
    try:
        start_streamer(through_proxy)
        wait_subscribed(redis)
        stream_sandbox.clock.advance(5)
        wait_for(lambda: counter(redis, "bars_written") >= 1, 10, "a first write")
        proxy.cut()
        stream_sandbox.clock.advance(180)  # three more minutes while Postgres is away
        wait_for_tick_at(redis, "BTC/USD", T0 + 185)  # Redis still gets every tick
        wait_for(lambda: counter(redis, "db_errors") >= 1, 20, "a failed write")
        assert counter(redis, "bars_pending") >= 6
        assert "Postgres unavailable" in status(redis)["last_error"]
        proxy.restore()
        wait_for(lambda: counter(redis, "bars_pending") == 0, 30, "the buffer written")
    finally:
        proxy.cut()
    rows = minute_bars(live_settings, "BTC/USD")
    assert sum(r[5] for r in rows) == 185  # every tick, none lost, none doubled
    assert counter(redis, "connections") == 1  # the stream connection was kept
    assert counter(redis, "bars_dropped") == 0


def test_redis_down_keeps_the_connection_and_writes_the_newest_price_when_back(
    live_settings: Settings, redis: Redis, stream_sandbox: SandboxServer, start_streamer: Start
) -> None:
    redis_url = live_settings.redis_url
    host_port, db = redis_url.removeprefix("redis://").rsplit("/", 1)
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    proxy.restore()
    through_proxy = live_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}/{db}"}
    )
    try:
        start_streamer(through_proxy)
        wait_subscribed(redis)
        stream_sandbox.clock.advance(3)
        wait_for_tick_at(redis, "BTC/USD", T0 + 3)
        proxy.cut()
        stream_sandbox.clock.advance(120)
        # Postgres still gets the minute bars while Redis is away
        wait_for(
            lambda: sum(r[5] for r in minute_bars(live_settings, "BTC/USD")) == 123,
            20,
            "123 BTC ticks in Postgres",
        )
        assert latest(redis, "BTC/USD").timestamp == T0 + 3  # type: ignore[union-attr]
        proxy.restore()
        wait_for_tick_at(redis, "BTC/USD", T0 + 123)
    finally:
        proxy.cut()
    assert counter(redis, "connections") == 1
