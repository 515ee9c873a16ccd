"""One WebSocket connection to the price stream, held for as long as the process runs.

Connects, subscribes, sends a heartbeat every LIVE_HEARTBEAT_SECONDS and treats two intervals
without a heartbeat reply as a stalled connection (replaced, like a dropped one). Reconnects
with jittered exponential backoff and subscribes again. Frames go to a callback; the URL, which
carries the API key, is only ever logged redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from marketpipe.live import redact
from marketpipe.settings import Settings

log = logging.getLogger("services.streamer.connection")
# The library's own logger would print the request line, key included, at DEBUG.
WS_LOGGER = logging.getLogger("services.streamer.websockets")
WS_LOGGER.setLevel(logging.INFO)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
MISSED_HEARTBEATS = 2
OPEN_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 0.5
SUBSCRIBE_CHUNK = 100  # assumed: the real stream's limit of symbols per subscribe is undocumented


def stream_url(settings: Settings) -> str:
    """The stream URL with the key: a secret, never to be logged or stored (see redact)."""
    return f"{settings.stream_base_url}?apikey={settings.api_key.get_secret_value()}"


def stream_host(settings: Settings) -> str:
    """What may be shown of the stream: scheme, host and port."""
    parts = urlsplit(settings.stream_base_url)
    return f"{parts.scheme}://{parts.netloc}"


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = base x 2^attempt, capped."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    return rng.uniform(ceiling / 2, ceiling)


class Stalled(Exception):
    """No heartbeat reply within MISSED_HEARTBEATS intervals."""


class PriceStream:
    """The connection loop; ``symbols()`` is asked again at every (re)subscription."""

    def __init__(
        self,
        url: str,
        heartbeat_seconds: float,
        symbols: Callable[[], Iterable[str]],
        on_frame: Callable[[str | bytes], None],
        on_state: Callable[[str, str], None],
        rng: random.Random | None = None,
    ) -> None:
        self._url = url
        self.heartbeat_seconds = heartbeat_seconds
        self._symbols = symbols
        self._on_frame = on_frame
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._last_reply = 0.0
        self.connections = 0
        self.reconnects = 0
        self.stalls = 0

    def heartbeat_answered(self) -> None:
        self._last_reply = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        attempt = 0
        while not stopping.is_set():
            self._on_state("connecting" if self.connections == 0 else "reconnecting", "")
            try:
                async with connect(
                    self._url,
                    ping_interval=None,  # liveness is Twelve Data's heartbeat action
                    open_timeout=OPEN_TIMEOUT_SECONDS,
                    close_timeout=CLOSE_TIMEOUT_SECONDS,
                    logger=WS_LOGGER,
                ) as websocket:
                    self.connections += 1
                    attempt = 0
                    log.info("connected to %s", redact(self._url))
                    self._on_state("connected", "")
                    await self._session(websocket)
                    error = f"closed by the server ({websocket.close_code})"
            except Stalled as exc:
                self.stalls += 1
                error = str(exc)
            except (ConnectionClosed, InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if stopping.is_set():
                return
            self.reconnects += 1
            delay = backoff_delay(attempt, self._rng)
            attempt += 1
            error = redact(error)
            log.warning("stream connection lost (%s); reconnecting in %.1f s", error, delay)
            self._on_state("reconnecting", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    async def _session(self, websocket: ClientConnection) -> None:
        symbols = list(self._symbols())
        for start in range(0, len(symbols), SUBSCRIBE_CHUNK):
            chunk = ",".join(symbols[start : start + SUBSCRIBE_CHUNK])
            await websocket.send(json.dumps({"action": "subscribe", "params": {"symbols": chunk}}))
        self._last_reply = time.monotonic()
        heartbeat = asyncio.create_task(self._heartbeat(websocket))
        try:
            async for message in websocket:
                self._on_frame(message)
        except ConnectionClosed:
            if heartbeat.done() and isinstance(heartbeat.exception(), Stalled):
                raise heartbeat.exception() from None  # type: ignore[misc]
            raise
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, websocket: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            silent = time.monotonic() - self._last_reply
            if silent > MISSED_HEARTBEATS * self.heartbeat_seconds:
                websocket.transport.abort()  # a stalled peer would not answer a close either
                raise Stalled(f"no heartbeat reply for {silent:.1f} s: connection stalled")
            await websocket.send('{"action":"heartbeat"}')
