"""Instrument attributes for every configured symbol in as few credits as the API allows.

Stocks: one ``/stocks`` list (1 credit, whatever its length) per REFERENCE_REFRESH_HOURS for all
the stocks whose cached attributes are missing or old, filtered here to the configured symbols;
asking ``/stocks?symbol=`` per symbol cost a credit each and doubled a first tick's cost on the
free plan. Pairs (crypto, forex): no call at all, since every ``/time_series`` answer's meta
carries their type, base and quote currency and exchange (:func:`remember_pair`). Everything
is cached in Redis; a failed refresh keeps the previous attributes: a stale exchange name beats
none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from redis import Redis

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


def is_pair(symbol: str) -> bool:
    return "/" in symbol


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


def pair_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A pair's attributes from a /time_series meta (the same fields /cryptocurrencies has)."""
    kind = str(meta.get("type") or "")
    endpoint = "forex_pairs" if "physical" in kind.lower() else "cryptocurrencies"
    attrs = instrument_from(endpoint, meta)
    if meta.get("exchange"):
        attrs["exchange"] = meta["exchange"]
    return attrs


def _key(symbol: str) -> str:
    return f"{INSTRUMENT_PREFIX}:{symbol}"


def _store(redis: Redis, symbol: str, attrs: dict[str, Any], now: datetime) -> None:
    redis.set(
        _key(symbol),
        json.dumps({"fetched_at": now.isoformat(), "attrs": attrs}),
        ex=CACHE_TTL_SECONDS,
    )


def remember_pair(ctx: FetchContext, symbol: str, body: Any) -> dict[str, Any]:
    """Cache a pair's attributes from its answer's meta; what the payload should carry."""
    meta = body.get("meta") if isinstance(body, dict) else None
    if not is_pair(symbol) or not isinstance(meta, dict):
        return {}
    attrs = pair_from_meta(meta)
    if attrs:
        _store(ctx.redis, symbol, attrs, ctx.clock.now())
    return attrs


def _stock_list(ctx: FetchContext, stocks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One /stocks list (one credit), filtered to ``stocks``."""
    wanted = {s.upper() for s in stocks}
    rows = send(ctx, 1, partial(ctx.client.reference, "stocks"))
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        symbol = str(row.get("symbol", "")).upper()
        # The list holds a ticker once per listing; the first (the API's primary) wins.
        if symbol in wanted and symbol not in found:
            found[symbol] = instrument_from("stocks", row)
    log.info("reference data: %d of %d stocks found in one /stocks list", len(found), len(wanted))
    return found


def instruments(ctx: FetchContext, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Attributes per symbol: cached ones younger than REFERENCE_REFRESH_HOURS, stocks' others
    from one list; a pair not seen yet has none until its first answer."""
    redis, now = ctx.redis, ctx.clock.now()
    refresh_after = timedelta(hours=ctx.settings.reference_refresh_hours)
    cached = redis.mget([_key(s) for s in symbols])
    result: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for symbol, raw in zip(symbols, cached, strict=True):
        entry = json.loads(raw) if raw else None
        fetched_at = parse_utc(entry["fetched_at"]) if entry else None
        result[symbol] = entry["attrs"] if entry else {}
        if not (entry and fetched_at and now - fetched_at < refresh_after) and not is_pair(symbol):
            stale.append(symbol)
    if not stale:
        return result
    try:
        listed = _stock_list(ctx, stale)
    except ApiError as exc:
        log.warning("reference data unavailable (%s); keeping the cache", exc)
        return result
    for symbol in stale:
        attrs = listed.get(symbol.upper(), {})
        if not attrs:
            log.warning("%s is not in the /stocks list", symbol)
        _store(redis, symbol, attrs, now)
        result[symbol] = attrs
    return result
