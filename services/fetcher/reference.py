"""Instrument attributes from the reference endpoints, cached in Redis and refreshed daily.

``/stocks`` and ``/cryptocurrencies`` (``/forex_pairs`` for pairs that are not crypto) cost a
credit a call like everything else, so they go through the same request loop. A failed refresh
keeps the previous attributes: a stale exchange name beats none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from services.fetcher.client import ApiError
from services.fetcher.context import FetchContext
from services.fetcher.request import send
from services.fetcher.series import parse_utc

log = logging.getLogger("marketpipe.fetcher.reference")

INSTRUMENT_PREFIX = "marketpipe:instrument"
# Kept well past the refresh period so an API outage does not lose the attributes.
CACHE_TTL_SECONDS = 14 * 86_400

STOCK_FIELDS = ("name", "exchange", "mic_code", "currency", "country", "type")
PAIR_TYPES = {"cryptocurrencies": "Digital Currency", "forex_pairs": "Physical Currency"}


def instrument_from(endpoint: str, row: dict[str, Any]) -> dict[str, Any]:
    """The attributes the transformer joins (RawPayload.instrument), from one reference row."""
    if endpoint == "stocks":
        return {key: row[key] for key in STOCK_FIELDS if row.get(key)}
    attrs = {
        "type": PAIR_TYPES[endpoint],
        "currency_base": row.get("currency_base"),
        "currency_quote": row.get("currency_quote"),
    }
    if row.get("currency_base") and row.get("currency_quote"):
        attrs["name"] = f"{row['currency_base']} / {row['currency_quote']}"
    if row.get("available_exchanges"):
        attrs["available_exchanges"] = list(row["available_exchanges"])
    return {key: value for key, value in attrs.items() if value}


def _key(symbol: str) -> str:
    return f"{INSTRUMENT_PREFIX}:{symbol}"


def _lookup(ctx: FetchContext, symbol: str) -> dict[str, Any]:
    endpoints = ("cryptocurrencies", "forex_pairs") if "/" in symbol else ("stocks",)
    for endpoint in endpoints:
        rows = send(ctx, 1, partial(ctx.client.reference, endpoint, symbol))
        match = [r for r in rows if str(r.get("symbol", "")).upper() == symbol.upper()]
        if match:
            return instrument_from(endpoint, match[0])
    return {}


def instruments(ctx: FetchContext, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Attributes per symbol: cached ones younger than REFERENCE_REFRESH_HOURS, the rest fetched."""
    redis, now = ctx.redis, ctx.clock.now()
    refresh_after = timedelta(hours=ctx.settings.reference_refresh_hours)
    cached = redis.mget([_key(s) for s in symbols])
    result: dict[str, dict[str, Any]] = {}
    for symbol, raw in zip(symbols, cached, strict=True):
        entry = json.loads(raw) if raw else None
        fetched_at = parse_utc(entry["fetched_at"]) if entry else None
        if entry and fetched_at and now - fetched_at < refresh_after:
            result[symbol] = entry["attrs"]
            continue
        try:
            attrs = _lookup(ctx, symbol)
        except ApiError as exc:
            log.warning("reference data for %s unavailable (%s); keeping the cache", symbol, exc)
            result[symbol] = entry["attrs"] if entry else {}
            continue
        if not attrs:
            log.warning("%s is in no reference list", symbol)
        redis.set(
            _key(symbol),
            json.dumps({"fetched_at": now.isoformat(), "attrs": attrs}),
            ex=CACHE_TTL_SECONDS,
        )
        result[symbol] = attrs
    return result
