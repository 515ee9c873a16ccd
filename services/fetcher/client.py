"""The Twelve Data API behind a small interface: the real API and our sandbox speak the same.

One call is one HTTP request. Its answer's credit headers go to the :class:`CreditLimiter`, its
``Date`` to the clock. Errors arrive two ways (an HTTP status, or HTTP 200 with
``"status": "error"``); both become the :class:`ApiError` subclass of their meaning, decided in
one place (:func:`error_for`). Taking credits and asking again is the request loop's
(services/fetcher/request.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from pydantic import SecretStr

from services.fetcher.clock import ApiDateClock, Clock
from services.fetcher.limiter import CreditLimiter

log = logging.getLogger("marketpipe.fetcher.client")


class ApiError(Exception):
    """An answer that is not data; its subclass says what it means and what to do about it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def as_body(self) -> dict[str, Any]:
        """The error as the API's own error object (it travels the pipeline to the run log)."""
        return {"code": self.code, "message": self.message, "status": "error"}


class TransientError(ApiError):
    """Worth asking again after a pause: server errors, timeouts, unreadable answers."""


class CreditsRefused(TransientError):
    """429 for lack of credits: ask again once the budget is back; ``scope`` is minute or day."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(429, message)
        self.scope = scope


class BadRequest(ApiError):
    """The request is wrong for the API (a parameter, no data on those dates): never retried."""


class SymbolRefused(BadRequest):
    """Unknown or plan-gated symbol: asking again within the day would be refused again."""


class AuthError(ApiError):
    """401: the API key is missing or wrong."""


def error_for(code: int, message: str) -> ApiError:
    """What an error code means (the message tells a credit refusal and a symbol apart)."""
    if code == 429 and "credits" in message:
        return CreditsRefused(message, "day" if "for the day" in message else "minute")
    if code == 429 or code >= 500:
        return TransientError(code, message)
    if code == 401:
        return AuthError(code, message)
    if code in (403, 404) or (code == 400 and "symbol" in message.lower()):
        return SymbolRefused(code, message)
    return BadRequest(code, message)


def is_transient(error: ApiError | None) -> bool:
    """Asking again later may succeed (credits refused included)."""
    return isinstance(error, TransientError)


@dataclass(frozen=True)
class SeriesQuery:
    """The parameters of one /time_series request, shared by every symbol of its batch."""

    interval: str
    outputsize: int
    start_date: str | None = None
    end_date: str | None = None

    def params(self, symbols: Sequence[str]) -> dict[str, Any]:
        params: dict[str, Any] = {
            "symbol": ",".join(symbols),
            "interval": self.interval,
            "outputsize": self.outputsize,
        }
        if self.start_date:
            params["start_date"] = self.start_date
        if self.end_date:
            params["end_date"] = self.end_date
        return params


@dataclass(frozen=True)
class SeriesAnswer:
    """One symbol's body from /time_series as the API sent it: data, or ``error`` and its body."""

    symbol: str
    body: dict[str, Any]
    served_at: datetime
    error: ApiError | None = None


class MarketDataClient(Protocol):
    def time_series(self, symbols: Sequence[str], query: SeriesQuery) -> list[SeriesAnswer]:
        """One answer per symbol from one request; an error of the whole request raises."""
        ...

    def reference(self, endpoint: str, symbol: str = "") -> list[dict[str, Any]]:
        """Rows of a reference list (``stocks``, ``cryptocurrencies``, ``forex_pairs``): the
        whole list for one credit, or one symbol's rows."""
        ...

    def sync_clock(self) -> None:
        """Read the API's time without spending a credit (before a tick is named on it)."""
        ...


def _served_at(response: requests.Response, fallback: datetime) -> datetime:
    """The server's clock (HTTP Date), which decides what "the still-open bar" means."""
    try:
        return parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return fallback


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and value.isdigit() else None


def classify(status: int, body: Any) -> ApiError | None:
    """The error an answer carries, in either transport; None for data."""
    if isinstance(body, dict) and body.get("status") == "error":
        try:
            code = int(body.get("code") or status)
        except (TypeError, ValueError):
            code = status
        return error_for(code, str(body.get("message", "")))
    if status >= 400:
        return error_for(status, f"HTTP {status}")
    return None


def series_error(part: Any) -> ApiError | None:
    """The error in one symbol's body (a one-symbol answer, or its part of a batch), if any."""
    if not isinstance(part, dict):
        return TransientError(502, "no answer for the symbol")
    if part.get("status") == "error":
        code = part.get("code")
        if isinstance(code, int | str) and str(code).isdigit():
            return error_for(int(code), str(part.get("message", "")))
        return TransientError(502, str(part.get("message", "error without a code")))
    if "values" not in part:
        return TransientError(502, "answer without values")
    return None


def _answer(symbol: str, part: Any, served_at: datetime) -> SeriesAnswer:
    error = series_error(part)
    body = part if isinstance(part, dict) else error.as_body() if error else {}
    return SeriesAnswer(symbol, body, served_at, error)


class TwelveDataClient:
    """HTTP client for api.twelvedata.com or our sandbox; the key travels in a header only."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        limiter: CreditLimiter,
        clock: Clock,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.clock = clock
        self.timeout = timeout
        self.refusals = 0  # answers refused for credits, over this client's life
        self._session = requests.Session()
        # The docs recommend the header; it also keeps the key out of URLs, logs and payloads.
        self._session.headers["Authorization"] = f"apikey {api_key.get_secret_value()}"

    def close(self) -> None:
        self._session.close()

    def get(self, path: str, params: dict[str, Any]) -> tuple[Any, datetime]:
        """One GET: the JSON body and the server's time, or the answer's :class:`ApiError`."""
        started = time.monotonic()
        try:
            response = self._session.get(
                f"{self.base_url}{path}", params=params, timeout=self.timeout
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            # The exception text names the URL, which never holds the key (it is a header).
            raise TransientError(0, f"{type(exc).__name__}: {exc}") from exc
        served_at = _served_at(response, self.clock.now())
        if isinstance(self.clock, ApiDateClock) and "Date" in response.headers:
            # The whole call, body included (response.elapsed stops at the headers).
            self.clock.observe(served_at, round_trip=time.monotonic() - started)
        try:
            body = response.json()
        except ValueError:
            body = None
        error = classify(response.status_code, body)
        refused = isinstance(error, CreditsRefused)
        if refused:
            self.refusals += 1
        self.limiter.observe(
            _int_header(response, "Api-Credits-Used"),
            _int_header(response, "Api-Credits-Left"),
            served_at,
            refused=refused,
        )
        if error is not None:
            raise error
        if body is None:
            snippet = response.text[:120].replace("\n", " ")
            raise TransientError(response.status_code, f"non-JSON body: {snippet!r}")
        return body, served_at

    def sync_clock(self) -> None:
        # The API's root answers "path not found" for no credit, with a Date header as any.
        started = time.monotonic()
        try:
            response = self._session.head(f"{self.base_url}/", timeout=self.timeout)
        except (requests.Timeout, requests.ConnectionError) as exc:
            log.warning(
                "could not read the API's clock, ticks follow ours until it answers: %s", exc
            )
            return
        if isinstance(self.clock, ApiDateClock) and "Date" in response.headers:
            served_at = _served_at(response, self.clock.now())
            self.clock.observe(served_at, round_trip=time.monotonic() - started)

    def time_series(self, symbols: Sequence[str], query: SeriesQuery) -> list[SeriesAnswer]:
        body, served_at = self.get("/time_series", query.params(symbols))
        if len(symbols) == 1:
            return [_answer(symbols[0], body, served_at)]
        # A batch answer is keyed by symbol, each value that symbol's own body or error.
        by_upper = {str(k).upper(): v for k, v in body.items()} if isinstance(body, dict) else {}
        return [_answer(s, by_upper.get(s.upper()), served_at) for s in symbols]

    def reference(self, endpoint: str, symbol: str = "") -> list[dict[str, Any]]:
        body, _ = self.get(f"/{endpoint}", {"symbol": symbol} if symbol else {})
        data = body.get("data") if isinstance(body, dict) else None
        return [row for row in data or [] if isinstance(row, dict)]
