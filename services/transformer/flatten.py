"""JSON -> typed rows: one payload's bars, or the reason the whole payload yields none.

A bar that cannot be parsed keeps its row with an ``issue`` so validation records it instead of
losing it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import RawPayload
from marketpipe.market import KNOWN_INTERVALS, asset_class_of
from marketpipe.settings import validate_symbol
from services.transformer.timeconv import parse_api_datetimes

PRICE_FIELDS = ("open", "high", "low", "close")

# Attributes a bar row inherits from its instrument; ``payload.instrument`` wins over the meta.
INSTRUMENT_FIELDS = {
    "instrument_name": "name",
    "instrument_type": "type",
    "exchange": "exchange",
    "mic_code": "mic_code",
    "currency": "currency",
    "currency_base": "currency_base",
    "currency_quote": "currency_quote",
    "country": "country",
}


@dataclass(frozen=True)
class PayloadRejection:
    """A whole payload that yields no bars (error body, unknown shape)."""

    reason: str
    raw: str  # the body as JSON text


@dataclass(frozen=True)
class FlatSeries:
    """One payload's bars as the API listed them.

    ``attributes``: the text columns every bar of the series shares (symbol, interval,
    asset_class, exchange_timezone, payload_id and the instrument fields).
    ``rows``: one row per entry of the API's ``values`` list, in its order (the index is the
    position): datetime_text, local (naive datetime64[s]), open..volume (float64), issue (None
    or why the bar is unusable). ``raw_values`` keeps each entry so a quarantined bar is
    recorded as it came.
    """

    attributes: dict[str, str | None]
    fetched_at: pd.Timestamp  # the API's clock when it answered (its Date header), UTC
    requested_order: str | None  # "asc" / "desc" when the fetcher recorded the request's order
    rows: pd.DataFrame
    raw_values: list[Any]

    @property
    def asset_class(self) -> str:
        return str(self.attributes["asset_class"])

    @property
    def exchange_timezone(self) -> str | None:
        return self.attributes["exchange_timezone"]


def to_json(value: Any) -> str:
    """Deterministic JSON text (the loader upserts quarantine rows by their key)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def flatten(payload: RawPayload) -> FlatSeries | PayloadRejection:
    body = payload.body
    reason = _check_body(payload, body)
    if reason is not None:
        return PayloadRejection(reason, to_json(body))
    meta: dict[str, Any] = body["meta"]
    instrument = payload.instrument or {}
    attributes: dict[str, str | None] = {
        "payload_id": payload.payload_id,
        "symbol": payload.symbol,
        "interval": payload.interval,
        "asset_class": _asset_class(meta, instrument),
        "exchange_timezone": _text(meta.get("exchange_timezone")),
    }
    for column, key in INSTRUMENT_FIELDS.items():
        attributes[column] = _text(instrument.get(key)) or _text(meta.get(key))
    if attributes["asset_class"] == "crypto" and attributes["currency"] is None:
        # Prices of a pair are quoted in the quote currency; keep its code when we have it.
        quote = payload.symbol.split("/")[1] if "/" in payload.symbol else None
        attributes["currency"] = _text(quote)
    fetched_at = pd.Timestamp(payload.fetched_at)
    fetched_at = fetched_at.tz_localize("UTC") if fetched_at.tzinfo is None else fetched_at
    values: list[Any] = body["values"]
    return FlatSeries(
        attributes=attributes,
        fetched_at=fetched_at.tz_convert("UTC"),
        requested_order=_requested_order(payload.request),
        rows=_parse_rows(values),
        raw_values=values,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _asset_class(meta: dict[str, Any], instrument: dict[str, Any]) -> str | None:
    return asset_class_of("", meta=meta, instrument=instrument)


def _check_body(payload: RawPayload, body: Any) -> str | None:
    """The reason a body yields no bars at all, or None when it has the time_series shape."""
    if not _is_canonical_symbol(payload.symbol):
        return "invalid_symbol: payload symbol does not match the symbol pattern"
    if isinstance(body, dict) and (body.get("status") == "error" or "code" in body):
        # The API's own words go to the run log, so an operator sees why without digging.
        message = str(body.get("message", ""))[:300]
        return f"error_body: code {body.get('code', '?')}: {message}"
    if not isinstance(body, dict):
        return f"unknown_shape: body is {type(body).__name__}, not an object"
    if not isinstance(body.get("meta"), dict):
        return "unknown_shape: meta missing or not an object"
    if not isinstance(body.get("values"), list):
        return "unknown_shape: values missing or not a list"
    return _check_meta(payload, body["meta"])


def _is_canonical_symbol(symbol: str) -> bool:
    """The symbol becomes a key column and a dashboard filter: a hostile or non-canonical one
    (a forged payload pushed into Redis) must stop here, not reach a table."""
    try:
        return validate_symbol(symbol) == symbol
    except ValueError:
        return False


def _check_meta(payload: RawPayload, meta: dict[str, Any]) -> str | None:
    interval = _text(meta.get("interval")) or payload.interval
    if interval != payload.interval:
        return f"unknown_shape: meta interval {interval} is not {payload.interval}"
    if interval not in KNOWN_INTERVALS:
        return f"unknown_shape: unknown interval {interval}"
    meta_symbol = (_text(meta.get("symbol")) or payload.symbol).upper()
    if meta_symbol.split(":")[0] != payload.symbol.upper().split(":")[0]:
        return f"unknown_shape: meta symbol {meta_symbol} is not {payload.symbol}"
    asset_class = _asset_class(meta, payload.instrument)
    if asset_class is None:
        return "unknown_meta_shape: neither exchange_timezone nor currency_base/quote"
    if asset_class == "stock":
        try:
            ZoneInfo(str(meta["exchange_timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            return f"unknown_meta_shape: unknown exchange_timezone {meta['exchange_timezone']}"
    return None


def _requested_order(request: dict[str, Any]) -> str | None:
    """The ``order`` the fetcher asked for (asc / desc), if it says."""
    for key, value in request.items():
        if str(key).lower() == "order" and str(value).lower() in ("asc", "desc"):
            return str(value).lower()
    return None


def _parse_rows(values: list[Any]) -> pd.DataFrame:
    issue = np.full(len(values), None, dtype=object)
    if any(type(v) is not dict for v in values):
        malformed = np.array([type(v) is not dict for v in values], dtype=bool)
        issue[malformed] = "malformed_row: not an object"
        values = [v if type(v) is dict else {} for v in values]
    datetime_text = [t if isinstance(t, str) else "" for t in _field(values, "datetime")]
    local = parse_api_datetimes(datetime_text)
    _set_issue(issue, np.isnat(local), "bad_datetime")
    columns: dict[str, Any] = {
        "datetime_text": pd.Series(datetime_text, dtype=object),
        "local": local,
    }
    for field in (*PRICE_FIELDS, "volume"):
        numbers, missing, non_numeric = _parse_numbers(_field(values, field))
        columns[field] = numbers
        if field != "volume":
            # A missing volume is normal (crypto, forex): NULL, never 0, never an error.
            _set_issue(issue, missing, f"missing_value: {field}")
        _set_issue(issue, non_numeric, f"non_numeric: {field}")
    columns["issue"] = pd.Series(issue, dtype=object)
    return pd.DataFrame(columns)


def _field(values: list[dict[str, Any]], name: str) -> list[Any]:
    """One field of every bar (None where a bar lacks it, e.g. the volume of crypto)."""
    try:
        return list(map(itemgetter(name), values))  # runs in C when every bar has the field
    except KeyError:
        return [value.get(name) for value in values]


def _parse_numbers(column: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, non_numeric) of one field across all bars."""
    try:
        # Arrow's C parser takes the usual column of numeric text in one call.
        parsed = pc.cast(pa.array(column, type=pa.string()), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _parse_numbers_one_by_one(column)
    missing = np.asarray(parsed.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.where(missing, np.nan, parsed.to_numpy(zero_copy_only=False))
    return values, missing, ~missing & ~np.isfinite(values)


def _parse_numbers_one_by_one(column: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slow path, for a column holding something Arrow will not parse (" 12", 12, "abc")."""
    values = np.full(len(column), np.nan)
    missing = np.zeros(len(column), bool)
    non_numeric = np.zeros(len(column), bool)
    for i, item in enumerate(column):
        if item is None or (isinstance(item, str) and not item.strip()):
            missing[i] = True
        elif isinstance(item, bool) or not isinstance(item, (str, int, float)):
            non_numeric[i] = True
        else:
            try:
                number = float(item)
            except ValueError:
                number = math.nan
            values[i] = number if math.isfinite(number) else np.nan
            non_numeric[i] = not math.isfinite(number)
    return values, missing, non_numeric


def _set_issue(issue: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Record ``reason`` for rows that have no earlier (higher-priority) issue."""
    if mask.any():
        issue[mask & pd.isna(issue)] = reason
