"""The HTTP server: a stdlib ThreadingHTTPServer in front of :class:`SandboxApi`.

:class:`SandboxServer` is the programmatic entry point for tests and other services::

    with SandboxServer(SandboxSettings(port=0, clock_start="2026-03-09T15:00:00Z")) as sandbox:
        requests.get(f"{sandbox.url}/time_series", params={...})
        sandbox.clock.advance(60)
        sandbox.faults.script("server_error", count=2)
"""

from __future__ import annotations

import email.utils
import logging
import re
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from services.sandbox.api import Response, SandboxApi
from services.sandbox.clock import SandboxClock
from services.sandbox.credits import CreditLedger
from services.sandbox.faults import FaultInjector
from services.sandbox.settings import SandboxSettings
from services.sandbox.stream import StreamServer

logger = logging.getLogger("services.sandbox")

_SECRET_PATTERN = re.compile(r"(apikey=|apikey%3D|Authorization: apikey )[^&\s\"']*", re.IGNORECASE)
MAX_ADMIN_BODY = 64 * 1024


def redact(text: str) -> str:
    """Hide API keys in anything that is about to be logged."""
    return _SECRET_PATTERN.sub(r"\1***", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def date_time_string(self, timestamp: float | None = None) -> str:
        # Clients (our fetcher too) read "now" from the Date header: it must be sandbox time.
        if timestamp is None:
            timestamp = self.server.api.clock.now().timestamp()
        return email.utils.formatdate(timestamp, usegmt=True)

    def version_string(self) -> str:
        return "marketpipe-sandbox"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qsl(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_ADMIN_BODY)) if length else b""
        api = self.server.api
        try:
            # Message.get is case-insensitive, as HTTP header names are; a dict would not be.
            headers = cast(Mapping[str, str], self.headers)
            response = api.handle(method, url.path, query, headers, body)
        except Exception:
            logger.exception("sandbox failed on %s %s", method, redact(url.path))
            response = Response(
                500, b'{"code":500,"message":"Internal sandbox error","status":"error"}'
            )
        if response.delay_seconds > 0 and api.stopping.wait(response.delay_seconds):
            return  # shutting down: drop the slow answer
        self._send(response, method)

    def _send(self, response: Response, method: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), redact(format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: SandboxApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A client gone before its answer (a timed-out `slow` fault) is one log line, not
        socketserver's traceback on stderr (which follows no LOG_FORMAT)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.info("client %s:%d left before its answer (%s)", *client_address[:2], error)
        else:
            logger.exception("sandbox failed on a request from %s:%d", *client_address[:2])


class SandboxServer:
    """The sandbox serving in a background thread; ``port=0`` binds an ephemeral port."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.api = SandboxApi(self.settings)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stream = StreamServer(self.settings, self.api.clock, self.api.faults, self.api.actions)

    @property
    def stream_url(self) -> str:
        """The WebSocket price stream's URL, without a key."""
        return self.stream.url

    @property
    def clock(self) -> SandboxClock:
        return self.api.clock

    @property
    def faults(self) -> FaultInjector:
        return self.api.faults

    @property
    def credits(self) -> CreditLedger:
        return self.api.credits

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give a Twelve Data client (no trailing slash)."""
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping a wildcard bind to loopback
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def set_error_transport(self, mode: str) -> None:
        self.api.set_error_transport(mode)

    def start(self) -> SandboxServer:
        self._server = _Server((self.settings.host, self.settings.port), self.api)
        # A short poll interval keeps stop() fast, which matters for per-test servers.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="sandbox-http", daemon=True
        )
        self._thread.start()
        self.stream.start(self.settings.stream_bind_port)
        logger.info("sandbox serving on %s", self.url)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the ``python -m`` entry point)."""
        self._server = _Server((self.settings.host, self.settings.port), self.api)
        logger.info(
            "sandbox serving Twelve Data API on http://%s:%s", self.settings.host, self.port
        )
        self.stream.start(self.settings.stream_bind_port)
        try:
            self._server.serve_forever()
        finally:
            self.api.stopping.set()
            self.stream.stop()
            self._server.server_close()

    def stop(self) -> None:
        self.api.stopping.set()
        self.stream.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
