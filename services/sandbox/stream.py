"""The sandbox's WebSocket price stream: Twelve Data's ``/v1/quotes/price`` protocol.

A ``websockets`` asyncio server on its own port and thread. Clients send ``subscribe`` /
``unsubscribe`` (``{"params": {"symbols": "AAPL,BTC/USD"}}``), ``reset`` and ``heartbeat``; the
server answers ``subscribe-status`` and ``heartbeat`` events and pushes ``price`` events from
:mod:`services.sandbox.ticks` as the sandbox clock passes each tick (a jumped clock yields the
skipped ticks at once, in time order). Faults named ``stream_*`` (see faults.py) are drawn once
per emission round of a connection that has subscriptions; refused symbols fail to subscribe
as on a plan without WebSocket access to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from services.sandbox.actions import CorporateActions
from services.sandbox.clock import SandboxClock
from services.sandbox.faults import STREAM_ENDPOINT, FaultInjector
from services.sandbox.market import Instrument, get_instrument
from services.sandbox.settings import SandboxSettings
from services.sandbox.ticks import TickSource

logger = logging.getLogger("services.sandbox.stream")
# The library logs request lines (the key in the query) at DEBUG: never below INFO here.
WS_LOGGER = logging.getLogger("services.sandbox.stream.ws")
WS_LOGGER.setLevel(logging.INFO)

STREAM_PATH = "/v1/quotes/price"
EMIT_INTERVAL_SECONDS = 0.05  # real time between emission rounds
UNKNOWN_SYMBOL = "ZZZZ"  # a symbol that no instrument has, for the stream_unknown_symbol fault
FUTURE_SECONDS = 86400


def _symbol_fields(instrument: Instrument) -> dict[str, str]:
    fields = {"symbol": instrument.symbol, "exchange": instrument.exchange or "Forex"}
    if instrument.asset_class == "stock":
        fields |= {"mic_code": instrument.mic_code, "country": instrument.country}
    fields["type"] = instrument.instrument_type
    return fields


def price_event(instrument: Instrument, timestamp: int, price: float, volume: int | None) -> str:
    """A ``price`` event as the real stream sends it (numbers, not strings)."""
    event: dict[str, object] = {"event": "price", **_symbol_fields(instrument)}
    event.pop("country", None)
    if instrument.currency:
        event["currency"] = instrument.currency
    else:
        event["currency_base"] = instrument.currency_base
        event["currency_quote"] = instrument.currency_quote
    event |= {"timestamp": timestamp, "price": round(price, instrument.price_decimals)}
    if volume is not None:
        event["day_volume"] = volume
    return json.dumps(event)


@dataclass
class _Subscription:
    instrument: Instrument
    source: TickSource
    last_emitted: int


@dataclass(eq=False)
class _Connection:
    websocket: ServerConnection
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    stalled: bool = False


class StreamServer:
    """The stream on ``settings.stream_port`` (0: ephemeral), run by a background thread."""

    def __init__(
        self,
        settings: SandboxSettings,
        clock: SandboxClock,
        faults: FaultInjector,
        actions: CorporateActions | None = None,
    ):
        self.settings = settings
        self.clock = clock
        self.faults = faults
        self.actions = actions or CorporateActions()
        self._refused: set[str] = set(settings.stream_refused_symbols)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self.connections_opened = 0
        self._port = 0

    # -- control (thread-safe, for tests and the admin side) --

    def refuse(self, *symbols: str) -> None:
        """Make later subscriptions to ``symbols`` fail (as a plan without access to them)."""
        with self._lock:
            self._refused.update(symbols)

    def allow(self, *symbols: str) -> None:
        with self._lock:
            self._refused.difference_update(symbols)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def subscriptions(self) -> int:
        """Symbols subscribed over all open connections."""
        return sum(len(c.subscriptions) for c in list(self._connections))

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The stream's URL without a key (append ``?apikey=...``)."""
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping a wildcard bind to loopback
            host = "127.0.0.1"
        return f"ws://{host}:{self._port}{STREAM_PATH}"

    def start(self, port: int) -> StreamServer:
        self._thread = threading.Thread(
            target=self._run, args=(port,), name="sandbox-stream", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the sandbox stream did not start")
        logger.info("sandbox streaming prices on %s", self.url)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the server thread --

    def _run(self, port: int) -> None:
        asyncio.run(self._serve(port))

    async def _serve(self, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(
            self._handle,
            self.settings.host,
            port,
            process_request=self._check_request,
            server_header="marketpipe-sandbox",
            ping_interval=None,  # Twelve Data's liveness is the heartbeat action, not pings
            logger=WS_LOGGER,
        ) as server:
            self._server = server
            self._port = int(next(iter(server.sockets)).getsockname()[1])
            self._ready.set()
            await self._stop.wait()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != STREAM_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        key = (parse_qs(url.query).get("apikey") or [""])[0]
        if key not in self.settings.api_keys:
            # assumed: the real stream's answer to a bad key is not documented
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        connection = _Connection(websocket)
        self._connections.add(connection)
        self.connections_opened += 1
        emitter = asyncio.create_task(self._emit(connection))
        try:
            async for message in websocket:
                await self._on_message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            emitter.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await emitter
            self._connections.discard(connection)

    async def _on_message(self, connection: _Connection, message: str | bytes) -> None:
        try:
            request = json.loads(message)
            action = str(request.get("action", ""))
        except (ValueError, AttributeError):
            action = ""
            request = {}
        if connection.stalled:
            return
        if action == "heartbeat":
            await connection.websocket.send('{"event":"heartbeat","status":"ok"}')
        elif action in ("subscribe", "unsubscribe"):
            params = request.get("params") or {}
            raw = params.get("symbols", "") if isinstance(params, dict) else ""
            symbols = [s.strip().upper() for s in str(raw).split(",") if s.strip()]
            if action == "subscribe":
                await self._subscribe(connection, symbols)
            else:
                for symbol in symbols:
                    connection.subscriptions.pop(symbol, None)
                status = {"event": "unsubscribe-status", "status": "ok",
                          "success": [{"symbol": s} for s in symbols], "fails": []}  # fmt: skip
                await connection.websocket.send(json.dumps(status))
        elif action == "reset":
            connection.subscriptions.clear()
            await connection.websocket.send('{"event":"reset-status","status":"ok"}')
        else:
            # assumed: the real server's answer to an unknown action is not documented
            await connection.websocket.send(
                '{"event":"message-processing","status":"error","messages":["unknown action"]}'
            )

    async def _subscribe(self, connection: _Connection, symbols: list[str]) -> None:
        now = int(self.clock.now().timestamp())
        with self._lock:
            refused = set(self._refused)
        success, fails = [], []
        for symbol in symbols:
            instrument = get_instrument(symbol)
            if instrument is None or symbol in refused:
                fails.append({"symbol": symbol})
                continue
            success.append(_symbol_fields(instrument))
            if symbol not in connection.subscriptions:
                source = TickSource(symbol, self.settings.stream_tick_seconds)
                source.between(now - 1, now)  # builds the current hour now, not at its 1st tick
                connection.subscriptions[symbol] = _Subscription(instrument, source, now)
        status = "ok" if success or not fails else "error"
        event = {"event": "subscribe-status", "status": status, "success": success, "fails": fails}
        await connection.websocket.send(json.dumps(event))

    async def _emit(self, connection: _Connection) -> None:
        while True:
            await asyncio.sleep(EMIT_INTERVAL_SECONDS)
            if connection.stalled or not connection.subscriptions:
                continue
            now = int(self.clock.now().timestamp())
            fault = self.faults.draw(STREAM_ENDPOINT)
            if fault is not None:
                logger.info("injecting fault %s on the stream", fault)
                if await self._inject(connection, fault, now):
                    return
            events: list[tuple[int, str]] = []
            moment = datetime.fromtimestamp(now, UTC)
            for subscription in list(connection.subscriptions.values()):
                if now <= subscription.last_emitted:
                    continue
                # After a split the stream trades at the split price, as the raw bars do.
                ratio = self.actions.ratio_at(subscription.instrument.symbol, moment)
                for timestamp, price, volume in subscription.source.between(
                    subscription.last_emitted, now
                ):
                    shares = None if volume is None else round(volume * ratio)
                    event = price_event(subscription.instrument, timestamp, price / ratio, shares)
                    events.append((timestamp, event))
                subscription.last_emitted = now
            events.sort(key=lambda item: item[0])
            for _, text in events:
                await connection.websocket.send(text)

    async def _inject(self, connection: _Connection, fault: str, now: int) -> bool:
        """Apply one stream fault; True when the connection is gone."""
        websocket = connection.websocket
        subscription = next(iter(connection.subscriptions.values()))
        if fault == "stream_drop":
            websocket.transport.abort()  # no close frame: what a network failure looks like
            return True
        if fault == "stream_stall":
            connection.stalled = True
        elif fault == "stream_malformed":
            await websocket.send('{"event":"price","symbol":"' + subscription.instrument.symbol)
        elif fault in ("stream_out_of_order", "stream_future"):
            moment = subscription.last_emitted + (
                FUTURE_SECONDS if fault == "stream_future" else -120
            )
            ticks = subscription.source.between(moment - 3600, moment) or [(moment, 1.0, None)]
            _, price, volume = ticks[-1]
            await websocket.send(price_event(subscription.instrument, moment, price, volume))
            subscription.source = TickSource(
                subscription.instrument.symbol, self.settings.stream_tick_seconds
            )
        elif fault == "stream_unknown_symbol":
            event = json.loads(price_event(subscription.instrument, now, 1.0, None))
            await websocket.send(json.dumps(event | {"symbol": UNKNOWN_SYMBOL}))
        return False
