"""Request handling of the sandbox: Twelve Data's endpoints, auth, credits, faults and admin.

:class:`SandboxApi` turns (method, path, query, headers, body) into a :class:`Response`; it
holds the mutable state (clock, credit ledger, fault queue, error transport) and has no socket
code, so the HTTP layer in :mod:`services.sandbox.app` stays a thin adapter.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from marketpipe.market import CALENDAR_INTERVALS, MAX_BATCH_SYMBOLS, MAX_OUTPUTSIZE
from services.sandbox import render
from services.sandbox.actions import (
    ADJUST_MODES,
    FAULT_CORRECTION_FACTOR,
    CorporateActions,
    Correction,
    make_split,
    parse_splits,
)
from services.sandbox.calendar import session_table
from services.sandbox.clock import SandboxClock
from services.sandbox.credits import CreditDecision, CreditLedger
from services.sandbox.faults import FAULT_NAMES, FaultInjector, make_rule, parse_fault_spec
from services.sandbox.market import (
    INTERVALS,
    BarSeries,
    Instrument,
    all_instruments,
    get_instrument,
    model_bars,
)
from services.sandbox.settings import DEMO_API_KEY, SandboxSettings, parse_clock_start

logger = logging.getLogger("services.sandbox")

JSON_TYPE = "application/json; charset=utf-8"
CSV_TYPE = "text/csv"  # exactly: the python client compares the header with this string
HTML_TYPE = "text/html"
ADMIN_PREFIX = "/__sandbox"
# Assumed: the cost of /splits is not documented (../shared/twelvedata-api.md).
SPLITS_CREDITS = 1
REQUEST_LOG_SIZE = 10_000  # the newest /time_series requests the admin route reports

API_KEY_MESSAGE = (
    "**apikey** parameter is incorrect or not specified. You can get your free API key "
    "instantly following this link: https://twelvedata.com/pricing. If you believe that "
    "everything is correct, you can contact us at https://twelvedata.com/contact/customer"
)
DEMO_KEY_MESSAGE = (
    "**apikey** demo works for the AAPL symbol only. You can get your free API key instantly "
    "following this link: https://twelvedata.com/pricing"
)
SYMBOL_MISSING_MESSAGE = (
    "**symbol** or **figi** parameter is missing or invalid. Please provide a valid symbol "
    "according to API documentation: https://twelvedata.com/docs#reference-data"
)
NO_DATA_MESSAGE = (
    "No data is available on the specified dates. Try setting different start/end dates."
)
INTERVAL_MESSAGE = (
    "**interval** parameter is missing or invalid. Supported intervals: 1min, 5min, 15min, "
    "30min, 45min, 1h, 2h, 4h, 8h, 1day, 1week, 1month"
)
NOT_FOUND_PATH_MESSAGE = "Endpoint not found. Please check the URL and the API documentation."
SERVER_ERROR_MESSAGE = (
    "We are experiencing technical difficulties. Please try again later or contact support "
    "at https://twelvedata.com/contact/customer"
)
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")

TECHNICAL_INDICATORS: dict[str, Any] = {
    "sma": {
        "enable": True,
        "full_name": "Simple Moving Average",
        "description": "Simple Moving Average (SMA) is an arithmetic moving average.",
        "type": "Overlap Studies",
        "overlay": True,
        "output_values": {"sma": {"default_color": "#FF0000"}},
        "parameters": {"time_period": {"default": 9, "range": [1, 800], "type": "int"}},
        "tinting": {},
    },
    "rsi": {
        "enable": True,
        "full_name": "Relative Strength Index",
        "description": "Relative Strength Index (RSI) is a momentum indicator.",
        "type": "Momentum Indicators",
        "overlay": False,
        "output_values": {"rsi": {"default_color": "#FF0000"}},
        "parameters": {"time_period": {"default": 14, "range": [1, 800], "type": "int"}},
        "tinting": {},
    },
}


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_seconds: float = 0.0


class ApiError(Exception):
    """An answer in Twelve Data's error shape."""

    def __init__(self, code: int, message: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.meta = meta


@dataclass(frozen=True)
class SeriesRequest:
    """The validated parameters of one /time_series call (shared by every symbol of a batch)."""

    interval: str
    outputsize: int
    start_date: datetime | None
    end_date: datetime | None
    timezone: str | None  # None = the exchange's
    order: str
    dp: int | None
    previous_close: bool
    csv: bool
    exchange: str
    mic_code: str
    instrument_type: str
    adjust: str = "splits"


def _parse_datetime(name: str, raw: str) -> datetime:
    text = raw.strip()
    if text.lower() in ("today", "yesterday"):
        raise ApiError(400, f"**{name}** parameter is invalid.")
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ApiError(
        400,
        f"**{name}** parameter is invalid. Please use the format 2006-01-02 or "
        "2006-01-02 15:04:05.",
    )


def _parse_int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400, f"**{name}** parameter is invalid. Please specify an integer in {low}..{high}."
        )
    return value


def parse_series_request(params: Mapping[str, str]) -> SeriesRequest:
    """Validate /time_series parameters (names already lower-cased) or raise ApiError 400."""
    interval = params.get("interval", "").strip().lower()
    if interval not in INTERVALS:
        raise ApiError(400, INTERVAL_MESSAGE)
    has_dates = bool(params.get("start_date") or params.get("end_date") or params.get("date"))
    outputsize = MAX_OUTPUTSIZE if has_dates else 30
    if params.get("outputsize", "").strip():
        outputsize = _parse_int("outputsize", params["outputsize"], 1, MAX_OUTPUTSIZE)
    start = (
        _parse_datetime("start_date", params["start_date"]) if params.get("start_date") else None
    )
    end = _parse_datetime("end_date", params["end_date"]) if params.get("end_date") else None
    if params.get("date"):
        day = _parse_datetime("date", params["date"])
        start, end = day, day + timedelta(days=1)
    timezone: str | None = None
    raw_zone = params.get("timezone", "").strip()
    if raw_zone and raw_zone.lower() != "exchange":
        timezone = "UTC" if raw_zone.lower() == "utc" else raw_zone
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ApiError(
                400, "**timezone** parameter is invalid. Use Exchange, UTC or an IANA name."
            ) from None
    order = params.get("order", "desc").strip().lower() or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "**order** parameter is invalid. Supported values: asc, desc.")
    dp: int | None = None
    if params.get("dp", "").strip():
        dp = _parse_int("dp", params["dp"], -1, 11)
        dp = None if dp < 0 else dp
    adjust = params.get("adjust", "splits").strip().lower() or "splits"
    if adjust not in ADJUST_MODES:
        raise ApiError(
            400, "**adjust** parameter is invalid. Supported values: all, splits, dividends, none."
        )
    output_format = params.get("format", "json").strip().lower() or "json"
    if output_format not in ("json", "csv"):
        raise ApiError(400, "**format** parameter is invalid. Supported values: JSON, CSV.")
    return SeriesRequest(
        interval=interval,
        outputsize=outputsize,
        start_date=start,
        end_date=end,
        timezone=timezone,
        order=order,
        dp=dp,
        previous_close=params.get("previous_close", "").strip().lower() == "true",
        csv=output_format == "csv",
        exchange=params.get("exchange", "").strip().upper(),
        mic_code=params.get("mic_code", "").strip().upper(),
        instrument_type=params.get("type", "").strip().lower(),
        adjust=adjust,
    )


def split_symbols(raw: str) -> list[str]:
    """Requested symbols as given (stripped, de-duplicated, order kept)."""
    return list(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))


def canonical_symbol(requested: str) -> str:
    """``aapl`` -> ``AAPL``; ``AAPL:NASDAQ`` -> ``AAPL``."""
    return requested.split(":", 1)[0].strip().upper()


def _zone_for(instrument: Instrument, series: SeriesRequest) -> ZoneInfo:
    if series.interval in CALENDAR_INTERVALS or series.timezone is None:
        return ZoneInfo(instrument.exchange_timezone)
    return ZoneInfo(series.timezone)


def _as_instant(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def symbol_bars(
    instrument: Instrument,
    series: SeriesRequest,
    now: datetime,
    actions: CorporateActions | None = None,
) -> tuple[BarSeries, np.ndarray | None]:
    """The bars a /time_series call returns for one symbol, plus previous closes if asked."""
    actions = actions or CorporateActions()
    zone = _zone_for(instrument, series)
    extra = 1 if series.previous_close else 0
    bars = model_bars(
        instrument.symbol,
        series.interval,
        now,
        start=_as_instant(series.start_date, zone),
        end=_as_instant(series.end_date, zone),
        outputsize=series.outputsize + extra,
    )
    bars = actions.apply(bars, now, series.adjust)
    if not series.previous_close:
        return bars, None
    if len(bars) > series.outputsize:
        previous = bars.close[:-1]
        return bars.slice(1, len(bars)), previous
    # The oldest bar of the window is the oldest one asked for: look one bar further back.
    before = model_bars(
        instrument.symbol,
        series.interval,
        now,
        end=datetime.fromtimestamp(int(bars.open_time[0]), UTC) if len(bars) else None,
        outputsize=1,
    )
    before = actions.apply(before, now, series.adjust)
    first = before.close[:1] if len(before) else bars.open[:1]
    return bars, np.concatenate([first, bars.close[:-1]])


def _apply_row_fault(rows: list[list[str]], fault: str | None) -> list[list[str]]:
    if fault == "empty_values":
        return []
    if fault == "gaps" and len(rows) > 2:
        # Drop every third bar except the newest and the oldest: holes in the middle.
        return [row for i, row in enumerate(rows) if i % 3 != 1 or i in (0, len(rows) - 1)]
    if fault == "duplicate_bars" and rows:
        doubled: list[list[str]] = []
        for i, row in enumerate(rows):
            doubled.append(row)
            if i % 5 == 0:
                doubled.append(list(row))
        return doubled
    return rows


class SandboxApi:
    """The sandbox's behaviour; thread-safe, one instance per server."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self.clock = SandboxClock(self.settings.clock_start_at, self.settings.clock_speed)
        self.faults = FaultInjector(
            parse_fault_spec(self.settings.faults), self.settings.fault_seed
        )
        self.credits = CreditLedger(self.settings.plan_for)
        self.actions = CorporateActions(parse_splits(self.settings.splits))
        self.error_transport = self.settings.error_transport
        self.slow_seconds = self.settings.slow_seconds
        self.stopping = threading.Event()
        self._api_keys = frozenset(self.settings.api_keys)
        # What was asked of /time_series, for tests to check (admin route /__sandbox/requests).
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._requests_lock = threading.Lock()

    # --- entry point -------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> Response:
        path = "/" + path.strip("/")
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return self._admin(method, path[len(ADMIN_PREFIX) :], query, headers, body)
        params: dict[str, str] = {}
        for name, value in query:
            params.setdefault(name.strip().lower(), value)
        endpoint = path.strip("/")
        handler = self._endpoints.get(endpoint)
        if handler is None or method not in ("GET", "HEAD"):
            return self._error(404, NOT_FOUND_PATH_MESSAGE, [])
        return handler(self, endpoint, params, headers)

    # --- shared steps --------------------------------------------------------------------------

    def _api_key(self, params: Mapping[str, str], headers: Mapping[str, str]) -> str:
        key = params.get("apikey", "").strip()
        if not key:
            scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
            if scheme.lower() == "apikey":
                key = value.strip()
        return key

    def _authorise(self, key: str, symbols: list[str] | None) -> None:
        if key == DEMO_API_KEY:
            if symbols is not None and (
                not symbols or any(canonical_symbol(s) != "AAPL" for s in symbols)
            ):
                raise ApiError(401, DEMO_KEY_MESSAGE)
            return
        if key not in self._api_keys:
            raise ApiError(401, API_KEY_MESSAGE)

    def _error(
        self,
        code: int,
        message: str,
        headers: list[tuple[str, str]],
        meta: dict[str, str] | None = None,
    ) -> Response:
        status = code if self.error_transport == "modern" else 200
        return Response(status, render.error_json(code, message, meta).encode(), JSON_TYPE, headers)

    def _begin(
        self,
        endpoint: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        symbols: list[str] | None,
        cost: int,
    ) -> tuple[str, CreditDecision, str | None, datetime]:
        """Auth, faults that replace the answer, then credits; raises _Early to answer now."""
        now = self.clock.now()
        key = self._api_key(params, headers)
        try:
            self._authorise(key, symbols)
        except ApiError as exc:
            raise _Early(self._error(exc.code, exc.message, _zero_credit_headers())) from None
        fault = self.faults.draw(endpoint)
        if fault is not None:
            logger.info("injecting fault %s on /%s", fault, endpoint)
        if fault == "bad_gateway":
            raise _Early(Response(502, BAD_GATEWAY_HTML.encode(), HTML_TYPE))
        if fault in ("rate_limit", "server_error"):
            state = self.credits.peek(key, now)
            if fault == "server_error":
                raise _Early(self._error(500, SERVER_ERROR_MESSAGE, state.headers()))
            per_minute, _ = self.settings.plan_for(key)
            message = (
                "You have run out of API credits for the current minute. "
                f"{per_minute + 1} API credits were used, with the current limit being "
                f"{per_minute}. Wait for the next minute or consider switching to a higher tier "
                "plan at https://twelvedata.com/pricing"
            )
            raise _Early(self._error(429, message, state.headers()))
        decision = self.credits.charge(key, cost, now)
        if not decision.allowed:
            raise _Early(
                self._with_delay(self._error(429, decision.message, decision.headers()), fault)
            )
        return key, decision, fault, now

    def _with_delay(self, response: Response, fault: str | None) -> Response:
        if fault == "slow":
            response.delay_seconds = self.slow_seconds
        return response

    def _finish(self, response: Response, fault: str | None) -> Response:
        if fault == "malformed_json" and response.content_type == JSON_TYPE:
            response.body = response.body[: max(1, len(response.body) // 2)]
        return self._with_delay(response, fault)

    # --- endpoints -----------------------------------------------------------------------------

    def _time_series(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        symbols = split_symbols(params.get("symbol", ""))
        try:
            _, decision, fault, now = self._begin(
                endpoint, params, headers, symbols, max(1, len(symbols))
            )
        except _Early as early:
            return early.response
        credit_headers = decision.headers()
        try:
            if not symbols:
                raise ApiError(400, SYMBOL_MISSING_MESSAGE)
            if len(symbols) > MAX_BATCH_SYMBOLS:
                raise ApiError(
                    414,
                    f"**symbol** parameter list is too long: {len(symbols)} symbols, at most "
                    f"{MAX_BATCH_SYMBOLS} per request.",
                )
            series = parse_series_request(params)
        except ApiError as exc:
            return self._finish(self._error(exc.code, exc.message, credit_headers), fault)
        if fault == "correct_bar":
            self._correct_for_fault(symbols[0], series, now)
        self._log_request(symbols, series, now)
        # The 'unknown symbol' fault hits the last symbol of a batch, or the only one.
        broken = symbols[-1] if fault == "unknown_symbol" else None
        if len(symbols) == 1:
            return self._finish(
                self._single_series(symbols[0], series, now, fault, broken, credit_headers), fault
            )
        if series.csv:
            return self._finish(
                self._batch_csv(symbols, series, now, fault, broken, credit_headers), fault
            )
        parts = []
        for requested in symbols:
            text = self._series_body(requested, series, now, fault, broken)
            parts.append(render.dumps(requested) + ":" + text)
        batch_headers = [*credit_headers, ("Is_batch", "true")]
        body = "{" + ",".join(parts) + "}"
        return self._finish(Response(200, body.encode(), JSON_TYPE, batch_headers), fault)

    def _log_request(self, symbols: list[str], series: SeriesRequest, now: datetime) -> None:
        entry = {
            "at": now.isoformat(),
            "symbols": list(symbols),
            "interval": series.interval,
            "outputsize": series.outputsize,
            "start_date": series.start_date.isoformat() if series.start_date else None,
            "end_date": series.end_date.isoformat() if series.end_date else None,
        }
        with self._requests_lock:
            self._requests.append(entry)

    def requests_seen(self) -> list[dict[str, Any]]:
        """The /time_series requests answered (oldest first, at most REQUEST_LOG_SIZE)."""
        with self._requests_lock:
            return list(self._requests)

    def _batch_csv(
        self,
        symbols: list[str],
        series: SeriesRequest,
        now: datetime,
        fault: str | None,
        broken: str | None,
        credit_headers: list[tuple[str, str]],
    ) -> Response:
        """CSV of a batch: one table with a leading symbol column; failing symbols are left out."""
        header: list[str] = []
        lines: list[list[str]] = []
        for requested in symbols:
            try:
                instrument = self._instrument_for(requested, series, broken)
                bars, previous = symbol_bars(instrument, series, now, self.actions)
            except ApiError:
                continue
            names = render.field_names(bars, previous is not None)
            if len(names) > len(header):
                header = names
            rows = self._ordered_rows(bars, previous, series, fault)
            lines.extend([instrument.symbol, *row] for row in rows)
        text = render.csv_text(["symbol", *header], lines)
        return Response(200, text.encode(), CSV_TYPE, [*credit_headers, ("Is_batch", "true")])

    def _single_series(
        self,
        requested: str,
        series: SeriesRequest,
        now: datetime,
        fault: str | None,
        broken: str | None,
        credit_headers: list[tuple[str, str]],
    ) -> Response:
        try:
            instrument = self._instrument_for(requested, series, broken)
            bars, previous = symbol_bars(instrument, series, now, self.actions)
        except ApiError as exc:
            return self._error(exc.code, exc.message, credit_headers, exc.meta)
        if len(bars) == 0:
            meta = {"symbol": instrument.symbol, "interval": series.interval, "exchange": ""}
            return self._error(400, NO_DATA_MESSAGE, credit_headers, meta)
        names = render.field_names(bars, previous is not None)
        rows = self._ordered_rows(bars, previous, series, fault)
        if series.csv:
            return Response(200, render.csv_text(names, rows).encode(), CSV_TYPE, credit_headers)
        body = render.time_series_json(
            render.time_series_meta(instrument, series.interval),
            render.rows_to_json_objects(names, rows),
        )
        return Response(200, body.encode(), JSON_TYPE, credit_headers)

    def _series_body(
        self,
        requested: str,
        series: SeriesRequest,
        now: datetime,
        fault: str | None,
        broken: str | None,
    ) -> str:
        """The JSON text of one symbol inside a batch: its own full body or error."""
        try:
            instrument = self._instrument_for(requested, series, broken)
            bars, previous = symbol_bars(instrument, series, now, self.actions)
        except ApiError as exc:
            return render.error_json(exc.code, exc.message, exc.meta)
        if len(bars) == 0:
            meta = {"symbol": instrument.symbol, "interval": series.interval, "exchange": ""}
            return render.error_json(400, NO_DATA_MESSAGE, meta)
        names = render.field_names(bars, previous is not None)
        rows = self._ordered_rows(bars, previous, series, fault)
        return render.time_series_json(
            render.time_series_meta(instrument, series.interval),
            render.rows_to_json_objects(names, rows),
        )

    def _ordered_rows(
        self,
        bars: BarSeries,
        previous: np.ndarray | None,
        series: SeriesRequest,
        fault: str | None,
    ) -> list[list[str]]:
        rows = render.bar_rows(
            bars, dp=series.dp, timezone=series.timezone, previous_close=previous
        )
        if series.order == "desc":
            rows.reverse()
        return _apply_row_fault(rows, fault)

    def _correct_for_fault(self, requested: str, series: SeriesRequest, now: datetime) -> None:
        """The `correct_bar` fault: the vendor fixes one bar of this symbol before answering."""
        instrument = get_instrument(canonical_symbol(requested))
        if instrument is None:
            return
        bars, _ = symbol_bars(instrument, series, now, self.actions)
        correction = self.actions.correct_for_fault(bars, now)
        if correction is not None:
            logger.info(
                "correcting %s %s bar at %s by %s",
                correction.symbol,
                correction.interval,
                datetime.fromtimestamp(correction.open_time, UTC).isoformat(),
                correction.factor,
            )

    def _instrument_for(
        self, requested: str, series: SeriesRequest | None, broken: str | None
    ) -> Instrument:
        symbol = canonical_symbol(requested)
        instrument = None if requested == broken else get_instrument(symbol)
        if instrument is not None and series is not None:
            mismatched = (
                (series.exchange and series.exchange != instrument.exchange.upper())
                or (series.mic_code and series.mic_code != instrument.mic_code)
                or (
                    series.instrument_type
                    and series.instrument_type != instrument.instrument_type.lower()
                )
            )
            if mismatched:
                instrument = None
        if instrument is None:
            raise self._symbol_error(symbol)
        return instrument

    def _symbol_error(self, symbol: str) -> ApiError:
        if self.settings.symbol_error_style == "invalid_404":
            return ApiError(404, SYMBOL_MISSING_MESSAGE)
        return ApiError(
            400,
            f"**symbol** not found: {symbol}. Please specify it correctly according to API "
            "Documentation.",
        )

    def _quote(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        symbols = split_symbols(params.get("symbol", ""))
        try:
            _, decision, fault, now = self._begin(
                endpoint, params, headers, symbols, max(1, len(symbols))
            )
        except _Early as early:
            return early.response
        credit_headers = decision.headers()
        if not symbols:
            return self._finish(self._error(400, SYMBOL_MISSING_MESSAGE, credit_headers), fault)
        interval = params.get("interval", "1day").strip().lower() or "1day"
        if interval not in INTERVALS:
            return self._finish(self._error(400, INTERVAL_MESSAGE, credit_headers), fault)
        dp = 5
        if params.get("dp", "").strip():
            try:
                dp = _parse_int("dp", params["dp"], 0, 11)
            except ApiError as exc:
                return self._finish(self._error(exc.code, exc.message, credit_headers), fault)
        broken = symbols[-1] if fault == "unknown_symbol" else None
        quotes: dict[str, dict[str, Any]] = {}
        for requested in symbols:
            try:
                instrument = self._instrument_for(requested, None, broken)
                quotes[requested] = quote_body(instrument, interval, now, dp, self.actions)
            except ApiError as exc:
                quotes[requested] = {"code": exc.code, "message": exc.message, "status": "error"}
        if len(symbols) == 1:
            only = quotes[symbols[0]]
            if only.get("status") == "error":
                return self._finish(
                    self._error(only["code"], only["message"], credit_headers), fault
                )
            return self._finish(
                Response(200, render.dumps(only).encode(), JSON_TYPE, credit_headers), fault
            )
        body = render.dumps(quotes).encode()
        return self._finish(
            Response(200, body, JSON_TYPE, [*credit_headers, ("Is_batch", "true")]), fault
        )

    def _stocks(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        wanted = split_symbols(params.get("symbol", ""))
        try:
            _, decision, fault, _ = self._begin(
                endpoint, params, headers, wanted if wanted else None, 1
            )
        except _Early as early:
            return early.response
        filters = {
            "exchange": params.get("exchange", "").strip().upper(),
            "mic_code": params.get("mic_code", "").strip().upper(),
            "country": params.get("country", "").strip().lower(),
            "type": params.get("type", "").strip().lower(),
        }
        symbols = {canonical_symbol(s) for s in wanted}
        data = []
        for instrument in all_instruments():
            if instrument.asset_class != "stock":
                continue
            if symbols and instrument.symbol not in symbols:
                continue
            if filters["exchange"] and instrument.exchange.upper() != filters["exchange"]:
                continue
            if filters["mic_code"] and instrument.mic_code != filters["mic_code"]:
                continue
            if filters["country"] and instrument.country.lower() != filters["country"]:
                continue
            if filters["type"] and instrument.instrument_type.lower() != filters["type"]:
                continue
            data.append(stock_reference(instrument))
        body = render.dumps({"count": len(data), "data": data, "status": "ok"})
        return self._finish(Response(200, body.encode(), JSON_TYPE, decision.headers()), fault)

    def _cryptocurrencies(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        return self._pairs(endpoint, params, headers, "crypto")

    def _forex_pairs(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        return self._pairs(endpoint, params, headers, "forex")

    def _pairs(
        self,
        endpoint: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        asset_class: str,
    ) -> Response:
        wanted = split_symbols(params.get("symbol", ""))
        try:
            _, decision, fault, _ = self._begin(endpoint, params, headers, wanted or [""], 1)
        except _Early as early:
            return early.response
        symbols = {canonical_symbol(s) for s in wanted}
        base = params.get("currency_base", "").strip().lower()
        quote = params.get("currency_quote", "").strip().lower()
        data = []
        for instrument in all_instruments():
            if instrument.asset_class != asset_class:
                continue
            if symbols and instrument.symbol not in symbols:
                continue
            if base and instrument.currency_base.lower() != base:
                continue
            if quote and instrument.currency_quote.lower() != quote:
                continue
            data.append(pair_reference(instrument))
        body = render.dumps({"data": data, "status": "ok"})
        return self._finish(Response(200, body.encode(), JSON_TYPE, decision.headers()), fault)

    def _api_usage(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        try:
            key, decision, fault, now = self._begin(endpoint, params, headers, None, 1)
        except _Early as early:
            return early.response
        usage = self.credits.snapshot(key, now)
        zone_name = params.get("timezone", "").strip() or "UTC"
        try:
            zone = ZoneInfo("UTC" if zone_name.lower() == "utc" else zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        body = {
            "timestamp": now.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
            "current_usage": usage.minute_used,
            "plan_limit": usage.per_minute,
            "plan_category": _plan_category(usage.per_minute),
        }
        return self._finish(
            Response(200, render.dumps(body).encode(), JSON_TYPE, decision.headers()), fault
        )

    def _splits(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        """A symbol's splits that have happened, newest first (shape partly assumed: README)."""
        requested = params.get("symbol", "").strip()
        try:
            _, decision, fault, now = self._begin(
                endpoint, params, headers, [requested] if requested else [], SPLITS_CREDITS
            )
        except _Early as early:
            return early.response
        credit_headers = decision.headers()
        try:
            if not requested:
                raise ApiError(400, SYMBOL_MISSING_MESSAGE)
            instrument = self._instrument_for(requested, None, None)
            start = params.get("start_date", "").strip()
            end = params.get("end_date", "").strip()
            first = _parse_datetime("start_date", start).date() if start else None
            last = _parse_datetime("end_date", end).date() if end else None
        except ApiError as exc:
            return self._finish(self._error(exc.code, exc.message, credit_headers), fault)
        splits = [
            split
            for split in reversed(self.actions.effective_splits(instrument.symbol, now))
            if (first is None or split.ex_date >= first) and (last is None or split.ex_date <= last)
        ]
        body = {
            "meta": splits_meta(instrument),
            "splits": [
                {
                    "date": split.ex_date.isoformat(),
                    "description": split.description(),
                    "ratio": split.from_factor / split.to_factor,
                    "from_factor": split.to_factor,
                    "to_factor": split.from_factor,
                }
                for split in splits
            ],
        }
        return self._finish(
            Response(200, render.dumps(body).encode(), JSON_TYPE, credit_headers), fault
        )

    def _technical_indicators(
        self, endpoint: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response:
        # Free and keyless: the python client calls it from its constructor, before any data.
        body = render.dumps({"data": TECHNICAL_INDICATORS, "status": "ok"})
        return Response(200, body.encode(), JSON_TYPE, _zero_credit_headers())

    _endpoints: ClassVar[dict[str, Callable[..., Response]]] = {
        "time_series": _time_series,
        "quote": _quote,
        "stocks": _stocks,
        "cryptocurrencies": _cryptocurrencies,
        "forex_pairs": _forex_pairs,
        "api_usage": _api_usage,
        "splits": _splits,
        "technical_indicators": _technical_indicators,
    }

    # --- admin ---------------------------------------------------------------------------------

    def _admin(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        token = self.settings.admin_token.get_secret_value()
        if token and headers.get("X-Sandbox-Admin-Token", "") != token:
            return _admin_json(403, {"error": "admin token required"})
        try:
            payload: dict[str, Any] = dict(query)
            if body.strip():
                loaded = json.loads(body)
                if not isinstance(loaded, dict):
                    raise ValueError("expected a JSON object")
                payload |= loaded
            handler = self._admin_routes().get((method, path.rstrip("/") or "/"))
            if handler is not None:
                return _admin_json(200, handler(payload))
        except (ValueError, TypeError, KeyError) as exc:
            return _admin_json(400, {"error": str(exc)})
        return _admin_json(404, {"error": f"no admin route {method} {path}"})

    def _admin_routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], object]]:
        """The control plane of the test double: (method, path) -> handler of the JSON body."""

        def set_clock(payload: dict[str, Any]) -> object:
            self._set_clock(payload)
            return self.clock.state()

        def add_faults(payload: dict[str, Any]) -> object:
            self._add_faults(payload)
            return {"rules": self.faults.rules()}

        def clear_faults(payload: dict[str, Any]) -> object:
            seed = payload.get("seed")
            self.faults.clear(None if seed is None else int(seed))
            return {"rules": []}

        def reset_credits(payload: dict[str, Any]) -> object:
            self.credits.reset()
            return {"status": "ok"}

        def add_split(payload: dict[str, Any]) -> object:
            self.actions.add_split(
                make_split(
                    str(payload["symbol"]),
                    str(payload["date"]),
                    float(payload.get("to_factor", 0)),
                    float(payload.get("from_factor", 1)),
                )
            )
            return {"splits": self._split_rows()}

        def clear_actions(payload: dict[str, Any]) -> object:
            self.actions.clear()
            return {"splits": [], "corrections": []}

        def add_correction(payload: dict[str, Any]) -> object:
            at = parse_clock_start(str(payload["bar_time"]))
            assert at is not None
            self.actions.add_correction(
                Correction(
                    canonical_symbol(str(payload["symbol"])),
                    str(payload.get("interval", "1h")),
                    int(at.timestamp()),
                    float(payload.get("factor", FAULT_CORRECTION_FACTOR)),
                    self.clock.now(),
                )
            )
            return {"corrections": self._correction_rows()}

        def clear_requests(payload: dict[str, Any]) -> object:
            with self._requests_lock:
                self._requests.clear()
            return {"requests": []}

        def set_transport(payload: dict[str, Any]) -> object:
            self.set_error_transport(str(payload.get("error_transport", "")))
            return {"error_transport": self.error_transport}

        return {
            ("GET", "/health"): lambda payload: {"status": "ok"},
            ("GET", "/clock"): lambda payload: self.clock.state(),
            ("POST", "/clock"): set_clock,
            ("GET", "/faults"): lambda payload: {
                "rules": self.faults.rules(),
                "names": FAULT_NAMES,
            },
            ("POST", "/faults"): add_faults,
            ("DELETE", "/faults"): clear_faults,
            ("POST", "/credits/reset"): reset_credits,
            ("GET", "/actions"): lambda payload: {
                "splits": self._split_rows(),
                "corrections": self._correction_rows(),
            },
            ("POST", "/splits"): add_split,
            ("POST", "/corrections"): add_correction,
            ("DELETE", "/actions"): clear_actions,
            ("GET", "/requests"): lambda payload: {"requests": self.requests_seen()},
            ("DELETE", "/requests"): clear_requests,
            ("GET", "/transport"): lambda payload: {"error_transport": self.error_transport},
            ("POST", "/transport"): set_transport,
        }

    def _split_rows(self) -> list[dict[str, Any]]:
        return [
            {"symbol": s.symbol, "date": s.ex_date.isoformat(), "to_factor": s.to_factor,
             "from_factor": s.from_factor}
            for s in self.actions.splits()
        ]  # fmt: skip

    def _correction_rows(self) -> list[dict[str, Any]]:
        return [
            {"symbol": c.symbol, "interval": c.interval,
             "bar_time": datetime.fromtimestamp(c.open_time, UTC).isoformat(),
             "factor": c.factor, "made_at": c.made_at.isoformat()}
            for c in self.actions.corrections()
        ]  # fmt: skip

    def set_error_transport(self, mode: str) -> None:
        if mode not in ("modern", "legacy"):
            raise ValueError("error_transport must be modern or legacy")
        self.error_transport = mode  # type: ignore[assignment]

    def _set_clock(self, payload: Mapping[str, Any]) -> None:
        if payload.get("set"):
            at = parse_clock_start(str(payload["set"]))
            assert at is not None
            self.clock.set(at)
        if "freeze" in payload:
            value = payload["freeze"]
            at = None if value in (True, "true", "", None) else parse_clock_start(str(value))
            self.clock.freeze(at)
        if payload.get("advance_seconds") is not None:
            self.clock.advance(float(payload["advance_seconds"]))
        if payload.get("speed") is not None:
            self.clock.set_speed(float(payload["speed"]))

    def _add_faults(self, payload: Mapping[str, Any]) -> None:
        if payload.get("spec"):
            for rule in parse_fault_spec(str(payload["spec"])):
                self.faults.add(rule)
            return
        probability = payload.get("probability")
        count = payload.get("count")
        self.faults.add(
            make_rule(
                str(payload["fault"]),
                count=None if count is None else int(count),
                probability=None if probability is None else float(probability),
                endpoint=str(payload.get("endpoint", "time_series")),
            )
        )


class _Early(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _zero_credit_headers() -> list[tuple[str, str]]:
    return CreditDecision(True, 0, 0, 0).headers()


def _admin_json(status: int, body: object) -> Response:
    return Response(status, render.dumps(body).encode(), JSON_TYPE)


def _plan_category(per_minute: int) -> str:
    return {8: "basic", 55: "grow", 144: "pro", 377: "pro", 610: "ultra"}.get(
        per_minute, "enterprise" if per_minute > 610 else "custom"
    )


def stock_reference(instrument: Instrument) -> dict[str, str]:
    """One /stocks row in the real API's key order."""
    return {
        "symbol": instrument.symbol,
        "name": instrument.name,
        "currency": instrument.currency,
        "exchange": instrument.exchange,
        "mic_code": instrument.mic_code,
        "country": instrument.country,
        "type": instrument.instrument_type,
        "figi_code": instrument.figi_code,
        "isin": instrument.isin,
        "cusip": instrument.cusip,
    }


def splits_meta(instrument: Instrument) -> dict[str, str]:
    """The ``meta`` object of /splits (assumed: /time_series's stock fields with the name)."""
    return {
        "symbol": instrument.symbol,
        "name": instrument.name,
        "currency": instrument.currency,
        "exchange": instrument.exchange,
        "mic_code": instrument.mic_code,
        "exchange_timezone": instrument.exchange_timezone,
    }


def pair_reference(instrument: Instrument) -> dict[str, Any]:
    """One /cryptocurrencies or /forex_pairs row in the real API's key order."""
    if instrument.asset_class == "crypto":
        return {
            "symbol": instrument.symbol,
            "available_exchanges": list(instrument.available_exchanges),
            "currency_base": instrument.currency_base,
            "currency_quote": instrument.currency_quote,
        }
    return {
        "symbol": instrument.symbol,
        "currency_group": instrument.currency_group,
        "currency_base": instrument.currency_base,
        "currency_quote": instrument.currency_quote,
    }


def is_market_open(instrument: Instrument, now: datetime) -> bool:
    table = session_table(instrument.calendar)
    now_s = int(now.timestamp())
    index = int(np.searchsorted(table.open_s, now_s, side="right")) - 1
    return index >= 0 and now_s < int(table.close_s[index])


def quote_body(
    instrument: Instrument,
    interval: str,
    now: datetime,
    dp: int,
    actions: CorporateActions | None = None,
) -> dict[str, Any]:
    """The flat /quote object: the newest bar, its change, and 52-week extremes (split-adjusted)."""
    actions = actions or CorporateActions()
    bars = actions.apply(model_bars(instrument.symbol, interval, now, outputsize=2), now)
    year = actions.apply(
        model_bars(instrument.symbol, "1day", now, start=now - timedelta(days=365), outputsize=400),
        now,
    )
    if len(bars) == 0:
        raise ApiError(400, NO_DATA_MESSAGE)
    fmt = f"{{:.{dp}f}}".format
    last = len(bars) - 1
    close = float(bars.close[last])
    previous = float(bars.close[last - 1]) if last > 0 else float(bars.open[last])
    change = close - previous
    low_52, high_52 = float(year.low.min()), float(year.high.max())
    label = render.bar_labels(bars.slice(last, last + 1), None)[0]
    open_now = is_market_open(instrument, now)
    now_s = int(now.timestamp())
    table = session_table(instrument.calendar)
    session = int(np.searchsorted(table.open_s, now_s, side="right")) - 1
    last_quote_at = now_s if open_now or session < 0 else int(table.close_s[session])
    body: dict[str, Any] = {"symbol": instrument.symbol, "name": instrument.name}
    if instrument.exchange:
        body["exchange"] = instrument.exchange
    if instrument.asset_class == "stock":
        body |= {"mic_code": instrument.mic_code, "currency": instrument.currency}
    body |= {
        "datetime": label,
        "timestamp": int(bars.open_time[last]),
        "last_quote_at": last_quote_at,
        "open": fmt(float(bars.open[last])),
        "high": fmt(float(bars.high[last])),
        "low": fmt(float(bars.low[last])),
        "close": fmt(close),
    }
    if bars.volume is not None:
        body["volume"] = str(int(bars.volume[last]))
    body |= {
        "previous_close": fmt(previous),
        "change": fmt(change),
        "percent_change": fmt(change / previous * 100.0 if previous else 0.0),
    }
    if year.volume is not None and len(year.volume) > 1:
        body["average_volume"] = str(int(np.mean(year.volume[-10:-1])))
    body |= {
        "is_market_open": open_now,
        "fifty_two_week": {
            "low": fmt(low_52),
            "high": fmt(high_52),
            "low_change": fmt(close - low_52),
            "high_change": fmt(close - high_52),
            "low_change_percent": fmt((close - low_52) / low_52 * 100.0),
            "high_change_percent": fmt((close - high_52) / high_52 * 100.0),
            "range": f"{low_52:.6f} - {high_52:.6f}",
        },
    }
    return body
