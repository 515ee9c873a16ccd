"""JSON -> typed rows: one row per API bar, plus a quarantine record per unusable payload.

The payload loop runs once per payload (not per bar); the bars of all payloads are pulled into
flat Python lists once and parsed column by column with Arrow's C parsers. A bar that cannot be
parsed keeps its row with an ``issue`` so validation records it instead of losing it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from marketpipe.contract import RawPayload
from marketpipe.intervals import KNOWN_INTERVALS
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

    payload_id: str
    symbol: str
    interval: str
    reason: str
    raw: str


@dataclass(frozen=True)
class FlatBatch:
    """Parsed bars of every usable payload.

    ``payloads``: one row per usable payload (payload_id, symbol, interval, asset_class,
    exchange_timezone, fetched_at, instrument attributes).
    ``rows``: one row per API bar: payload (index into ``payloads``), position (index in the
    API's ``values`` list), datetime_text, local (naive datetime64[s]), open..volume (float64),
    issue (None or the reason the bar is unusable). ``raw_values`` keeps each bar's JSON object
    so a quarantined bar can be recorded as it came.
    """

    payloads: pd.DataFrame
    rows: pd.DataFrame
    raw_values: list[Any]
    rejections: list[PayloadRejection]


def to_json(value: Any) -> str:
    """Deterministic JSON text (the loader upserts quarantine rows by their key)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _unwrap(payload: RawPayload) -> Any:
    """A batch answer is keyed by symbol; take this payload's symbol out if the fetcher did not."""
    body = payload.body
    if (
        isinstance(body, dict)
        and "values" not in body
        and "status" not in body
        and isinstance(body.get(payload.symbol), dict)
    ):
        return body[payload.symbol]
    return body


def _asset_class(meta: dict[str, Any], instrument: dict[str, Any]) -> str | None:
    """stock: the meta names an exchange time zone; crypto / forex: a base and quote currency."""
    if _text(meta.get("exchange_timezone")):
        return "stock"
    if _text(meta.get("currency_base")) and _text(meta.get("currency_quote")):
        kind = (_text(meta.get("type")) or _text(instrument.get("type")) or "").lower()
        if "digital" in kind or "crypto" in kind:
            return "crypto"
        if "physical" in kind or "forex" in kind:
            return "forex"
        # The docs: forex meta is crypto's without an exchange.
        return "crypto" if _text(meta.get("exchange")) else "forex"
    return None


def _check_body(payload: RawPayload, body: Any) -> str | None:
    """The reason a body yields no bars at all, or None when it has the time_series shape."""
    try:
        # The symbol becomes a key column and a dashboard filter: a hostile or non-canonical
        # one (a forged payload pushed into Redis) must stop here, not reach a table.
        canonical = validate_symbol(payload.symbol) == payload.symbol
    except ValueError:
        canonical = False
    if not canonical:
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
    meta = body["meta"]
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


def _parse_numbers(column: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, non_numeric) of one field across all bars."""
    try:
        parsed = pc.cast(pa.array(column, type=pa.string()), pa.float64())
        values = parsed.to_numpy(zero_copy_only=False)
        missing = np.asarray(parsed.is_null().to_numpy(zero_copy_only=False))
        values = np.where(missing, np.nan, values)
        non_numeric = ~missing & ~np.isfinite(values)
        return values, missing, non_numeric
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path, only for a batch holding something Arrow will not parse (" 12", 12, "abc").
    values = np.full(len(column), np.nan)
    missing = np.zeros(len(column), bool)
    non_numeric = np.zeros(len(column), bool)
    for i, item in enumerate(column):
        if item is None or (isinstance(item, str) and not item.strip()):
            missing[i] = True
            continue
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            non_numeric[i] = True
            continue
        try:
            number = float(item)
        except ValueError:
            non_numeric[i] = True
            continue
        if math.isfinite(number):
            values[i] = number
        else:
            non_numeric[i] = True
    return values, missing, non_numeric


def flatten_payloads(payloads: Sequence[RawPayload]) -> FlatBatch:
    payload_rows: list[dict[str, Any]] = []
    rejections: list[PayloadRejection] = []
    all_values: list[Any] = []
    lengths: list[int] = []
    for payload in payloads:
        body = _unwrap(payload)
        reason = _check_body(payload, body)
        if reason is not None:
            rejections.append(
                PayloadRejection(
                    payload.payload_id, payload.symbol, payload.interval, reason, to_json(body)
                )
            )
            continue
        meta: dict[str, Any] = body["meta"]
        instrument = payload.instrument or {}
        asset_class = _asset_class(meta, instrument)
        fetched_at = pd.Timestamp(payload.fetched_at)
        fetched_at = (
            fetched_at.tz_localize("UTC") if fetched_at.tzinfo is None else fetched_at
        ).tz_convert("UTC")
        row: dict[str, Any] = {
            "payload_id": payload.payload_id,
            "symbol": payload.symbol,
            "interval": payload.interval,
            "asset_class": asset_class,
            "exchange_timezone": _text(meta.get("exchange_timezone")),
            "fetched_at": fetched_at,
            "requested_order": _requested_order(payload.request),
        }
        for column, key in INSTRUMENT_FIELDS.items():
            row[column] = _text(instrument.get(key)) or _text(meta.get(key))
        if asset_class == "crypto" and row["currency"] is None:
            # Prices of a pair are quoted in the quote currency; keep its code when we have it.
            quote = _text(payload.symbol.split("/")[1]) if "/" in payload.symbol else None
            row["currency"] = quote
        payload_rows.append(row)
        values: list[Any] = body["values"]
        all_values.extend(values)
        lengths.append(len(values))
    payload_table = pd.DataFrame(payload_rows, columns=_PAYLOAD_COLUMNS)
    for column in _PAYLOAD_COLUMNS:
        if column != "fetched_at":
            # object with None: pandas 3 would otherwise infer "str" with NaN for missing text.
            texts = payload_table[column].astype(object)
            payload_table[column] = texts.where(texts.notna(), None)
    payload_table["fetched_at"] = pd.to_datetime(payload_table["fetched_at"], utc=True)
    rows = _parse_rows(all_values, lengths)
    return FlatBatch(payload_table, rows, all_values, rejections)


_PAYLOAD_COLUMNS = [
    "payload_id",
    "symbol",
    "interval",
    "asset_class",
    "exchange_timezone",
    "fetched_at",
    "requested_order",
    *INSTRUMENT_FIELDS,
]


def _requested_order(request: dict[str, Any]) -> str | None:
    """The ``order`` the fetcher asked for (asc / desc), if it says."""
    for key, value in request.items():
        if str(key).lower() == "order" and str(value).lower() in ("asc", "desc"):
            return str(value).lower()
    return None


def _parse_rows(values: list[Any], lengths: list[int]) -> pd.DataFrame:
    count = len(values)
    payload_index = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    starts = np.cumsum([0, *lengths[:-1]]) if lengths else np.zeros(0, np.int64)
    position = np.arange(count, dtype=np.int64) - np.repeat(np.asarray(starts, np.int64), lengths)
    issue = np.full(count, None, dtype=object)
    # set(map(type, ...)) runs in C; the per-row check only when something is not an object.
    if set(map(type, values)) - {dict}:
        malformed = np.fromiter((type(v) is not dict for v in values), bool, count)
        issue[malformed] = "malformed_row: not an object"
        values = [v if type(v) is dict else {} for v in values]
    datetime_text = _field(values, "datetime", lengths)
    if set(map(type, datetime_text)) - {str}:
        datetime_text = [t if isinstance(t, str) else "" for t in datetime_text]
    text_array = np.array(datetime_text, dtype=object)
    local = parse_api_datetimes(datetime_text)
    bad_datetime = np.isnat(local)
    if bad_datetime.any():
        _set_issue(issue, bad_datetime, "bad_datetime")
    columns: dict[str, Any] = {
        "payload": payload_index,
        "position": position,
        "datetime_text": text_array,
        "local": local,
    }
    for field in (*PRICE_FIELDS, "volume"):
        numbers, missing, non_numeric = _parse_numbers(_field(values, field, lengths))
        columns[field] = numbers
        if field != "volume":
            # A missing volume is normal (crypto, forex): NULL, never 0, never an error.
            _set_issue(issue, missing, f"missing_value: {field}")
        _set_issue(issue, non_numeric, f"non_numeric: {field}")
    columns["issue"] = issue
    # Explicit object Series: pandas 3 would infer Arrow-backed "str" for the text columns (a
    # conversion of every string, and NaN for None); copy=False keeps each column's own array.
    for name in ("datetime_text", "issue"):
        columns[name] = pd.Series(columns[name], dtype=object, copy=False)
    return pd.DataFrame(columns, copy=False)


def _field(values: list[dict[str, Any]], name: str, lengths: list[int]) -> list[Any]:
    """One field of every bar; map(itemgetter) runs in C.

    When some bar lacks the field (volume of crypto and forex), payload by payload: a payload
    where no bar has it gives Nones (checked in C too); only a payload where some bars have it
    pays for a per-bar ``.get``.
    """
    try:
        return list(map(itemgetter(name), values))
    except KeyError:
        pass
    getter = itemgetter(name)
    out: list[Any] = []
    start = 0
    for length in lengths:
        chunk = values[start : start + length]
        start += length
        try:
            out += list(map(getter, chunk))  # all or nothing: a KeyError leaves out untouched
        except KeyError:
            if any(map(dict.__contains__, chunk, repeat(name))):
                out.extend([v.get(name) for v in chunk])
            else:
                out.extend(repeat(None, length))
    return out


def _set_issue(issue: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Record ``reason`` for rows that have no earlier (higher-priority) issue."""
    if not mask.any():  # the usual case: skip the missing-value scan of the object array
        return
    fresh = mask & pd.isna(issue)
    issue[fresh] = reason
