"""The Twelve Data API behind a small interface: the real API and our sandbox speak the same."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from pydantic import SecretStr

log = logging.getLogger("marketpipe.fetcher.client")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 524})


class ApiError(Exception):
    """An answer that is not data: HTTP error, error body or unreadable body."""

    def __init__(self, code: int, message: str, *, transient: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class SeriesAnswer:
    """One symbol's body from /time_series, as the API sent it (data or an error object)."""

    symbol: str
    body: dict[str, Any]
    served_at: datetime

    @property
    def is_error(self) -> bool:
        return self.body.get("status") == "error" or "values" not in self.body


@dataclass
class CreditsSeen:
    used: int | None = None
    left: int | None = None
    history: list[tuple[int | None, int | None]] = field(default_factory=list)


class MarketDataClient(Protocol):
    def time_series(
        self, symbols: Sequence[str], interval: str, outputsize: int
    ) -> list[SeriesAnswer]: ...


def _served_at(response: requests.Response) -> datetime:
    """The server's clock (HTTP Date), which decides what "the still-open bar" means."""
    try:
        return parsedate_to_datetime(response.headers["Date"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and value.isdigit() else None


class TwelveDataClient:
    """HTTP client for api.twelvedata.com or our sandbox; the key travels in a header only."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.credits = CreditsSeen()
        self._session = requests.Session()
        # The docs recommend the header; it also keeps the key out of URLs, logs and payloads.
        self._session.headers["Authorization"] = f"apikey {api_key.get_secret_value()}"

    def get_json(self, path: str, params: dict[str, Any]) -> tuple[Any, datetime]:
        """GET with bounded retries (exponential backoff, full jitter) on transient failures."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._get_once(path, params)
            except ApiError as exc:
                if not exc.transient or attempt == self.max_attempts:
                    raise
                delay = random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1))
                log.warning(
                    "%s attempt %d/%d failed (%s); retrying in %.1fs",
                    path,
                    attempt,
                    self.max_attempts,
                    exc,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _get_once(self, path: str, params: dict[str, Any]) -> tuple[Any, datetime]:
        try:
            response = self._session.get(
                f"{self.base_url}{path}", params=params, timeout=self.timeout
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}", transient=True) from exc
        self.credits.used = _int_header(response, "Api-Credits-Used")
        self.credits.left = _int_header(response, "Api-Credits-Left")
        self.credits.history.append((self.credits.used, self.credits.left))
        try:
            body = response.json()
        except ValueError as exc:
            snippet = response.text[:120].replace("\n", " ")
            raise ApiError(
                response.status_code, f"non-JSON body: {snippet!r}", transient=True
            ) from exc
        # Errors come both as HTTP status codes and as HTTP 200 with an error body.
        if isinstance(body, dict) and body.get("status") == "error" and "code" in body:
            code = int(body.get("code") or response.status_code)
            raise ApiError(code, str(body.get("message", "")), transient=code in TRANSIENT_STATUSES)
        if response.status_code >= 400:
            raise ApiError(
                response.status_code,
                f"HTTP {response.status_code}",
                transient=response.status_code in TRANSIENT_STATUSES,
            )
        return body, _served_at(response)

    def time_series(
        self, symbols: Sequence[str], interval: str, outputsize: int
    ) -> list[SeriesAnswer]:
        params = {"symbol": ",".join(symbols), "interval": interval, "outputsize": outputsize}
        body, served_at = self.get_json("/time_series", params)
        if len(symbols) == 1:
            return [SeriesAnswer(symbols[0], body, served_at)]
        # A batch answer is keyed by symbol, each value that symbol's own body or error.
        by_upper = {str(k).upper(): v for k, v in body.items()} if isinstance(body, dict) else {}
        answers = []
        for symbol in symbols:
            part = by_upper.get(symbol.upper())
            if not isinstance(part, dict):
                part = {
                    "code": 502,
                    "message": "symbol missing from batch answer",
                    "status": "error",
                }
            answers.append(SeriesAnswer(symbol, part, served_at))
        return answers
