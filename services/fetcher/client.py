"""The Twelve Data API behind a small interface: the real API and our sandbox speak the same.

Every request pays its credits to a :class:`CreditLimiter` first, and every answer's credit
headers go back to it. Errors arrive two ways (an HTTP status, or HTTP 200 with
``"status": "error"``); both become :class:`ApiError`, transient ones are retried here with
bounded exponential backoff and full jitter, a refusal for lack of credits waits for the budget.
"""

from __future__ import annotations

import logging
import random
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

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})
# How often one call may be refused for credits before giving up (each refusal waits a minute).
MAX_REFUSALS = 5
BACKOFF_CAP_SECONDS = 60.0


class ApiError(Exception):
    """An answer that is not data: HTTP error, error body or unreadable body."""

    def __init__(self, code: int, message: str, *, transient: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient

    def as_body(self) -> dict[str, Any]:
        """The error as the API's own error object (it travels the pipeline to the run log)."""
        return {"code": self.code, "message": self.message, "status": "error"}


class CreditsRefused(ApiError):
    """429 for lack of credits; ``scope`` is "minute" or "day"."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(429, message, transient=True)
        self.scope = scope


@dataclass(frozen=True)
class SeriesAnswer:
    """One symbol's body from /time_series, as the API sent it (data or an error object)."""

    symbol: str
    body: dict[str, Any]
    served_at: datetime

    @property
    def is_error(self) -> bool:
        return self.body.get("status") == "error" or "values" not in self.body

    @property
    def error_code(self) -> int | None:
        code = self.body.get("code")
        return int(code) if isinstance(code, int | str) and str(code).isdigit() else None


class MarketDataClient(Protocol):
    def time_series(
        self,
        symbols: Sequence[str],
        interval: str,
        *,
        outputsize: int,
        start_date: str | None = None,
        end_date: str | None = None,
        paid: int = 0,
    ) -> list[SeriesAnswer]:
        """One answer per symbol. ``paid``: credits the caller already took for the first try."""
        ...

    def reference(self, endpoint: str, symbol: str) -> list[dict[str, Any]]:
        """Rows of a reference list (``stocks``, ``cryptocurrencies``, ``forex_pairs``)."""
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
        message = str(body.get("message", ""))
        if code == 429 and "credits" in message:
            return CreditsRefused(message, "day" if "for the day" in message else "minute")
        return ApiError(code, message, transient=code in TRANSIENT_STATUSES or code >= 500)
    if status >= 400:
        return ApiError(
            status, f"HTTP {status}", transient=status in TRANSIENT_STATUSES or status >= 500
        )
    return None


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
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.clock = clock
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.rng = rng or random.Random()
        self.refusals = 0  # answers refused for credits, over this client's life
        self._session = requests.Session()
        # The docs recommend the header; it also keeps the key out of URLs, logs and payloads.
        self._session.headers["Authorization"] = f"apikey {api_key.get_secret_value()}"

    def close(self) -> None:
        self._session.close()

    def backoff(self, attempt: int) -> float:
        """Full jitter over an exponential ceiling: replicas that failed together spread out."""
        ceiling = min(BACKOFF_CAP_SECONDS, self.backoff_seconds * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling)

    def get_json(self, path: str, params: dict[str, Any], cost: int, paid: int = 0) -> Any:
        """GET with credits taken first; transient failures retried, refusals waited out."""
        attempt = refusals = 0
        while True:
            if paid < cost:
                self.limiter.acquire(cost - paid)
            paid = 0
            try:
                return self._get_once(path, params)
            except CreditsRefused as exc:
                refusals += 1
                self.refusals += 1
                self.limiter.spent(exc.scope, self.clock.now())
                if refusals > MAX_REFUSALS:
                    raise
                log.warning("%s refused for credits (%s); waiting for the budget", path, exc.scope)
            except ApiError as exc:
                attempt += 1
                if not exc.transient or attempt >= self.max_attempts:
                    raise
                delay = self.backoff(attempt)
                log.warning(
                    "%s attempt %d/%d failed (%s); retrying in %.1fs",
                    path,
                    attempt,
                    self.max_attempts,
                    exc,
                    delay,
                )
                self.clock.sleep(delay)

    def _get_once(self, path: str, params: dict[str, Any]) -> tuple[Any, datetime]:
        try:
            response = self._session.get(
                f"{self.base_url}{path}", params=params, timeout=self.timeout
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            # The exception text names the URL, which never holds the key (it is a header).
            raise ApiError(0, f"{type(exc).__name__}: {exc}", transient=True) from exc
        served_at = _served_at(response, self.clock.now())
        if isinstance(self.clock, ApiDateClock):
            self.clock.observe(served_at)
        try:
            body = response.json()
        except ValueError:
            body = None
        error = classify(response.status_code, body)
        self.limiter.observe(
            _int_header(response, "Api-Credits-Used"),
            _int_header(response, "Api-Credits-Left"),
            served_at,
            refused=isinstance(error, CreditsRefused),
        )
        if error is not None:
            raise error
        if body is None:
            snippet = response.text[:120].replace("\n", " ")
            raise ApiError(response.status_code, f"non-JSON body: {snippet!r}", transient=True)
        return body, served_at

    def time_series(
        self,
        symbols: Sequence[str],
        interval: str,
        *,
        outputsize: int,
        start_date: str | None = None,
        end_date: str | None = None,
        paid: int = 0,
    ) -> list[SeriesAnswer]:
        params: dict[str, Any] = {
            "symbol": ",".join(symbols),
            "interval": interval,
            "outputsize": outputsize,
        }
        if start_date:
            params["start_date"] = start_date
        if end_date:
            params["end_date"] = end_date
        try:
            body, served_at = self.get_json("/time_series", params, len(symbols), paid)
        except ApiError as exc:
            if exc.transient or len(symbols) > 1:
                raise
            # A one-symbol request's error is that symbol's answer (404 unknown symbol ...).
            return [SeriesAnswer(symbols[0], exc.as_body(), self.clock.now())]
        if len(symbols) == 1:
            return [SeriesAnswer(symbols[0], body, served_at)]
        # A batch answer is keyed by symbol, each value that symbol's own body or error.
        by_upper = {str(k).upper(): v for k, v in body.items()} if isinstance(body, dict) else {}
        answers = []
        for symbol in symbols:
            part = by_upper.get(symbol.upper())
            if not isinstance(part, dict):
                part = {"code": 502, "message": "symbol missing from batch answer"}
                part["status"] = "error"
            answers.append(SeriesAnswer(symbol, part, served_at))
        return answers

    def reference(self, endpoint: str, symbol: str) -> list[dict[str, Any]]:
        body, _ = self.get_json(f"/{endpoint}", {"symbol": symbol}, 1)
        data = body.get("data") if isinstance(body, dict) else None
        return [row for row in data or [] if isinstance(row, dict)]
