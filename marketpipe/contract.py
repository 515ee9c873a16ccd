"""The payload contract between fetcher, transformer and loader.

A fetched API body is a :class:`RawPayload`, landed once in ``marketpipe.raw_payloads`` under
its content-addressed ``payload_id`` (see :mod:`marketpipe.raw`); the transformer's result
travels as a batch of Arrow tables in Redis. One payload is one series (one symbol, one
interval) and its batch holds that series only: the loader refuses a batch with rows of several
(services/loader/jobs.py), whose recompute and daily rebuild work on one series. The OLAP
column list here is the single definition the transformer's output, the loader and ``db/init``
agree on (a unit test compares it with the SQL).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

import pyarrow as pa
from pydantic import BaseModel, Field

SCHEMA: Final = "marketpipe"


class RawPayload(BaseModel):
    """One symbol's raw API answer with where and when it came from (never the API key)."""

    payload_id: str
    source: Literal["demo", "twelvedata"]
    endpoint: str = "time_series"
    symbol: str
    interval: str
    fetched_at: datetime
    request: dict[str, Any] = Field(default_factory=dict)
    body: Any
    instrument: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def make_id(symbol: str, interval: str, body: Any) -> str:
        """Content address: the same answer for the same series always gets the same id."""
        canonical = json.dumps([symbol, interval, body], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    @classmethod
    def build(
        cls,
        *,
        source: Literal["demo", "twelvedata"],
        symbol: str,
        interval: str,
        body: Any,
        request: dict[str, Any] | None = None,
        instrument: dict[str, Any] | None = None,
        fetched_at: datetime | None = None,
    ) -> RawPayload:
        return cls(
            payload_id=cls.make_id(symbol, interval, body),
            source=source,
            symbol=symbol,
            interval=interval,
            fetched_at=fetched_at or datetime.now(UTC),
            request=request or {},
            body=body,
            instrument=instrument or {},
        )


# (column, SQL type) of marketpipe.bars in table order; the key is (symbol, interval, bar_time).
OLAP_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("symbol", "text"),
    ("interval", "text"),
    ("bar_time", "timestamptz"),
    ("bar_time_local", "timestamp"),
    ("exchange_timezone", "text"),
    ("trading_date", "date"),
    ("asset_class", "text"),
    ("instrument_name", "text"),
    ("instrument_type", "text"),
    ("exchange", "text"),
    ("mic_code", "text"),
    ("currency", "text"),
    ("currency_base", "text"),
    ("currency_quote", "text"),
    ("country", "text"),
    ("open", "double precision"),
    ("high", "double precision"),
    ("low", "double precision"),
    ("close", "double precision"),
    ("volume", "double precision"),
    ("previous_close", "double precision"),
    ("change", "double precision"),
    ("pct_change", "double precision"),
    ("log_return", "double precision"),
    ("sma_20", "double precision"),
    ("sma_50", "double precision"),
    ("sma_200", "double precision"),
    ("ema_12", "double precision"),
    ("ema_26", "double precision"),
    ("macd", "double precision"),
    ("macd_signal", "double precision"),
    ("macd_hist", "double precision"),
    ("rsi_14", "double precision"),
    ("bb_middle", "double precision"),
    ("bb_upper", "double precision"),
    ("bb_lower", "double precision"),
    ("atr_14", "double precision"),
    ("volatility_20", "double precision"),
    ("vwap_session", "double precision"),
    ("high_52w", "double precision"),
    ("low_52w", "double precision"),
    ("pct_from_52w_high", "double precision"),
    ("pct_from_52w_low", "double precision"),
    ("is_complete", "boolean"),
    ("payload_id", "text"),
    ("transformed_at", "timestamptz"),
    # RSI's Wilder averages: the state its continuation starts from (db/init/0008).
    ("rsi_avg_gain", "double precision"),
    ("rsi_avg_loss", "double precision"),
)
OLAP_KEY: Final = ("symbol", "interval", "bar_time")

# What a payload says about each bar it holds, warm-up included (the batch's "observed" table):
# the loader compares it with the stored bars to detect restatements
# (services/loader/restatement.py).
OBSERVED_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("symbol", "text"),
    ("interval", "text"),
    ("bar_time", "timestamptz"),
    ("open", "double precision"),
    ("high", "double precision"),
    ("low", "double precision"),
    ("close", "double precision"),
    ("volume", "double precision"),
    ("is_complete", "boolean"),
)

# The indicator columns daily_bars carries (computed over the stored daily series, db/init/0007).
DAILY_INDICATORS: Final = (
    "sma_20",
    "sma_50",
    "sma_200",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "bb_middle",
    "bb_upper",
    "bb_lower",
    "atr_14",
    "high_52w",
    "low_52w",
)

# Columns in the instrument's price unit, computed from its prices. Their rounding error follows
# the price, not the value: MACD (a difference of two EMAs of ~2,500) near zero carries an error
# of a few units in the last place of 2,500, which can be more than 1e-12 of MACD itself. So
# the loader's "changed" rule scales their tolerance by the row's close as well
# (services/loader/upsert.py). Volume, ratios and RSI (0-100) keep the plain relative rule.
PRICE_UNIT_COLUMNS: Final = frozenset(
    {
        *(name for name in DAILY_INDICATORS if name != "rsi_14"),
        *("open", "high", "low", "close", "previous_close", "change", "range"),
        *("vwap", "vwap_session", "rsi_avg_gain", "rsi_avg_loss"),
    }
)
# The column of marketpipe.bars and daily_bars that sets that price scale.
PRICE_SCALE_COLUMN: Final = "close"

# marketpipe.daily_bars: one row per symbol and trading day (exchange session or UTC day), built
# by the loader from the stored bars of market.DAILY_SOURCE_INTERVAL (``source_interval``).
DAILY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("symbol", "text"),
    ("trading_date", "date"),
    ("asset_class", "text"),
    ("open", "double precision"),
    ("high", "double precision"),
    ("low", "double precision"),
    ("close", "double precision"),
    ("volume", "double precision"),
    ("vwap", "double precision"),
    ("change", "double precision"),
    ("pct_change", "double precision"),
    ("range", "double precision"),
    ("bar_count", "integer"),
    ("is_complete", "boolean"),
    ("payload_id", "text"),
    ("transformed_at", "timestamptz"),
    ("source_interval", "text"),
    ("previous_close", "double precision"),
    *((name, "double precision") for name in DAILY_INDICATORS),
)
DAILY_KEY: Final = ("symbol", "trading_date")

# marketpipe.quarantine: a rejected payload or row, with why, and where it came from.
QUARANTINE_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("payload_id", "text"),
    ("symbol", "text"),
    ("interval", "text"),
    ("row_key", "text"),
    ("reason", "text"),
    ("raw", "jsonb"),
    ("quarantined_at", "timestamptz"),
)
QUARANTINE_KEY: Final = ("payload_id", "row_key", "reason")


# Arrow type of each SQL type in a batch's tables (Redis, Arrow IPC), as the transformer writes
# them: times in microseconds (PostgreSQL's resolution), a ``date`` as its midnight (the loader
# casts), jsonb as its JSON text. The loader casts each to the type it stages from.
BATCH_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "text": pa.string(),
    "jsonb": pa.string(),
    "double precision": pa.float64(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
    "date": pa.timestamp("us"),
    "boolean": pa.bool_(),
    "integer": pa.int64(),
}


def column_names(columns: tuple[tuple[str, str], ...]) -> list[str]:
    return [name for name, _ in columns]
